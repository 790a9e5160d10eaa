"""Inspection throughput: the engine against scapy dissection and a dpkt parse-only loop.

A mixed capture (web, DNS, TLS, GTP-U, bulk TCP; at least 200k packets) is generated, written
as a pcap and read back into memory. Each contender then goes over the same packets (scapy,
about 40 times slower than dpkt, over every 10th of them, so that a run takes seconds rather
than minutes); every figure is the best of three interleaved rounds and times the packet loop
only (no start-up, no file reading). The engine does its full work: decode, flow tracking,
app-layer parsing, the shipped signatures (profiles/rules/edge.rules) and all four detectors.

    .venv/bin/python bench/inspect_throughput.py [--packets 200000] [--runs 3]
        [--scapy-every N] [--pcap FILE] [--rules FILE]... [--flood] [--cpu] [--breakdown]
        [--profile N] [--python-scans] [--tls-records] [--encryption track-only|full]
        [--warm] [--sustained N] [--flood-kind syn|ack|rst|fin|data|gtp]

With the compiled fast path built (setup.py), the engine runs twice a round: with it
("engine") and with its pure-Python twin ("twin", ``compiled=False``, the prefilters'
Python scans); the environment's ``APPLIANCE_INSPECT_CORE=python`` leaves only the twin.

``--cpu`` times each loop by the process's CPU time instead of the wall clock. ``--rules``
adds rule files to the shipped ones (loaded as the daemon does: a rule the engine
cannot run is skipped); ``--flood`` replaces the mix by TCP SYNs that each open a new flow
(``--flood-kind``: ACKs, RSTs, FIN/ACKs or ACKs with data instead, none after a handshake,
or SYNs from UEs carried in G-PDUs);
``--breakdown`` times each kind of packet on its own; ``--profile N`` runs the engine's loop
once more under cProfile and prints the N functions that take most time of their own.
``--tls-records`` makes the mix's TLS flows (and those in GTP-U tunnels) carry TLS records
both ways, the server's handshake then application data, as real ones do (by default their
servers send zeros, the capture every earlier figure was measured on); ``--encryption``
sets ``[inspect].encryption_handling`` (``full``: the payload of encrypted TLS inspected
too). ``--warm`` measures the engine as a daemon runs it, its rule groups built: each engine
first takes, untimed, a capture of the same kind from another seed (a fifth as many packets,
earlier in time), whose flows are other flows; by default each round's engine is new, and
builds each group the first time a packet needs it (about a millisecond each with a large
rule set), inside the timed loop. ``--sustained N`` then times one engine over N passes of
the capture, each pass's flows new, as a long-running daemon sees traffic: the garbage
collector's full passes, which a round of the capture may or may not meet, are in it; it
runs twice, the rule set settled as the daemon settles it (``appliance.inspect.settle``)
and not.

Goals: at least 100x scapy and at least 5x dpkt parse-only (typical mix), 1x (flood).
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.inspect import core
from appliance.inspect.engine import InspectionEngine
from appliance.inspect.pcap import read_capture, write_pcap
from appliance.inspect.prefilter import TwinPrefilter
from appliance.inspect.rules import Variables, load_rules
from appliance.inspect.settle import settle
from appliance.lab.mix import FLOOD_FLAGS, Frame, Mix, flood, make_engine
from appliance.model.values import parse_network


def load(path: str) -> list[Frame]:
    with open(path, "rb") as handle:
        return list(read_capture(handle, path))


# ---- contenders ---------------------------------------------------------------------------


EXTRA_RULES: list[str] = []
FLOOD_KIND = ["syn"]  # --flood-kind
# [inspect].encryption_handling of the engines measured ("track-only", Suricata's default)
ENCRYPTION = ["track-only"]
# the capture each engine takes, untimed, before the timed loop (--warm): none by default
WARM_UP: list[Frame] = []
# the contenders' timer: wall clock, or with --cpu this process's CPU time (steadier on a
# machine other work keeps busy)
CLOCK = [time.perf_counter]


def bench_engine(
    compiled: bool = True, scanner: bool = True, settled: bool = True
) -> InspectionEngine:
    """The lab's engine (shipped rules, all four detectors), plus ``--rules`` files; with the
    compiled fast path if built (``compiled``), else its Python twin; ``scanner`` False: the
    compiled fast path with the prefilters' Python scans."""
    engine = make_engine()
    signatures = list(engine.config.signatures)
    if EXTRA_RULES:
        variables = Variables.from_networks([parse_network("10.0.0.0/8")])
        signatures += load_rules(EXTRA_RULES, variables).signatures
    bench = InspectionEngine(
        replace(
            engine.config,
            signatures=signatures,
            compiled=compiled,
            encryption_handling=ENCRYPTION[0],
        )
    )
    if not compiled or not scanner:
        bench.matcher._prefilter = TwinPrefilter  # the prefilters' Python scans
    if settled:
        settle()  # as the daemon and `appliance inspect` do once an engine is built
    return bench


def run_engine(
    frames: list[Frame], compiled: bool = True, scanner: bool = True
) -> tuple[float, int, int]:
    engine = bench_engine(compiled, scanner)
    for ts, data, linktype in WARM_UP:
        engine.process(ts, data, linktype)
    engine.stats.fast = 0
    alerts = 0
    rest = iter(frames)
    started = CLOCK[0]()
    for ts, data, linktype in rest:  # (the first packet loads the compiled fast path)
        if engine.process(ts, data, linktype):
            alerts += 1
        break
    process = engine.process  # as the daemon reads it for each batch
    for ts, data, linktype in rest:
        if process(ts, data, linktype):
            alerts += 1
    return CLOCK[0]() - started, alerts, engine.stats.fast


def run_dpkt(frames: list[Frame]) -> tuple[float, int]:
    import dpkt  # type: ignore[import-untyped]

    ethernet = dpkt.ethernet.Ethernet
    started = CLOCK[0]()
    for _ts, data, _linktype in frames:
        ethernet(data)
    return CLOCK[0]() - started, 0


def run_scapy(frames: list[Frame]) -> tuple[float, int]:
    from scapy.contrib.gtp import GTP_U_Header  # noqa: F401  (binds GTP-U to UDP 2152)
    from scapy.layers.l2 import Ether

    started = CLOCK[0]()
    for _ts, data, _linktype in frames:
        Ether(data)
    return CLOCK[0]() - started, 0


def kind(data: bytes) -> str:
    proto = data[23]
    ports = set(struct.unpack_from("!HH", data, 34))
    if proto == 17:
        return "gtp-u" if 2152 in ports else "dns"
    return "web" if 80 in ports else "tls" if 443 in ports else "bulk"


def breakdown(frames: list[Frame]) -> None:
    """Per kind of packet and path taken: engine and dpkt microseconds a packet (timed one
    packet at a time, so both include the timer's own cost)."""
    import dpkt  # type: ignore[import-untyped]

    engine = bench_engine()
    for ts, data, linktype in WARM_UP:
        engine.process(ts, data, linktype)
    process = engine.process  # (the compiled fast path's own, once a packet loaded it)
    ethernet = dpkt.ethernet.Ethernet
    clock = time.perf_counter
    spent: dict[str, list[float]] = {}
    for ts, data, linktype in frames:
        before = engine.stats.fast
        started = clock()
        process(ts, data, linktype)
        middle = clock()
        ethernet(data)
        done = clock()
        path = "fast" if engine.stats.fast > before else "full"
        row = spent.setdefault(f"{kind(data)}/{path}", [0, 0.0, 0.0])
        row[0] += 1
        row[1] += middle - started
        row[2] += done - middle
    total = sum(row[1] for row in spent.values())
    print(f"{'packets':16} {'share':>6} {'engine us':>10} {'dpkt us':>8} {'engine time':>12}")
    for name, (count, engine_s, dpkt_s) in sorted(spent.items()):
        print(
            f"{name:16} {count * 100 / len(frames):5.1f}% {engine_s / count * 1e6:10.1f} "
            f"{dpkt_s / count * 1e6:8.1f} {engine_s * 100 / total:11.0f}%"
        )
    # The ceiling of this mix: even if the full path cost nothing, the fast path's packets
    # alone would still take this long.
    dpkt_total = sum(row[2] for row in spent.values())
    fast_only = sum(row[1] for name, row in spent.items() if name.endswith("/fast"))
    print(
        f"engine/dpkt as timed here {dpkt_total / total:.2f}x; with a full path costing "
        f"nothing it would be {dpkt_total / fast_only:.2f}x (goal >= 5x)"
    )
    if fast_only < total:
        print(
            f"with fast-path packets costing nothing it would be "
            f"{dpkt_total / (total - fast_only):.2f}x"
        )


def profile(frames: list[Frame], top: int) -> None:
    """The engine's loop under cProfile: where its time goes, by function."""
    import cProfile
    import pstats

    engine = bench_engine()
    for ts, data, linktype in WARM_UP:
        engine.process(ts, data, linktype)
    process = engine.process  # (the compiled fast path's own, once a packet loaded it)
    profiler = cProfile.Profile()
    profiler.enable()
    for ts, data, linktype in frames:
        process(ts, data, linktype)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def sustained(frames: list[Frame], passes: int, settled: bool) -> tuple[float, int, float, float]:
    """One engine, as a daemon runs it, over ``passes`` passes of the capture (each pass's
    timestamps moved past the last one's, so its flows are new ones), its rule set settled
    (``settle``) or not: the loop's time; the full collections in it (how many, their time),
    which the rounds above may or may not meet; and the time of one more afterwards, as the
    daemon runs one after each policy load."""
    import gc

    if not settled:
        gc.unfreeze()  # (what earlier engines' settle froze)
    engine = bench_engine(settled=settled)
    if not settled:
        gc.collect()  # as after a load, without settle
    for ts, data, linktype in WARM_UP:
        engine.process(ts, data, linktype)
    process = engine.process  # (the compiled fast path's own, once a packet loaded it)
    span = frames[-1][0] - frames[0][0] + 1.0
    full: list[float] = []

    def timed(phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2:
            full.append(time.perf_counter() * (1 if phase == "stop" else -1))

    gc.callbacks.append(timed)
    started = CLOCK[0]()
    for n in range(passes):
        shift = n * span
        for ts, data, linktype in frames:
            process(ts + shift, data, linktype)
    elapsed = CLOCK[0]() - started
    gc.callbacks.remove(timed)
    started = time.perf_counter()
    gc.collect()  # as the daemon's after each policy load (daemon.heap.release)
    return elapsed, len(full) // 2, sum(full), time.perf_counter() - started


def run_dpkt_passes(frames: list[Frame], passes: int) -> float:
    """dpkt over ``passes`` passes of the capture, the reference of ``sustained``."""
    return sum(run_dpkt(frames)[0] for _ in range(passes))


def warm_up(frames: list[Frame], floods: bool, records: bool) -> list[Frame]:
    """A capture of the same kind as ``frames`` from another seed, a fifth as long, whose
    timestamps end a second before the first of ``frames``."""
    count = max(1, len(frames) // 5)
    other = flood(count, 8, FLOOD_KIND[0]) if floods else Mix(seed=8, records=records).build(count)
    shift = frames[0][0] - 1.0 - other[-1][0]
    return [(ts + shift, data, linktype) for ts, data, linktype in other]


def mix_summary(frames: list[Frame]) -> str:
    counts: dict[str, int] = {"web": 0, "tls": 0, "dns": 0, "gtp-u": 0, "bulk": 0}
    for _ts, data, _lt in frames:
        counts[kind(data)] += 1
    return ", ".join(f"{k} {v * 100 / len(frames):.0f}%" for k, v in counts.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--scapy-every",
        type=int,
        default=10,
        help="scapy dissects every Nth packet of the same capture (default 10; 1: all)",
    )
    parser.add_argument("--pcap", help="keep the generated capture here")
    parser.add_argument(
        "--breakdown", action="store_true", help="also time each kind of packet on its own"
    )
    parser.add_argument("--rules", action="append", default=[], help="add a rule file")
    parser.add_argument("--flood", action="store_true", help="every packet opens a new flow")
    parser.add_argument(
        "--flood-kind",
        choices=sorted(FLOOD_FLAGS),
        default="syn",
        help="the flood's segments: bare SYNs (default), ACKs, RSTs, FIN/ACKs, or ACKs with "
        "64 bytes of data, none after a handshake; or bare SYNs from UEs in G-PDUs (gtp)",
    )
    parser.add_argument(
        "--tls-records",
        action="store_true",
        help="the mix's TLS flows carry TLS records both ways (the server's handshake, "
        "application data), as real ones do",
    )
    parser.add_argument(
        "--encryption",
        choices=("track-only", "full"),
        default="track-only",
        help="[inspect].encryption_handling of the engine (default track-only)",
    )
    parser.add_argument(
        "--warm",
        action="store_true",
        help="each engine first takes, untimed, a capture of the same kind from another seed "
        "(its rule groups built, as in a running daemon)",
    )
    parser.add_argument(
        "--cpu", action="store_true", help="time by this process's CPU time, not wall clock"
    )
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="also profile the engine (top N)"
    )
    parser.add_argument(
        "--sustained",
        type=int,
        default=0,
        metavar="N",
        help="also one engine over N passes of the capture, its rule set settled and not "
        "(the garbage collector's full passes included)",
    )
    parser.add_argument(
        "--python-scans",
        action="store_true",
        help="also the compiled fast path with the prefilters' Python scans (TwinPrefilter)",
    )
    args = parser.parse_args(argv)
    EXTRA_RULES[:] = args.rules
    FLOOD_KIND[0] = args.flood_kind
    ENCRYPTION[0] = args.encryption
    if args.cpu:
        CLOCK[0] = time.process_time

    started = time.perf_counter()
    generated = (
        flood(args.packets, kind=args.flood_kind)
        if args.flood
        else Mix(records=args.tls_records).build(args.packets)
    )
    # the capture goes through a file, as a real one would; it is kept only where --pcap says
    with tempfile.TemporaryDirectory(prefix="inspect-bench-") as scratch:
        path = args.pcap or os.path.join(scratch, "mix.pcap")
        with open(path, "wb") as handle:
            write_pcap(handle, generated)
        frames = load(path)
        size = os.path.getsize(path)
    del generated
    if args.warm:
        WARM_UP[:] = warm_up(frames, args.flood, args.tls_records)
    built = time.perf_counter() - started
    kept = f" ({path})" if args.pcap else ""
    print(f"capture: {len(frames)} packets, {size / 1e6:.1f} MB{kept}, built in {built:.1f}s")
    print(f"mix: {mix_summary(frames)}")
    print(f"engine: {len(bench_engine().matcher.signatures)} signatures, 4 detectors")
    if WARM_UP:
        print(f"warm: each engine first takes {len(WARM_UP)} packets of another seed, untimed")

    scapy_frames = frames
    if args.scapy_every > 1:
        scapy_frames = frames[:: args.scapy_every]
    # rounds interleave the contenders, so that a busy machine slows them alike
    times: dict[str, list[float]] = {
        "engine": [],
        "twin": [],
        "python scans": [],
        "dpkt": [],
        "scapy": [],
    }
    alerting = fast = 0
    probe = bench_engine()
    compiled = probe._core is not None
    why = core.ENV + " or not built"
    if compiled:  # loaded by the first packet: the engine may still fall back to its twin
        probe.process(*frames[0])
        compiled = probe._core is not None
        why = "built, but the engine could not load it"
    print(f"compiled fast path: {'yes' if compiled else 'no (' + why + ')'}")
    for _ in range(args.runs):
        elapsed, alerting, fast = run_engine(frames)
        times["engine"].append(elapsed)
        if compiled:
            elapsed, twin_alerting, _ = run_engine(frames, compiled=False)
            times["twin"].append(elapsed)
            assert twin_alerting == alerting
            if args.python_scans:
                elapsed, scans_alerting, _ = run_engine(frames, scanner=False)
                times["python scans"].append(elapsed)
                assert scans_alerting == alerting
        times["dpkt"].append(run_dpkt(frames)[0])
        times["scapy"].append(run_scapy(scapy_frames)[0])
    engine_pps = len(frames) / min(times["engine"])
    dpkt_pps = len(frames) / min(times["dpkt"])
    scapy_pps = len(scapy_frames) / min(times["scapy"])
    print(
        f"engine      {engine_pps:12,.0f} packets/s  (best {min(times['engine']):.2f}s; "
        f"{alerting} packets alerted; {fast * 100 / len(frames):.0f}% on a fast path)"
    )
    print(f"dpkt parse  {dpkt_pps:12,.0f} packets/s  (best {min(times['dpkt']):.2f}s)")
    print(
        f"scapy       {scapy_pps:12,.0f} packets/s  (best {min(times['scapy']):.2f}s over "
        f"{len(scapy_frames)} packets: every {args.scapy_every}th)"
    )
    print(f"ratio engine/scapy {engine_pps / scapy_pps:8.1f}x  (goal >= 100x)")
    goal = "1x" if args.flood else "5x"
    print(f"ratio engine/dpkt  {engine_pps / dpkt_pps:8.2f}x  (goal >= {goal})")
    if compiled:
        twin_pps = len(frames) / min(times["twin"])
        print(
            f"twin        {twin_pps:12,.0f} packets/s  (best {min(times['twin']):.2f}s; "
            f"the Python twin of the compiled fast path)"
        )
        print(f"ratio twin/dpkt    {twin_pps / dpkt_pps:8.2f}x")
        print(f"ratio engine/twin  {engine_pps / twin_pps:8.2f}x")
        if times["python scans"]:
            scans_pps = len(frames) / min(times["python scans"])
            print(
                f"python scans{scans_pps:12,.0f} packets/s  (best "
                f"{min(times['python scans']):.2f}s; the compiled fast path, the prefilters' "
                f"Python scans)"
            )
            print(f"ratio scans/dpkt   {scans_pps / dpkt_pps:8.2f}x")
            print(f"ratio engine/scans {engine_pps / scans_pps:8.2f}x")
    print(f"ratio dpkt/scapy   {dpkt_pps / scapy_pps:8.1f}x")
    if args.sustained:
        dpkt_s = run_dpkt_passes(frames, args.sustained)
        for settled in (True, False):
            engine_s, count, spent, one = sustained(frames, args.sustained, settled)
            print(
                f"sustained, {args.sustained} passes, rule set "
                f"{'settled  ' if settled else 'unsettled'}: engine {engine_s:.2f}s, dpkt "
                f"{dpkt_s:.2f}s, ratio engine/dpkt {dpkt_s / engine_s:.2f}x; full collections "
                f"in the engine's loop {count} ({spent:.2f}s), one afterwards {one * 1000:.0f} ms"
            )
    if args.breakdown:
        breakdown(frames)
    if args.profile:
        profile(frames, args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
