"""[[forwards]] (DNAT) and zone masquerade (real traffic, root)."""

from __future__ import annotations

import pytest

from appliance.lab import traffic
from tests.integration.labtools import Lab, probe, profile

pytestmark = pytest.mark.root

FORWARDS = """
[zones.wan]
interfaces = ["eth0"]
masquerade = {masq}

[zones.lan]
interfaces = ["eth1"]

[zones.mec]
interfaces = ["eth2"]
"""


def nat_profile(masquerade: bool) -> str:
    zones = 'version = 1\nname = "{name}"\n' + FORWARDS.replace(
        "{masq}", "true" if masquerade else "false"
    )
    return profile(
        "nat",
        """
        [[forwards]]
        name = "mec-app"
        from = "wan"
        proto = "tcp"
        dport = 8443
        to_addr = "10.45.0.10"
        to_port = 443

        [[forwards]]
        name = "mec-range"
        from = "wan"
        proto = "udp"
        dport = "9000-9010"
        to_addr = "10.45.0.10"

        [[rules]]
        name = "lan-out"
        from = "lan"
        to = "wan"
        action = "accept"
        """,
        zones=zones,
    )


def test_forward_tcp_to_the_mec_host(lab: Lab) -> None:
    lab.apply(nat_profile(masquerade=True))
    with traffic.serve(lab.ns("mec"), "tcp", [443, 8443]) as app:
        assert probe(lab, "wan", "appliance", "tcp", 8443, toward="wan", expect="open") == "open"
        # The app sees the real client, not the appliance.
        assert app.peers("tcp", 443) == ["198.51.100.2"]
        # Only the published port: the app is not reachable directly, nor on other ports.
        assert probe(lab, "wan", "mec", "tcp", 443, expect="timeout") == "timeout"
        assert probe(lab, "wan", "appliance", "tcp", 443, toward="wan", expect="timeout") == (
            "timeout"
        )
        # Not from another zone either: the forward is for traffic from the wan.
        assert probe(lab, "lan", "appliance", "tcp", 8443, toward="lan", expect="timeout") == (
            "timeout"
        )
    assert lab.counter("mec-app") >= 1


def test_forward_applies_only_to_traffic_addressed_to_the_appliance(lab: Lab) -> None:
    lab.apply(nat_profile(masquerade=True))
    with traffic.serve(lab.ns("mec"), "tcp", [443, 8443]) as app:
        # Routed through the appliance to the app's own address on the published port:
        # not translated (so not accepted either), the app sees nothing.
        assert probe(lab, "wan", "mec", "tcp", 8443, expect="timeout") == "timeout"
        assert app.peers("tcp", 443) == []
        assert app.peers("tcp", 8443) == []


def test_forward_udp_port_range_keeps_the_port(lab: Lab) -> None:
    lab.apply(nat_profile(masquerade=True))
    with traffic.serve(lab.ns("mec"), "udp", [9000, 9005, 9010, 9011]) as app:
        for port in (9000, 9005, 9010):
            got = probe(lab, "wan", "appliance", "udp", port, toward="wan", expect="open")
            assert got == "open", port
        assert probe(lab, "wan", "appliance", "udp", 9011, toward="wan", expect="timeout") == (
            "timeout"
        )
        assert sorted({s.port for s in app.seen()}) == [9000, 9005, 9010]


def test_masquerade(lab: Lab) -> None:
    lab.apply(nat_profile(masquerade=True))
    with traffic.serve(lab.ns("wan"), "both", 80) as web:
        assert probe(lab, "lan", "wan", "tcp", 80, expect="open") == "open"
        assert probe(lab, "lan", "wan", "udp", 80, expect="open") == "open"
        assert web.peers() == ["198.51.100.1", "198.51.100.1"]


def test_without_masquerade_the_source_is_kept(lab: Lab) -> None:
    lab.apply(nat_profile(masquerade=False))
    with traffic.serve(lab.ns("wan"), "tcp", 80) as web:
        assert probe(lab, "lan", "wan", "tcp", 80, expect="open") == "open"
        assert web.peers() == ["192.168.10.10"]


def test_masquerade_only_toward_its_zone(lab: Lab) -> None:
    lab.apply(
        profile(
            "masq-zone",
            """
            [[rules]]
            name = "lan-out"
            from = "lan"
            to = "any"
            action = "accept"
            """,
            zones="""
            version = 1
            name = "{name}"

            [zones.wan]
            interfaces = ["eth0"]
            masquerade = true

            [zones.lan]
            interfaces = ["eth1"]

            [zones.mec]
            interfaces = ["eth2"]
            """,
        )
    )
    with traffic.serve(lab.ns("mec"), "tcp", 80) as mec:
        assert probe(lab, "lan", "mec", "tcp", 80, expect="open") == "open"
        assert mec.peers() == ["192.168.10.10"]


def test_drop_rules_apply_to_forwarded_ports(lab: Lab) -> None:
    # A blocklist rule "from wan to any" must stop a blocklisted source from using a
    # published port as well: [[rules]] come before the forwards' accept.
    lab.apply(
        profile(
            "forward-blocklist",
            """
            [sets.blocklist]
            type = "ipv4_addr"
            interval = true
            elements = ["198.51.100.0/30"]

            [[forwards]]
            name = "mec-app"
            from = "wan"
            proto = "tcp"
            dport = 8443
            to_addr = "10.45.0.10"
            to_port = 443

            [[rules]]
            name = "blocklist-in"
            from = "wan"
            to = "any"
            saddr = ["@blocklist"]
            action = "drop"
            """,
        )
    )
    with traffic.serve(lab.ns("mec"), "tcp", 443) as app:
        outcome = probe(lab, "wan", "appliance", "tcp", 8443, toward="wan", expect="timeout")
        assert outcome == "timeout"
        assert app.peers() == []
