"""Metrics scrapes of a daemon holding a large set against the same daemon without it.

In a throw-away network namespace (always removed), the daemon runs one profile twice: its
set ``feed`` empty, then with ``--elements`` IPv4 hosts (from an ``elements_file``). Each
time, ``--scrapes`` GETs of ``/metrics`` over a new connection each, from inside the
namespace; p50/p99 and the ratio of the loaded daemon's to the empty one's. Goal: at most
1.1x, p99 at most 100 ms. Appends to bench/RESULTS.md unless --no-append.

    sudo .venv/bin/python -m bench.scrape [--elements 1000000] [--scrapes 1000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.daemon import percentile, scratch_netns

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"
LISTEN = "127.0.0.1:9478"

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


def scrapes(count: int) -> list[float]:
    """In the namespace: ``count`` GETs of /metrics, durations in seconds."""
    from bench.daemon import http_get

    host, _, port = LISTEN.rpartition(":")
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        http_get(host, int(port))
        samples.append(time.perf_counter() - start)
    return samples


def measure(ns: str, work: Path, elements: int, count: int) -> tuple[list[float], float, int]:
    """Scrape durations, the start's seconds and the daemon's RSS with ``elements``."""
    from appliance.adapters.nsexec import run_in_netns
    from appliance.lab.daemon import LabDaemon

    listing = work / f"feed-{elements}.txt"
    with listing.open("w") as out:
        for i in range(elements):
            out.write(f"{100 + (i >> 22)}.{(i >> 14) & 255}.{(i >> 6) & 255}.{i & 63}\n")
    profile = work / f"feed-{elements}.toml"
    profile.write_text(
        PROFILE.replace("SIZE", str(max(elements, 1) * 2))
        .replace("ELEMENTS", str(listing))
        .replace("LISTEN", LISTEN)
    )
    subprocess.run(["ip", "netns", "exec", ns, "nft", "flush", "ruleset"], check=True)
    with LabDaemon(ns, str(profile), work / f"d{elements}") as daemon:
        started = daemon.start(900)
        samples = run_in_netns(ns, scrapes, count, timeout=600)
        rss = int(daemon.status()["rss_bytes"])
        daemon.stop(120)
    return samples, started, rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=1_000_000)
    parser.add_argument("--scrapes", type=int, default=1000)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench.scrape: needs root (network namespaces)", file=sys.stderr)
        return 1
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "appliance")], check=True)
    with scratch_netns("apscrape") as ns, tempfile.TemporaryDirectory(prefix="apscrape-") as tmp:
        empty = measure(ns, Path(tmp), 0, args.scrapes)
        loaded = measure(ns, Path(tmp), args.elements, args.scrapes)
    lines = [
        f"| daemon ({args.scrapes} scrapes each) | p50 | p99 | start to READY | RSS |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, (samples, started, rss) in (
        ("set empty", empty),
        (f"{args.elements:,} elements", loaded),
    ):
        lines.append(
            f"| {label} | {percentile(samples, 50) * 1000:.2f} ms "
            f"| {percentile(samples, 99) * 1000:.2f} ms | {started:.1f} s | {rss / 2**20:.0f} MiB |"
        )
    ratio50 = percentile(loaded[0], 50) / percentile(empty[0], 50)
    ratio99 = percentile(loaded[0], 99) / percentile(empty[0], 99)
    lines += ["", f"loaded against empty: p50 x{ratio50:.2f}, p99 x{ratio99:.2f}"]
    print("\n".join(lines))
    if not args.no_append:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        with RESULTS.open("a") as out:
            out.write(
                f"\n## Metrics scrape with a large set ({stamp}, load average "
                f"{os.getloadavg()[0]:.1f})\n\n`sudo .venv/bin/python -m bench.scrape "
                f"--elements {args.elements} --scrapes {args.scrapes}`\n\n"
                + "\n".join(lines)
                + "\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
