"""The compiled fast path against its Python twin: the same captures through an engine with
the compiled core and through one with the twin (``compiled=False``) give byte-identical EVE
lines, the same counters and the same flow records, in the table's order. Malformed input
(short packets, bad lengths, flipped header bytes, odd arguments) crashes neither and gives
the same result."""

from __future__ import annotations

import gc
import importlib
import json
import os
import random
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.inspect import core
from appliance.inspect.appproto import (
    HTTP_METHODS,
    MAX_DNS_NAME,
    MAX_HTTP_HEADERS,
    DnsQuery,
    HttpRequest,
    header_buffers,
    looks_like_http_request,
    normalize_host,
    parse_dns,
    parse_http_request,
    parse_tls_sni,
)
from appliance.inspect.decode import GtpInfo, Layer, decode_packet
from appliance.inspect.engine import InspectionEngine, Stats, _anchored_hit, _rule_hits
from appliance.inspect.eve import to_eve
from appliance.inspect.flow import Flow
from appliance.inspect.match import Group, contents_match, head_holds, icmp_matches, rule_matches
from appliance.inspect.pcap import read_capture
from appliance.inspect.prefilter import TwinPrefilter
from appliance.inspect.rules import Variables, load_rules, parse_rules
from appliance.inspect.stream import StreamDirection
from appliance.lab.mix import Mix, flood, make_engine
from appliance.model.values import parse_network

from .test_engine_scan import FILLER, SCANNED, scanned_frames
from .traffic import ANY_IP_TTL_RULE, ESTABLISHED_HEADER_RULES, varied_headers

pytestmark = pytest.mark.skipif(
    not core.available() or core.switched_off(),
    reason="the compiled fast path is not built (setup.py) or is switched off",
)

CORPUS = Path(__file__).parent / "corpus"
# APPLIANCE_CORE_EXAMPLES=N: N times the random examples (a longer fuzz, opt-in)
MORE = max(1, int(os.environ.get("APPLIANCE_CORE_EXAMPLES", "1") or "1"))
CORPUS_RULES = Path(__file__).parent / "rules" / "corpus.rules"
Frames = list[tuple[float, bytes, int]]


# Rules whose anchored contents (checked in place by the core, or by the twin's general
# check when nocase or flags leave no probe) meet the mix's payloads
ANCHORED = """
alert tcp any any -> any 80 (msg:"get not admin"; flow:established; content:"GET"; depth:3; \
content:!"/admin"; offset:4; depth:10; sid:9001;)
alert tcp any any -> any 443 (msg:"hello"; flow:established; content:"|16 03|"; depth:2; \
content:!"|01|"; offset:5; depth:1; sid:9002;)
alert tcp any any -> any any (msg:"zero"; flow:not_established; content:"|00|"; depth:1; sid:9003;)
alert tcp any any -> any any (msg:"nocase"; content:"get"; nocase; depth:3; sid:9004;)
alert tcp any any -> any any (msg:"push"; flags:PA,12; content:"|ff|"; offset:1; depth:2; sid:9005;)
alert udp any any -> any 2152 (msg:"gtp"; content:"|30 ff|"; depth:2; \
content:!"|00 00 00 00|"; offset:4; depth:4; sid:9006;)
alert tcp any any -> any any (msg:"h"; content:"H"; offset:0; depth:1; sid:9007;)
"""


def pair(
    max_flows: int | None = None, corpus: bool = False, rules: str = ""
) -> tuple[InspectionEngine, InspectionEngine]:
    """The benchmark's engine (edge.rules, four detectors) with the core and with the twin."""
    base = make_engine()
    config = base.config
    variables = Variables.from_networks([parse_network("10.0.0.0/8")])
    if corpus:
        extra = load_rules([str(CORPUS_RULES)], variables).signatures
        config = replace(config, signatures=[*config.signatures, *extra])
    if rules:
        more = list(parse_rules(rules.replace("\\\n", ""), "anchored.rules", variables))
        config = replace(config, signatures=[*config.signatures, *more])
    if max_flows is not None:
        config = replace(config, max_flows=max_flows)
    compiled = InspectionEngine(replace(config, compiled=True))
    twin = InspectionEngine(replace(config, compiled=False))
    twin.matcher._prefilter = TwinPrefilter  # the prefilters' pure-Python scans
    assert compiled._core is not None
    assert twin._core is None
    return compiled, twin


def streams_of(flow: Flow) -> Any:
    """A flow's streams: where each starts, what it holds, how far it was scanned, the
    rules it reported and those waiting for it to grow."""
    if flow.streams is None:
        return None
    return [
        s
        if s is None or isinstance(s, int)
        else (
            s.base,
            bytes(s.data),
            s.full,
            s.scanned,
            sorted(s.reported),
            # (as a set: the order of a prefilter's candidates is its scan's, the compiled
            # scanner's or the Python shapes')
            sorted(sig.sid for sig in s.waiting),
        )
        for s in flow.streams
    ]


def selections_of(flow: Flow) -> Any:
    """A flow's rule selections (quiet, the group's rules, app) in each direction."""
    return [
        None
        if sel is None
        else (
            sel[0],
            [s.sid for s in sel[1].plain],
            [s.sid for s in sel[1].anchored],
            [(p.buffer, sorted(sig.sid for _, sig in p.entries)) for p in sel[1].prefilters],
            sel[2],
        )
        for sel in (flow.sel_s, flow.sel_c, flow.fast_s, flow.fast_c)
    ]


def run(eng: InspectionEngine, frames: Frames) -> tuple[list[str], Any]:
    lines = [
        json.dumps(to_eve(alert, "sensor"))
        for ts, data, linktype in frames
        for alert in eng.process(ts, data, linktype)
    ]
    flows = [
        (
            f.key,
            f.proto,
            f.first_ts,
            f.last_ts,
            f.touched,
            f.packets_to_server,
            f.packets_to_client,
            f.tcp_state,
            f.established,
            f.app,
            f.app_tries,
            f.gtp_ok,
            f.sizes,
            streams_of(f),
            selections_of(f),
        )
        for f in eng.flows.records()
    ]
    stats = eng.stats
    table = eng.flows
    counters = (
        stats.packets,
        stats.full,
        stats.fast,
        stats.alerts,
        dict(stats.errors),
        len(table),
        table.embryos,
        table.evicted,
        table.expired,
    )
    return lines, (flows, counters)


def same(frames: Frames, **config: Any) -> tuple[list[str], Any]:
    compiled, twin = pair(**config)
    got = run(compiled, frames)
    want = run(twin, frames)
    if any(lt == 1 for _, _, lt in frames):
        # the compiled side ran the core (loaded by its first Ethernet frame), not the twin
        assert compiled._core is not None and compiled._core != compiled._load_core
    assert got[0] == want[0]
    assert got[1][1] == want[1][1]
    assert got[1][0] == want[1][0]
    return got


def mutate(frames: Frames, seed: int, share: float = 0.3) -> Frames:
    """A share of the frames truncated, with a header byte flipped, or with a wrong length
    (IP total, UDP, GTP, TCP data offset), the rest as they were; now and then a frame twice
    or time going back."""
    rng = random.Random(seed)
    out: Frames = []
    for ts, data, linktype in frames:
        if rng.random() < share:
            raw = bytearray(data)
            kind = rng.randrange(6)
            if kind == 0:
                raw = raw[: rng.randrange(len(raw) + 1)]
            elif kind == 1:
                spot = rng.randrange(min(len(raw), 80))
                raw[spot] ^= 1 << rng.randrange(8)
            elif kind == 2 and len(raw) > 18:
                raw[16:18] = rng.randrange(65536).to_bytes(2, "big")
            elif kind == 3 and len(raw) > 60:
                raw[rng.choice((38, 44, 52))] = rng.randrange(256)
            elif kind == 4 and len(raw) > 47:
                raw[46] = rng.randrange(256)  # TCP data offset (or GTP's TEID byte)
            else:
                raw[47 if len(raw) > 47 else 0] = rng.randrange(256)  # TCP flags
            data = bytes(raw)
        if rng.random() < 0.01:
            ts -= 0.5
        out.append((ts, data, linktype))
        if rng.random() < 0.01:
            out.append((ts, data, linktype))
    return out


def test_bench_mix() -> None:
    frames = Mix(seed=21).build(30_000)
    lines, (_flows, counters) = same(frames)
    assert len(lines) > 10
    assert counters[2] > len(frames) // 2  # most packets took the fast path


def test_bench_mix_with_evictions() -> None:
    same(Mix(seed=22).build(12_000), max_flows=300)


def test_flood_and_mix_with_flood() -> None:
    same(flood(10_000, seed=3))
    same(flood(3_000, seed=5, kind="gtp"))  # SYNs in G-PDUs
    same(flood(2_000, seed=6, kind="gtp"), max_flows=500)
    mixed = Mix(seed=23).build(9_000)
    syns = flood(3_000, seed=4)
    frames: Frames = []
    for i, (ts, data, linktype) in enumerate(mixed):
        frames.append((ts, data, linktype))
        if i % 3 == 2:
            frames.append((ts, syns[i // 3][1], 1))  # a SYN among the flows, at their time
    same(frames, max_flows=2_000)


@pytest.mark.parametrize("seed", range(3))
def test_anchored_rules(seed: int) -> None:
    frames = Mix(seed=50 + seed).build(6_000)
    lines, _ = same(frames, rules=ANCHORED)
    assert len(lines) > 10
    same(mutate(frames, seed), rules=ANCHORED)


def test_scanned_data_segments() -> None:
    """Payload rules on any port leave no TCP direction quiet: the data segments the fast
    path scans (and the G-PDUs carrying them) come out as the twin's, streams included."""
    frames = scanned_frames(7, flows=30)
    lines, (_flows, counters) = same(frames, rules=SCANNED)
    assert len(lines) > 10
    assert counters[2] > len(frames) // 3  # the fast path took them
    same(mutate(frames, 7), rules=SCANNED)
    filler = scanned_frames(8, flows=20, disorder=0.0, pieces=FILLER)
    _, (_flows, counters) = same(filler, rules=SCANNED)
    assert counters[2] > len(filler) // 2
    same(Mix(seed=57).build(6_000), rules=SCANNED)
    compiled, twin = pair(rules=SCANNED)  # the bound on all streams' bytes passed
    for eng in (compiled, twin):
        assert eng.streams is not None
        eng.streams.max_bytes = 5000
    got, want = run(compiled, filler), run(twin, filler)
    assert got == want
    assert compiled.stats.errors.get("stream.memory", 0) > 5


@pytest.mark.parametrize("any_ip", [False, True])
def test_header_rules_on_established_flows(any_ip: bool) -> None:
    """Rules on established flows' header fields and payload sizes (on every IP packet, the
    G-PDUs' own headers too): the core tests a packet against their gates as the twin does,
    packets outside them on its fast paths."""
    rules = ESTABLISHED_HEADER_RULES + (ANY_IP_TTL_RULE if any_ip else "")
    frames = varied_headers(Mix(seed=60).build(6_000), seed=60)
    lines, (_flows, counters) = same(frames, rules=rules)
    assert len(lines) > 100
    assert counters[2] > len(frames) // 2  # the fast paths took most
    same(mutate(varied_headers(Mix(seed=61).build(3_000), seed=61), 61), rules=rules)


def syn_pair(**config: Any) -> tuple[InspectionEngine, InspectionEngine]:
    """Engines with rules and thresholds on SYNs and the SYN detectors (low limits): with
    the core, and with the twin."""
    from tests.inspect.test_engine_syn import DETECTORS, RULES
    from tests.inspect.traffic import engine

    compiled = engine(RULES, DETECTORS, **config)
    twin = engine(RULES, DETECTORS, compiled=False, **config)
    assert compiled._core is not None and twin._core is None
    return compiled, twin


@pytest.mark.parametrize("seed", range(3))
def test_new_flows_with_rules_and_detectors_on_their_syns(seed: int) -> None:
    """SYNs that rules (with thresholds) and the SYN detectors alert on, answered or not,
    retransmitted, opened from both ends, arriving past the idle timeout, in a table too
    small for them: the compiled new-flow path (the embryo, its hatching, the alerts handed
    to the twin's code) gives what the twin gives."""
    from tests.inspect.test_engine_syn import traffic

    frames = traffic(seed, 700)
    for config in ({}, {"max_flows": 30, "idle_timeout": 30.0}):
        compiled, twin = syn_pair(**config)
        got = run(compiled, frames)
        want = run(twin, frames)
        assert got == want
        assert len(got[0]) > 20
        assert compiled.flows.evicted == twin.flows.evicted
    mixed = mutate(frames, seed, share=0.2)
    compiled, twin = syn_pair(max_flows=50)
    assert run(compiled, mixed) == run(twin, mixed)


def test_new_flow_path_refuses_odd_tables() -> None:
    """new_flow_path() checks what it is handed: segment tables whose starts do not begin at 0,
    do not increase, are not ints below 2**32 or do not match their bits are refused."""
    compiled, _ = pair()
    compiled.process(*Mix(seed=43).build(1)[0])
    fast = core.fast_path_class()
    assert fast is not None
    engine = compiled
    path = fast(
        engine._index,
        engine.flows.flows,
        engine._idle_timeout,
        Flow,
        _anchored_hit,
        Layer,
        engine.flows.lookup,
    )
    ports = engine._port_bits

    def handover(addr: Any, ports: Any = ports) -> None:
        path.new_flow_path(
            engine.flows,
            engine.stats,
            engine._hellos,
            engine._flow_plans,
            engine._flow_plan,
            addr,
            ports,
            engine._alerting,
            None,
            None,
            engine._flow_fire,
            engine._flow_alerts,
            (),
            True,
            engine._plans,
            False,
        )

    starts, bits = engine._addr4
    handover((list(starts), list(bits)))
    for bad in (
        ([1, 5], [0, 1]),
        ([0, 5, 5], [0, 1, 2]),
        ([0, 2**32], [0, 1]),
        ([0, -1], [0, 1]),
        ([0, "x"], [0, 1]),
        ([], []),
        ([0, 5], [0]),
        (list(starts),),
    ):
        with pytest.raises((TypeError, ValueError, OverflowError)):
            handover(bad)
    with pytest.raises(TypeError):
        path.new_flow_path()  # type: ignore[call-arg]


def test_header_bits_as_the_matcher_bisects() -> None:
    """Once the core is loaded, the matcher reads an IPv4 packet's address and port
    expressions with the compiled header_bits: the same as its bisections give, at each
    segment's first and last address and port and at random ones, with and without ports."""
    compiled, twin = pair(corpus=True)
    compiled.process(*Mix(seed=44).build(1)[0])
    bits = compiled.matcher.compiled_bits
    assert bits is not None and twin.matcher.compiled_bits is None
    rng = random.Random(44)
    starts = compiled._addr4[0]
    port_starts = compiled._port_bits[0]
    assert len(starts) > 5 and len(port_starts) > 5
    addrs = [a for s in starts for a in (s, s - 1, s + 1) if 0 <= a < 2**32]
    addrs += [rng.randrange(2**32) for _ in range(500)] + [0, 2**32 - 1]
    ports = [p for s in port_starts for p in (s, s - 1, s + 1) if 0 <= p < 65536] + [0, 65535]
    for _ in range(3000):
        src, dst = (rng.choice(addrs).to_bytes(4, "big") for _ in range(2))
        sport, dport = rng.choice(ports), rng.choice(ports)
        proto = rng.choice((6, 17, 1, 132))
        layer = Layer(4, src, dst, proto, 0)
        layer.sport, layer.dport = sport, dport
        assert compiled.matcher._header_bits(layer) == twin.matcher._header_bits(layer)
    with pytest.raises(TypeError):
        bits(b"\x01" * 16, b"\x01" * 16, 1, 2, True)  # IPv6: the matcher's own
    with pytest.raises(ValueError):
        bits(b"\x01" * 4, b"\x01" * 4, 1, 70000, True)


def driver_calls(frames: Frames, **config: Any) -> list[tuple[Any, ...]]:
    """The twin's _rule_hits calls over the frames: (layer, group, established, flags,
    payload, buffers as they were)."""
    _, twin = pair(**config)
    calls: list[tuple[Any, ...]] = []

    def record(*args: Any) -> list[Any]:
        calls.append((*args[:5], dict(args[5])))
        return _rule_hits(*args)

    twin._rule_hits = record
    for ts, data, linktype in frames:
        twin.process(ts, data, linktype)
    return calls


def test_rule_driver_as_the_twin() -> None:
    """The compiled rule driver gives the rules the twin's _rule_hits gives, in its order,
    for every call the engine made over the mix (mutated too) and the regression captures,
    with edge.rules, the rule corpus (header tests, ICMP types, flags, transformed buffers)
    and anchored rules (nocase among them)."""
    compiled = core.rule_hits_class()
    assert compiled is not None
    driver = compiled(icmp_matches, head_holds, contents_match, rule_matches, _rule_hits)
    frames = Mix(seed=70).build(4_000)
    frames += mutate(Mix(seed=71).build(2_000), 71)
    for path in sorted(CORPUS.glob("*.pcap")):
        with open(path, "rb") as handle:
            frames += [(ts, data, lt) for ts, data, lt in read_capture(handle, str(path))]
    found = 0
    for config in ({}, {"corpus": True}, {"rules": ANCHORED}):
        calls = driver_calls(frames, **config)
        assert len(calls) > 500
        for layer, group, established, flags, payload, buffers in calls:
            want = _rule_hits(layer, group, established, flags, payload, dict(buffers))
            got = driver.hits(layer, group, established, flags, payload, dict(buffers))
            assert [id(sig) for sig in got] == [id(sig) for sig in want]
            found += len(got)
    assert found > 100


def test_rule_driver_odd_arguments() -> None:
    """Arguments or groups not in the shape expected go to the twin, which answers or fails
    as it always does; a wrong argument count is a TypeError."""
    compiled = core.rule_hits_class()
    assert compiled is not None
    seen: list[int] = []

    def twin(*args: Any) -> list[Any]:
        seen.append(1)
        return _rule_hits(*args)

    driver = compiled(icmp_matches, head_holds, contents_match, rule_matches, twin)
    calls = driver_calls(Mix(seed=72).build(300))
    layer, group, established, flags, payload, buffers = calls[-1]
    want = _rule_hits(layer, group, established, flags, payload, dict(buffers))
    assert driver.hits(layer, group, established, flags, payload, dict(buffers)) == want
    assert not seen
    odd = Group(plain=list(group.plain), anchored=list(group.anchored))
    odd.anchored_fast = tuple(odd.anchored_fast)  # type: ignore[assignment]  # not a list
    for args in (
        (layer, group, 1, flags, payload, dict(buffers)),  # established not a bool
        (layer, group, established, flags, bytearray(payload), dict(buffers)),
        (layer, odd, established, flags, payload, dict(buffers)),
    ):
        try:
            want = _rule_hits(*args)
        except Exception as exc:  # the same failure from both
            with pytest.raises(type(exc)):
                driver.hits(*args)
        else:
            assert driver.hits(*args) == want
    assert len(seen) == 3
    with pytest.raises(AttributeError):
        driver.hits(layer, object(), established, flags, payload, dict(buffers))
    with pytest.raises(TypeError):
        driver.hits(layer, group)  # type: ignore[call-arg]


def test_many_groups_through_the_core_s_group_cache() -> None:
    """Flows to 150 ports, each port with rules of its own (a group each: more groups than
    the core keeps the tables of), their packets interleaved: the core reads each group's
    tables again when its entry was taken by another, and gives what the twin gives."""
    from tests.inspect.traffic import engine, frames, tcp_session

    rules = "".join(
        f'alert tcp any any -> any {port} (msg:"p{port}"; flow:established; '
        f'content:"|00 01|"; depth:2; content:!"x"; offset:2; depth:1; sid:{port};)\n'
        f'alert tcp any any -> any {port} (msg:"f{port}"; flags:U+; sid:{port + 1000};)\n'
        for port in range(2000, 2150)
    )
    sessions = [
        tcp_session(
            f"10.1.{port % 7}.{port % 200 + 1}",
            "10.2.0.1",
            40000 + port,
            port,
            [b"\x00\x01y" if port % 3 else b"\x00\x01x", b"data " * 20, b"\x00\x01z"],
            [b"ok"] * 3,
        )
        for port in range(2000, 2150)
    ]
    packets = [
        session[i]
        for i in range(max(len(x) for x in sessions))
        for session in sessions
        if i < len(session)
    ]
    compiled = engine(rules)
    twin = engine(rules, compiled=False)
    got = run(compiled, frames(packets))
    want = run(twin, frames(packets))
    assert got == want
    assert len(got[0]) > 100
    assert compiled.stats.fast > len(packets) // 3


def test_new_flows_of_every_kind_as_the_twin_makes_them() -> None:
    """Flows the compiled lookup makes: IPv4 and IPv6, TCP opened by a SYN or first seen
    at its SYN/ACK, UDP, ICMP, SCTP, the same 5-tuple after the idle timeout, in a table
    small enough to evict and with time passing for its sweeps: the flows, their order
    and the counters are the twin's."""
    from scapy.all import (  # type: ignore[attr-defined]
        ICMP,
        IP,
        SCTP,
        TCP,
        UDP,
        Ether,
        IPOption_NOP,
        IPv6,
        raw,
    )

    rng = random.Random(9)
    frames: Frames = []
    ts = 1_700_000_000.0
    for i in range(900):
        v6 = rng.random() < 0.3
        a, b = (
            (f"2001:db8::{i % 37 + 1}", "2001:db8::ff")
            if v6
            else (f"10.3.0.{i % 37 + 1}", "10.4.0.1")
        )
        ip = IPv6(src=a, dst=b) if v6 else IP(src=a, dst=b)
        back = IPv6(src=b, dst=a) if v6 else IP(src=b, dst=a)
        sport, dport = 30000 + i % 50, rng.choice([53, 80, 443, 9999])
        kind = rng.randrange(7)
        if kind == 0:
            packets = [
                ip / TCP(sport=sport, dport=dport, flags="S"),
                back / TCP(sport=dport, dport=sport, flags="SA"),
            ]
        elif kind == 1:
            packets = [
                back / TCP(sport=dport, dport=sport, flags="SA"),
                ip / TCP(sport=sport, dport=dport, flags="A"),
            ]
        elif kind == 2:
            packets = [
                ip / UDP(sport=sport, dport=dport) / b"x",
                back / UDP(sport=dport, dport=sport) / b"y",
            ]
        elif kind == 3:
            packets = [
                ip / ICMP() if not v6 else ip / UDP(sport=1, dport=2),
                back / TCP(sport=dport, dport=sport, flags="R"),
            ]
        elif kind == 4:
            packets = [ip / SCTP(sport=sport, dport=dport)]
        elif kind == 5:
            packets = [ip / TCP(sport=sport, dport=dport, flags="PA") / b"mid-flow"]
        else:  # an embryo, answered by a packet the full path takes (IP options)
            answer = IPv6(src=b, dst=a) if v6 else IP(src=b, dst=a, options=[IPOption_NOP()] * 4)
            packets = [
                ip / TCP(sport=sport, dport=dport, flags="S"),
                answer / TCP(sport=dport, dport=sport, flags="SA"),
                ip / TCP(sport=sport, dport=dport, flags="A"),
            ]
        for packet in packets:
            ts += rng.choice([0.001, 0.01, 0.5, 2.0, 350.0 if rng.random() < 0.01 else 0.002])
            # (both addresses given: scapy resolves nothing)
            frames.append(
                (ts, raw(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / packet), 1)
            )
    for config in ({}, {"max_flows": 25}):
        same(frames, **config)


def test_with_the_rule_corpus() -> None:
    same(Mix(seed=24).build(6_000), corpus=True)


def test_regression_captures() -> None:
    for path in sorted(CORPUS.glob("*.pcap")):
        with open(path, "rb") as handle:
            frames = [(ts, data, lt) for ts, data, lt in read_capture(handle, str(path))]
        same(frames)
        same(frames, corpus=True)


def test_stretched_time_refreshes_and_evictions() -> None:
    """The mix spread over minutes: flows are refreshed in the table's order (at most once a
    second), the least recently used evicted past the bound."""
    frames = Mix(seed=26).build(8_000)
    t0 = frames[0][0]
    stretched = [(t0 + i * 0.03, data, lt) for i, (_ts, data, lt) in enumerate(frames)]
    same(stretched, max_flows=150)


def test_idle_timeout_and_time_going_back() -> None:
    frames = Mix(seed=25).build(4_000)
    spread: Frames = []
    for i, (ts, data, linktype) in enumerate(frames):
        jump = 400.0 * (i // 1000) + (-2.0 if i % 97 == 0 else 0.0)
        spread.append((ts + jump, data, linktype))
    same(spread)


@pytest.mark.parametrize("seed", range(4))
def test_malformed_packets(seed: int) -> None:
    same(mutate(Mix(seed=30 + seed).build(5_000), seed))


@settings(max_examples=40 * MORE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.floats(0.05, 0.9))
def test_random_mutations(seed: int, share: float) -> None:
    same(mutate(Mix(seed=seed).build(600), seed, share))


LAYER_SLOTS = [name for name in Layer.__slots__ if name not in ("gtp", "tunnel")]


GTP_SLOTS = ("error", "msg_type", "nested", "teid")


def layer_state(layer: Layer | None) -> Any:
    """Every slot of a decoded layer, its GtpInfo's, its inner layer's (which must name it
    as its tunnel)."""
    if layer is None:
        return None
    state = [getattr(layer, name, "<unset>") for name in LAYER_SLOTS]
    gtp = layer.gtp
    inner = gtp.inner if gtp is not None else None
    info = None if gtp is None else [getattr(gtp, name, "<unset>") for name in GTP_SLOTS]
    if inner is not None:
        assert inner.tunnel is layer
    return state, info, layer.tunnel is None, layer_state(inner)


def decoded_alike(frames: Frames, gtp: bool = True) -> None:
    """The compiled decoder (with G-PDUs, or without: handed to decode_packet) against
    decode_packet: the same layers, the same errors counted."""
    compiled = core.decoder_class()
    assert compiled is not None
    decode = (
        compiled(Layer, decode_packet, GtpInfo) if gtp else compiled(Layer, decode_packet)
    ).decode
    for _ts, data, linktype in frames:
        errors: dict[str, int] = {}
        want_errors: dict[str, int] = {}
        got = decode(data, linktype, errors)
        want = decode_packet(data, linktype, want_errors)
        assert layer_state(got) == layer_state(want), data.hex()
        assert errors == want_errors


def test_decoder_as_decode_packet() -> None:
    """The compiled decoder gives the Layer decode_packet gives (every slot), or hands the
    frame to it: the mix, its flood, the regression captures, mutated frames, odd link
    types and buffers."""
    frames = Mix(seed=60).build(5_000)
    decoded_alike(frames)
    decoded_alike(frames, gtp=False)
    handed: list[int] = []

    def fallback(data: bytes, linktype: int, errors: dict[str, int]) -> Layer | None:
        handed.append(1)
        return decode_packet(data, linktype, errors)

    compiled = core.decoder_class()
    assert compiled is not None
    gtp_frames = [
        data for _ts, data, _lt in frames if data[23] == 17 and data[36:38] == b"\x08\x68"
    ]
    assert len(gtp_frames) > 200
    for data in gtp_frames:
        compiled(Layer, fallback, GtpInfo).decode(data, 1, {})
    assert not handed  # the mix's G-PDUs are decoded in C
    for _ts, data, linktype in frames:
        compiled(Layer, fallback).decode(data, linktype, {})
    assert len(handed) < len(frames) // 4  # without gtp_type, only GTP-U is handed over
    decoded_alike(flood(500, seed=6))
    for seed in range(3):
        decoded_alike(mutate(frames, seed, share=0.8))
        decoded_alike(mutate([(0.0, d, 1) for d in gtp_frames], seed, share=0.9))
    for path in sorted(CORPUS.glob("*.pcap")):
        with open(path, "rb") as handle:
            decoded_alike(list(read_capture(handle, str(path))))
    data = frames[0][1]
    decoded_alike([(0.0, data, 101), (0.0, data, 2**70), (0.0, b"", 1), (0.0, data[:34], 1)])
    compiled = core.decoder_class()
    assert compiled is not None
    decode = compiled(Layer, decode_packet).decode
    assert layer_state(decode(bytearray(data), 1, {})) == layer_state(decode_packet(data, 1, {}))
    with pytest.raises(TypeError):
        decode(data, 1)  # type: ignore[call-arg]


@settings(max_examples=300 * MORE, deadline=None)
@given(
    st.binary(min_size=0, max_size=90),
    st.sampled_from([6, 17, 1, 4, 47]),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0x40, 0x4F),
    st.integers(0, 0xFFFF),
)
def test_decoder_on_random_headers(
    tail: bytes, proto: int, total: int, frag: int, vihl: int, port: int
) -> None:
    """Ethernet / IPv4 headers with random lengths, fragment bits, options and ports over
    random bytes: the compiled decoder and decode_packet agree."""
    eth = b"\x02" * 12 + b"\x08\x00"
    ip = struct.pack(
        "!BBHHHBBH4s4s", vihl, 0, total, 1, frag, 64, proto, 0, b"\n\0\0\1", b"\n\0\0\2"
    )
    transport = struct.pack("!HH", 40000, port)
    decoded_alike([(0.0, eth + ip + transport + tail, 1), (0.0, eth + ip + tail, 1)])


@settings(max_examples=300 * MORE, deadline=None)
@given(
    st.binary(min_size=0, max_size=60),
    st.sampled_from([0x30, 0x32, 0x34, 0x38, 0x20, 0x50, 0x31]),
    st.sampled_from([255, 1, 26, 254]),
    st.integers(0, 2**32 - 1),
    st.sampled_from([6, 17, 1, 4]),
    st.integers(0x40, 0x4F),
    st.integers(0, 0xFFFF),
    st.tuples(st.integers(-3, 3), st.integers(-3, 3), st.integers(-3, 3), st.integers(-3, 3)),
    st.sampled_from([0x45, 0x46, 0x60, 0x44]),
    st.integers(0, 0xFFFF),
)
def test_decoder_on_random_gtp_u(
    tail: bytes,
    gtp_flags: int,
    msg_type: int,
    teid: int,
    proto: int,
    vihl: int,
    frag: int,
    skew: tuple[int, int, int, int],
    outer_vihl: int,
    port: int,
) -> None:
    """GTP-U frames with random GTP flags, message types and TEIDs, inner IPv4 headers with
    random header lengths, fragment bits and protocols, lengths (outer IP, UDP, GTP, inner
    IP) a little off: the compiled decoder and decode_packet agree."""
    transport = struct.pack("!HH", 40000, port) + tail
    inner_total = 20 + len(transport) + skew[0]
    inner = (
        struct.pack(
            "!BBHHHBBH4s4s",
            vihl,
            0,
            max(0, inner_total),
            1,
            frag,
            64,
            proto,
            0,
            b"\n\x2d\0\1",
            b"\n\0\0\2",
        )
        + transport
    )
    gtp = struct.pack("!BBHI", gtp_flags, msg_type, max(0, len(inner) + skew[1]), teid) + inner
    udp = struct.pack("!HHHH", 2152, 2152, max(0, 8 + len(gtp) + skew[2]), 0) + gtp
    total = max(0, 20 + len(udp) + skew[3])
    ip = struct.pack(
        "!BBHHHBBH4s4s", outer_vihl, 0, total, 1, 0, 64, 17, 0, b"\xc0\0\2\1", b"\xc0\0\2\2"
    )
    eth = b"\x02" * 12 + b"\x08\x00"
    decoded_alike([(0.0, eth + ip + udp, 1), (0.0, eth + ip + udp[:-3], 1)])


def syn_alerts(got: Any, data: bytes) -> bool:
    """Alerts that take() may give: for a bare SYN (no ACK, RST, FIN)."""
    return isinstance(got, list) and len(data) >= 54 and data[47] & 0x17 == 0x02


QUERY_SLOTS = ("id", "labels", "name", "qtype", "response")


def parsed_alike(payloads: list[bytes]) -> int:
    """The compiled DNS parser against parse_dns over UDP: the same DnsQuery (every slot)
    or None, the same errors counted; how many it parsed without parse_dns."""
    compiled = core.dns_parser_class()
    assert compiled is not None
    handed: list[int] = []

    def fallback(payload: bytes, errors: dict[str, int]) -> DnsQuery | None:
        handed.append(1)
        return parse_dns(payload, errors)

    parse = compiled(DnsQuery, fallback, MAX_DNS_NAME).parse
    for payload in payloads:
        errors: dict[str, int] = {}
        want_errors: dict[str, int] = {}
        got = parse(payload, errors)
        want = parse_dns(payload, want_errors)
        assert (got is None) == (want is None), payload.hex()
        if got is not None:
            assert type(got) is DnsQuery
            assert [getattr(got, n) for n in QUERY_SLOTS] == [getattr(want, n) for n in QUERY_SLOTS]
        assert errors == want_errors
    return len(payloads) - len(handed)


def test_dns_parser_as_parse_dns() -> None:
    """The mix's DNS payloads (queries and answers), mutated, cut short: the compiled parser
    gives what parse_dns gives; odd arguments go to parse_dns or fail as it does."""
    frames = Mix(seed=80).build(8_000)
    payloads = []
    for _ts, data, _lt in frames:
        layer = decode_packet(data, 1, {})
        if layer is not None and layer.proto == 17 and 53 in (layer.sport, layer.dport):
            payloads.append(layer.payload)
    assert len(payloads) > 100
    assert parsed_alike(payloads) == len(payloads)  # all of them in C
    rng = random.Random(8)
    for _ in range(3):
        parsed_alike(mutated(payloads, rng, (0, 0xC0, 0x3F, 0x40, 0x80, 63, 1)))
    long_name = b"\x3f" + b"a" * 63
    parsed_alike(
        [
            b"",
            b"\x00" * 11,
            b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + long_name * 4 + b"\x00\x00\x01\x00\x01",
            b"\x12\x34\x01\x00\x00\x01"
            + b"\x00" * 6
            + long_name * 3
            + b"\x3d"
            + b"b" * 61
            + b"\x00\x00\x01\x00\x01",
            b"\x12\x34\x81\x80\x00\x01" + b"\x00" * 6 + b"\x00\x00\x1c\x00\x01",
            b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + b"\xc0\x0c\x00\x01\x00\x01",
        ]
    )
    compiled = core.dns_parser_class()
    assert compiled is not None
    parse = compiled(DnsQuery, parse_dns, MAX_DNS_NAME).parse
    assert parse(bytearray(payloads[0]), {}) is not None  # (handed to parse_dns)
    with pytest.raises(TypeError):
        parse(payloads[0])  # type: ignore[call-arg]


@settings(max_examples=300 * MORE, deadline=None)
@given(
    st.integers(0, 0xFFFF),
    st.integers(0, 3),
    st.lists(st.binary(min_size=0, max_size=70), max_size=6),
    st.binary(max_size=6),
)
def test_dns_parser_on_random_messages(
    flags: int, qdcount: int, labels: list[bytes], tail: bytes
) -> None:
    name = b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"
    head = b"\xab\xcd" + flags.to_bytes(2, "big") + qdcount.to_bytes(2, "big") + b"\x00" * 6
    parsed_alike([head + name + tail, head + name[:-1] + tail])


def mutated(
    items: list[bytes],
    rng: random.Random,
    values: tuple[int, ...],
    most: int = 3,
    within: int | None = None,
) -> list[bytes]:
    """Each item with 1 to ``most`` of its bytes (of its first ``within``) set to one of
    ``values`` or a random byte, three in ten of them then cut at a random place."""
    out = []
    for item in items:
        raw = bytearray(item)
        for _ in range(rng.randrange(1, most + 1)):
            spot = rng.randrange(len(raw) if within is None else min(len(raw), within))
            raw[spot] = rng.choice([*values, rng.randrange(256)])
        cut = rng.randrange(len(raw) + 1) if rng.random() < 0.3 else len(raw)
        out.append(bytes(raw[:cut]))
    return out


def sni_alike(payloads: list[bytes]) -> int:
    """The compiled SNI parser against parse_tls_sni: the same name or None, the same errors
    counted; how many it answered without parse_tls_sni."""
    compiled = core.sni_parser_class()
    assert compiled is not None
    handed: list[int] = []

    def fallback(payload: bytes, errors: dict[str, int]) -> bytes | None:
        handed.append(1)
        return parse_tls_sni(payload, errors)

    parse = compiled(fallback).parse
    for payload in payloads:
        errors: dict[str, int] = {}
        want_errors: dict[str, int] = {}
        assert parse(payload, errors) == parse_tls_sni(payload, want_errors), payload.hex()
        assert errors == want_errors
    return len(payloads) - len(handed)


def test_sni_parser_as_parse_tls_sni() -> None:
    """The mix's ClientHellos, mutated (lengths above all) and cut short: the compiled
    parser gives what parse_tls_sni gives."""
    hellos = []
    for _ts, data, _lt in Mix(seed=81).build(8_000):
        layer = decode_packet(data, 1, {})
        if layer is not None and layer.payload[:1] == b"\x16" and layer.payload[5:6] == b"\x01":
            hellos.append(layer.payload)
    assert len(hellos) > 50
    # all but the hellos cut by their segment (parse_tls_sni counts them short)
    assert sni_alike(hellos) > len(hellos) * 3 // 4
    rng = random.Random(10)
    for _ in range(6):
        sni_alike(mutated(hellos, rng, (0, 1, 2, 0xFF), most=2, within=140))
    compiled = core.sni_parser_class()
    assert compiled is not None
    parse = compiled(parse_tls_sni).parse
    assert parse(bytearray(hellos[0]), {}) == parse_tls_sni(hellos[0], {})
    with pytest.raises(TypeError):
        parse(hellos[0])  # type: ignore[call-arg]


@settings(max_examples=300 * MORE, deadline=None)
@given(
    st.integers(0, 40),
    st.integers(0, 40),
    st.lists(st.tuples(st.integers(0, 3), st.binary(max_size=40)), max_size=4),
    st.tuples(st.integers(-4, 4), st.integers(-4, 4), st.integers(-4, 4), st.integers(-4, 4)),
    st.lists(st.tuples(st.integers(0, 2), st.binary(max_size=12)), max_size=3),
)
def test_sni_parser_on_random_hellos(
    session: int,
    suites: int,
    names: list[tuple[int, bytes]],
    skew: tuple[int, int, int, int],
    others: list[tuple[int, bytes]],
) -> None:
    """ClientHellos with random session ids, cipher lists, other extensions and server name
    lists, their lengths a little off: both parsers agree."""
    listed = b"".join(bytes((kind,)) + len(n).to_bytes(2, "big") + n for kind, n in names)
    sni = (max(0, len(listed) + skew[0])).to_bytes(2, "big") + listed
    extensions = b"".join(
        t.to_bytes(2, "big") + len(body).to_bytes(2, "big") + body for t, body in others
    )
    extensions += b"\x00\x00" + max(0, len(sni) + skew[1]).to_bytes(2, "big") + sni
    body = (
        b"\x03\x03"
        + b"r" * 32
        + bytes((session,))
        + b"s" * session
        + (2 * suites).to_bytes(2, "big")
        + b"c" * (2 * suites)
        + b"\x01\x00"
        + max(0, len(extensions) + skew[2]).to_bytes(2, "big")
        + extensions
    )
    hello = b"\x01" + len(body).to_bytes(3, "big") + body
    record = b"\x16\x03\x01" + max(0, len(hello) + skew[3]).to_bytes(2, "big") + hello
    sni_alike([record, record[: len(record) // 2]])


REQUEST_SLOTS = ("method", "raw_uri", "uri", "host", "user_agent", "headers", "raw_body")
HEADER_TEXTS: list[bool] = []  # per request parsed by http_alike: whether it gave http.header


def http_alike(payloads: list[bytes]) -> int:
    """The compiled HTTP request parser against parse_http_request: the same HttpRequest
    (every slot, the body as read) or None, the same errors counted; how many it parsed
    without parse_http_request."""
    compiled = core.http_parser_class()
    assert compiled is not None
    handed: list[int] = []

    def fallback(payload: bytes, errors: dict[str, int]) -> HttpRequest | None:
        handed.append(1)
        return parse_http_request(payload, errors)

    parse = compiled(HttpRequest, normalize_host, HTTP_METHODS, MAX_HTTP_HEADERS, fallback).parse
    texts = HEADER_TEXTS
    for payload in payloads:
        errors: dict[str, int] = {}
        want_errors: dict[str, int] = {}
        got = parse(payload, errors)
        want = parse_http_request(payload, want_errors)
        assert (got is None) == (want is None), payload
        if got is not None and want is not None:
            assert type(got) is HttpRequest
            mine = [getattr(got, n) for n in REQUEST_SLOTS] + [got.body]
            assert mine == [getattr(want, n) for n in REQUEST_SLOTS] + [want.body], payload
            # http.header as given (the header lines as sent), or left to header_buffers
            joined = header_buffers(want.headers, b"", {"http.header"})["http.header"]
            assert got.header_text in (None, joined), payload
            texts.append(got.header_text is not None)
        assert errors == want_errors
    return len(payloads) - len(handed)


def test_http_parser_as_parse_http_request() -> None:
    """The mix's requests, requests with odd headers (spaces, tabs, empty values, repeated
    Host and User-Agent, a Host with a port or in brackets, no colon, a bare LF, 150 lines),
    mutated and cut short: the compiled parser gives what parse_http_request gives."""
    requests = []
    for _ts, data, _lt in Mix(seed=82).build(6_000):
        layer = decode_packet(data, 1, {})
        if layer is not None and looks_like_http_request(layer.payload):
            requests.append(layer.payload)
    assert len(requests) > 50
    HEADER_TEXTS.clear()
    assert http_alike(requests) == len(requests)
    assert all(HEADER_TEXTS)  # the mix's header lines are as sent: http.header given
    odd = [
        b"GET /a%20b?x=1 HTTP/1.1\r\nHost: Example.COM:8080\r\nUser-Agent:  curl/8 \r\n\r\n",
        b"POST /u HTTP/1.0\r\nhost:\t[2001:db8::1]:80\r\nHOST: second\r\nuser-agent:\r\n"
        b"User-Agent: two\r\n\r\nbody=1",
        b"GET / HTTP/1.1\r\nno colon here\r\n: empty name\r\nX:\x0b\x0cv\x0c\r\n\r\n",
        b"GET / HTTP/1.1\nHost: lf-only\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.b.\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\n\r\n",
        b"FETCH / HTTP/1.1\r\n\r\n",
        b"GET / HTTX/1.1\r\n\r\n",
        b"GET / HTTP/",
        b"GET / HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\nA: b\r\n",
        b"GET / HTTP/1.1\r\n\r\n\r\n\r\n",
        b"",
        b"GET / HTTP/1.1\r\n"
        + b"".join(b"H%d: v%d\r\n" % (i, i) for i in range(150))
        + b"Host: late\r\n\r\n",
        b"GET / HTTP/1.1\r\n"
        + b"".join(b"H%d: v\r\n" % i for i in range(99))
        + b"Host: at100\r\nHost: at101\r\n\r\n",
    ]
    http_alike(odd)
    rng = random.Random(11)
    for _ in range(3):
        changed = []
        for request in requests + odd:
            raw = bytearray(request)
            for _ in range(rng.randrange(1, 4)):
                if raw:
                    raw[rng.randrange(len(raw))] = (
                        rng.choice(b" :\r\n\tHh") if rng.random() < 0.7 else rng.randrange(256)
                    )
            changed.append(bytes(raw[: rng.randrange(len(raw) + 1)] if rng.random() < 0.3 else raw))
        http_alike(changed)
    compiled = core.http_parser_class()
    assert compiled is not None
    parse = compiled(
        HttpRequest, normalize_host, HTTP_METHODS, MAX_HTTP_HEADERS, parse_http_request
    ).parse
    assert parse(bytearray(requests[0]), {}) is not None  # (handed to parse_http_request)
    with pytest.raises(TypeError):
        parse(requests[0])  # type: ignore[call-arg]


def test_entry_point_odd_arguments() -> None:
    """take(ts, data) on anything: short or empty frames, other buffer types, wrong
    argument counts; the core never crashes, and gives False (the full path takes the
    packet), no alerts (it took the packet) or alerts only for a bare SYN (the new-flow
    path)."""
    compiled, _ = pair()
    take = compiled._core
    assert take is not None
    frames = Mix(seed=40).build(200)
    for ts, data, _lt in frames:
        compiled.process(ts, data, 1)
    rng = random.Random(5)
    for ts, data, _lt in frames:
        for size in (0, 1, 13, 14, 33, 34, 53, 54, 55, 61, 62, 73, 74, 89, len(data)):
            got = take(ts, data[:size])
            assert got is False or got == () or syn_alerts(got, data[:size])
        for _ in range(5):
            noise = bytes(rng.randrange(256) for _ in range(rng.randrange(100)))
            got = take(ts, noise)
            assert got is False or got == () or syn_alerts(got, noise)
        assert take(ts, bytearray(data)) is False
        assert take(ts, memoryview(data)) is False
    with pytest.raises(TypeError):
        take(1.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        take("now", frames[0][1])  # type: ignore[arg-type]
    with pytest.raises((TypeError, AttributeError)):  # not a class of slots
        core.fast_path_class()(  # type: ignore[misc]
            {}, compiled.flows.flows, 1.0, int, _anchored_hit, Layer, compiled.flows.lookup
        )
    assert core.fast_path_class() is not None


def test_scan_path_odd_arguments_and_shapes() -> None:
    """scan_path refuses what is not a callable, a callable or None (no outer scan, as when
    a rule reads ip:packet), a reassembler, a class of a stream direction's slots and a
    callable; a stream or group not in the shape the core expects is left to the engine's
    _scan_segment, which takes the segment as it would have."""
    compiled, twin = pair(rules=SCANNED)
    fast = core.fast_path_class()(  # type: ignore[misc]
        {}, compiled.flows.flows, 1.0, Flow, _anchored_hit, Layer, compiled.flows.lookup
    )
    for args in (
        (),
        (len,),
        (len, len, None, 1, len),
        (None, len, None, StreamDirection, len),
        (len, None, None, Flow, len),  # not a stream direction's slots
        (len, None, None, type("Held", (), {}), len),  # not slots at all
    ):
        with pytest.raises(TypeError):
            fast.scan_path(*args)
    fast.scan_path(len, None, None, StreamDirection, len)
    with pytest.raises(AttributeError):  # a reassembler without a depth
        fast.scan_path(len, len, object(), StreamDirection, len)
    loose = type("Loose", (), {"depth": 100, "held": 0, "max_bytes": 1, "_streams": {}})
    with pytest.raises(TypeError):  # its accounts not in slots
        fast.scan_path(len, len, loose(), StreamDirection, len)
    frames = scanned_frames(9, flows=12, disorder=0.0, pieces=FILLER)
    got, want = run(compiled, frames[:200]), run(twin, frames[:200])
    assert got == want
    for eng in (compiled, twin):  # streams held in a list subclass: the engine's way
        for flow in eng.flows.records():
            if flow.streams is not None:
                flow.streams = type("Streams", (list,), {})(flow.streams)
    third = 200 + (len(frames) - 200) // 2
    got, want = run(compiled, frames[200:third]), run(twin, frames[200:third])
    assert got == want
    for eng in (compiled, twin):  # a group's scans as lists: found once the segment is
        for flow in eng.flows.records():  # appended (taken back for the engine's way)
            for sel in (flow.sel_s, flow.sel_c):
                if sel is not None:
                    sel[1].payload_scans[:] = [list(item) for item in sel[1].payload_scans]
    got, want = run(compiled, frames[third:]), run(twin, frames[third:])
    assert got == want
    assert compiled.stats.fast > len(frames) // 2
    assert held_streams(compiled) == held_streams(twin) != {}


def test_process_is_the_compiled_fast_paths_own_once_loaded() -> None:
    """After its first packet, the engine's process is the compiled fast path's: it takes
    an Ethernet frame, counts one of another link type and hands each frame it leaves to
    the full path; the alerts, flows and counters equal the twin's for frames of every link
    type (raw IP among Ethernet, a link type given as a float or a bool, one unknown)."""
    compiled, twin = pair()
    assert getattr(compiled.process, "__self__", None) is compiled
    frames = Mix(seed=5).build(2000)
    raw = [(ts, data[14:], 101) for ts, data, _ in frames[1000:1300]]
    mixed: list[tuple[float, bytes, Any]] = [*frames[:1000], *raw, *frames[1300:]]
    bulk = [i for i in range(1400, len(mixed)) if len(mixed[i][1]) > 1400]  # fast-path data
    for i, linktype in zip(bulk[:4], (1.0, True, 2**70, 147), strict=True):
        mixed[i] = (mixed[i][0], mixed[i][1], linktype)
    got, want = run(compiled, mixed), run(twin, mixed)
    assert got == want
    fast = compiled.process.__self__
    assert type(fast) is core.fast_path_class()
    assert compiled.stats.packets == len(mixed) and compiled.stats.fast > len(mixed) // 2
    with pytest.raises(TypeError):
        compiled.process(1.0, b"")  # type: ignore[call-arg]
    bare = core.fast_path_class()(  # type: ignore[misc]
        {}, compiled.flows.flows, 1.0, Flow, _anchored_hit, Layer, compiled.flows.lookup
    )
    with pytest.raises(TypeError):  # no full path handed over
        bare.process(1.0, frames[0][1], 1)
    with pytest.raises(TypeError):
        bare.full_path(None)


def test_packets_counted_in_c_reach_the_stats_when_read() -> None:
    """The compiled fast path counts packets and fast packets in C: the engine's stats holds
    them whenever it is read (after any packet), as the twin's; a fast path handed another
    Stats first adds what it counted to the one before; a Stats without the counter fails."""
    compiled, twin = pair()
    frames = Mix(seed=6).build(1200)
    for i, (ts, data, linktype) in enumerate(frames[:600]):
        compiled.process(ts, data, linktype)
        twin.process(ts, data, linktype)
        if i % 37 == 0:
            assert compiled.stats == twin.stats
    assert compiled.stats.packets == 600 and compiled.stats.fast > 300
    for ts, data, linktype in frames[600:620]:
        compiled.process(ts, data, linktype)
    fast = compiled.process.__self__
    first = compiled._stats  # (read without the engine's flush)
    fresh = Stats()
    fast.new_flow_path(  # type: ignore[attr-defined]
        compiled.flows,
        fresh,
        compiled._hellos,
        compiled._flow_plans,
        compiled._flow_plan,
        compiled._addr4,
        compiled._port_bits,
        compiled._alerting,
        None,
        None,
        compiled._flow_fire,
        compiled._flow_alerts,
        (),
        True,
        compiled._plans,
        False,
    )
    assert first.packets == 620
    for ts, data, linktype in frames[620:670]:
        fast.process(ts, data, linktype)
    taken = fresh.fast
    fast.flush_stats()  # type: ignore[attr-defined]
    assert fresh.packets == 50 and fresh.fast > taken == 0
    del fresh.packets
    fast.process(*frames[670])
    with pytest.raises(AttributeError):
        fast.flush_stats()  # type: ignore[attr-defined]
    assert first.packets == 620


def held_streams(eng: InspectionEngine) -> dict[bytes, list[bytes]]:
    """The bytes each flow's streams hold, by flow key."""
    return {
        flow.key: [bytes(s.data) for s in flow.streams if isinstance(s, StreamDirection)]
        for flow in eng.flows.records()
        if flow.streams is not None
    }


def test_lookup_odd_arguments() -> None:
    """The compiled lookup hands anything unusual (an int time, another object) to the
    Python lookup, which answers or fails as it always does."""
    compiled, twin = pair()
    frames = Mix(seed=42).build(300)
    for ts, data, linktype in frames:
        compiled.process(ts, data, linktype)
        twin.process(ts, data, linktype)
    layer = decode_packet(frames[-1][1], 1, {})
    assert layer is not None
    ts = int(frames[-1][0]) + 1
    got = compiled._lookup(layer, ts)
    want = twin._lookup(layer, ts)
    assert (got[0].key, got[0].packets_to_server, got[1]) == (
        want[0].key,
        want[0].packets_to_server,
        want[1],
    )
    with pytest.raises(AttributeError):
        compiled._lookup(object(), 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        compiled._lookup(layer)  # type: ignore[call-arg]


def test_a_module_from_other_sources_leaves_the_packets_to_the_twin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A module that does not take what this engine hands it (built from other sources:
    no new_flow_path) leaves every packet to the twin, from the first on, counted once."""

    class Other:
        def __init__(self, *args: Any) -> None:
            pass

    compiled, twin = pair()
    monkeypatch.setattr(core, "fast_path_class", lambda: Other)
    frames = Mix(seed=27).build(2_000)
    assert run(compiled, frames) == run(twin, frames)
    assert compiled._core is None


def test_switch_forces_the_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(core.ENV, "python")
    assert core.fast_path_class() is None
    assert make_engine()._core is None
    monkeypatch.setenv(core.ENV, "")
    assert make_engine()._core is not None


def test_an_idle_engine_loads_none_of_it() -> None:
    """The module is loaded by an engine's first packet, not by the engine (the daemon's
    idle memory is the same with the compiled fast path built or not)."""
    script = (
        "import sys\n"
        "from appliance.lab.mix import Mix, flood, make_engine\n"
        "engine = make_engine()\n"
        "before = 'appliance.inspect._fastpath' in sys.modules\n"
        "for frame in Mix(seed=1).build(5):\n"
        "    engine.process(*frame)\n"
        "print(before, 'appliance.inspect._fastpath' in sys.modules)\n"
    )
    env = {**os.environ, core.ENV: ""}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.stdout.split() == ["False", "True"], done.stderr


def test_a_flow_slot_the_core_writes_keeps_its_type() -> None:
    compiled, _ = pair()
    for ts, data, linktype in Mix(seed=41).build(2_000):
        compiled.process(ts, data, linktype)
    flows = [f for f in compiled.flows.records() if isinstance(f, Flow)]
    assert flows
    for flow in flows:
        assert type(flow.packets_to_server) is int
        assert type(flow.last_ts) is float
        assert type(flow.tcp_state) is int
        assert type(flow.established) is bool


class Flaky:
    """A callback that raises on every ``every``-th call and otherwise calls through."""

    def __init__(self, call: Any, every: int) -> None:
        self.call, self.every, self.calls, self.raised = call, every, 0, 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        if self.calls % self.every == 0:
            self.raised += 1
            raise RuntimeError("flaky")
        return self.call(*args)


def refs(data: bytes, collect: bool = False) -> int:
    """The reference count of ``data``, after collecting cyclic garbage (a tunnel's layers)
    if asked, counted the same way before and after a call."""
    if collect:
        gc.collect()
    return sys.getrefcount(data)


def test_callbacks_that_raise_fail_the_packet_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Python exception raised in a callback the core calls (detectors, a SYN's plan and
    alerts, the anchored check, the flow lookup, a data segment's and a G-PDU's scans) comes
    out of process() as it is; the packet's bytes keep their reference count and the engine
    goes on with the next packet."""
    frames = Mix(seed=90).build(3_000) + flood(600, seed=90)
    engine = importlib.import_module("appliance.inspect.engine")
    monkeypatch.setattr(engine, "_anchored_hit", Flaky(engine._anchored_hit, 5))
    frames += scanned_frames(90, flows=20)
    compiled, _ = pair(rules=ANCHORED + SCANNED)
    flaky = []
    for name in (
        "_scan_syn",
        "_flood_syn",
        "_flow_fire",
        "_flow_alerts",
        "_flow_plan",
        "_scan_segment",
        "_scan_outer",
    ):
        if getattr(compiled, name) is not None:
            flaky.append(Flaky(getattr(compiled, name), 7))
            setattr(compiled, name, flaky[-1])
    flaky.append(Flaky(compiled.flows.lookup, 11))
    compiled.flows.lookup = flaky[-1]  # type: ignore[method-assign]
    counts = [sys.getrefcount(data) for _ts, data, _lt in frames]
    failed = 0
    for ts, data, linktype in frames:
        try:
            compiled.process(ts, data, linktype)
        except RuntimeError as exc:
            assert str(exc) == "flaky"
            failed += 1
    assert compiled._core is not None
    assert failed > 10
    raised = sum(f.raised for f in flaky)
    del compiled, flaky, data
    gc.collect()  # the engine gone, no packet is held by anything
    assert [sys.getrefcount(data) for _ts, data, _lt in frames] == counts
    assert raised > 10


def test_parser_callbacks_that_raise() -> None:
    """A raising fallback, normalize_host or request class: the parse raises it, the
    payload keeps its reference count, the next parse is right."""
    mix = Mix(seed=91).build(3_000)
    payloads = [
        bytes(layer.payload)
        for layer in (decode_packet(d, 1, {}) for _, d, _ in mix)
        if layer is not None and layer.payload
    ]
    dns, sni, http = core.dns_parser_class(), core.sni_parser_class(), core.http_parser_class()
    decoder = core.decoder_class()
    assert dns and sni and http and decoder
    parsers = [
        (dns(DnsQuery, Flaky(parse_dns, 2), MAX_DNS_NAME).parse, parse_dns),
        (sni(Flaky(parse_tls_sni, 2)).parse, parse_tls_sni),
        (
            http(
                Flaky(HttpRequest, 3),
                normalize_host,
                HTTP_METHODS,
                MAX_HTTP_HEADERS,
                Flaky(parse_http_request, 2),
            ).parse,
            parse_http_request,
        ),
        (
            http(
                HttpRequest,
                Flaky(normalize_host, 2),
                HTTP_METHODS,
                MAX_HTTP_HEADERS,
                parse_http_request,
            ).parse,
            parse_http_request,
        ),
    ]
    raised = 0
    for parse, twin in parsers:
        for payload in payloads:
            before = refs(payload)
            try:
                got = parse(payload, {})
            except RuntimeError:
                raised += 1
            else:
                want = twin(payload, {})
                assert type(got) is type(want)
                assert not isinstance(want, bytes) or got == want
                got = want = None
            assert refs(payload) == before or refs(payload, True) == before
    decode = decoder(Layer, Flaky(decode_packet, 2), GtpInfo).decode
    for _ts, data, linktype in mutate(mix, 91, 0.5):
        before = refs(data)
        try:
            decode(data, linktype, {})
        except RuntimeError:
            raised += 1
        assert refs(data) == before or refs(data, True) == before
    assert raised > 20


# ---- Patterns: the prefilters' compiled multi-pattern scan ----------------------------


def patterns_type() -> Any:
    return importlib.import_module("appliance.inspect._fastpath").Patterns


def found_by_find(patterns: list[bytes], data: bytes, fold: bool) -> tuple[int, ...] | None:
    """What the scan must answer: each pattern looked for with ``in``."""
    text = data.lower() if fold else data
    found = tuple(i for i, p in enumerate(patterns) if (p.lower() if fold else p) in text)
    return found or None


# bytes drawn from a small alphabet (so patterns overlap and recur), letters of both cases
_ALPHABET = b"aAbB\x00\xff.-/"
_pattern_bytes = st.one_of(
    st.binary(max_size=6),
    st.lists(st.sampled_from(_ALPHABET), max_size=8).map(bytes),
    st.tuples(st.sampled_from(_ALPHABET), st.integers(1, 12)).map(lambda t: bytes([t[0]]) * t[1]),
)


@settings(max_examples=150 * MORE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    patterns=st.lists(_pattern_bytes, max_size=40),
    pieces=st.lists(st.one_of(_pattern_bytes, st.binary(max_size=40)), max_size=12),
    fold=st.booleans(),
    start=st.integers(-70, 70),
    end=st.one_of(st.none(), st.integers(-70, 70)),
)
def test_patterns_scan_as_in(
    patterns: list[bytes], pieces: list[bytes], fold: bool, start: int, end: int | None
) -> None:
    data = b"".join(p.upper() if i % 3 == 0 else p for i, p in enumerate(pieces))
    scanner = patterns_type()(patterns, fold)
    assert scanner.scan(data) == found_by_find(patterns, data, fold)
    window = data[start:end]
    limit = len(data) if end is None else end
    assert scanner.scan(bytearray(data), start, limit) == found_by_find(patterns, window, fold)
    assert scanner.scan(memoryview(data)[1:]) == found_by_find(patterns, data[1:], fold)
    assert len(scanner) == len(patterns)


@settings(max_examples=20 * MORE, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 3000), fold=st.booleans())
def test_patterns_many_over_long_buffers(seed: int, count: int, fold: bool) -> None:
    """Many patterns, with shared prefixes, over buffers up to 64 KiB made of them."""
    rng = random.Random(seed)
    stems = [rng.randbytes(rng.randrange(1, 4)) for _ in range(8)]
    patterns = [rng.choice(stems) + rng.randbytes(rng.randrange(0, 6)) for _ in range(count)]
    chunks = [rng.choice(patterns)[: rng.randrange(1, 8)] for _ in range(rng.randrange(1, 200))]
    data = b"".join(c.upper() if rng.random() < 0.3 else c for c in chunks)
    data = (data * (1 + rng.randrange(65536) // (len(data) + 1)))[:65536]
    assert patterns_type()(patterns, fold).scan(data) == found_by_find(patterns, data, fold)


def test_patterns_worst_cases() -> None:
    """Zeros against patterns of zeros, thousands of patterns of one prefix, patterns of
    one byte, a 64 KiB buffer: the right answer (each bounded by the buffer's length plus
    the patterns, which the sanitizer build and the fuzz also run)."""
    kinds = patterns_type()
    zeros = [b"\x00" * n for n in range(1, 300)] + [b"\x00" * 999 + b"X"]
    assert kinds(zeros, False).scan(bytes(65536)) == tuple(range(299))
    shared = [b"GET /a" + str(i).encode() for i in range(5000)]
    data = b"get /a" * 10000 + b"GET /a4999"
    assert kinds(shared, True).scan(data) == (4, 49, 499, 4999)
    assert kinds(shared, False).scan(data.lower()) is None
    single = [bytes([b]) for b in range(256)]
    assert kinds(single, False).scan(bytes(range(256)) * 256) == tuple(range(256))
    assert kinds(single, True).scan(b"AB") == (65, 66, 97, 98)
    assert kinds([b""], False).scan(b"") == (0,)
    assert kinds([], True).scan(b"abc") is None
    assert kinds([b"ab", b"ab"], True).scan(b"xAB") == (0, 1)
    # a few patterns are looked for one by one: past twice the buffer's bytes compared
    # (each place of the byte looked for nearly a match), the automaton takes the buffer
    near = b"\x01" + b"\x00" * 99
    twice = [b"\x01" + b"\x00" * 100 + b"\x01", b"never"]
    assert kinds(twice, True).scan(near * 600) is None
    assert kinds(twice, True).scan(near * 600 + b"\x00\x01") == (0,)
    assert kinds(twice, False).scan(near * 600 + b"\x00\x01NEVER") == (0,)
    assert kinds(twice, True).scan(near * 600 + b"\x00\x01NEVER") == (0, 1)
    big = kinds([b"needle"], True)
    assert big.memory < 2048 and big.states == 7


def test_patterns_candidates_and_none_in() -> None:
    rules: list[list[str]] = [["a1", "a2"], ["b"], ["c"]]
    joined: list[tuple[int, ...]] = []

    def join(found: tuple[int, ...]) -> list[str]:
        joined.append(found)
        return [r for i in found for r in rules[i]]

    scanner = patterns_type()([b"abc", b"xyz", b"q"], True, rules, join)
    data = b"..ABC.."
    assert scanner.candidates(data) is rules[0]
    assert not scanner.none_in(data)
    empty = b"nothing"
    assert scanner.candidates(empty) is None
    assert scanner.none_in(empty) and not scanner.none_in(bytes(bytearray(empty)))
    both = b"abc xyz"
    assert scanner.candidates(both) == ["a1", "a2", "b"]
    assert scanner.candidates(b"xyz abc") == ["a1", "a2", "b"]
    assert joined == [(0, 1)]  # the second from what the first joined
    assert scanner.candidates(bytearray(b"q")) is rules[2]
    with pytest.raises(TypeError):
        patterns_type()([b"a"], True).candidates(b"a")
    with pytest.raises(TypeError):
        patterns_type()([b"a", "b"], True)
    with pytest.raises(TypeError):
        patterns_type()([b"a"], True, [[1], [2]], join)
    with pytest.raises(TypeError):
        patterns_type()([b"a"], True).scan("text")


def test_patterns_memo_of_an_application_buffer() -> None:
    """With a memo, a value seen before gives what its scan gave (the same object, looked
    up by value); none_in reads the last value, seen or not; values longer than the memo's
    bytes, or not bytes, are scanned each time, and past its entries the memo is kept anew.
    The answers equal a scanner's without a memo."""
    rules: list[list[str]] = [["a"], ["b"], ["c"]]
    joined: list[tuple[int, ...]] = []

    def join(found: tuple[int, ...]) -> list[str]:
        joined.append(found)
        return [r for i in found for r in rules[i]]

    patterns = [b"abc", b"xyz", b"q"]
    kept = patterns_type()(patterns, True, rules, join, (4, 16))
    plain = patterns_type()(patterns, True, rules, lambda f: join(f))
    values = [b"abc xyz", b"none here", b"QQ", b"abc xyz", b"none here", b"xyz abc " * 3]
    for value in values:
        assert kept.candidates(value) == plain.candidates(value)
        assert kept.none_in(value) == plain.none_in(value) == (plain.candidates(value) is None)
    assert joined.count((0, 1)) == 2  # the short one joined once by each scanner
    first = kept.candidates(b"abc xyz")
    assert kept.candidates(bytes(bytearray(b"abc xyz"))) is first  # (by value)
    for n in range(6):  # past 4 entries: kept anew
        kept.candidates(b"v%d" % n)
    assert kept.candidates(b"abc xyz") == first
    assert kept.candidates(bytearray(b"abc xyz")) == first  # not bytes: scanned
    for memo in ((0, 16), (4, -1), (4,), "memo"):
        with pytest.raises(TypeError):
            patterns_type()(patterns, True, rules, join, memo)
    with pytest.raises(TypeError):  # a memo of rules only
        patterns_type()(patterns, True, None, None, (4, 16))


@pytest.mark.parametrize(
    "rules",
    [
        # found in no G-PDU: the core scans the outer payload and takes them
        'alert udp any any -> any 2152 (msg:"o"; content:"|de ad be ef 01|"; sid:9100001;)',
        # found in some
        'alert udp any any -> any 2152 (msg:"o"; content:"|00 00 00 00|"; sid:9100002;)',
        # a header keyword: each packet's ip:packet is wanted, no outer scan takes a G-PDU
        'alert udp any any -> any 2152 (msg:"o"; content:"|de ad be ef 01|"; sid:9100003;)\n'
        'alert tcp any any -> any any (msg:"t"; ttl:3; sid:9100004;)',
    ],
)
def test_g_pdus_whose_outer_flow_has_a_payload_prefilter(rules: str) -> None:
    """A G-PDU's UDP payload scanned by its outer group's compiled scanners in the core,
    as the engine's _scan_outer scans it."""
    frames = Mix(seed=31).build(3_000)
    same(frames, rules=rules)
    gtp = sum(1 for _ts, data, _lt in frames if data[23] == 17 and data[36:38] == b"\x08\x68")
    assert gtp > 100
