"""`appliance apply PROFILE` against `nft -f` of the same compiled ruleset, same run.

Each sample starts from an empty namespace (the table absent), so both load the whole
table. Also timed: the in-process apply (no interpreter start-up), and a no-change apply
(the plan finds nothing to do). Prints medians and ratios against `nft -f`.

With ``--sets N``: a profile with one hash set of N IPv4 hosts (an ``elements_file``), in
a fresh namespace: the first load of the set (the table absent) and a change of ``--delta``
elements (half deleted, half added), each by `appliance apply` as a new process against
`nft -f` of the same change (the compiled ruleset; an ``add element``/``delete element``
script), in the same run, the median of ``--runs`` (each delta undone by applying the
first profile again, each load after the table was deleted). ``--profile-cli DIR`` also
writes cProfile files of one CLI load and one CLI delta there; ``--stages`` times one more
CLI delta by stage (imports, the record's read and write, the diff, the kernel), wall and
CPU, in the new process itself. Appends the figures to bench/RESULTS.md unless
--no-append.

    sudo .venv/bin/python -m bench.apply_vs_nft [PROFILE] [--runs N]
    sudo .venv/bin/python -m bench.apply_vs_nft --sets 1000000 --delta 100000 --runs 3

``--tag-cost``: the kernel's side of a ``--delta`` change to a ``--sets`` set (1,000,000
by default) sent by ``appliance.adapters.nfsets`` with the ``comment "profile"`` tag the
apply puts on each added element, against the same change untagged, by turns.

``--floor N``: what N IPv4 lines cost in this interpreter at C speed at best (split,
``inet_aton`` with a round-trip check, sort; then the difference of two such sets of
integers both ways), the floor under any parse and plan of the whole set in Python.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bench.sets import PROFILE as SETS_PROFILE

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"


def children_cpu() -> float:
    """User and system CPU seconds of the children waited for so far."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def timed(action: Callable[[], object], reset: Callable[[], object], runs: int) -> list[float]:
    samples, cpu = [], []
    for _ in range(runs):
        reset()
        start, spent = time.perf_counter(), children_cpu()
        action()
        samples.append(time.perf_counter() - start)
        cpu.append(children_cpu() - spent)
    CPU_SAMPLES[id(samples)] = cpu
    return samples


def timed_undone(
    action: Callable[[], object], undo: Callable[[], object], runs: int
) -> list[float]:
    """``action`` timed ``runs`` times, each undone after it (untimed)."""
    samples, cpu = [], []
    for _ in range(runs):
        start, spent = time.perf_counter(), children_cpu()
        action()
        samples.append(time.perf_counter() - start)
        cpu.append(children_cpu() - spent)
        undo()
    CPU_SAMPLES[id(samples)] = cpu
    return samples


CPU_SAMPLES: dict[int, list[float]] = {}  # the CPU seconds (user + system) of each sample


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", nargs="?", default=str(REPO / "profiles" / "edge-gateway.toml"))
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--sets", type=int, metavar="N", help="a set of N elements")
    parser.add_argument("--delta", type=int, default=100_000, metavar="D")
    parser.add_argument("--profile-cli", type=Path, metavar="DIR")
    parser.add_argument("--check", action="store_true", help="count the set's elements after")
    parser.add_argument(
        "--scattered", action="store_true", help="the delta's lines spread through the file"
    )
    parser.add_argument("--floor", type=int, metavar="N", help="C-speed parse floor of N lines")
    parser.add_argument(
        "--stages", action="store_true", help="where one CLI delta's time goes, by stage"
    )
    parser.add_argument(
        "--tag-cost", action="store_true", help="the kernel's delta with the tag against none"
    )
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    if args.floor:
        return floor(args.floor, args.delta)
    ns = f"apbench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        if args.tag_cost:
            return tag_cost(ns, args.sets or 1_000_000, args.delta, args.runs or 7)
        if args.sets:
            return run_sets(ns, args)
        return run(ns, args.profile, args.runs or 21)
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

    state = tempfile.mkdtemp(prefix="apbench-state-")  # the apply's record: not the host's

    def cli_apply() -> None:
        subprocess.run(
            [*appliance, "apply", "--netns", ns, "--state-dir", state, profile],
            check=True,
            capture_output=True,
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
    shutil.rmtree(state, ignore_errors=True)
    return 0


def floor(size: int, delta: int) -> int:
    """The C-speed floor of parsing ``size`` IPv4 lines and planning a ``delta`` change."""
    import array
    import socket

    text = "".join(f"{a}\n" for a in addresses(size, seed=size))
    start = time.perf_counter()
    lines = text.split()
    packed = b"".join(map(socket.inet_aton, lines))
    quads = (packed[i : i + 4] for i in range(0, len(packed), 4))
    valid = list(map(socket.inet_ntoa, quads)) == lines
    words = array.array("I", packed)
    if sys.byteorder == "little":
        words.byteswap()
    values = sorted(words)
    parsed = time.perf_counter()
    old = set(values)
    new = set(values[delta // 2 :]) | set(range(1 << 25, (1 << 25) + delta // 2))
    added, gone = sorted(new - old), sorted(old - new)
    planned = time.perf_counter()
    print(
        f"{size:,} lines: split, inet_aton, checked, sorted {parsed - start:.2f} s "
        f"(valid: {valid}); the difference both ways ({len(added):,} added, {len(gone):,} "
        f"gone) {planned - parsed:.2f} s; load average {os.getloadavg()[0]:.1f}"
    )
    return 0


# the large-set benchmark's profile, with its one IPv4 hash set
SET_PROFILE = SETS_PROFILE.replace('"TYPE"', '"ipv4_addr"').replace("bench-sets", "bench-cli-sets")


def set_profile(folder: Path, name: str, elements: list[str], size: int) -> Path:
    listing = folder / f"{name}.txt"
    listing.write_text("".join(f"{e}\n" for e in elements))
    profile = folder / f"{name}.toml"
    profile.write_text(SET_PROFILE.replace("SIZE", str(size)).replace("ELEMENTS", str(listing)))
    return profile


def addresses(count: int, seed: int) -> list[str]:
    import random

    picked = random.Random(seed).sample(range(1 << 24), count)
    return [f"10.{v >> 16}.{(v >> 8) & 255}.{v & 255}" for v in picked]


def changed_lines(loaded: list[str], delta: int, scattered: bool) -> tuple[list[str], list[str]]:
    """The lines a change of ``delta`` takes away and those it keeps: the oldest half of
    ``delta`` (a feed that drops its oldest entries), or with ``scattered`` every n-th
    line throughout the file."""
    half = delta // 2
    if not scattered:
        return loaded[:half], loaded[half:]
    step = max(len(loaded) // max(half, 1), 1)
    taken = set(range(0, step * half, step))
    return [loaded[i] for i in sorted(taken)], [e for i, e in enumerate(loaded) if i not in taken]


def interleaved(kept: list[str], extra: list[str], scattered: bool) -> list[str]:
    """The changed file's lines: ``extra`` appended, or with ``scattered`` spread through."""
    if not scattered or not extra:
        return kept + extra
    step = max(len(kept) // len(extra), 1)
    lines: list[str] = []
    for i in range(len(extra)):
        lines += kept[i * step : (i + 1) * step]
        lines.append(extra[i])
    return lines + kept[len(extra) * step :]


STAGES = """
import json, resource, sys, time
def used():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_utime + r.ru_stime
spent = {}
def timed(owner, name, label):
    inner = getattr(owner, name)
    def wrapper(*args, **kwargs):
        wall, cpu = used()
        try:
            return inner(*args, **kwargs)
        finally:
            now, cpu_now = used()
            was = spent.get(label, (0.0, 0.0))
            spent[label] = (was[0] + now - wall, was[1] + cpu_now - cpu)
    setattr(owner, name, wrapper)
wall, cpu = used()
from appliance import applied, cli
from appliance.adapters import nfelements, nfsets
from appliance.engine import Engine
from appliance.model import elements_fast
from appliance.model.intervals import Spans
now, cpu_now = used()
spent["imports of the apply path"] = (now - wall, cpu_now - cpu)
timed(applied, "load_record", "the record read")
timed(elements_fast, "diff_hosts", "the diff of the elements file")
timed(nfelements, "build_batch", "the kernel: messages built")
timed(nfsets.NfSets, "_transact", "the kernel: transactions")
timed(Engine, "apply", "the engine's apply (the kernel's two rows in it)")
timed(applied, "save", "the record written")
timed(Spans, "digest", "the table hash's digests of the spans")
begin = used()
code = cli.main()  # as the program calls it (its arguments, its exit)
end = used()
spent["the CLI's main, all of it"] = (end[0] - begin[0], end[1] - begin[1])
print(json.dumps(spent))
sys.exit(code)
"""


def stages(ns: str, argv: list[str]) -> list[tuple[str, float, float]]:
    """One CLI delta in a new interpreter in the namespace, timed by stage (wall, CPU)."""
    start, cpu = time.perf_counter(), children_cpu()
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", STAGES, *argv],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    import json

    whole = ("the whole process (`ip netns exec`, Python's start)", time.perf_counter() - start)
    spent = json.loads(out.strip().splitlines()[-1])
    staged = [(label, wall, used) for label, (wall, used) in spent.items()]
    return [*staged, (*whole, children_cpu() - cpu)]


def _tagged_deltas(size: int, delta: int, runs: int) -> dict[str, list[tuple[float, float]]]:
    """In the namespace: ``size`` IPv4 elements loaded tagged, then ``runs`` times the
    same delta (half deleted, half added) sent with the profile's tag and without, by turns,
    each undone (untimed): wall and CPU (user + system: the kernel's work is in the
    process's system time) of each."""
    import random

    from appliance.adapters.nfsets import NfSets
    from appliance.model.intervals import Spans

    table = f"table inet appliance {{ set blocklist {{ type ipv4_addr; size {2 * size}; }}; }}"
    subprocess.run(["nft", "-f", "-"], input=table.encode(), check=True)
    picked = random.Random(size).sample(range(1 << 24), size + delta // 2)
    values = [(10 << 24) + v for v in picked]

    def spans(part: list[int]) -> Spans:
        return Spans.of(32, ((v, v) for v in sorted(part)))

    loaded, gone, extra = spans(values[:size]), spans(values[: delta // 2]), spans(values[size:])
    spent: dict[str, list[tuple[float, float]]] = {"profile": [], "none": []}

    def used() -> tuple[float, float]:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return time.perf_counter(), r.ru_utime + r.ru_stime

    with NfSets() as sets:
        sets.apply("blocklist", width=32, interval=False, add=loaded, delete=None, tag="profile")
        for _ in range(runs):
            for tag in ("profile", None):
                wall, cpu = used()
                sets.apply("blocklist", width=32, interval=False, add=extra, delete=gone, tag=tag)
                now, cpu_now = used()
                spent[tag or "none"].append((now - wall, cpu_now - cpu))
                sets.apply(
                    "blocklist", width=32, interval=False, add=gone, delete=extra, tag="profile"
                )
    return spent


def tag_cost(ns: str, size: int, delta: int, runs: int) -> int:
    """What the ``comment "profile"`` tag on each added element costs the kernel's delta."""
    from appliance.adapters.nsexec import run_in_netns

    spent = run_in_netns(ns, _tagged_deltas, size, delta, runs, timeout=900)
    none = statistics.median(cpu for _, cpu in spent["none"])
    for tag, samples in spent.items():
        wall = statistics.median(w for w, _ in samples)
        cpu = statistics.median(c for _, c in samples)
        print(
            f"delta of {delta:,} to {size:,}, tag {tag}: wall {wall * 1000:.1f} ms, CPU "
            f"{cpu * 1000:.1f} ms ({cpu / none:.2f}x untagged), median of {len(samples)}"
        )
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


def _count() -> int:
    from appliance.adapters.nfsets import NfSets

    with NfSets() as sets:
        return sets.count("blocklist")


def run_sets(ns: str, args: argparse.Namespace) -> int:
    """The first load and a delta of a large set: `appliance apply` against `nft -f`."""
    size, delta, runs = args.sets, args.delta, args.runs or 3
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "appliance")], check=True)
    appliance = [sys.executable, "-m", "appliance"]
    exec_ns = ["ip", "netns", "exec", ns]
    elements = addresses(size + delta // 2, seed=size)
    loaded, extra = elements[:size], elements[size:]
    gone, kept = changed_lines(loaded, delta, args.scattered)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        state = folder / "state"
        state.mkdir()
        first = set_profile(folder, "first", loaded, 2 * size)
        # the CLI's profile: its elements file changed in place, as a feed is updated
        feed = set_profile(folder, "feed", loaded, 2 * size)
        listing = folder / "feed.txt"
        first_bytes = listing.read_bytes()
        changed_bytes = "".join(f"{e}\n" for e in interleaved(kept, extra, args.scattered)).encode()
        script = folder / "first.nft"
        script.write_text(
            subprocess.run(
                [*appliance, "compile", str(first)], check=True, capture_output=True, text=True
            ).stdout
        )
        forward = folder / "forward.nft"
        forward.write_text(
            f"delete element inet appliance blocklist {{ {', '.join(gone)} }}\n"
            f"add element inet appliance blocklist {{ {', '.join(extra)} }}\n"
        )
        backward = folder / "backward.nft"
        backward.write_text(
            f"delete element inet appliance blocklist {{ {', '.join(extra)} }}\n"
            f"add element inet appliance blocklist {{ {', '.join(gone)} }}\n"
        )

        def sh(*argv: str) -> None:
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)

        def drop() -> None:
            subprocess.run(
                [*exec_ns, "nft", "delete", "table", "inet", "appliance"], capture_output=True
            )

        def cli(profile: Path, *extra_args: str) -> list[str]:
            return [
                *appliance,
                "apply",
                "--netns",
                ns,
                "--state-dir",
                str(state),
                *extra_args,
                str(profile),
            ]

        nft_load = timed(lambda: sh(*exec_ns, "nft", "-f", str(script)), drop, runs)
        nft_delta = timed_undone(
            lambda: sh(*exec_ns, "nft", "-f", str(forward)),
            lambda: sh(*exec_ns, "nft", "-f", str(backward)),
            runs,
        )
        drop()

        def fresh() -> None:
            drop()
            listing.write_bytes(first_bytes)

        def undo_delta() -> None:
            listing.write_bytes(first_bytes)
            sh(*cli(feed))
            listing.write_bytes(changed_bytes)

        cli_load = timed(lambda: sh(*cli(feed)), fresh, runs)
        listing.write_bytes(changed_bytes)
        cli_delta = timed_undone(lambda: sh(*cli(feed)), undo_delta, runs)
        staged = stages(ns, cli(feed)[3:]) if args.stages else []
        if args.profile_cli:
            args.profile_cli.mkdir(parents=True, exist_ok=True)
            profiled = [sys.executable, "-m", "cProfile", "-o"]
            fresh()
            load_out, delta_out = args.profile_cli / "load.prof", args.profile_cli / "delta.prof"
            sh(*profiled, str(load_out), "-m", "appliance", *cli(feed)[3:])
            listing.write_bytes(changed_bytes)
            sh(*profiled, str(delta_out), "-m", "appliance", *cli(feed)[3:])
        held = None
        if args.check:  # a dump of the whole set (a minute at 1M)
            from appliance.adapters.nsexec import run_in_netns

            held = run_in_netns(ns, _count, timeout=900)
    rows = [
        ("first load: nft -f", nft_load, nft_load),
        ("first load: appliance apply", cli_load, nft_load),
        (f"delta of {delta:,}: nft -f", nft_delta, nft_delta),
        (f"delta of {delta:,}: appliance apply", cli_delta, nft_delta),
    ]
    lines = [
        "| change | median | samples | ratio to nft -f | CPU (user + system) | CPU ratio |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for label, samples, base in rows:
        median = statistics.median(samples)
        shown = " ".join(f"{s:.2f}" for s in samples)
        ratio = median / statistics.median(base)
        cpu = statistics.median(CPU_SAMPLES[id(samples)])
        cpu_ratio = cpu / statistics.median(CPU_SAMPLES[id(base)])
        cells = [label, f"{median:.2f} s", shown, f"{ratio:.2f}x", f"{cpu:.2f} s"]
        lines.append(f"| {' | '.join(cells)} | {cpu_ratio:.2f}x |")
    if staged:
        lines += ["", "| one CLI delta, by stage | wall | CPU (user + system) |", "|---|---:|---:|"]
        lines += [
            f"| {label} | {wall * 1000:.0f} ms | {cpu * 1000:.0f} ms |"
            for label, wall, cpu in staged
        ]
    print("\n".join(lines))
    if held is not None:
        print(f"elements held after the last apply: {held:,} (expected {size:,})")
    if not args.no_append:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        load = os.getloadavg()[0]
        with RESULTS.open("a") as out:
            out.write(
                f"\n`sudo .venv/bin/python -m bench.apply_vs_nft --sets {size} --delta {delta}"
                f" --runs {runs}{' --scattered' if args.scattered else ''}"
                f"{' --check' if args.check else ''}{' --stages' if args.stages else ''}`"
                f" ({stamp}, load average"
                f" {load:.1f}):\n\n" + "\n".join(lines) + "\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
