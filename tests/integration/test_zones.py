"""Zones: by interface, by network, interface wildcards, self and any (real traffic, root)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.lab import traffic
from tests.integration.labtools import Lab, probe, profile

pytestmark = pytest.mark.root

PORT = 5000


@pytest.fixture(scope="module")
def servers(lab: Lab) -> Iterator[None]:
    with (
        traffic.serve(lab.ns("wan"), "both", [PORT, 5001]),
        traffic.serve(lab.ns("lan"), "both", [PORT, 5001]),
        traffic.serve(lab.ns("mec"), "both", [PORT, 5001]),
        traffic.serve(lab.ns("appliance"), "both", [PORT, 5001]),
    ):
        yield


@pytest.mark.parametrize("family", [4, 6])
def test_zones_by_interface(lab: Lab, servers: None, family: int) -> None:
    lab.apply(
        profile(
            "zones-by-interface",
            """
            [[rules]]
            name = "lan-to-mec"
            from = "lan"
            to = "mec"
            proto = "tcp"
            dport = [5000]
            action = "accept"
            """,
        )
    )
    assert probe(lab, "lan", "mec", "tcp", PORT, family, expect="open") == "open"
    # Wrong source zone, wrong destination zone, reverse direction, other port: default drop.
    assert probe(lab, "wan", "mec", "tcp", PORT, family, expect="timeout") == "timeout"
    assert probe(lab, "lan", "wan", "tcp", PORT, family, expect="timeout") == "timeout"
    assert probe(lab, "mec", "lan", "tcp", PORT, family, expect="timeout") == "timeout"
    assert probe(lab, "lan", "mec", "tcp", 5001, family, expect="timeout") == "timeout"
    assert probe(lab, "lan", "mec", "udp", PORT, family, expect="timeout") == "timeout"
    assert lab.counter("lan-to-mec") >= 1


@pytest.mark.parametrize("family", [4, 6])
def test_zones_by_network(lab: Lab, servers: None, family: int) -> None:
    # "partner" is the wan host by address only; "apps" is the mec host by address only.
    lab.apply(
        profile(
            "zones-by-network",
            """
            [zones.partner]
            networks = ["198.51.100.2/32", "2001:db8:100::2/128"]

            [zones.apps]
            networks = ["10.45.0.10/32", "fd00:45::10/128"]

            [[rules]]
            name = "partner-to-self"
            from = "partner"
            to = "self"
            proto = "tcp"
            dport = [5000]
            action = "accept"

            [[rules]]
            name = "lan-to-apps"
            from = "lan"
            to = "apps"
            proto = "tcp"
            dport = [5000]
            action = "accept"
            """,
        )
    )
    assert probe(lab, "wan", "appliance", "tcp", PORT, family, expect="open") == "open"
    assert probe(lab, "lan", "appliance", "tcp", PORT, family, expect="timeout") == "timeout"
    assert probe(lab, "lan", "mec", "tcp", PORT, family, expect="open") == "open"
    assert probe(lab, "lan", "wan", "tcp", PORT, family, expect="timeout") == "timeout"


@pytest.mark.parametrize(
    ("interfaces", "reach"),
    [
        ('["eth*"]', {"wan", "lan", "mec"}),
        ('["eth1*"]', {"lan"}),
        ('["eth1", "eth2*"]', {"lan", "mec"}),
    ],
)
def test_interface_wildcard(lab: Lab, servers: None, interfaces: str, reach: set[str]) -> None:
    lab.apply(
        profile(
            "wildcard",
            f"""
            [zones.inside]
            interfaces = {interfaces}

            [[rules]]
            name = "inside-to-self"
            from = "inside"
            to = "self"
            proto = "tcp"
            dport = [5000]
            action = "accept"
            """,
        )
    )
    for host in ("wan", "lan", "mec"):
        want = "open" if host in reach else "timeout"
        assert probe(lab, host, "appliance", "tcp", PORT, expect=want) == want, host


def test_any_covers_self_and_forwarding(lab: Lab, servers: None) -> None:
    lab.apply(
        profile(
            "to-any",
            """
            [[rules]]
            name = "lan-anywhere"
            from = "lan"
            to = "any"
            proto = "udp"
            dport = [5001]
            action = "accept"
            """,
        )
    )
    for dst in ("appliance", "wan", "mec"):
        for family in (4, 6):
            assert probe(lab, "lan", dst, "udp", 5001, family, expect="open") == "open", dst
    assert probe(lab, "wan", "appliance", "udp", 5001, expect="timeout") == "timeout"
    assert probe(lab, "wan", "lan", "udp", 5001, expect="timeout") == "timeout"


def test_from_self_under_output_drop(lab: Lab, servers: None) -> None:
    lab.apply(
        profile(
            "output-drop",
            """
            [defaults]
            output = "drop"

            [[rules]]
            name = "self-to-wan"
            from = "self"
            to = "wan"
            proto = "tcp"
            dport = [5000]
            action = "accept"
            """,
        )
    )
    assert probe(lab, "appliance", "wan", "tcp", PORT, expect="open") == "open"
    assert probe(lab, "appliance", "wan", "tcp", PORT, 6, expect="open") == "open"
    # Dropped in the appliance's own output hook: the local socket is refused (EPERM).
    assert probe(lab, "appliance", "mec", "tcp", PORT, expect="timeout") != "open"
    assert probe(lab, "appliance", "wan", "tcp", 5001, expect="timeout") != "open"


def test_default_accept(lab: Lab, servers: None) -> None:
    lab.apply(
        profile(
            "forward-accept",
            """
            [defaults]
            forward = "accept"

            [[rules]]
            name = "no-wan-to-lan"
            from = "wan"
            to = "lan"
            action = "drop"
            """,
        )
    )
    assert probe(lab, "wan", "mec", "tcp", PORT, expect="open") == "open"
    assert probe(lab, "lan", "wan", "udp", PORT, 6, expect="open") == "open"
    assert probe(lab, "wan", "lan", "tcp", PORT, expect="timeout") == "timeout"
    # input stays at its default, drop
    assert probe(lab, "wan", "appliance", "tcp", PORT, expect="timeout") == "timeout"
