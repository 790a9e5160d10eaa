"""Metrics scrapes of a daemon holding a large set against the same daemon without it, both
up at once, and against the generator's own floor.

Two throw-away network namespaces (always removed), one daemon in each, the same profile:
its set ``feed`` empty in one, ``--elements`` IPv4 hosts (from an ``elements_file``) in the
other. Beside the empty daemon, the stdlib ``http.server`` serves a file as large as the
loaded daemon's answer: what the generator and loopback cost at least. One process scrapes
all three in rounds (a new connection each, the order turned every round), so load on the
machine falls on all three alike; ``--interval`` seconds between rounds spread the run over
the daemons' periodic read-backs (every ``--resync-interval`` seconds). For each scrape it
also reads, from /proc, the CPU time the daemon's threads ran during it: a slow scrape with
other threads busy waited on them.

Prints p50/p90/p99/max and the ratios (goal: loaded at most 1.1x empty, p99 at most
100 ms), the loaded daemon's slowest scrapes with what ran during them, and appends to
bench/RESULTS.md unless --no-append.

    sudo nice -n 10 .venv/bin/python -m bench.scrape [--elements 1000000] [--scrapes 1000]
        [--interval 0.02] [--resync-interval 10]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.daemon import BOUND, http_get, percentile, scratch_netns, serve_copy

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"
HOST = "127.0.0.1"
PORT = 9478
REFERENCE_PORT = 9479
CLONE_NEWNET = 0x40000000

PROFILE = """version = 1
name = "bench-scrape"
[zones.lan]
interfaces = ["eth1"]
[sets.feed]
type = "ipv4_addr"
size = SIZE
elements_file = "ELEMENTS"
[[rules]]
name = "drop-feed"
from = "any"
to = "any"
saddr = ["@feed"]
action = "drop"
[metrics]
listen = "LISTEN"
"""


# ---- inside the scraping child ---------------------------------------------------------


def thread_cpu(pid: int) -> tuple[int, int, int]:
    """Nanoseconds the main thread of ``pid`` and its other threads have run so far, and
    that its main thread has waited, ready, for a CPU (/proc/PID/task/TID/schedstat)."""
    main = others = waited = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0, 0, 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
                fields = handle.read().split()
            ran, ready = int(fields[0]), int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
        if int(tid) == pid:
            main, waited = ran, ready
        else:
            others += ran
    return main, others, waited


def scrape_rounds(
    targets: Sequence[tuple[str, str, int, int | None]],
    rounds: int,
    interval: float,
    reload_every: float | None = None,
) -> dict[str, dict[str, list[float]]]:
    """``rounds`` GETs of each target (label, namespace, port, daemon pid or None), the
    order turned by one each round; every ``reload_every`` seconds a SIGHUP to each daemon.
    Per target: the durations (s), when each began (s since the first), and what the
    daemon's main thread and its other threads ran meanwhile (s)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fds = [os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC) for _, ns, _, _ in targets]
    out: dict[str, dict[str, list[float]]] = {
        label: {"seconds": [], "at": [], "main": [], "others": [], "waited": []}
        for label, *_ in targets
    }
    origin = time.monotonic()
    deadline = origin + BOUND * 20
    next_reload = origin + (reload_every or 0.0)
    for turn in range(rounds):
        if time.monotonic() > deadline:
            raise RuntimeError(f"scrapes: {turn} rounds in {BOUND * 20:.0f} s, stopped")
        if reload_every and time.monotonic() >= next_reload:
            next_reload += reload_every
            for *_, pid in targets:
                if pid:
                    os.kill(pid, signal.SIGHUP)
        for i in range(len(targets)):
            index = (turn + i) % len(targets)
            label, _ns, port, pid = targets[index]
            if libc.setns(fds[index], CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            before = thread_cpu(pid) if pid else (0, 0, 0)
            begin = time.monotonic()
            start = time.perf_counter()
            http_get(HOST, port)
            took = time.perf_counter() - start
            after = thread_cpu(pid) if pid else (0, 0, 0)
            row = out[label]
            row["seconds"].append(took)
            row["at"].append(begin - origin)
            row["main"].append((after[0] - before[0]) / 1e9)
            row["others"].append((after[1] - before[1]) / 1e9)
            row["waited"].append((after[2] - before[2]) / 1e9)
        time.sleep(interval)  # pacing between rounds, outside every timed scrape
    for fd in fds:
        os.close(fd)
    return out


# ---- the run ---------------------------------------------------------------------------


def write_profile(work: Path, elements: int) -> Path:
    listing = work / f"feed-{elements}.txt"
    with listing.open("w") as out:
        for i in range(elements):  # every other address: no two adjacent, one span each
            value = (100 << 24) + 2 * i
            out.write(f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}\n")
    profile = work / f"feed-{elements}.toml"
    profile.write_text(
        PROFILE.replace("SIZE", str(max(elements, 1) * 2))
        .replace("ELEMENTS", str(listing))
        .replace("LISTEN", f"{HOST}:{PORT}")
    )
    return profile


def summary(samples: Sequence[float]) -> str:
    return " | ".join(
        f"{value * 1000:.2f} ms"
        for value in (
            percentile(samples, 50),
            percentile(samples, 90),
            percentile(samples, 99),
            max(samples),
        )
    )


def ratio_interval(ours: Sequence[float], theirs: Sequence[float], q: float) -> tuple[float, float]:
    """A 95% bootstrap interval of the ratio of the ``q`` percentiles (rounds resampled)."""
    pick = random.Random(15)
    n = len(ours)
    ratios = []
    for _ in range(400):
        rounds = [pick.randrange(n) for _ in range(n)]
        ratios.append(
            percentile([ours[i] for i in rounds], q) / percentile([theirs[i] for i in rounds], q)
        )
    return percentile(ratios, 2.5), percentile(ratios, 97.5)


def report(
    args: argparse.Namespace,
    data: dict[str, dict[str, list[float]]],
    starts: dict[str, tuple[float, int]],
    size: int,
    load: tuple[float, float],
) -> list[str]:
    empty, loaded, floor = data["empty"], data["loaded"], data["floor"]
    lines = [
        f"| {args.scrapes} scrapes each, interleaved | p50 | p90 | p99 | max "
        "| start to READY | RSS |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in (
        ("empty", "daemon, set empty"),
        ("loaded", f"daemon, {args.elements:,} elements"),
    ):
        ready, rss = starts[key]
        lines.append(
            f"| {label} | {summary(data[key]['seconds'])} | {ready:.1f} s | {rss / 2**20:.0f} MiB |"
        )
    lines.append(
        f"| stdlib `http.server`, a file of {size:,} bytes (the generator's floor) "
        f"| {summary(floor['seconds'])} | | |"
    )
    e50, e99 = percentile(empty["seconds"], 50), percentile(empty["seconds"], 99)
    l50, l99 = percentile(loaded["seconds"], 50), percentile(loaded["seconds"], 99)
    f50, f99 = percentile(floor["seconds"], 50), percentile(floor["seconds"], 99)
    low50, high50 = ratio_interval(loaded["seconds"], empty["seconds"], 50)
    low99, high99 = ratio_interval(loaded["seconds"], empty["seconds"], 99)
    met = l50 / e50 <= 1.1 and l99 / e99 <= 1.1 and l99 <= 0.1
    lines += [
        "",
        f"loaded against empty: p50 x{l50 / e50:.2f} (95% interval {low50:.2f} to {high50:.2f}), "
        f"p99 x{l99 / e99:.2f} ({low99:.2f} to {high99:.2f}); goal at most 1.1x, p99 at most "
        f"100 ms: {'met' if met else 'not met'}. Empty against the floor: p50 x{e50 / f50:.2f}, "
        f"p99 x{e99 / f99:.2f}.",
        f"Load average {load[0]:.1f} before, {load[1]:.1f} after; "
        f"{args.interval * 1000:g} ms between rounds, read-back every {args.resync_interval:g} s"
        + (f", SIGHUP to both daemons every {args.reload_every:g} s" if args.reload_every else "")
        + (", no table watch (`--no-monitor`)" if args.no_monitor else "")
        + ".",
    ]
    for key in ("empty", "loaded"):
        row = data[key]
        slow = [i for i, took in enumerate(row["seconds"]) if took > e99]
        busy = [i for i in slow if row["others"][i] > 0.0005]
        overlap = [
            took for took, ran in zip(row["seconds"], row["others"], strict=True) if ran > 0.0005
        ]
        if overlap:
            lines.append(
                f"{key}: {len(overlap)} scrapes while another thread of the daemon ran more "
                f"than 0.5 ms (its kernel worker: a read-back, a load): p50 "
                f"{percentile(overlap, 50) * 1000:.2f} ms, max {max(overlap) * 1000:.2f} ms"
            )
        lines.append(
            f"{key}: {len(slow)} scrapes above the empty daemon's p99, {len(busy)} of them "
            f"while another thread of the daemon ran more than 0.5 ms; its threads ran "
            f"{sum(row['main']) * 1000:.0f} ms (main) and {sum(row['others']) * 1000:.0f} ms "
            f"(others) during its {len(row['seconds'])} scrapes; its main thread waited "
            f"{sum(row['waited'][i] for i in slow) * 1000:.0f} ms for a CPU during the slow ones"
        )
    lines += [
        "",
        "| slowest scrapes | took | at (s into the run) | main thread ran "
        "| other threads ran | main thread waited for a CPU |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key in ("empty", "loaded"):
        row = data[key]
        order = sorted(range(len(row["seconds"])), key=lambda i: -row["seconds"][i])
        for i in order[:5]:
            lines.append(
                f"| {key} | {row['seconds'][i] * 1000:.2f} ms | {row['at'][i]:.2f} "
                f"| {row['main'][i] * 1000:.2f} ms | {row['others'][i] * 1000:.2f} ms "
                f"| {row['waited'][i] * 1000:.2f} ms |"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=1_000_000)
    parser.add_argument("--scrapes", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between rounds")
    parser.add_argument("--resync-interval", type=float, default=10.0)
    parser.add_argument(
        "--reload-every", type=float, default=None, help="SIGHUP both daemons every SEC"
    )
    parser.add_argument(
        "--no-monitor", action="store_true", help="both daemons without the table watch"
    )
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench.scrape: needs root (network namespaces)", file=sys.stderr)
        return 1
    from appliance.adapters.nsexec import run_in_netns
    from appliance.lab.daemon import LabDaemon

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "appliance")], check=True)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="apscrape-")))
        spaces = {
            key: stack.enter_context(scratch_netns(f"apscrape-{key[0]}"))
            for key in ("empty", "loaded")
        }
        daemons: dict[str, Any] = {}
        starts: dict[str, tuple[float, int]] = {}
        for key, count in (("loaded", args.elements), ("empty", 0)):
            daemon = stack.enter_context(
                LabDaemon(
                    spaces[key],
                    str(write_profile(tmp, count)),
                    tmp / key,
                    extra_args=[
                        "--resync-interval",
                        str(args.resync_interval),
                        *(["--no-monitor"] if args.no_monitor else []),
                    ],
                )
            )
            started = daemon.start(900)
            daemons[key] = daemon
            starts[key] = (started, 0)
        body = run_in_netns(spaces["loaded"], http_get, HOST, PORT, timeout=BOUND)
        server = serve_copy(
            spaces["empty"], [sys.executable], body, HOST, REFERENCE_PORT, tmp / "site"
        )
        stack.callback(server.wait, 10)
        stack.callback(server.kill)
        targets = [
            ("empty", spaces["empty"], PORT, daemons["empty"].pid),
            ("loaded", spaces["loaded"], PORT, daemons["loaded"].pid),
            ("floor", spaces["empty"], REFERENCE_PORT, None),
        ]
        load_before = os.getloadavg()[0]
        data = run_in_netns(
            spaces["empty"],
            scrape_rounds,
            targets,
            args.scrapes,
            args.interval,
            args.reload_every,
            timeout=BOUND * 20 + 10,
        )
        load_after = os.getloadavg()[0]
        for key, daemon in daemons.items():
            status = daemon.status()
            held = status["sets"].get("feed", 0)
            if held != (args.elements if key == "loaded" else 0):
                raise RuntimeError(f"the {key} daemon holds {held} elements in feed")
            starts[key] = (starts[key][0], int(status["rss_bytes"]))
            daemon.stop(120)
    lines = report(args, data, starts, len(body), (load_before, load_after))
    print("\n".join(lines))
    if not args.no_append:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        with RESULTS.open("a") as out:
            out.write(
                f"\n## Metrics scrape with a large set, both daemons up at once ({stamp}, "
                f"load average {load_before:.1f})\n\n`sudo nice -n 10 .venv/bin/python -m "
                f"bench.scrape --elements {args.elements} --scrapes {args.scrapes} "
                f"--interval {args.interval:g} --resync-interval {args.resync_interval:g}"
                + (f" --reload-every {args.reload_every:g}" if args.reload_every else "")
                + (" --no-monitor" if args.no_monitor else "")
                + "`\n\n"
                + "\n".join(lines)
                + "\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
