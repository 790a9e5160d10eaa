"""The daemon (`appliance run`) against references measured in the same run.

In a throw-away network namespace (always removed), with a profile (default
`profiles/edge-gateway.toml`):

- start to `READY=1` (on a notify socket of ours), each start from an empty namespace,
  against the interpreter's own start-up (`python3 -c pass`);
- RSS after start (from `status`), against a bare `python3 -c 'import time; time.sleep(5)'`;
- `/metrics` scrapes (a new connection each, from inside the namespace), against a GET of
  a file of the same size from the stdlib `http.server` on the same loopback;
- `set_add` on the control socket until the answer (the daemon answers once the kernel has
  committed the element), against an in-process libnftables `add element` of an equivalent
  element into the same set, interleaved so both see the same set size;
- the whole `appliance set add` CLI process, against an `nft add element` process.

    sudo .venv/bin/python -m bench.daemon [PROFILE] [--starts 5] [--scrapes 1000]
        [--adds 1000] [--cli-adds 50]

Prints a Markdown table (figures and ratios) ready for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
REFERENCE_PORT = 9479  # the http.server reference, on the namespace's loopback
BOUND = 60.0  # no single step of the benchmark may take longer


def serve_copy(
    ns: str, python: Sequence[str], body: bytes, host: str, port: int, site: Path
) -> subprocess.Popen[bytes]:
    """The reference server: the stdlib ``http.server`` in ``ns`` serving ``body`` as
    ``/metrics`` from ``site`` (made here) at ``host:port``, once it listens. The caller
    kills it."""
    from appliance.adapters.nsexec import run_in_netns

    site.mkdir()
    (site / "metrics").write_bytes(body)
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            ns,
            *python,
            "-m",
            "http.server",
            "--bind",
            host,
            "--directory",
            str(site),
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        run_in_netns(ns, wait_listening, host, port, 20.0, timeout=BOUND)
    except BaseException:
        server.kill()
        server.wait(10)
        raise
    return server


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(value: float) -> str:
    return f"{value * 1000:.2f} ms"


# ---- inside the namespace (forked children, appliance.lab.nsexec) ----------------------


def http_get(host: str, port: int, path: str = "/metrics") -> bytes:
    """One GET over a new connection (HTTP/1.0, read to the end); the body."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")):
        raise RuntimeError(f"GET {host}:{port}{path}: {head[:80]!r}")
    return body


def scrape_samples(listen: str, reference: tuple[str, int], count: int) -> dict[str, Any]:
    """``count`` GETs of each, interleaved; the durations in seconds."""
    from appliance.model.values import parse_host_port

    address = parse_host_port(listen)
    daemon: list[float] = []
    ref: list[float] = []
    size = 0
    for _ in range(count):
        start = time.perf_counter()
        size = len(http_get(address.host, address.port))
        daemon.append(time.perf_counter() - start)
        start = time.perf_counter()
        http_get(*reference)
        ref.append(time.perf_counter() - start)
    return {"daemon": daemon, "reference": ref, "size": size}


def wait_listening(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def element(base: int, i: int) -> str:
    return f"10.{base}.{i // 250 % 250}.{i % 250 + 1}"


def set_add_samples(control_socket: str, set_name: str, count: int) -> dict[str, Any]:
    """control-socket set_add against in-process libnftables add element, interleaved."""
    import nftables

    from appliance.daemon.control import checked, request

    nft = nftables.Nftables()
    daemon: list[float] = []
    ref: list[float] = []
    for i in range(count):
        ours, theirs = element(200, i), element(201, i)
        start = time.perf_counter()
        checked(request(control_socket, {"op": "set_add", "set": set_name, "elements": [ours]}))
        daemon.append(time.perf_counter() - start)
        start = time.perf_counter()
        rc, _, error = nft.cmd(f"add element inet appliance {set_name} {{ {theirs} }}")
        ref.append(time.perf_counter() - start)
        if rc != 0:
            raise RuntimeError(error)
    return {"daemon": daemon, "reference": ref, "in_kernel": elements_in_kernel(set_name, 200)}


def cli_add_samples(
    appliance: list[str], control_socket: str, set_name: str, count: int
) -> dict[str, Any]:
    """`appliance set add` processes against `nft add element` processes, interleaved."""
    daemon: list[float] = []
    ref: list[float] = []
    for i in range(count):
        ours, theirs = element(202, i), element(203, i)
        start = time.perf_counter()
        subprocess.run(
            [*appliance, "set", "add", set_name, ours, "--control-socket", control_socket],
            check=True,
            timeout=BOUND,
        )
        daemon.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run(
            ["nft", "add", "element", "inet", "appliance", set_name, f"{{ {theirs} }}"],
            check=True,
            timeout=BOUND,
        )
        ref.append(time.perf_counter() - start)
    return {"daemon": daemon, "reference": ref, "in_kernel": elements_in_kernel(set_name, 202)}


def elements_in_kernel(set_name: str, base: int) -> int:
    import nftables

    nft = nftables.Nftables()
    nft.set_json_output(True)
    rc, output, error = nft.cmd(f"list set inet appliance {set_name}")
    if rc != 0:
        raise RuntimeError(error)
    prefix = f"10.{base}."
    found = 0
    for item in json.loads(output)["nftables"]:
        for elem in item.get("set", {}).get("elem", []):
            text = elem if isinstance(elem, str) else json.dumps(elem)
            found += prefix in text
    return found


def delete_table() -> None:
    import nftables

    nftables.Nftables().cmd("delete table inet appliance")


# ---- the run --------------------------------------------------------------------------


def process_rss(command: list[str], settle: float = 0.5) -> int:
    proc = subprocess.Popen(command)
    try:
        time.sleep(settle)
        with open(f"/proc/{proc.pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    finally:
        proc.kill()
        proc.wait(10)


def timed_runs(action: Callable[[], object], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", nargs="?", default=str(REPO / "profiles" / "edge-gateway.toml"))
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--scrapes", type=int, default=1000)
    parser.add_argument("--adds", type=int, default=1000)
    parser.add_argument("--cli-adds", type=int, default=50)
    parser.add_argument("--set", default="blocklist", help="an ipv4_addr set of the profile")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench.daemon: needs root (network namespaces)", file=sys.stderr)
        return 1
    with scratch_netns("apbenchd") as ns, tempfile.TemporaryDirectory(prefix="apbenchd-") as work:
        return run(ns, args, Path(work))


@contextlib.contextmanager
def scratch_netns(prefix: str) -> Iterator[str]:
    """A new network namespace ``PREFIX-XXXXXX`` with its loopback up; deleted afterwards
    whatever happens."""
    ns = f"{prefix}-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=BOUND)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=BOUND)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=BOUND)


def run(ns: str, args: argparse.Namespace, work: Path) -> int:
    from appliance.adapters.nsexec import run_in_netns
    from appliance.lab.daemon import LabDaemon
    from appliance.model.values import parse_host_port

    # As installed: byte-compiled (the environment may forbid writing bytecode on import).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "appliance")], check=True)
    appliance = [sys.executable, "-m", "appliance"]
    python = [sys.executable]

    # Start to READY=1, from an empty namespace each time; RSS once started.
    ready: list[float] = []
    rss: list[int] = []
    for i in range(args.starts):
        run_in_netns(ns, delete_table, timeout=BOUND)
        with LabDaemon(ns, args.profile, work / f"start{i}") as daemon:
            ready.append(daemon.start(BOUND))
            time.sleep(0.3)  # the first read-back and the monitor are up
            rss.append(int(daemon.status()["rss_bytes"]))
            if daemon.stop(BOUND) != 0:
                raise RuntimeError("the daemon did not exit 0 on SIGTERM")
    interpreter = timed_runs(lambda: subprocess.run([*python, "-c", "pass"], check=True), 21)
    bare_rss = statistics.median(
        process_rss([*python, "-c", "import time; time.sleep(5)"]) for _ in range(3)
    )

    with LabDaemon(ns, args.profile, work / "main") as daemon:
        daemon.start(BOUND)
        status = daemon.status()
        listen = status["metrics_listen"]
        if not listen:
            raise RuntimeError("the profile has no [metrics] listen address")
        # The reference server serves a file as large as the daemon's exposition.
        address = parse_host_port(listen)
        body = run_in_netns(ns, http_get, address.host, address.port, timeout=BOUND)
        server = serve_copy(ns, python, body, address.host, REFERENCE_PORT, work / "site")
        try:
            scrapes = run_in_netns(
                ns,
                scrape_samples,
                listen,
                (address.host, REFERENCE_PORT),
                args.scrapes,
                timeout=BOUND * 10,
            )
        finally:
            server.kill()
            server.wait(10)
        adds = run_in_netns(
            ns, set_add_samples, daemon.control_socket, args.set, args.adds, timeout=BOUND * 10
        )
        cli = run_in_netns(
            ns,
            cli_add_samples,
            appliance,
            daemon.control_socket,
            args.set,
            args.cli_adds,
            timeout=BOUND * 10,
        )
        if daemon.stop(BOUND) != 0:
            raise RuntimeError("the daemon did not exit 0 on SIGTERM")
    if adds["in_kernel"] != args.adds or cli["in_kernel"] != args.cli_adds:
        missing = f"{adds['in_kernel']}/{args.adds}, {cli['in_kernel']}/{args.cli_adds}"
        raise RuntimeError(f"elements missing in the kernel: {missing}")

    rows: list[tuple[str, str, str, str]] = []
    med_ready, med_interp = statistics.median(ready), statistics.median(interpreter)
    rows.append(
        (
            f"start to `READY=1` (median of {args.starts}, from an empty namespace)",
            f"{med_ready:.3f} s",
            f"`python3 -c pass`: {med_interp:.3f} s",
            f"{med_ready / med_interp:.1f}x",
        )
    )
    med_rss = statistics.median(rss)
    rows.append(
        (
            "RSS after start (median)",
            f"{med_rss / 1048576:.1f} MiB",
            f"`python3 -c 'import time; time.sleep(5)'`: {bare_rss / 1048576:.1f} MiB",
            f"{med_rss / bare_rss:.1f}x",
        )
    )
    for label, ref_label, data in (
        (
            f"`/metrics` scrape, {args.scrapes} GETs, a connection each ({scrapes['size']} B)",
            "stdlib `http.server` GET of as many bytes",
            scrapes,
        ),
        (
            f"`set_add` on the control socket until committed ({args.adds} adds)",
            "libnftables `add element`, in-process",
            adds,
        ),
        (
            f"`appliance set add` through the daemon, whole CLI process ({args.cli_adds} runs)",
            "`nft add element` process",
            cli,
        ),
    ):
        ours, theirs = data["daemon"], data["reference"]
        p50, p99 = percentile(ours, 50), percentile(ours, 99)
        r50, r99 = percentile(theirs, 50), percentile(theirs, 99)
        rows.append(
            (
                label,
                f"p50 {ms(p50)}, p99 {ms(p99)}",
                f"{ref_label}: p50 {ms(r50)}, p99 {ms(r99)}",
                f"{p50 / r50:.1f}x, {p99 / r99:.1f}x",
            )
        )

    print(
        f"`appliance run`, {Path(args.profile).name}, in a throw-away namespace; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"kernel {platform.release()}\n"
    )
    print("| what | figure | reference (same run) | ratio |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
