"""Set elements over nf_tables netlink (appliance/adapters/nfsets.py) against raw `nft -f`.

In one run, for a hash set and an interval set of IPv4 elements (N of them, deterministic),
each in a fresh namespace, the same kernel changes made by `nft -f` of a script and by a
child process that only loads the spans (a binary file) and calls ``NfSets.apply``:

- load: the first load of N elements into the empty set;
- delta: D/2 elements deleted and D/2 added to the loaded set, the median of three
  (each but the last undone; for the interval set nft is not run: nftables 1.0.6 deletes
  interval elements in quadratic time, minutes for 50k);
- refill: the set flushed and refilled with N other elements in one transaction;
- dump: `nft list set` against ``NfSets.dump`` of the N elements (the child checks them);
- chunk curve: the hash delta applied with batches of several sizes (each applied, then
  undone), time in the child.

Time is wall time of the whole process (for the child: interpreter start, reading the
spans and the apply); "apply in-process" is the adapter's call alone, as the daemon pays
it. Peak RSS is nft's ru_maxrss (wait4; it starts from the bench's own ~20 MiB, kept
across exec) and the child's VmHWM. B/element is the child's peak above its RSS before it
read the spans, over N (the spans included), "apply B/element" the peak above its RSS with
the spans loaded. Interval sets above --dump-limit are not listed: the kernel's rbtree
walk starts over for every 32 KiB message of a dump (quadratic, for nft as for us).

Prints the tables with the ratios against `nft -f`, appends them with the command to
bench/RESULTS.md (unless --no-append).

    sudo .venv/bin/python -m bench.sets_netlink [--size 1000000] [--delta 100000]

``--refill-curve D ...``: instead, for a hash and an interval set of N elements, each delta
size D made two ways on the same loaded set, in-process in this process: the chunked delta
(D/2 deleted and D/2 added; then D deleted only) against a flush and refill of the whole
set in one transaction with the same result; each undone after it. The ratio refill/delta
is what the engine's choice between them rests on (appliance/engine.py, ``refill_cheaper``).

    sudo .venv/bin/python -m bench.sets_netlink --refill-curve 1000 10000 100000 500000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"
CHUNKS = [1024, 4096, 16384, 65536, 262144]


@dataclass
class Run:
    seconds: float
    peak_kib: int
    report: dict[str, float]


def measured(argv: list[str]) -> Run:
    """Wall time, peak RSS (wait4) and the JSON line the process printed, if any."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        lines = [line for line in out.read().decode().splitlines() if line.startswith("{")]
        if proc.returncode != 0:
            problem = err.read().decode().strip() or f"exit {proc.returncode}"
            raise SystemExit(f"{' '.join(argv[:8])}...: {problem}")
    return Run(seconds, int(usage.ru_maxrss), json.loads(lines[-1]) if lines else {})


# ---- the child: only the adapter ------------------------------------------------------


def _rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _peak_kib() -> int:
    """This process's own peak RSS (VmHWM: since its exec, not its parent's)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def read_spans(path: str) -> object:
    """Spans of 32 bits from a file of their word arrays (firsts, then lasts)."""
    from appliance.model.intervals import Spans

    spans = Spans(32)
    if not path:
        return spans
    words = spans.words()
    with open(path, "rb") as source:
        count = os.fstat(source.fileno()).st_size // (len(words) * words[0].itemsize)
        for word in words:
            word.fromfile(source, count)
    return Spans.from_words(32, words)


def child(args: argparse.Namespace) -> int:
    from appliance.adapters.nfsets import NfSets

    before = _rss_kib()
    add = read_spans(args.add)
    delete = read_spans(args.delete)
    loaded = _rss_kib()
    report: dict[str, float] = {"rss_before_kib": before, "rss_loaded_kib": loaded}
    with NfSets(netns=args.ns) as sets:
        start = time.perf_counter()
        if args.action == "dump":
            found = sets.dump("s", width=32, interval=args.interval)
            report["apply_s"] = time.perf_counter() - start
            got = found.get(None)
            report["ok"] = float(got is not None and got.digest() == add.digest())
        elif args.action == "curve":
            for chunk in args.chunks:
                start = time.perf_counter()
                sets.apply(
                    "s", width=32, interval=args.interval, add=add, delete=delete, chunk=chunk
                )
                report[f"chunk_{chunk}"] = time.perf_counter() - start
                sets.apply("s", width=32, interval=args.interval, add=delete, delete=add)
        else:
            report["batches"] = sets.apply(
                "s",
                width=32,
                interval=args.interval,
                add=add,
                delete=delete,
                flush=args.action == "refill",
                chunk=args.chunk,
            )
            report["apply_s"] = time.perf_counter() - start
    report["peak_kib"] = _peak_kib()
    print(json.dumps(report), flush=True)
    return 0


# ---- the parent -----------------------------------------------------------------------


def write_spans(path: Path, pairs: list[tuple[int, int]]) -> None:
    from appliance.model.intervals import Spans

    spans = Spans(32)
    for first, last in pairs:
        spans.firsts.append(first)
        spans.lasts.append(last)
    with path.open("wb") as out:
        for word in spans.words():
            word.tofile(out)


def text(first: int, last: int) -> str:
    def ip(value: int) -> str:
        return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"

    return ip(first) if first == last else f"{ip(first)}-{ip(last)}"


def write_script(path: Path, lines: list[tuple[str, list[tuple[int, int]]]]) -> None:
    with path.open("w") as out:
        for command, pairs in lines:
            if command == "flush":
                out.write("flush set inet appliance s\n")
                continue
            out.write(f"{command} element inet appliance s {{ ")
            out.write(", ".join(text(first, last) for first, last in pairs))
            out.write(" }\n")


def elements(count: int, interval: bool, seed: int) -> list[tuple[int, int]]:
    """``count`` sorted, disjoint, non-adjacent IPv4 spans: hosts (hash) or hosts and
    short ranges (interval)."""
    rng = random.Random(seed)
    if not interval:
        return [(2 * v, 2 * v) for v in sorted(rng.sample(range(1 << 23, 1 << 30), count))]
    starts = sorted(rng.sample(range(1 << 27), count))
    return [(v * 32, v * 32 + (rng.randrange(16) if k % 2 else 0)) for k, v in enumerate(starts)]


@dataclass
class Shape:
    interval: bool
    nft: dict[str, Run]
    ours: dict[str, Run]


def generate(folder: Path, interval: bool, size: int, delta: int) -> None:
    """The elements' files (spans and nft scripts). Run in a child so that the parent stays
    small: a child's ru_maxrss starts from its parent's RSS (kept across exec)."""
    kind = "interval" if interval else "hash"
    pool = elements(2 * size + delta // 2, interval, seed=size + interval)
    rng = random.Random(7)
    rng.shuffle(pool)
    loaded = sorted(pool[:size])
    refill = sorted(pool[size : 2 * size])
    extra = sorted(pool[2 * size :])
    gone = sorted(rng.sample(loaded, delta // 2))
    after = sorted(set(loaded) - set(gone) | set(extra))
    for name, pairs in (
        ("loaded", loaded),
        ("refill", refill),
        ("extra", extra),
        ("gone", gone),
        ("after", after),
    ):
        write_spans(folder / f"{kind}-{name}.bin", pairs)
    scripts = {
        "load": [("add", loaded)],
        "delta": [("delete", gone), ("add", extra)],
        "undo": [("delete", extra), ("add", gone)],
        "refill": [("flush", []), ("add", refill)],
    }
    for name, lines in scripts.items():
        write_script(folder / f"{kind}-{name}.nft", lines)


def rounds(change: Callable[[], Run], undo: Callable[[], Run], count: int = 3) -> Run:
    """The median of ``count`` runs of ``change``, each but the last undone after it."""
    runs = []
    for k in range(count):
        runs.append(change())
        if k < count - 1:
            undo()
    runs.sort(key=lambda run: run.seconds)
    middle = runs[count // 2]
    applied = sorted(run.report.get("apply_s", 0.0) for run in runs)
    return Run(middle.seconds, middle.peak_kib, {**middle.report, "apply_s": applied[count // 2]})


def bench_shape(
    interval: bool, size: int, delta: int, folder: Path, chunk: int, dump_limit: int
) -> Shape:
    kind = "interval" if interval else "hash"
    maker = [sys.executable, "-m", "bench.sets_netlink", "--generate", str(folder)]
    maker += ["--size", str(size), "--delta", str(delta)] + (["--interval"] if interval else [])
    subprocess.run(maker, check=True)
    files = {
        name: folder / f"{kind}-{name}.bin"
        for name in ("loaded", "refill", "extra", "gone", "after")
    }
    ns = f"nlbench-{uuid.uuid4().hex[:8]}"
    exec_ns = ["ip", "netns", "exec", ns]
    flags = " flags interval;" if interval else f" size {4 * size};"
    setup = f"table inet appliance {{ set s {{ type ipv4_addr;{flags} }}; }}\n"
    me = [sys.executable, "-m", "bench.sets_netlink", "--child", "--ns", ns]
    if interval:
        me.append("--interval")

    def ours(action: str, add: str = "", delete: str = "", *extra_args: str) -> Run:
        argv = [*me, "--action", action, "--add", add, "--delete", delete, "--chunk", str(chunk)]
        return measured([*argv, *extra_args])

    def nft_file(name: str) -> Run:
        return measured([*exec_ns, "nft", "-f", str(folder / f"{kind}-{name}.nft")])

    def reset() -> None:
        subprocess.run([*exec_ns, "nft", "flush", "set", "inet", "appliance", "s"], check=True)

    subprocess.run(["ip", "netns", "add", ns], check=True)
    nft: dict[str, Run] = {}
    mine: dict[str, Run] = {}
    try:
        subprocess.run([*exec_ns, "nft", "-f", "-"], input=setup.encode(), check=True)
        print(f"{kind}: nft -f load", flush=True)
        nft["load"] = nft_file("load")
        dump = not interval or size <= dump_limit
        if dump:
            nft["dump"] = measured([*exec_ns, "nft", "list", "set", "inet", "appliance", "s"])
        if not interval:
            print(f"{kind}: nft -f delta", flush=True)
            nft["delta"] = rounds(lambda: nft_file("delta"), lambda: nft_file("undo"))
        print(f"{kind}: nft -f flush and refill", flush=True)
        nft["refill"] = nft_file("refill")
        reset()
        print(f"{kind}: adapter load, dump, delta, refill", flush=True)
        mine["load"] = ours("load", str(files["loaded"]))
        if dump:
            mine["dump"] = ours("dump", str(files["loaded"]))
        mine["delta"] = rounds(
            lambda: ours("delta", str(files["extra"]), str(files["gone"])),
            lambda: ours("delta", str(files["gone"]), str(files["extra"])),
        )
        check = ours("dump", str(files["after"])) if dump else None
        if check is not None and not check.report.get("ok"):
            raise SystemExit(f"{kind}: the set after the delta is not what it should be")
        mine["refill"] = ours("refill", str(files["refill"]))
        check = ours("dump", str(files["refill"])) if dump else None
        if check is not None and not check.report.get("ok"):
            raise SystemExit(f"{kind}: the set after the refill is not what it should be")
        if dump and not mine["dump"].report.get("ok"):
            raise SystemExit(f"{kind}: the dump is not what was loaded")
        if not interval:
            reset()
            ours("load", str(files["loaded"]))
            print(f"{kind}: chunk curve", flush=True)
            mine["curve"] = ours(
                "curve", str(files["extra"]), str(files["gone"]), "--chunks", *map(str, CHUNKS)
            )
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    return Shape(interval, nft, mine)


def table(shapes: list[Shape], size: int) -> list[str]:
    lines = [
        "| set | change | nft -f | adapter (process) | ratio | adapter apply in-process "
        "| ratio | batches | nft peak RSS | adapter peak RSS | B/element | apply B/element |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for shape in shapes:
        kind = "interval" if shape.interval else "hash"
        for change in ("load", "delta", "refill", "dump"):
            if change not in shape.ours:
                continue
            ours = shape.ours[change]
            theirs = shape.nft.get(change)
            peak = ours.report["peak_kib"]
            per = (peak - ours.report["rss_before_kib"]) * 1024 / size
            apply_per = (peak - ours.report["rss_loaded_kib"]) * 1024 / size
            cells = [
                kind,
                "list set / dump" if change == "dump" else change,
                f"{theirs.seconds:.2f} s" if theirs else "not run (nft 1.0.6: quadratic)",
                f"{ours.seconds:.2f} s",
                f"{ours.seconds / theirs.seconds:.2f}x" if theirs else "",
                f"{ours.report['apply_s']:.2f} s",
                f"{ours.report['apply_s'] / theirs.seconds:.2f}x" if theirs else "",
                str(int(ours.report.get("batches", 0)) or ""),
                f"{theirs.peak_kib / 1024:.0f} MiB" if theirs else "",
                f"{peak / 1024:.0f} MiB",
                f"{per:.0f}",
                f"{apply_per:.0f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def curve_lines(shapes: list[Shape], delta: int) -> list[str]:
    lines = [
        f"Chunk size against the time of the hash delta ({delta:,} elements), in-process:",
        "",
        "| chunk (elements per transaction) | " + " | ".join(f"{c:,}" for c in CHUNKS) + " |",
        "|---|" + "---:|" * len(CHUNKS),
    ]
    for shape in shapes:
        curve = shape.ours.get("curve")
        if curve is not None:
            cells = " | ".join(f"{curve.report[f'chunk_{c}']:.3f} s" for c in CHUNKS)
            lines.append(f"| delta time | {cells} |")
    return lines


def spans_of(pairs: list[tuple[int, int]]) -> object:
    from appliance.model.intervals import Spans

    spans = Spans(32)
    for first, last in pairs:
        spans.firsts.append(first)
        spans.lasts.append(last)
    return spans


@dataclass
class Choice:
    shape: str
    mix: str  # "half" (D/2 deleted, D/2 added) or "deletes" (D deleted)
    delta: int
    delta_s: float
    refill_s: float


def refill_curve(size: int, deltas: list[int], shapes: list[str]) -> list[Choice]:
    """For each shape and delta size: the chunked delta against a flush and refill with the
    same result, on the same loaded set, in this process."""
    from appliance.adapters.nfsets import NfSets

    found: list[Choice] = []
    for shape in shapes:
        interval = shape == "interval"
        pool = elements(size + max(deltas) // 2, interval, seed=size + interval)
        rng = random.Random(11)
        rng.shuffle(pool)
        loaded_pairs = sorted(pool[:size])
        spare = pool[size:]
        loaded = spans_of(loaded_pairs)
        ns = f"nlrefill-{uuid.uuid4().hex[:8]}"
        flags = " flags interval;" if interval else f" size {4 * size};"
        setup = f"table inet appliance {{ set s {{ type ipv4_addr;{flags} }}; }}\n"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            subprocess.run(
                ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=setup.encode(), check=True
            )
            with NfSets(netns=ns) as sets:

                def apply(interval: bool = interval, **kw: object) -> float:
                    start = time.perf_counter()
                    sets.apply("s", width=32, interval=interval, **kw)  # type: ignore[arg-type]
                    return time.perf_counter() - start

                print(f"{shape}: load {size:,}", flush=True)
                apply(add=loaded, delete=None)
                for delta in deltas:
                    for mix in ("half", "deletes"):
                        gone_n = delta // 2 if mix == "half" else delta
                        extra_pairs = sorted(spare[: delta // 2]) if mix == "half" else []
                        gone_pairs = sorted(rng.sample(loaded_pairs, gone_n))
                        gone, extra = spans_of(gone_pairs), spans_of(extra_pairs)
                        after = spans_of(
                            sorted(set(loaded_pairs) - set(gone_pairs) | set(extra_pairs))
                        )
                        delta_s = apply(add=extra, delete=gone)
                        apply(add=gone, delete=extra)  # undone
                        refill_s = apply(add=after, delete=None, flush=True)
                        apply(add=loaded, delete=None, flush=True)  # undone
                        print(
                            f"{shape} {mix} {delta:,}: delta {delta_s:.3f} s, "
                            f"refill {refill_s:.3f} s",
                            flush=True,
                        )
                        found.append(Choice(shape, mix, delta, delta_s, refill_s))
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)
    return found


def choice_lines(choices: list[Choice], size: int) -> list[str]:
    lines = [
        f"| set ({size:,} elements) | change | delta | flush and refill | refill / delta |",
        "|---|---|---:|---:|---:|",
    ]
    for c in choices:
        change = (
            f"{c.delta // 2:,} deleted, {c.delta // 2:,} added"
            if c.mix == "half"
            else f"{c.delta:,} deleted"
        )
        lines.append(
            f"| {c.shape} | {change} | {c.delta_s:.3f} s | {c.refill_s:.3f} s "
            f"| {c.refill_s / c.delta_s:.2f} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--refill-curve", type=int, nargs="+", metavar="D")
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--delta", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=None)
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument(
        "--dump-limit",
        type=int,
        default=200_000,
        help="list/dump interval sets up to this size only (the kernel's rbtree walk "
        "starts over for every 32 KiB message: quadratic)",
    )
    parser.add_argument("--shapes", nargs="+", default=["hash", "interval"])
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ns", help=argparse.SUPPRESS)
    parser.add_argument("--action", help=argparse.SUPPRESS)
    parser.add_argument("--add", default="", help=argparse.SUPPRESS)
    parser.add_argument("--delete", default="", help=argparse.SUPPRESS)
    parser.add_argument("--interval", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--chunks", type=int, nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.generate:
        generate(args.generate, args.interval, args.size, args.delta)
        return 0
    if args.refill_curve:
        start_load = os.getloadavg()[0]
        choices = refill_curve(args.size, args.refill_curve, args.shapes)
        lines = choice_lines(choices, args.size)
        print("\n".join(lines))
        if not args.no_append:
            stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            command = (
                f"sudo .venv/bin/python -m bench.sets_netlink --size {args.size} "
                f"--refill-curve {' '.join(map(str, args.refill_curve))}"
            )
            with RESULTS.open("a") as out:
                out.write(
                    f"\n`{command}` ({stamp}, load average {start_load:.1f} at the start, "
                    f"{os.getloadavg()[0]:.1f} at the end):\n\n" + "\n".join(lines) + "\n"
                )
        return 0
    from appliance.adapters.nfsets import DEFAULT_CHUNK

    chunk = args.chunk or DEFAULT_CHUNK
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "appliance")], check=True)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        shapes = [
            bench_shape(interval, args.size, args.delta, Path(tmp), chunk, args.dump_limit)
            for interval in (False, True)
            if ("interval" if interval else "hash") in args.shapes
        ]
    lines = [*table(shapes, args.size), "", *curve_lines(shapes, args.delta)]
    print("\n".join(lines))
    if not args.no_append:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        end_load = os.getloadavg()[0]
        command = (
            f"sudo .venv/bin/python -m bench.sets_netlink --size {args.size} --delta {args.delta}"
        )
        if args.chunk:
            command += f" --chunk {args.chunk}"
        with RESULTS.open("a") as out:
            out.write(
                f"\n## Set elements over netlink against nft -f ({stamp}, load average "
                f"{load:.1f} at the start, {end_load:.1f} at the end)\n\n`{command}`"
                f" (batches of {chunk:,} elements)\n\n" + "\n".join(lines) + "\n"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
