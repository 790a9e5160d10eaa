"""Block latency: from a decision to block an address to the element being in the kernel.

In a throw-away network namespace (always removed), the daemon runs a profile (default
`profiles/edge-gateway.toml`) and, interleaved, for ``--blocks`` distinct addresses each:

- `set_add` of ``autoblock_v4`` on the daemon's control socket, until the answer (the
  daemon answers once the kernel committed the element): the path of `appliance set add`
  less the interpreter's start-up;
- the engine's `set_add` in-process, as a detector's decision runs it in the daemon's
  kernel worker (the set's type read back, one transaction);
- raw libnftables `add element` of the same kind of element (the reference).

Every address is checked in the kernel at the end. Prints p50/p99 and ratios and appends
them to bench/RESULTS.md (unless --no-append). Goal: p99 at most 20 ms.

    sudo .venv/bin/python -m bench.block_latency [PROFILE] [--blocks 1000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.daemon import BOUND, percentile, scratch_netns

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"
SET = "autoblock_v4"


def address(kind: int, i: int) -> str:
    return f"10.{100 + kind}.{i // 250 % 250}.{i % 250 + 1}"


def block_samples(control_socket: str, count: int, timeout: int) -> dict[str, Any]:
    """In the namespace: the three paths, interleaved; durations in seconds."""
    import json

    import nftables

    from appliance.adapters.nft import NftBackend
    from appliance.daemon.control import checked, request
    from appliance.engine import Engine

    nft = nftables.Nftables()
    engine = Engine(NftBackend())
    samples: dict[str, list[float]] = {"control": [], "engine": [], "nft": []}
    for i in range(count):
        start = time.perf_counter()
        checked(
            request(
                control_socket,
                {"op": "set_add", "set": SET, "elements": [address(0, i)], "timeout": timeout},
            )
        )
        samples["control"].append(time.perf_counter() - start)
        start = time.perf_counter()
        engine.set_add(SET, [address(1, i)], timeout)
        samples["engine"].append(time.perf_counter() - start)
        start = time.perf_counter()
        rc, _, error = nft.cmd(
            f"add element inet appliance {SET} {{ {address(2, i)} timeout {timeout}s }}"
        )
        samples["nft"].append(time.perf_counter() - start)
        if rc != 0:
            raise RuntimeError(error)
    nft.set_json_output(True)
    _rc, output, _ = nft.cmd(f"list set inet appliance {SET}")
    elems = json.loads(output)["nftables"][1]["set"].get("elem", [])
    texts = {e["elem"]["val"] if isinstance(e, dict) else e for e in elems}
    missing = [
        address(kind, i) for kind in range(3) for i in range(count) if address(kind, i) not in texts
    ]
    return {"samples": samples, "missing": len(missing)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", nargs="?", default=str(REPO / "profiles" / "edge-gateway.toml"))
    parser.add_argument("--blocks", type=int, default=1000)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench.block_latency: needs root (network namespaces)", file=sys.stderr)
        return 1
    from appliance.adapters.nsexec import run_in_netns
    from appliance.lab.daemon import LabDaemon

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "appliance")], check=True)
    with (
        scratch_netns("apblock") as ns,
        tempfile.TemporaryDirectory(prefix="apblock-") as work,
        LabDaemon(ns, args.profile, Path(work) / "d") as daemon,
    ):
        daemon.start(BOUND)
        result = run_in_netns(
            ns, block_samples, daemon.control_socket, args.blocks, 3600, timeout=BOUND * 20
        )
        daemon.stop(BOUND)
    samples = result["samples"]
    reference = percentile(samples["nft"], 99)
    lines = [
        f"| path ({args.blocks} blocks each) | p50 | p99 | max | p99 against libnftables |",
        "|---|---:|---:|---:|---:|",
    ]
    labels = {
        "control": "`set_add` on the control socket (as `appliance set add`)",
        "engine": "engine `set_add` (a detector's decision, in the kernel worker)",
        "nft": "libnftables `add element` (reference)",
    }
    for key, label in labels.items():
        values = samples[key]
        lines.append(
            f"| {label} | {percentile(values, 50) * 1000:.2f} ms "
            f"| {percentile(values, 99) * 1000:.2f} ms | {max(values) * 1000:.2f} ms "
            f"| {percentile(values, 99) / reference:.2f}x |"
        )
    lines.append("")
    lines.append(f"addresses missing from the kernel afterwards: {result['missing']}")
    print("\n".join(lines))
    if not args.no_append:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        with RESULTS.open("a") as out:
            out.write(
                f"\n## Block latency ({stamp}, load average {os.getloadavg()[0]:.1f})\n\n"
                f"`sudo .venv/bin/python -m bench.block_latency --blocks {args.blocks}`\n\n"
                + "\n".join(lines)
                + "\n"
            )
    return 0 if result["missing"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
