"""The engine's fast paths change how much work a packet costs, never what comes out: the same
traffic gives the same alerts, flows and counters with and without them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import IP, TCP, Ether, raw  # type: ignore[attr-defined]

from appliance.inspect.engine import InspectionConfig, InspectionEngine
from appliance.inspect.eve import to_eve
from appliance.inspect.pcap import LINKTYPE_ETHERNET
from appliance.lab.mix import Mix, make_engine
from tests.inspect.traffic import (
    ANY_IP_TTL_RULE,
    ESTABLISHED_HEADER_RULES,
    engine,
    gtp,
    http_get,
    tcp_session,
    varied_headers,
)


def run(eng: InspectionEngine, frames: list[Any]) -> tuple[list[dict[str, Any]], Any]:
    events = [to_eve(a) for ts, data, lt in frames for a in eng.process(ts, data, lt)]
    flows = sorted(
        (f.key, f.packets_to_server, f.packets_to_client, f.app, f.established)
        for f in eng.flows.records()
    )
    stats = eng.stats
    return events, (flows, stats.packets, stats.decoded, stats.alerts, stats.errors)


def slow_twin(eng: InspectionEngine) -> InspectionEngine:
    config = eng.config
    return InspectionEngine(
        InspectionConfig(
            signatures=config.signatures,
            detectors=config.detectors,
            block=config.block,
            never_block=config.never_block,
            fast_path=False,
        )
    )


def test_bench_mix_same_results_with_and_without_fast_paths() -> None:
    frames = Mix(seed=11).build(30_000)
    fast = make_engine()
    fast_events, fast_state = run(fast, frames)
    slow_events, slow_state = run(slow_twin(fast), frames)
    assert fast_events == slow_events
    assert fast_state == slow_state
    assert len(fast_events) > 10
    assert fast.stats.fast > len(frames) // 3


def test_flag_and_payload_rules_on_established_flows() -> None:
    rules = (
        'alert tcp any any -> any any (msg:"urg"; flags:+U; sid:1;)\n'
        'alert tcp any any -> any 9000 (msg:"late"; flow:established; content:"late"; sid:2;)\n'
        'alert tcp any any -> any 9000 (msg:"anchored"; content:"AB"; depth:2; sid:3;)\n'
        'alert tcp any any -> any any (msg:"fin"; flags:FA; sid:4;)\n'
        'alert http any any -> any any (msg:"resp ack"; flow:to_client; sid:5;)\n'
        'alert tcp any any -> any any (msg:"not AB"; content:!"AB"; flow:established; sid:6;)\n'
    )
    packets = tcp_session("10.0.0.5", "10.0.0.80", 40000, 9000, [b"x" * 100, b"ABcd", b"late"])
    packets.append(
        Ether() / IP(src="10.0.0.5", dst="10.0.0.80") / TCP(sport=40000, dport=9000, flags="AU")
    )
    packets.append(
        Ether() / IP(src="10.0.0.5", dst="10.0.0.80") / TCP(sport=40000, dport=9000, flags="FA")
    )
    packets += tcp_session(
        "10.0.0.5", "10.0.0.80", 40001, 80, [http_get("/")], [b"HTTP/1.1 200 OK\r\n\r\n"]
    )
    packets.append(
        Ether() / IP(src="10.0.0.80", dst="10.0.0.5") / TCP(sport=80, dport=40001, flags="A")
    )
    inner = IP(src="10.45.0.1", dst="10.0.0.80") / TCP(sport=5, dport=9000, flags="A") / b"ABzz"
    packets += [gtp("10.0.9.1", "10.0.9.2", inner)] * 3
    frames = [(1.0 + i / 100, raw(p), LINKTYPE_ETHERNET) for i, p in enumerate(packets)]
    fast = engine(rules)
    fast_events, fast_state = run(fast, frames)
    slow_events, slow_state = run(slow_twin(fast), frames)
    assert fast_events == slow_events and fast_state == slow_state
    assert {e["alert"]["signature_id"] for e in fast_events} == {1, 2, 3, 4, 5, 6}


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=40),
    st.integers(0, 50),
    st.integers(0, 60),
    st.sampled_from(
        [
            'content:"AB"; depth:4;',
            'content:"B"; offset:2; depth:3;',
            'content:"AB"; depth:2; content:!"C"; offset:1; depth:5;',
        ]
    ),
    st.booleans(),
)
def test_anchored_probe_agrees_with_the_general_check(
    payload: bytes, start: int, end: int, options: str, established: bool
) -> None:
    from appliance.inspect.engine import _anchored_hit
    from appliance.inspect.match import Group
    from appliance.inspect.rules import Variables, parse_rules

    sig = next(
        parse_rules(
            f'alert tcp any any -> any any (msg:"a"; {options} sid:1;)',
            "t",
            Variables.from_networks(None),
        )
    )
    data = b"\x00" * start + payload + b"\xff" * 10
    end = min(len(data), start + end)
    probed = Group(anchored=[sig])
    assert probed.anchored_probe is not None
    general = Group(anchored=[sig])
    general.anchored_probe = None
    assert _anchored_hit(probed, data, start, end, established) == _anchored_hit(
        general, data, start, max(end, start), established
    )


@pytest.mark.parametrize("any_ip", [False, True])
def test_header_rules_keep_only_the_packets_they_could_match_off_the_fast_paths(
    any_ip: bool,
) -> None:
    """Rules on established flows' header fields (TTL, TOS, ID, DF, window, ACK number) and
    payload sizes, on plain TCP and in G-PDUs: a packet outside every such rule's tests and
    sizes takes the fast path, the others the full path; what comes out is the same."""
    rules = ESTABLISHED_HEADER_RULES + (ANY_IP_TTL_RULE if any_ip else "")
    frames = varied_headers(Mix(seed=21).build(8_000), seed=21)
    fast = engine(rules)
    fast_events, fast_state = run(fast, frames)
    slow_events, slow_state = run(slow_twin(fast), frames)
    assert fast_events == slow_events and fast_state == slow_state
    sids = {e["alert"]["signature_id"] for e in fast_events}
    assert sids >= {50, 51, 52, 55, 56, 57} | ({60} if any_ip else set())
    assert fast.stats.fast > len(frames) // 3
