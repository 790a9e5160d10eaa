"""`appliance apply PROFILE` against `nft -f` of the same compiled ruleset, same run.

Each sample starts from an empty namespace (the table absent), so both load the whole
table. Also timed: the in-process apply (no interpreter start-up), and a no-change apply
(the plan finds nothing to do). Prints medians and ratios against `nft -f`.

    sudo .venv/bin/python -m bench.apply_vs_nft [PROFILE] [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed(action: Callable[[], object], reset: Callable[[], object], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        reset()
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", nargs="?", default=str(REPO / "profiles" / "edge-gateway.toml"))
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    ns = f"apbench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        return run(ns, args.profile, args.runs)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def run(ns: str, profile: str, runs: int) -> int:
    # As installed: byte-compiled (the environment may forbid writing bytecode on import).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "appliance")], check=True)
    appliance = [sys.executable, "-m", "appliance"]
    compiled = subprocess.run(
        [*appliance, "compile", profile], check=True, capture_output=True, text=True
    ).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as handle:
        handle.write(compiled)
        script = handle.name

    def reset() -> None:
        subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "appliance"],
            capture_output=True,
        )

    def nft_f() -> None:
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", script], check=True)

    def cli_apply() -> None:
        subprocess.run(
            [*appliance, "apply", "--netns", ns, profile], check=True, capture_output=True
        )

    def nothing() -> None:
        pass

    def empty_python() -> None:
        subprocess.run([sys.executable, "-c", "pass"], check=True)

    nft_samples = timed(nft_f, reset, runs)
    cli_samples = timed(cli_apply, reset, runs)
    cli_apply()
    noop_samples = timed(cli_apply, nothing, runs)
    python_samples = timed(empty_python, nothing, runs)

    # In-process: parse + compile + plan + one transaction, no interpreter start-up.
    from appliance.adapters.netns import enter_netns

    enter_netns(ns)
    from appliance.adapters.nft import NftBackend
    from appliance.engine import Engine
    from appliance.model.parse import load_profile
    from appliance.reconcile.state import desired_from_profile

    engine = Engine(NftBackend())

    def in_process() -> None:
        engine.apply(desired_from_profile(load_profile(profile)))

    inproc_samples = timed(in_process, reset, runs)

    base = statistics.median(nft_samples)
    rules = compiled.count("comment ")
    print(f"profile: {profile} ({rules} kernel rules), {runs} runs each, medians")
    rows = [
        ("nft -f (reference)", nft_samples),
        ("appliance apply (CLI, table absent)", cli_samples),
        ("appliance apply (CLI, no change)", noop_samples),
        ("appliance apply (in-process, table absent)", inproc_samples),
        ("python3 -c pass (interpreter start-up)", python_samples),
    ]
    for label, samples in rows:
        median = statistics.median(samples)
        print(f"  {label:<44} {median * 1000:8.1f} ms   x{median / base:5.2f} of nft -f")
    Path(script).unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
