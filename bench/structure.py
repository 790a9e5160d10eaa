"""The table's structure without its elements: ``list_structure()`` against ``list table``.

In a fresh namespace, a real profile (profiles/edge-gateway.toml, applied by the CLI) plus
an interval set and a hash set of N IPv4 elements each (not adjacent: they do not merge).
Each way runs in its own child process, R times: the way used before (libnftables' terse
``list table``, which in nftables 1.0.6 fetches every set element into its cache) and
``NftBackend.list_structure()``; then the same for the daemon's read-back of the table
(``Engine.observe()``: the structure, then every set's elements over netlink). Time is
the call's wall time, memory the child's peak RSS above its RSS before the call (VmHWM).
The two listings must be equal (normalised JSON).

Prints the figures with the ratios, appends them with the command to bench/RESULTS.md
(unless --no-append).

    sudo .venv/bin/python -m bench.structure [--size 200000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"
PROFILE = REPO / "profiles" / "edge-gateway.toml"
CHUNK = 20000


def _ip(value: int) -> str:
    return ".".join(str((value >> shift) & 255) for shift in (24, 16, 8, 0))


def load_script(size: int) -> str:
    lines = [
        "add set inet appliance big_interval { type ipv4_addr; flags interval; }",
        f"add set inet appliance big_hash {{ type ipv4_addr; size {2 * size}; }}",
    ]
    for start in range(0, size, CHUNK):
        stop = min(size, start + CHUNK)
        ranges = (
            f"{_ip((11 << 24) + 4 * i)}-{_ip((11 << 24) + 4 * i + 1)}" for i in range(start, stop)
        )
        lines.append(f"add element inet appliance big_interval {{ {', '.join(ranges)} }}")
        hashes = (_ip((20 << 24) + 3 * i) for i in range(start, stop))
        lines.append(f"add element inet appliance big_hash {{ {', '.join(hashes)} }}")
    return "\n".join(lines) + "\n"


def child(way: str) -> None:
    """One listing, the old way or list_structure(); prints a JSON line."""
    from appliance.adapters.nft import NftBackend

    def hwm() -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM"):
                    return int(line.split()[1])
        return 0

    backend = NftBackend()
    if way.endswith("list table"):

        def terse_table() -> list[dict[str, object]] | None:
            backend._nft.set_terse_output(True)
            try:
                return backend.list_table()
            finally:
                backend._nft.set_terse_output(False)

        backend.list_structure = terse_table  # type: ignore[method-assign]
    before = hwm()
    start = time.perf_counter()
    listing = None
    if way.startswith("observe"):
        from appliance.engine import Engine

        Engine(backend).observe()
    else:
        listing = backend.list_structure()
    seconds = time.perf_counter() - start
    print(json.dumps({"s": seconds, "kib": hwm() - before, "listing": listing}, sort_keys=True))


def run_way(ns: str, way: str) -> dict[str, object]:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "bench.structure", "--child", way],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        timeout=300,
    ).stdout
    result: dict[str, object] = json.loads(out.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=200000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    ns = f"bst-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(
            [sys.executable, "-m", "appliance", "apply", "--netns", ns, str(PROFILE)],
            check=True,
            cwd=REPO,
            capture_output=True,
            timeout=120,
        )
        with tempfile.NamedTemporaryFile("w", suffix=".nft") as script:
            script.write(load_script(args.size))
            script.flush()
            subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", script.name], check=True)
        figures: dict[str, list[tuple[float, int]]] = {
            "list table": [],
            "list_structure()": [],
            "observe, list table": [],
            "observe, list_structure()": [],
        }
        listings: dict[str, object] = {}
        for _ in range(args.runs):
            for way, runs in figures.items():
                result = run_way(ns, way)
                runs.append((float(str(result["s"])), int(str(result["kib"]))))
                if not way.startswith("observe"):
                    listings[way] = result["listing"]
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    equal = listings["list table"] == listings["list_structure()"]
    load = os.getloadavg()[0]
    rows = []
    reference = figures["list table"]
    ref_s = statistics.median(s for s, _ in reference)
    ref_kib = statistics.median(k for _, k in reference)
    for way, runs in figures.items():
        if way.startswith("observe"):
            reference = figures["observe, list table"]
            ref_s = statistics.median(s for s, _ in reference)
            ref_kib = statistics.median(k for _, k in reference)
        s = statistics.median(x for x, _ in runs)
        kib = statistics.median(k for _, k in runs)
        rows.append(
            f"| {way} | {s:.3f} | {kib / 1024:.1f} | {s / ref_s:.4f} "
            f"| {kib / max(ref_kib, 1):.4f} |"
        )
    text = "\n".join(
        [
            f"`{' '.join(['sudo .venv/bin/python -m bench.structure', *sys.argv[1:]])}` "
            f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {load:.1f}): "
            f"edge-gateway plus a {args.size}-element interval set and a {args.size}-element "
            f"hash set, median of {args.runs}; listings equal: {equal}",
            "",
            "| listing | seconds | MiB above start | time ratio | memory ratio |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    print(text)
    if not args.no_append:
        with RESULTS.open("a") as results:
            results.write("\n" + text + "\n")
    if not equal:
        raise SystemExit("the listings differ")


if __name__ == "__main__":
    main()
