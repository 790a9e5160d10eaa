"""The new-flow path: a bare SYN opening an IPv4/TCP flow, or a segment without SYN and
payload (an ACK, RST or FIN of a flow picked up in mid-stream, or of a flood), is counted by
the rules, thresholds and (a SYN) detectors and held as an embryo until its flow answers or
sends again. What comes out is what the full path gives: the same alerts, flows, counters
and bounds, whatever follows."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest
from scapy.all import IP, TCP, UDP, Ether, raw  # type: ignore[attr-defined]

from appliance.inspect.engine import InspectionConfig, InspectionEngine
from appliance.inspect.eve import to_eve
from appliance.inspect.flow import TCP_NEW, Flow
from appliance.inspect.pcap import LINKTYPE_ETHERNET
from appliance.lab import mix
from appliance.lab.mix import Mix, make_engine
from appliance.model.profile import Detectors, GtpDetector, PortScanDetector, SynFloodDetector
from appliance.model.values import parse_network
from appliance.units import Rate
from tests.inspect.traffic import engine, tcp_session

RULES = (
    'alert tcp $EXTERNAL_NET any -> $HOME_NET any (msg:"syn"; flags:S,12; '
    "threshold: type both, track by_src, count 3, seconds 10; sid:1;)\n"
    'alert tcp any any -> $HOME_NET 23 (msg:"telnet"; flags:S; sid:2;)\n'
    'drop tcp any any -> $HOME_NET 2323 (msg:"mirai"; flags:S; sid:3;)\n'
    'alert tcp any any -> any any (msg:"late"; flow:established; content:"late"; sid:4;)\n'
    'alert tcp any any -> $HOME_NET 9 (msg:"ece"; flags:SE; sid:5;)\n'
)
MIDSTREAM_RULES = (
    'alert tcp any any -> $HOME_NET any (msg:"ack probe"; flags:A,12; '
    "flow:not_established,to_server; threshold: type both, track by_src, count 3, "
    "seconds 10; sid:12;)\n"
    'alert tcp any any -> $HOME_NET 23 (msg:"reset"; flags:R,12; sid:13;)\n'
    'alert tcp any any -> any any (msg:"null"; flags:0; sid:14;)\n'
    'drop tcp any any -> any 2323 (msg:"xmas"; flags:FPU,12; sid:15;)\n'
    'alert tcp any any -> any any (msg:"fin"; flags:F,12; flow:to_server; '
    "threshold: type limit, track by_dst, count 1, seconds 5; sid:16;)\n"
)
DETECTORS = Detectors(
    port_scan=PortScanDetector(ports=5, window=10.0),
    syn_flood=SynFloodDetector(rate=Rate(20, "second")),
)


def run(eng: InspectionEngine, frames: list[Any]) -> tuple[list[dict[str, Any]], Any]:
    events = [to_eve(a) for ts, data, lt in frames for a in eng.process(ts, data, lt)]
    flows = [
        (
            f.key,
            f.first_ts,
            f.last_ts,
            f.packets_to_server,
            f.packets_to_client,
            f.tcp_state,
            f.app,
            f.established,
            f.sizes,
            streams(f),
        )
        for f in eng.flows.records()
    ]
    table = eng.flows
    stats = eng.stats
    counters = (stats.packets, stats.decoded, stats.alerts, stats.errors)
    return events, (flows, counters, len(table), table.evicted, table.expired)


def streams(flow: Flow) -> list[Any] | None:
    """A flow's streams: the sequence number each starts at, and what it holds."""
    if flow.streams is None:
        return None
    return [s if s is None or isinstance(s, int) else (s.base, bytes(s.data)) for s in flow.streams]


def alike(
    rules: str, detectors: Detectors, frames: list[Any], **config: Any
) -> tuple[InspectionEngine, list[dict[str, Any]]]:
    """The frames through an engine and through its twin without fast paths: the same
    alerts, flows and counters. The engine and its alerts."""
    fast = engine(rules, detectors, **config)
    slow = engine(rules, detectors, fast_path=False, **config)
    fast_events, fast_state = run(fast, frames)
    slow_events, slow_state = run(slow, frames)
    assert fast_events == slow_events
    assert fast_state == slow_state
    return fast, fast_events


def twins(**config: Any) -> tuple[InspectionEngine, InspectionEngine]:
    """The engine and its twin without fast paths (every packet through the full path)."""
    return (
        engine(RULES, DETECTORS, **config),
        engine(RULES, DETECTORS, fast_path=False, **config),
    )


def syn(src: str, dst: str, sport: int, dport: int, flags: str = "S", **tcp: Any) -> Any:
    return Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, **tcp)


def traffic(seed: int, count: int, midstream: bool = False) -> list[Any]:
    """SYNs from a few sources to a few servers and ports, some answered (SYN/ACK, RST,
    data), some retransmitted, some opened from both ends at once, some arriving after the
    idle timeout; timestamps that sometimes go back. ``midstream``: a third of the flows
    open with a segment without SYN instead (see ``midstream_flow``)."""
    rng = random.Random(seed)
    sources = [f"198.51.100.{i}" for i in range(1, 6)] + ["10.0.0.7", "10.0.0.8"]
    servers = ["10.0.0.1", "10.0.0.2", "192.0.2.1"]
    ports = [22, 23, 80, 9, 2323, 443]
    out: list[Any] = []
    ts = 1000.0
    for _ in range(count):
        ts += rng.choice([0.001, 0.01, 0.3, -0.002, 40.0 if rng.random() < 0.02 else 0.002])
        src, dst = rng.choice(sources), rng.choice(servers)
        sport, dport = rng.randrange(1000, 1012), rng.choice(ports)
        flags = rng.choice(["S", "S", "S", "SE", "SEC", "SP"])
        seq = rng.randrange(2**32)
        kind = rng.random()
        packets = [syn(src, dst, sport, dport, flags, seq=seq)]
        if midstream and rng.random() < 0.35:
            packets = midstream_flow(rng, src, dst, sport, dport, seq)
            kind = 1.0
        if kind < 0.2:
            packets.append(syn(dst, src, dport, sport, "SA", seq=7, ack=seq + 1))
            packets.append(syn(src, dst, sport, dport, "A", seq=seq + 1, ack=8))
            packets.append(syn(src, dst, sport, dport, "PA", seq=seq + 1, ack=8) / b"late")
        elif kind < 0.3:
            packets.append(syn(dst, src, dport, sport, "R"))
        elif kind < 0.4:
            packets.append(syn(src, dst, sport, dport, flags, seq=seq))  # retransmitted
        elif kind < 0.45:
            packets.append(syn(dst, src, dport, sport, "S", seq=9))  # simultaneous open
        elif kind < 0.5:
            packets.append(syn(src, dst, sport, dport, "PA", seq=seq + 1) / b"late data")
        elif kind < 0.55:
            packets[0] = packets[0] / b"payload"  # a SYN with data: the full path
        for packet in packets:
            ts += 0.0005
            packet.time = ts
            out.append((ts, raw(packet), LINKTYPE_ETHERNET))
    return out


def midstream_flow(
    rng: random.Random, src: str, dst: str, sport: int, dport: int, seq: int
) -> list[Any]:
    """A flow whose first segment seen has no SYN: an ACK, a RST, a FIN, no flag at all or
    an odd set of them, without payload (with one now and then: the full path's), then
    perhaps the server's reply, more of the client's segments, data, or a SYN on the same
    addresses and ports."""
    flags = rng.choice(["A", "A", "PA", "R", "RA", "FA", "F", "", "FPU", "U", "AE", "AC"])
    first = syn(src, dst, sport, dport, flags, seq=seq, ack=rng.randrange(2**32))
    if rng.random() < 0.05:
        first = first / b"mid"
    packets = [first]
    after = rng.random()
    if after < 0.2:
        packets.append(syn(dst, src, dport, sport, "R", seq=0))
    elif after < 0.35:
        packets.append(syn(dst, src, dport, sport, "A", seq=9, ack=seq))
        packets.append(syn(src, dst, sport, dport, "PA", seq=seq, ack=9) / b"late data")
    elif after < 0.5:
        packets.append(syn(src, dst, sport, dport, flags, seq=seq))  # retransmitted
    elif after < 0.6:
        packets.append(syn(src, dst, sport, dport, "S", seq=seq + 99))  # a new connection
        packets.append(syn(dst, src, dport, sport, "SA", seq=7, ack=seq + 100))
    elif after < 0.7:
        packets.append(syn(dst, src, dport, sport, "A", seq=9, ack=seq))  # the reply opens
    return packets


def test_syns_and_what_follows_them_as_the_full_path_gives() -> None:
    for seed in range(4):
        frames = traffic(seed, 600)
        fast, slow = twins()
        fast_events, fast_state = run(fast, frames)
        slow_events, slow_state = run(slow, frames)
        assert fast_events == slow_events
        assert fast_state == slow_state
        assert {e["alert"]["signature_id"] for e in fast_events} >= {1, 2, 3, 5, 9000001}


def test_flows_opened_without_a_syn_as_the_full_path_gives() -> None:
    rules = RULES + MIDSTREAM_RULES
    sids: set[int] = set()
    for seed in range(4):
        fast, fast_events = alike(rules, DETECTORS, traffic(seed, 600, midstream=True))
        sids |= {e["alert"]["signature_id"] for e in fast_events}
        # the flows opened without a SYN took the new-flow path
        assert any(plan[4] == TCP_NEW for plan in fast._plans)
    assert sids >= {1, 2, 12, 13, 14, 15, 16}


def test_an_ack_flood_leaves_only_embryos() -> None:
    eng = engine(RULES + MIDSTREAM_RULES, DETECTORS, max_flows=1000)
    rng = random.Random(4)
    sids: list[int] = []
    for i in range(3000):
        src = f"203.0.113.{rng.randrange(1, 21)}"
        packet = syn(src, "10.0.0.1", 1024 + i, 80, rng.choice(["A", "R", "F"]))
        sids += [a.sid for a in eng.process(1.0 + i * 1e-4, raw(packet), LINKTYPE_ETHERNET)]
    table = eng.flows
    assert len(table) == 1000 and table.evicted == 2000
    assert table.embryos >= 1000 - len(sids) and len(table.index) == 2 * (1000 - table.embryos)
    assert eng.stats.full == 3000 and eng.stats.fast == 0
    # the ACK probes alerted once a source (past its threshold's count), the FINs once; the
    # SYN detectors counted none of them (3,000 segments in 0.3 s from 20 sources)
    assert sorted(sids) == [12] * 20 + [16]


def test_stream_sizes_as_the_full_path_gives() -> None:
    rules = RULES + (
        'alert tcp any any -> any 22 (msg:"first"; flags:S; stream_size:client,<,2; '
        "threshold: type limit, track by_dst, count 2, seconds 5; sid:6;)\n"
        'alert tcp any any -> any any (msg:"no reply"; flow:not_established; '
        "stream_size:server,=,0; flags:S; threshold: type both, track by_src, count 9, "
        "seconds 5; sid:7;)\n"
        'alert tcp any any -> any any (msg:"sent"; flow:established; '
        "stream_size:client,>,5; sid:8;)\n"
        'alert tcp any any -> any any (msg:"mid"; flow:not_established,to_server; '
        "stream_size:client,=,10; sid:9;)\n"
    )
    for seed in range(3):
        fast, fast_events = alike(rules, DETECTORS, traffic(seed, 500, midstream=seed > 0))
        assert {e["alert"]["signature_id"] for e in fast_events} >= {6, 7, 8, 9} - {
            9 if seed == 0 else 0  # (flows opened without a SYN: the later seeds')
        }
        assert fast._plans


def test_embryos_count_against_the_flow_table_bound() -> None:
    frames = traffic(7, 1500)
    fast, slow = twins(max_flows=40, idle_timeout=30.0)
    fast_events, fast_state = run(fast, frames)
    slow_events, slow_state = run(slow, frames)
    assert (fast_events, fast_state) == (slow_events, slow_state)
    assert len(fast.flows) == 40 and fast.flows.evicted > 100 and fast.flows.expired > 0
    assert len(fast.flows.index) <= 80


def test_a_half_open_flood_leaves_only_embryos() -> None:
    eng = engine(RULES, DETECTORS, max_flows=1000)
    rng = random.Random(3)
    packets = [
        syn(f"203.0.{rng.randrange(256)}.{rng.randrange(1, 255)}", "10.0.0.1", 1024 + i, 80)
        for i in range(3000)
    ]
    alerts = 0
    for i, packet in enumerate(packets):
        alerts += len(eng.process(1.0 + i * 1e-4, raw(packet), LINKTYPE_ETHERNET))
    table = eng.flows
    assert len(table) == 1000 and table.evicted == 2000
    assert table.embryos + sum(type(f) is Flow for f in table.flows.values()) == 1000
    # each alert hatched its flow (the alert refers to it); the rest stayed embryos
    assert table.embryos >= 1000 - alerts and len(table.index) == 2 * (1000 - table.embryos)
    assert eng.stats.full == 3000 and eng.stats.fast == 0


@pytest.mark.parametrize("tunnel", [False, True])
def test_an_embryo_hatches_into_the_flow_the_full_path_makes(tunnel: bool) -> None:
    """Its flow (a G-PDU's inner flow: ``tunnel``) as the full path makes it, slot by slot;
    what follows as the full path gives it."""
    packets = tcp_session("10.0.0.5", "10.0.0.80", 40000, 9000, [b"late"], [b"ok"])
    frames = [(1.0 + i / 100, raw(p), LINKTYPE_ETHERNET) for i, p in enumerate(packets)]
    fast, slow = twins()
    if tunnel:  # the G-PDUs' path opened by an earlier one (a datagram of another flow)
        frames = in_g_pdus(frames)
        (opened,) = in_g_pdus([(0.5, raw(Ether() / IP(src="10.0.0.5") / UDP()), 1)])
        fast.process(*opened)
        slow.process(*opened)
    fast.process(*frames[0])
    slow.process(*frames[0])
    key = frames[0][1][-28:-16] if tunnel else frames[0][1][26:38]
    assert fast.flows.embryos == 1 and key not in fast.flows.index
    (embryo_view,) = [f for f in fast.flows.records() if f.key == key]
    (made,) = [f for f in slow.flows.records() if f.key == key]
    assert made.gtp_ok == tunnel
    for name in Flow.__slots__:
        if name in ("sel_s", "sel_c", "fast_s", "fast_c"):  # (quiet, group, app)
            mine, theirs = getattr(embryo_view, name), getattr(made, name)
            assert (mine[0], mine[2]) == (theirs[0], theirs[2])
            assert mine[1].reads_payload == theirs[1].reads_payload
            assert [s.sid for s in mine[1].plain] == [s.sid for s in theirs[1].plain]
        elif name == "streams":  # the client's stream opens on its first payload
            assert embryo_view.streams == made.streams == [None, (packets[0][TCP].seq + 1)]
        else:
            assert getattr(embryo_view, name) == getattr(made, name), name
    assert embryo_view.flow_id == made.flow_id
    fast_events, fast_state = run(fast, frames[1:])
    slow_events, slow_state = run(slow, frames[1:])
    assert (fast_events, fast_state) == (slow_events, slow_state)
    assert [e["alert"]["signature_id"] for e in fast_events] == [4]
    assert fast.flows.embryos == 0
    assert fast.stats.fast == 2  # the SYN/ACK and the ACK, tunnelled or not


def test_the_bench_mix_and_a_flood_give_the_same_results() -> None:
    rng = random.Random(3)
    flood = [
        (
            1_700_000_000.0 + i * 4e-5 + 1e-6,
            raw(
                syn(
                    f"203.0.{rng.randrange(256)}.{rng.randrange(1, 255)}", "10.0.0.80", 2000 + i, 80
                )
            ),
            LINKTYPE_ETHERNET,
        )
        for i in range(4000)
    ]
    tunnelled = [(ts + 2e-6, data, lt) for ts, data, lt in mix.flood(3000, seed=4, kind="gtp")]
    frames = sorted(Mix(seed=5).build(8000) + flood + tunnelled)
    fast = make_engine()
    config = fast.config
    slow = InspectionEngine(
        InspectionConfig(
            signatures=config.signatures,
            detectors=config.detectors,
            never_block=config.never_block,
            fast_path=False,
        )
    )
    fast_events, fast_state = run(fast, frames)
    slow_events, slow_state = run(slow, frames)
    assert (fast_events, fast_state) == (slow_events, slow_state)
    assert len(fast_events) > 10
    assert any(plan[5] for plan in fast._plans)  # (the G-PDUs' SYNs on the new-flow path)


def test_header_fields_of_a_syn_decide_as_on_the_full_path() -> None:
    rules = RULES + (
        'alert tcp any any -> any any (msg:"window"; flags:S; window:8192; sid:10;)\n'
        'alert ip any any -> any any (msg:"ttl"; ttl:<10; sid:11;)\n'
    )
    packets = [
        syn("198.51.100.1", "10.0.0.1", 1000, 80, window=8192),
        syn("198.51.100.1", "10.0.0.1", 1001, 80, window=1024, seq=5),
        Ether() / IP(src="198.51.100.2", dst="10.0.0.1", ttl=3) / TCP(sport=1, dport=80),
        syn("198.51.100.2", "10.0.0.1", 1002, 80),
    ]
    frames = [(1.0 + i / 100, raw(p), LINKTYPE_ETHERNET) for i, p in enumerate(packets)]
    fast_events, fast_state = run(engine(rules, DETECTORS), frames)
    slow_events, slow_state = run(engine(rules, DETECTORS, fast_path=False), frames)
    assert (fast_events, fast_state) == (slow_events, slow_state)


# -- flows carried in G-PDUs --------------------------------------------------------------

GNB, UPF = bytes([10, 0, 9, 1]), bytes([10, 0, 9, 100])
CLIENTS = {"198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4", "198.51.100.5"}
CLIENTS |= {"10.0.0.7", "10.0.0.8"}  # (the sources traffic() opens flows from)


def in_g_pdus(frames: list[Any]) -> list[Any]:
    """The frames' IP packets carried in G-PDUs on one GTP-U path between a gNB and a UPF:
    a client's uplink, the rest downlink."""
    out = []
    for ts, data, linktype in frames:
        inner = data[14:]
        up = ".".join(str(b) for b in inner[12:16]) in CLIENTS
        teid = 0x1234 if up else 0x5678
        outer = mix.ipv4(GNB, UPF, 17, mix.udp(2152, 2152, mix.gtpu(teid, inner)))
        if not up:
            outer = mix.ipv4(UPF, GNB, 17, mix.udp(2152, 2152, mix.gtpu(teid, inner)))
        out.append((ts, mix.eth(outer), linktype))
    return out


@pytest.mark.parametrize(
    "pools", [None, (), ("198.51.100.0/25",), ("10.0.0.0/30",), ("10.9.9.0/24",)]
)
def test_flows_in_g_pdus_as_the_full_path_gives(pools: tuple[str, ...] | None) -> None:
    """Flows carried in G-PDUs open on the new-flow path where the GTP-U checks pass them
    (no pools: all; else a client or a server in one): the same alerts, flows and
    counters as the full path, the GTP-U alerts of those the checks do not pass included."""
    rules = (
        RULES
        + MIDSTREAM_RULES
        + ('alert udp any any -> any 2152 (msg:"outer"; content:"late data"; sid:20;)\n')
    )
    detectors = DETECTORS
    if pools is not None:
        networks = tuple(parse_network(p) for p in pools)
        detectors = replace(DETECTORS, gtp=GtpDetector(ue_pools=networks))
    sids: set[int] = set()
    for seed in range(3):
        frames = in_g_pdus(traffic(seed, 500, midstream=seed > 0))
        fast, fast_events = alike(rules, detectors, frames)
        sids |= {e["alert"]["signature_id"] for e in fast_events}
        # inner flows opened on the new-flow path, unless no address passes
        tunnelled = [plan for plan in fast._plans if plan[5]]
        passing = pools != ("10.9.9.0/24",)
        assert bool(tunnelled) == passing
        assert (fast.stats.fast > 0) == passing  # (their packets after the first, too)
    assert sids >= {1, 2, 5, 12, 20, 9000001}
    if pools:
        assert 9000004 in sids  # (the GTP-U checks' alerts)


def test_g_pdu_embryos_count_against_the_flow_table_bound() -> None:
    """A table so small that an inner flow's embryo may push out the tunnel's own flow."""
    frames = in_g_pdus(traffic(7, 1500))
    fast, _ = alike(RULES, DETECTORS, frames, max_flows=12, idle_timeout=30.0)
    assert len(fast.flows) == 12 and fast.flows.evicted > 100
    assert any(plan[5] for plan in fast._plans)


# -- rules on a segment's header fields -----------------------------------------------------

HEADER_RULES = (
    'alert tcp $EXTERNAL_NET any -> $HOME_NET any (msg:"nmap"; fragbits:!D; dsize:0; '
    "flags:S,12; ack:0; window:1024; threshold: type both, track by_dst, count 1, "
    "seconds 60; sid:30;)\n"
    'alert tcp any any -> $HOME_NET any (msg:"high ttl"; flags:S; ttl:>250; sid:31;)\n'
    'alert ip any any -> $HOME_NET any (msg:"low ttl"; ttl:<5; sid:32;)\n'
    'alert tcp any any -> any 23 (msg:"odd id"; flags:S; id:!0; id:<100; tos:!0; sid:33;)\n'
    'alert tcp any any -> any any (msg:"evil bit"; fragbits:*R; sid:34;)\n'
    'alert tcp any any -> any any (msg:"seq"; flags:A,12; seq:<1000; sid:35;)\n'
    'alert tcp any any -> any any (msg:"never"; flags:S; dsize:>0; ttl:<5; sid:36;)\n'
)


def header_traffic(seed: int, count: int) -> list[Any]:
    """The SYN traffic of ``traffic()``, each first segment's TTL, TOS, ID, flags (DF, the
    evil bit), window and sequence number drawn from values on both sides of the rules'."""
    rng = random.Random(seed)
    out = []
    for ts, data, linktype in traffic(seed, count, midstream=seed % 2 == 1):
        packet = Ether(data)
        if IP in packet and TCP in packet and not packet[TCP].payload and rng.random() < 0.8:
            ip = packet[IP]
            ip.ttl = rng.choice([1, 3, 64, 128, 251, 255])
            ip.tos = rng.choice([0, 0, 0x10])
            ip.id = rng.choice([0, 7, 99, 100, 31337])
            ip.flags = rng.choice(["", "DF", "DF", "evil"])
            packet[TCP].window = rng.choice([1024, 1024, 512, 65535])
            if rng.random() < 0.3:
                packet[TCP].seq = rng.randrange(2000)
            del ip.chksum, packet[TCP].chksum
            data = raw(packet)
        out.append((ts, data, linktype))
    return out


@pytest.mark.parametrize("tunnel", [False, True])
def test_rules_on_header_fields_decide_per_segment_as_on_the_full_path(tunnel: bool) -> None:
    """A rule on header fields no longer keeps a kind of segment off the new-flow path: its
    tests are made of each segment there (TTL, TOS, ID, fragment bits, sequence and
    acknowledgement numbers, window; its dsize and flags by the kind), with the same alerts,
    flows and counters as the full path, in G-PDUs too."""
    # (a rule on a header field loaded first: where it alerts with the telnet rule, first)
    first = 'alert tcp any any -> $HOME_NET 23 (msg:"telnet ttl"; flags:S; ttl:>60; sid:38;)\n'
    rules = first + RULES + MIDSTREAM_RULES + HEADER_RULES
    if tunnel:  # (the TTL rule on any protocol would apply to the G-PDUs themselves)
        rules = "".join(line + "\n" for line in rules.splitlines() if "sid:32;" not in line)
    sids: set[int] = set()
    for seed in range(4):
        frames = header_traffic(seed, 500)
        if tunnel:
            frames = in_g_pdus(frames)
        fast, events = alike(rules, DETECTORS, frames)
        sids |= {e["alert"]["signature_id"] for e in events}
        tested = {e[0].sid for plan in fast._alerting for e in plan if isinstance(e, tuple)}
        assert tested >= ({30, 31} if tunnel else {30, 31, 32})
        assert 36 not in tested  # (its dsize never holds of a segment without payload)
    assert sids >= {1, 2, 30, 31, 33, 34, 35, 38} | (set() if tunnel else {32})
    assert 36 not in sids


def test_a_header_rule_sharing_a_sid_or_passing_leaves_its_kind_to_the_full_path() -> None:
    rules = (
        'alert tcp any any -> any 80 (msg:"syn"; flags:S; sid:40;)\n'
        'alert tcp any any -> any 80 (msg:"syn ttl"; flags:S; ttl:<5; sid:40;)\n'
        'pass tcp any any -> any 22 (msg:"trusted"; flags:S; ttl:64; sid:41;)\n'
        'alert tcp any any -> any 22 (msg:"ssh"; flags:S; sid:42;)\n'
        'alert tcp any any -> any 443 (msg:"mss"; flags:S; tcp.mss:<100; sid:43;)\n'
    )
    fast, events = alike(rules, DETECTORS, header_traffic(5, 400))
    sent = {e["alert"]["signature_id"] for e in events}
    assert {40, 42} <= sent
    # no plan holds a rule of those shapes: their kinds took the full path
    assert not any(isinstance(e, tuple) for plan in fast._alerting for e in plan)
