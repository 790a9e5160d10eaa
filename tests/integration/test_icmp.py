"""ICMP and ICMPv6: echo allowed or blocked by rules; neighbour discovery and the errors
TCP needs always pass (real traffic, root)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.lab import netns, traffic
from tests.integration.labtools import Lab, probe, profile

pytestmark = pytest.mark.root

ECHO_RULES = """
[[rules]]
name = "lan-ping-self"
from = "lan"
to = "self"
proto = "icmp"
action = "accept"

[[rules]]
name = "lan-ping6-self"
from = "lan"
to = "self"
proto = "icmpv6"
action = "accept"

[[rules]]
name = "lan-ping-wan"
from = "lan"
to = "wan"
proto = "icmp"
action = "accept"

[[rules]]
name = "lan-ping6-wan"
from = "lan"
to = "wan"
proto = "icmpv6"
action = "accept"

[[rules]]
name = "mec-ping-reject"
from = "mec"
to = "any"
proto = "icmp"
action = "reject"

[[rules]]
name = "lan-tcp-v6"
from = "lan"
to = "wan"
proto = "tcp"
dport = [5000]
action = "accept"
"""


@pytest.fixture(scope="module")
def servers(lab: Lab) -> Iterator[None]:
    with traffic.serve(lab.ns("wan"), "tcp", 5000):
        yield


@pytest.mark.parametrize("family", [4, 6])
def test_echo_by_rule(lab: Lab, servers: None, family: int) -> None:
    lab.apply(profile("icmp", ECHO_RULES))
    assert probe(lab, "lan", "appliance", "icmp", 0, family, expect="open") == "open"
    assert probe(lab, "lan", "wan", "icmp", 0, family, expect="open") == "open"
    # No rule: dropped.
    assert probe(lab, "wan", "appliance", "icmp", 0, family, expect="timeout") == "timeout"
    assert probe(lab, "wan", "lan", "icmp", 0, family, expect="timeout") == "timeout"
    assert probe(lab, "lan", "mec", "icmp", 0, family, expect="timeout") == "timeout"


def test_icmp_rule_does_not_cover_icmpv6(lab: Lab, servers: None) -> None:
    lab.apply(profile("icmp", ECHO_RULES))
    # mec-ping-reject is proto icmp: IPv4 echo is rejected, ICMPv6 echo just dropped.
    assert probe(lab, "mec", "wan", "icmp", 0, 4, expect="refused") == "refused"
    assert probe(lab, "mec", "wan", "icmp", 0, 6, expect="timeout") == "timeout"
    assert lab.counter("mec-ping-reject") >= 1


def test_neighbour_discovery_under_default_drop(lab: Lab, servers: None) -> None:
    # Nothing in the profile allows ICMPv6 from the wan host, yet addresses resolve:
    # forwarding needs the lan host to resolve the appliance and the appliance the wan host.
    lab.apply(profile("icmp", ECHO_RULES))
    for role in ("wan", "lan", "mec", "appliance"):
        netns.flush_neighbours(lab.ns(role))
    assert probe(lab, "lan", "wan", "tcp", 5000, 6, expect="open") == "open"
    for role in ("lan", "appliance"):
        netns.flush_neighbours(lab.ns(role))
    assert probe(lab, "lan", "appliance", "icmp", 0, 6, expect="open") == "open"


@pytest.mark.parametrize("family", [4, 6])
def test_icmp_errors_of_allowed_flows_come_back(lab: Lab, servers: None, family: int) -> None:
    # The wan host has no UDP listener on 5001: its kernel answers "port unreachable", and
    # that error crosses the forward chain (default drop) back to the lan host.
    lab.apply(
        profile(
            "icmp-errors",
            ECHO_RULES
            + """
            [[rules]]
            name = "lan-udp-out"
            from = "lan"
            to = "wan"
            proto = "udp"
            dport = [5001]
            action = "accept"
            """.replace("            ", ""),
        )
    )
    assert probe(lab, "lan", "wan", "udp", 5001, family, expect="refused") == "refused"
