"""Sample mode under a bulk TCP transfer: how many packets reach user space, and what the
daemon's inspection costs in CPU.

A lab (network namespaces) with the daemon (`appliance run`) in the appliance namespace:
TCP transfers from the mec host to the wan host are forwarded through it. Measured over
the transfers, from kernel counters:

- share: NFLOG packets the daemon received / packets the appliance forwarded (the
  appliance's receive counters of both links, which count what netfilter sees: with GRO a
  "packet" may be several wire segments, so the wire-segment share is lower still);
- CPU: the daemon's utime + stime (/proc/PID/stat) over the transfer's wall time.

The reference, in the same run: the same transfers with `[inspect] mode = "off"`.

    .venv/bin/python -m bench.sample_share [--mbytes 5000] [--flows 4] [--short 300]

``--short N`` also opens N short connections (a request, a 2 kB answer), the case where
sampling the first packets of each flow sends most of them to user space.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PORT = 5001
SHORT_PORT = 5002
MEC = "10.45.0.10"

PROFILE = """
version = 1
name = "sample-share"
[zones.wan]
interfaces = ["eth0"]
[zones.lan]
interfaces = ["eth1"]
[zones.mec]
interfaces = ["eth2"]
[[rules]]
name = "wan-to-mec"
from = "wan"
to = "mec"
proto = "tcp"
dport = [{port}, {short}]
action = "accept"
[protect]
block_timeout = "10s"
[inspect]
mode = "{mode}"
sample_packets = 8
rules = ["{rules}"]
[inspect.detectors]
port_scan = {{ ports = 100, window = "10s" }}
syn_flood = {{ rate = "100000/second" }}
"""

SERVER = """
import socket, sys
size, short_count = int(sys.argv[1]), int(sys.argv[2])
bulk = socket.create_server(("0.0.0.0", {port}), backlog=64)
short = socket.create_server(("0.0.0.0", {short}), backlog=512)
print("ready", flush=True)
import selectors, threading
chunk = b"x" * (1 << 20)
def serve_bulk():
    while True:
        conn, _ = bulk.accept()
        def send(conn=conn):
            with conn:
                left = size
                while left > 0:
                    n = min(left, len(chunk))
                    conn.sendall(chunk[:n])
                    left -= n
        threading.Thread(target=send, daemon=True).start()
def serve_short():
    while True:
        conn, _ = short.accept()
        with conn:
            conn.recv(100)
            conn.sendall(b"y" * 2048)
threading.Thread(target=serve_bulk, daemon=True).start()
threading.Thread(target=serve_short, daemon=True).start()
sys.stdin.read()
"""

BULK_CLIENT = """
import socket, sys, threading, time
flows = int(sys.argv[1])
got = [0] * flows
def fetch(i):
    with socket.create_connection(("{mec}", {port}), timeout=60) as s:
        while True:
            data = s.recv(1 << 20)
            if not data:
                return
            got[i] += len(data)
start = time.monotonic()
threads = [threading.Thread(target=fetch, args=(i,)) for i in range(flows)]
for t in threads: t.start()
for t in threads: t.join(120)
print(sum(got), time.monotonic() - start)
"""

SHORT_CLIENT = """
import socket, sys, time
count = int(sys.argv[1])
start = time.monotonic()
for _ in range(count):
    with socket.create_connection(("{mec}", {short}), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\\r\\nHost: mec\\r\\n\\r\\n")
        while s.recv(4096):
            pass
print(count * 2048, time.monotonic() - start)
"""


def in_ns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def cpu_ns(pid: int) -> int:
    """CPU time of all the process's threads in ns (schedstat: finer than the clock tick)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


def rx_packets(ns: str, links: tuple[str, ...] = ("eth0", "eth2")) -> int:
    script = "; ".join(f"cat /sys/class/net/{link}/statistics/rx_packets" for link in links)
    out = subprocess.run(in_ns(ns, "sh", "-c", script), capture_output=True, text=True, check=True)
    return sum(int(x) for x in out.stdout.split())


def status(sock: str) -> dict[str, object]:
    from appliance.daemon.control import request

    answer = request(sock, {"op": "status"}, timeout=5)
    result: dict[str, object] = answer["status"]
    return result


@contextlib.contextmanager
def daemon(ns: str, tmp: Path, mode: str) -> Iterator[tuple[int, str]]:
    rules = REPO / "profiles" / "rules" / "edge.rules"
    profile = tmp / f"{mode}.toml"
    profile.write_text(
        PROFILE.format(port=PORT, short=SHORT_PORT, mode=mode, rules=rules),
    )
    sock = str(tmp / f"{mode}.sock")
    log = open(tmp / f"{mode}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appliance",
            "run",
            "--netns",
            ns,
            "--profile",
            str(profile),
            "--state-dir",
            str(tmp / f"state-{mode}"),
            "--control-socket",
            sock,
            "--alerts",
            str(tmp / f"eve-{mode}.json"),
            "--no-monitor",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited: {(tmp / f'{mode}.log').read_text()}")
            try:
                if status(sock).get("policy"):
                    break
            except Exception:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)
        yield proc.pid, sock
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def phase(ns_app: str, ns_client: str, pid: int, sock: str, script: str, arg: int) -> Phase:
    """Run one client script in the wan host; the counters over it."""
    before_rx = rx_packets(ns_app)
    before_cpu = cpu_ticks(pid)
    before_ns = cpu_ns(pid)
    before = status(sock).get("inspect") or {}
    start = time.monotonic()
    done = subprocess.run(
        in_ns(ns_client, sys.executable, "-c", script, str(arg)),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    wall = time.monotonic() - start
    time.sleep(0.3)  # let the engine drain what is queued
    ticks = (cpu_ticks(pid) - before_cpu) / os.sysconf("SC_CLK_TCK")
    cpu = (cpu_ns(pid) - before_ns) / 1e9
    after = status(sock).get("inspect") or {}
    got, seconds = done.stdout.split()
    return Phase(
        wall=wall,
        seconds=float(seconds),
        nbytes=int(got),
        forwarded=rx_packets(ns_app) - before_rx,
        received=_delta(after, before, "received"),
        dropped=_delta(after, before, "dropped"),
        cpu=cpu,
        ticks=ticks,
    )


def _delta(after: object, before: object, key: str) -> int:
    assert isinstance(after, dict) and isinstance(before, dict)
    return int(after.get(key, 0)) - int(before.get(key, 0))


@dataclass
class Phase:
    wall: float
    seconds: float
    nbytes: int
    forwarded: int
    received: int
    dropped: int
    cpu: float  # seconds, from schedstat
    ticks: float  # seconds, from utime + stime (clock-tick resolution)
    connections: int = 0  # short connections made (0: a bulk phase)

    @property
    def share(self) -> float:
        return self.received / self.forwarded if self.forwarded else 0.0

    def rate(self) -> str:
        if self.connections:
            return f"{self.connections / self.seconds:.0f} connections/s"
        return f"{self.nbytes * 8 / self.seconds / 1e6:.0f} Mbit/s"

    def line(self) -> str:
        return (
            f"{self.forwarded} packets forwarded, {self.received} to user space "
            f"({100 * self.share:.3f}%; {self.dropped} dropped), "
            f"{self.rate()}, daemon CPU {self.cpu:.3f} s "
            f"(utime+stime {self.ticks:.2f} s) over {self.wall:.2f} s "
            f"= {100 * self.cpu / self.wall:.2f}% of a core"
        )


def measure(lab: Any, tmp: Path, mode: str, args: argparse.Namespace) -> dict[str, Phase]:
    ns_app, ns_wan = lab.ns("appliance"), lab.ns("wan")
    phases: dict[str, Phase] = {}
    with daemon(ns_app, tmp, mode) as (pid, sock):
        bulk = BULK_CLIENT.format(mec=MEC, port=PORT)
        phases["bulk"] = phase(ns_app, ns_wan, pid, sock, bulk, args.flows)
        if args.short:
            short = SHORT_CLIENT.format(mec=MEC, short=SHORT_PORT)
            phases["short"] = phase(ns_app, ns_wan, pid, sock, short, args.short)
            phases["short"].connections = args.short
    return phases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mbytes", type=int, default=5000, help="MB in all, over --flows")
    parser.add_argument("--flows", type=int, default=4)
    parser.add_argument("--short", type=int, default=0, help="short connections after the bulk")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    from appliance.lab import netns, topology

    prefix = f"bs{uuid.uuid4().hex[:4]}-"
    lab = topology.lab(prefix)
    results: dict[str, dict[str, Phase]] = {}
    server: subprocess.Popen[str] | None = None
    try:
        netns.up(prefix)
        with tempfile.TemporaryDirectory(prefix="bench-sample-") as tmp_dir:
            tmp = Path(tmp_dir)
            size = args.mbytes * 1_000_000 // args.flows
            server = subprocess.Popen(
                in_ns(
                    lab.ns("mec"),
                    sys.executable,
                    "-c",
                    textwrap.dedent(SERVER.format(port=PORT, short=SHORT_PORT)),
                    str(size),
                    "0",
                ),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert server.stdout is not None
            assert server.stdout.readline().strip() == "ready"
            for mode in ("off", "sample"):
                results[mode] = measure(lab, tmp, mode, args)
    finally:
        if server is not None:
            server.kill()
            server.wait(5)
        netns.down(prefix)
    if args.json:
        print(json.dumps({m: {p: vars(v) for p, v in r.items()} for m, r in results.items()}))
    print(f"bulk: {args.mbytes} MB over {args.flows} TCP flows, mec -> wan through the appliance")
    for mode in ("off", "sample"):
        print(f"  inspect {mode:6}: {results[mode]['bulk'].line()}")
    bulk = results["sample"]["bulk"]
    segments = bulk.nbytes / 1448  # data segments on the wire (MSS 1448)
    print(
        f"  share to user space (sample): {100 * bulk.share:.3f}% of the packets netfilter saw "
        f"(goal <= 2%); {100 * bulk.received / segments:.4f}% of wire segments"
    )
    extra = bulk.cpu - results["off"]["bulk"].cpu
    print(
        f"  inspection CPU at this load: {extra:+.3f} s over {bulk.wall:.2f} s vs inspect off "
        f"({100 * extra / bulk.wall:+.2f}% of a core)"
    )
    if args.short:
        print(f"short: {args.short} connections (request, 2 kB answer), one after the other")
        for mode in ("off", "sample"):
            print(f"  inspect {mode:6}: {results[mode]['short'].line()}")
        short = results["sample"]["short"]
        extra = short.cpu - results["off"]["short"].cpu
        per = 1e6 * extra / short.received if short.received else 0.0
        print(f"  inspection CPU: {extra:+.3f} s, {per:.0f} us per packet to user space")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
