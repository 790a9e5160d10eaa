"""IP-in-IP (v4 and v6), GRE, VXLAN and 802.1Q decoded to the inner packet; rules match it
and EVE names the carrier; nesting is bounded."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from scapy.all import GRE, IP, TCP, UDP, Dot1Q, Ether, IPv6, Raw, raw  # type: ignore[attr-defined]
from scapy.layers.vxlan import VXLAN

from appliance.inspect.decode import (
    LINKTYPE_ETHERNET,
    MAX_TUNNEL_DEPTH,
    Errors,
    Layer,
    decode_packet,
)
from tests.inspect.traffic import inspect, sids

INNER = IP(src="10.1.0.5", dst="10.2.0.9") / TCP(sport=4000, dport=80, flags="PA") / b"evil"
INNER6 = IPv6(src="fd00::5", dst="fd00::9") / TCP(sport=4000, dport=80, flags="PA") / b"evil"
OUTER = IP(src="192.0.2.1", dst="192.0.2.2")
OUTER6 = IPv6(src="2001:db8::1", dst="2001:db8::2")


def decode(packet: object) -> tuple[Layer | None, Errors]:
    errors: Errors = {}
    return decode_packet(raw(packet), LINKTYPE_ETHERNET, errors), errors


@pytest.mark.parametrize(
    ("packet", "outer_proto"),
    [
        (Ether() / OUTER / INNER, 4),
        (Ether() / OUTER / INNER6, 41),
        (Ether() / OUTER6 / INNER, 4),
        (Ether() / OUTER6 / INNER6, 41),
        (Ether() / OUTER / GRE() / INNER, 47),
        (
            Ether()
            / OUTER
            / GRE(key_present=1, key=7, seqnum_present=1, sequence_number=3)
            / INNER6,
            47,
        ),
        (Ether() / OUTER / GRE(proto=0x6558) / Ether() / INNER, 47),
        (Ether() / OUTER / UDP(sport=5555, dport=4789) / VXLAN(vni=42) / Ether() / INNER, 17),
        (
            Ether()
            / Dot1Q(vlan=5)
            / OUTER
            / UDP(dport=4789)
            / VXLAN(vni=1)
            / Ether()
            / Dot1Q(vlan=9)
            / INNER6,
            17,
        ),
    ],
)
def test_decoded_to_the_inner_packet(packet: object, outer_proto: int) -> None:
    layer, errors = decode(packet)
    assert errors == {}
    assert layer is not None and layer.tunnel is not None
    assert layer.proto == 6 and layer.dport == 80 and layer.payload == b"evil"
    assert (
        ipaddress.ip_address(layer.dst) in ipaddress.ip_network("10.2.0.9/32") or layer.family == 6
    )
    assert layer.tunnel.proto == outer_proto and layer.depth == 1


def test_nesting_is_bounded() -> None:
    packet = INNER
    for _ in range(MAX_TUNNEL_DEPTH + 3):
        packet = IP(src="192.0.2.1", dst="192.0.2.2") / packet
    layer, errors = decode(Ether() / packet)
    assert errors == {"tunnel.too_deep": 1}
    assert layer is not None and layer.proto == 4 and layer.depth == MAX_TUNNEL_DEPTH


def test_a_vxlan_flood_of_nested_frames_does_not_recurse_without_bound() -> None:
    frame = raw(Ether() / INNER)
    for _ in range(200):  # built level by level: scapy itself recurses on nested layers
        frame = raw(Ether() / OUTER / UDP(dport=4789) / VXLAN(vni=1) / Raw(frame))
    errors: Errors = {}
    layer = decode_packet(frame, LINKTYPE_ETHERNET, errors)
    assert errors == {"tunnel.too_deep": 1} and layer is not None


@pytest.mark.parametrize(
    ("gre", "reason"),
    [
        (struct.pack("!HH", 0x0001, 0x880B), "gre.unsupported_version"),
        (struct.pack("!HH", 0x0000, 0x88CC), "gre.unsupported_protocol"),
        (b"\x00", "gre.truncated"),
    ],
)
def test_gre_it_does_not_decode_is_counted(gre: bytes, reason: str) -> None:
    layer, errors = decode(Ether() / IP(src="192.0.2.1", dst="192.0.2.2", proto=47) / gre)
    assert layer is not None and layer.proto == 47 and layer.tunnel is None
    assert errors == {reason: 1}


def test_rules_match_the_inner_packet_and_eve_names_the_carrier() -> None:
    rules = 'alert tcp any any -> 10.2.0.0/16 80 (msg:"inner"; content:"evil"; sid:1;)'
    packets = [
        Ether() / OUTER / INNER,
        Ether() / OUTER / GRE() / INNER,
        Ether() / OUTER / UDP(sport=5555, dport=4789) / VXLAN(vni=42) / Ether() / INNER,
    ]
    events = inspect(packets, rules)
    assert sids(events) == [1, 1, 1]
    for event in events:
        assert event["dest_ip"] == "10.2.0.9" and event["dest_port"] == 80
        assert event["tunnel"]["src_ip"] == "192.0.2.1" and event["tunnel"]["depth"] == 1
    assert [e["tunnel"]["proto"] for e in events] == ["IPIP", "GRE", "UDP"]
