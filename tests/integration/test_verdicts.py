"""Actions and rate limits: accept, drop, reject (TCP reset, ICMP unreachable), limit, log."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from appliance.lab import traffic
from tests.integration.labtools import Lab, probe, profile

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def servers(lab: Lab) -> Iterator[None]:
    with (
        traffic.serve(lab.ns("wan"), "both", [5000, 5001, 5002]),
        traffic.serve(lab.ns("mec"), "both", [5000, 5001, 5002]),
        traffic.serve(lab.ns("appliance"), "both", [5000, 5001]),
    ):
        yield


REJECTS = """
[[rules]]
name = "reject-tcp"
from = "lan"
to = "wan"
proto = "tcp"
dport = [5000]
action = "reject"

[[rules]]
name = "reject-udp"
from = "lan"
to = "wan"
proto = "udp"
dport = [5000]
action = "reject"

[[rules]]
name = "reject-any"
from = "lan"
to = "mec"
action = "reject"

[[rules]]
name = "drop-self"
from = "lan"
to = "self"
proto = "tcp"
dport = [5000]
action = "drop"

[[rules]]
name = "reject-self"
from = "lan"
to = "self"
action = "reject"

[[rules]]
name = "accept-5001"
from = "lan"
to = "wan"
dport = [5001]
proto = "tcp"
action = "accept"
"""


@pytest.mark.parametrize("family", [4, 6])
def test_reject_answers_at_once(lab: Lab, servers: None, family: int) -> None:
    lab.apply(profile("rejects", REJECTS))
    cases = [
        ("wan", "tcp", 5000, "refused"),  # TCP reset
        ("wan", "udp", 5000, "refused"),  # ICMP port unreachable
        ("mec", "tcp", 5000, "refused"),  # proto any: reset for TCP
        ("mec", "udp", 5000, "refused"),  # proto any: ICMP unreachable otherwise
        ("mec", "icmp", 0, "refused"),
        ("appliance", "tcp", 5000, "timeout"),  # drop: silence
        ("appliance", "udp", 5001, "refused"),
        ("wan", "tcp", 5001, "open"),
        ("wan", "tcp", 5002, "timeout"),  # default drop
    ]
    for dst, proto, port, want in cases:
        start = time.monotonic()
        got = probe(lab, "lan", dst, proto, port, family, expect=want)
        assert got == want, (dst, proto, port)
        if want == "refused":
            assert time.monotonic() - start < 1.0, "a rejection must not wait for a timeout"
    assert lab.counter("reject-tcp") >= 1
    assert lab.counter("reject-udp") >= 1


def test_reject_tcp_is_a_reset(lab: Lab, servers: None) -> None:
    from scapy.layers.inet import TCP
    from scapy.layers.l2 import Ether

    lab.apply(profile("rejects", REJECTS))
    with traffic.capture(lab.ns("lan"), "eth0") as cap:
        assert probe(lab, "lan", "wan", "tcp", 5000, expect="refused") == "refused"
    frames = [Ether(f.data) for f in cap.frames if not f.outgoing]
    resets = [f for f in frames if TCP in f and f[TCP].flags.R and f[TCP].sport == 5000]
    assert resets, "no TCP reset came back"


def test_reject_udp_is_icmp_port_unreachable(lab: Lab, servers: None) -> None:
    from scapy.layers.inet import ICMP
    from scapy.layers.inet6 import ICMPv6DestUnreach
    from scapy.layers.l2 import Ether

    lab.apply(profile("rejects", REJECTS))
    with traffic.capture(lab.ns("lan"), "eth0") as cap:
        assert probe(lab, "lan", "wan", "udp", 5000, 4, expect="refused") == "refused"
        assert probe(lab, "lan", "wan", "udp", 5000, 6, expect="refused") == "refused"
    frames = [Ether(f.data) for f in cap.frames if not f.outgoing]
    assert any(ICMP in f and f[ICMP].type == 3 and f[ICMP].code == 3 for f in frames)
    assert any(ICMPv6DestUnreach in f and f[ICMPv6DestUnreach].code == 4 for f in frames)


@pytest.mark.parametrize("family", [4, 6])
def test_limit_over_the_rate_falls_through(lab: Lab, servers: None, family: int) -> None:
    lab.apply(
        profile(
            "limit",
            """
            [[rules]]
            name = "limited"
            from = "wan"
            to = "mec"
            proto = "tcp"
            dport = [5000]
            limit = "2/second"
            action = "accept"
            """,
        )
    )
    target = lab.addr("mec", family)
    time.sleep(1.0)  # a full bucket, whatever ran before
    burst = traffic.tcp_connect_many(lab.ns("wan"), target, 5000, 20, 0.7)
    opened = burst.count("open")
    # The burst (5) and maybe a refill pass; the rest falls to the default drop.
    assert 1 <= opened <= 8, burst
    assert burst.count("timeout") == 20 - opened, burst
    # A rate, not a ban: after a pause it matches again.
    time.sleep(1.5)
    assert probe(lab, "wan", "mec", "tcp", 5000, family, expect="open") == "open"


def test_limit_excess_meets_a_later_rule(lab: Lab, servers: None) -> None:
    lab.apply(
        profile(
            "limit-then-reject",
            """
            [[rules]]
            name = "limited"
            from = "wan"
            to = "mec"
            proto = "udp"
            dport = [5000]
            limit = "1/second"
            action = "accept"

            [[rules]]
            name = "excess"
            from = "wan"
            to = "mec"
            proto = "udp"
            action = "reject"
            """,
        )
    )
    time.sleep(1.0)
    outcomes = [traffic.udp_probe(lab.ns("wan"), "10.45.0.10", 5000, 2.0) for _ in range(12)]
    assert "open" in outcomes
    assert "refused" in outcomes, outcomes
    assert lab.counter("excess") >= 1


def test_log_rule_still_acts_and_counts(lab: Lab, servers: None) -> None:
    lab.apply(
        profile(
            "log",
            """
            [[rules]]
            name = "logged-drop"
            from = "wan"
            to = "mec"
            proto = "tcp"
            dport = [5001]
            action = "drop"
            log = true

            [[rules]]
            name = "logged-accept"
            from = "wan"
            to = "mec"
            proto = "tcp"
            dport = [5000]
            action = "accept"
            log = true
            """,
        )
    )
    assert probe(lab, "wan", "mec", "tcp", 5000, expect="open") == "open"
    assert probe(lab, "wan", "mec", "tcp", 5001, expect="timeout") == "timeout"
    assert lab.counter("logged-accept") == 1
    assert lab.counter("logged-drop") >= 1
    ruleset = lab.nft("list", "chain", "inet", "appliance", "forward")
    assert 'log prefix "appliance logged-drop' in ruleset
