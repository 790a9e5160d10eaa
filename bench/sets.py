"""Large sets: `appliance apply` against raw `nft -f` of the same elements, same run.

For each size N (IPv4 host elements of one hash set, deterministic), in a fresh namespace:

- load: the table absent, `nft -f` of the compiled ruleset against `appliance apply` of the
  profile (its elements in an ``elements_file``); wall time and the process's peak RSS;
- delta: N/10 changed (N/20 deleted, N/20 added) on the loaded set, `nft -f` of an
  ``add element``/``delete element`` script against `appliance apply` of the changed profile;
- bytes per element: peak RSS of the apply less that of an apply with an empty set, over N;
- the daemon's path, in one process as the daemon holds it (the engine's read-back kept
  between changes): the load and the delta of already compiled policies, and what parsing
  the profile costs on top;
- the daemon itself (``appliance run`` in the namespace): its RSS once READY with the set
  loaded (steady) and its high-water mark (peak, the load included), then again after a
  reload to the changed profile, less those of the same daemon with the set empty, per
  element. Goal: at most 16 B per IPv4 element and 32 per IPv6 element, peak included;
- the reload's phases: the daemon's RSS sampled every 5 ms during the reload, its highest
  above the RSS at READY up to the log's "policy enforced" (the running sets parked, the
  next list parsed, its delta) and from there to READY (the last good policy saved), per
  element.

``--v6-sizes`` runs the same with IPv6 hosts (2001:db8::/32). ``--daemon-only`` measures
the daemon alone (no `nft -f`, apply or engine runs). ``--bundle-sizes`` measures a hub
bundle with one set of N IPv4 hosts in a child process: what the daemon holds of it once
verified and compiled (the bundle and the policy, its bytes apart) and the peak of doing
so, per element.

Prints a table with the ratios against `nft -f`, appends it to bench/RESULTS.md (unless
--no-append) and draws update time and peak RSS against N as a PNG where matplotlib is
installed (Debian: python3-matplotlib), else says the plot was skipped.

    sudo .venv/bin/python -m bench.sets [--sizes 10000 100000 1000000] [--v6-sizes 100000]
        [--png PATH]
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"

PROFILE = """version = 1
name = "bench-sets"
[zones.lan]
interfaces = ["eth1"]
[sets.blocklist]
type = "TYPE"
size = SIZE
elements_file = "ELEMENTS"
[[rules]]
name = "drop-blocklist"
from = "any"
to = "self"
saddr = ["@blocklist"]
action = "drop"
"""


@dataclass
class Run:
    seconds: float
    peak_kib: int


@dataclass
class Engine:
    load: float
    delta: float
    parse: float
    peak_growth_kib: int


@dataclass
class Daemon:
    """KiB over the empty-set daemon: RSS when READY, high-water mark, after the reload."""

    steady_kib: int
    peak_kib: int
    reload_steady_kib: int
    reload_peak_kib: int
    start: float  # seconds to READY
    reload: float  # seconds from SIGHUP to READY
    parse_delta_kib: int = 0  # the reload's highest RSS above READY's, to "policy enforced"
    save_kib: int = 0  # and from there to READY


@dataclass
class Row:
    family: str
    size: int
    nft_load: Run
    apply_load: Run
    nft_delta: Run
    apply_delta: Run
    base_kib: int
    engine: Engine
    daemon: Daemon

    def per_element(self, kib: int) -> float:
        return kib * 1024 / self.size

    @property
    def bytes_per_element(self) -> float:
        return (self.apply_load.peak_kib - self.base_kib) * 1024 / self.size


def measured(argv: list[str]) -> Run:
    """Wall time and peak RSS (of the process itself, from wait4) of ``argv``."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {proc.returncode}: {stderr.strip()}")
    return Run(seconds, int(usage.ru_maxrss))


def engine_path(profile: str, changed: str) -> Engine:
    """In the namespace: load ``profile`` then change to ``changed`` with one engine."""
    import resource

    from appliance.adapters.nft import NftBackend
    from appliance.engine import Engine as Reconciler
    from appliance.model.parse import load_profile
    from appliance.reconcile.state import desired_from_profile

    start_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    engine = Reconciler(NftBackend())
    t0 = time.perf_counter()
    first = desired_from_profile(load_profile(profile))
    t1 = time.perf_counter()
    engine.apply(first)
    t2 = time.perf_counter()
    engine.converge(first)  # the daemon's first read-back after its load
    second = desired_from_profile(load_profile(changed))
    t3 = time.perf_counter()
    engine.apply(second)
    t4 = time.perf_counter()
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start_kib
    return Engine(t2 - t1, t4 - t3, t1 - t0, growth)


def addresses(count: int, seed: int, family: str = "ipv4") -> list[str]:
    picked = random.Random(seed).sample(range(1 << 24), count)
    if family == "ipv6":
        return [f"2001:db8:{v >> 12:x}:{v & 4095:x}::1" for v in picked]
    return [f"10.{v >> 16}.{(v >> 8) & 255}.{v & 255}" for v in picked]


def write_profile(
    folder: Path, name: str, elements: list[str], size: int, family: str = "ipv4"
) -> Path:
    listing = folder / f"{name}.txt"
    listing.write_text("".join(f"{e}\n" for e in elements))
    profile = folder / f"{name}.toml"
    text = (
        PROFILE.replace("SIZE", str(size))
        .replace("ELEMENTS", str(listing))
        .replace("TYPE", "ipv6_addr" if family == "ipv6" else "ipv4_addr")
    )
    profile.write_text(text)
    return profile


def proc_kib(pid: int, field: str) -> int:
    """``VmRSS`` or ``VmHWM`` of process ``pid`` in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise SystemExit(f"no {field} for process {pid}")


class Sampler:
    """The RSS of process ``pid`` every 5 ms, in a thread, until stopped: (wall time, KiB)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), proc_kib(self.pid, "VmRSS")))
            except (OSError, SystemExit):
                return
            self._stop.wait(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def highest(self, since: float, until: float) -> int:
        return max((kib for at, kib in self.samples if since <= at < until), default=0)


def logged_at(lines: list[str], message: str) -> float | None:
    """The wall time of the last log line whose ``msg`` is ``message`` (JSON lines)."""
    found: float | None = None
    for line in lines:
        try:
            entry = json.loads(line[line.find("{") :])
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("msg") == message:
            stamp = str(entry["ts"]).rstrip("Z")
            whole, _, millis = stamp.partition(".")
            seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
            found = seconds + int(millis or 0) / 1000
    return found


def daemon_memory(ns: str, folder: Path, empty: Path, profile: Path, changed: Path) -> Daemon:
    """The daemon's RSS and high-water mark with ``profile``'s set, then after a reload to
    ``changed``, less those of the daemon with the set empty (KiB)."""
    from appliance.lab.daemon import LabDaemon

    def run(path: Path, work: str, reload_to: Path | None) -> tuple[int, ...]:
        subprocess.run(["ip", "netns", "exec", ns, "nft", "flush", "ruleset"], check=True)
        live = folder / f"{work}.toml"  # the daemon's own copy: a reload reads it again
        live.write_text(path.read_text())
        with LabDaemon(ns, str(live), folder / work) as daemon:
            started = daemon.start(1800)
            pid = daemon.pid
            assert pid is not None
            first = (proc_kib(pid, "VmRSS"), proc_kib(pid, "VmHWM"))
            reloaded, seconds, phases = first, 0.0, (0, 0)
            if reload_to is not None:
                live.write_text(reload_to.read_text())
                sampler = Sampler(pid)
                signalled = time.time()
                begun = time.monotonic()
                assert daemon.proc is not None
                daemon.proc.send_signal(signal.SIGHUP)
                daemon.wait_for("RELOADING=1", 60)
                daemon.wait_for("READY=1", 1800)
                seconds = time.monotonic() - begun
                ready = time.time()
                sampler.stop()
                reloaded = (proc_kib(pid, "VmRSS"), proc_kib(pid, "VmHWM"))
                enforced = logged_at(daemon.log_lines(), "policy enforced") or ready
                phases = (
                    max(0, sampler.highest(signalled, enforced) - first[0]),
                    max(0, sampler.highest(enforced, ready + 1) - first[0]),
                )
            daemon.stop(120)
        return (*first, *reloaded, int(started * 1000), int(seconds * 1000), *phases)

    base = run(empty, "daemon-empty", None)
    loaded = run(profile, "daemon-loaded", changed)
    return Daemon(
        loaded[0] - base[0],
        loaded[1] - base[1],
        loaded[2] - base[0],
        loaded[3] - base[1],
        loaded[4] / 1000,
        loaded[5] / 1000,
        loaded[6],
        loaded[7],
    )


def bench_size(size: int, folder: Path, family: str = "ipv4", daemon_only: bool = False) -> Row:
    ns = f"setbench-{uuid.uuid4().hex[:6]}"
    appliance = [sys.executable, "-m", "appliance"]
    exec_ns = ["ip", "netns", "exec", ns]
    elements = addresses(size + size // 20, seed=size, family=family)
    loaded, extra = elements[:size], elements[size:]
    gone = loaded[: size // 20]
    changed = loaded[size // 20 :] + extra
    capacity = 2 * size
    profile = write_profile(folder, f"load-{size}", loaded, capacity, family)
    profile_changed = write_profile(folder, f"changed-{size}", changed, capacity, family)
    empty = write_profile(folder, "empty", [], capacity, family)
    script = folder / f"load-{size}.nft"
    delta = folder / f"delta-{size}.nft"
    if not daemon_only:
        script.write_text(
            subprocess.run(
                [*appliance, "compile", str(profile)], check=True, capture_output=True, text=True
            ).stdout
        )
        delta.write_text(
            f"delete element inet appliance blocklist {{ {', '.join(gone)} }}\n"
            f"add element inet appliance blocklist {{ {', '.join(extra)} }}\n"
        )
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        if daemon_only:
            daemon = daemon_memory(ns, folder, empty, profile, profile_changed)
            none, idle = Run(float("nan"), 0), Engine(float("nan"), float("nan"), 0.0, 0)
            return Row(family, size, none, none, none, none, 0, idle, daemon)
        base = measured([*appliance, "apply", "--netns", ns, str(empty)])
        subprocess.run([*exec_ns, "nft", "delete", "table", "inet", "appliance"], check=True)
        nft_load = measured([*exec_ns, "nft", "-f", str(script)])
        nft_delta = measured([*exec_ns, "nft", "-f", str(delta)])
        subprocess.run([*exec_ns, "nft", "delete", "table", "inet", "appliance"], check=True)
        apply_load = measured([*appliance, "apply", "--netns", ns, str(profile)])
        apply_delta = measured([*appliance, "apply", "--netns", ns, str(profile_changed)])
        subprocess.run([*exec_ns, "nft", "delete", "table", "inet", "appliance"], check=True)
        from appliance.adapters.nsexec import run_in_netns

        engine = run_in_netns(ns, engine_path, str(profile), str(profile_changed), timeout=900)
        daemon = daemon_memory(ns, folder, empty, profile, profile_changed)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    return Row(
        family, size, nft_load, apply_load, nft_delta, apply_delta, base.peak_kib, engine, daemon
    )


BUNDLE_CHILD = """
import gc, json, random, sys, time
from pathlib import Path
from appliance.daemon import heap
from appliance.reconcile.state import desired_with_hub
from appliance.sync import bundle as B
heap.configure()
size = int(sys.argv[1])
profile = {"version": 1, "name": "bench", "zones": {"lan": {"interfaces": ["eth1"]}},
    "sets": {"blocklist": {"type": "ipv4_addr", "interval": True}},
    "rules": [{"name": "drop", "from": "any", "to": "any", "saddr": ["@blocklist"],
        "action": "drop"}]}
picked = random.Random(size).sample(range(1 << 24), size)
hosts = [f"10.{v >> 16}.{(v >> 8) & 255}.{v & 255}" for v in picked]
doc = {"version": 1, "expires": "2100-01-01T00:00:00Z", "profile": profile,
    "sets": {"blocklist": {"full": hosts}}}
data = B.encode_document(doc)
del doc, hosts, picked
def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
heap.release()
open("/proc/self/clear_refs", "w").write("5")  # the high-water mark from here
rss, hwm = kib("VmRSS"), kib("VmHWM")
began = time.perf_counter()
bundle = B.parse_bundle(data, Path("/"))
desired = desired_with_hub(bundle.profile, bundle.effective_profile())
seconds = time.perf_counter() - began
heap.release()
print(json.dumps([len(data), kib("VmRSS") - rss, kib("VmHWM") - hwm, seconds]))
"""


def bundle_memory(size: int) -> list[str]:
    """A table row: a hub bundle of ``size`` IPv4 hosts, parsed, verified and compiled."""
    out = subprocess.run(
        [sys.executable, "-c", BUNDLE_CHILD, str(size)],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    ).stdout
    data, held, peak, seconds = json.loads(out.strip().splitlines()[-1])
    return [
        f"| {size:,} | {data / size:.1f} | {held * 1024 / size:.1f} | {peak * 1024 / size:.1f} "
        f"| {seconds:.1f} s |"
    ]


def bundle_table(sizes: list[int]) -> list[str]:
    lines = [
        "| hub set (IPv4 hosts) | bundle bytes/element | held B/element | peak B/element "
        "| parse and compile |",
        "|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        lines += bundle_memory(size)
    return lines


def daemon_table(rows: list[Row]) -> list[str]:
    lines = [
        "| family | elements | daemon steady B/element | peak B/element | after reload steady "
        "| peak | start to READY | reload to READY | reload above READY: parse and delta "
        "| save |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        d = r.daemon
        lines.append(
            f"| {r.family} | {r.size:,} | {r.per_element(d.steady_kib):.1f} "
            f"| {r.per_element(d.peak_kib):.1f} | {r.per_element(d.reload_steady_kib):.1f} "
            f"| {r.per_element(d.reload_peak_kib):.1f} | {d.start:.1f} s | {d.reload:.1f} s "
            f"| {r.per_element(d.parse_delta_kib):.1f} | {r.per_element(d.save_kib):.1f} |"
        )
    return lines


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| family | elements | nft -f load | apply load | ratio | nft -f delta | apply delta "
        "| ratio | nft peak RSS | apply peak RSS | B/element "
        "| engine load | ratio | engine delta | ratio | profile parse | engine B/element |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.family} | {r.size:,} | {r.nft_load.seconds:.2f} s "
            f"| {r.apply_load.seconds:.2f} s "
            f"| {r.apply_load.seconds / r.nft_load.seconds:.2f}x "
            f"| {r.nft_delta.seconds:.2f} s | {r.apply_delta.seconds:.2f} s "
            f"| {r.apply_delta.seconds / r.nft_delta.seconds:.2f}x "
            f"| {r.nft_load.peak_kib / 1024:.0f} MiB | {r.apply_load.peak_kib / 1024:.0f} MiB "
            f"| {r.bytes_per_element:.0f} "
            f"| {r.engine.load:.2f} s | {r.engine.load / r.nft_load.seconds:.2f}x "
            f"| {r.engine.delta:.2f} s | {r.engine.delta / r.nft_delta.seconds:.2f}x "
            f"| {r.engine.parse:.2f} s | {r.engine.peak_growth_kib * 1024 / r.size:.0f} |"
        )
    return lines


def plot(rows: list[Row], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed (Debian: python3-matplotlib)"
    rows = [r for r in rows if r.family == "ipv4"]
    sizes = [r.size for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(sizes, [r.nft_delta.seconds for r in rows], "o-", label="nft -f delta")
    left.plot(sizes, [r.apply_delta.seconds for r in rows], "o-", label="apply delta")
    left.plot(sizes, [r.nft_load.seconds for r in rows], "s--", label="nft -f load")
    left.plot(sizes, [r.apply_load.seconds for r in rows], "s--", label="apply load")
    left.set(xscale="log", yscale="log", xlabel="elements", ylabel="seconds")
    left.legend()
    right.plot(sizes, [r.nft_load.peak_kib / 1024 for r in rows], "o-", label="nft -f")
    right.plot(sizes, [r.apply_load.peak_kib / 1024 for r in rows], "o-", label="apply")
    right.plot(sizes, [r.daemon.peak_kib / 1024 for r in rows], "^-", label="daemon peak growth")
    right.plot(
        sizes, [r.daemon.steady_kib / 1024 for r in rows], "v-", label="daemon steady growth"
    )
    right.set(xscale="log", yscale="log", xlabel="elements", ylabel="peak RSS (MiB)")
    right.legend()
    fig.tight_layout()
    fig.savefig(path)
    return f"plot: {path}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--v6-sizes", type=int, nargs="*", default=[100_000])
    parser.add_argument("--png", type=Path, default=REPO / "bench" / "sets.png")
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument(
        "--daemon-only",
        action="store_true",
        help="only the daemon's memory (no nft -f, apply or engine runs; a quicker run)",
    )
    parser.add_argument("--bundle-sizes", type=int, nargs="*", default=[])
    args = parser.parse_args()
    # As installed: byte-compiled (the environment may forbid writing bytecode on import).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "appliance")], check=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("ipv4", n) for n in args.sizes] + [("ipv6", n) for n in args.v6_sizes]
        for family, size in runs:
            rows.append(bench_size(size, Path(tmp), family, args.daemon_only))
            shown = daemon_table(rows)[-1:]
            if not args.daemon_only:
                shown = table(rows)[-1:] + shown
            print("\n".join(shown), flush=True)
    lines = daemon_table(rows) if args.daemon_only else [*table(rows), "", *daemon_table(rows)]
    if not rows:
        lines = []
    if args.bundle_sizes:
        lines += (
            ["", *bundle_table(args.bundle_sizes)] if lines else bundle_table(args.bundle_sizes)
        )
    print("\n".join(lines))
    note = "plot skipped: --daemon-only" if args.daemon_only or not rows else plot(rows, args.png)
    print(note)
    if not args.no_append:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        load = os.getloadavg()[0]
        with RESULTS.open("a") as out:
            out.write(
                f"\n## Sets: load and delta against nft -f ({stamp}, load average {load:.1f})\n\n"
                f"`sudo .venv/bin/python -m bench.sets --sizes {' '.join(map(str, args.sizes))}"
                f" --v6-sizes {' '.join(map(str, args.v6_sizes))}"
                f"{' --daemon-only' if args.daemon_only else ''}"
                f"{' --bundle-sizes ' if args.bundle_sizes else ''}"
                f"{' '.join(map(str, args.bundle_sizes))}`"
                "\n\n" + "\n".join(lines) + f"\n\n{note}\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
