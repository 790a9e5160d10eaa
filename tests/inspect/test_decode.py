"""Decoders: what they extract, and the reasons they count for what they cannot."""

from __future__ import annotations

from scapy.all import (  # type: ignore[attr-defined]
    ICMP,
    IP,
    SCTP,
    TCP,
    UDP,
    Dot1Q,
    Ether,
    ICMPv6EchoRequest,
    IPOption_RR,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    raw,
)
from scapy.contrib.gtp import GTP_U_Header, GTPPDUSessionContainer

from appliance.inspect.decode import (
    MAX_VLAN_DEPTH,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_SCTP,
    PROTO_TCP,
    PROTO_UDP,
    Errors,
    Layer,
    decode_packet,
)


def decode(packet: object) -> tuple[Layer | None, Errors]:
    errors: Errors = {}
    return decode_packet(raw(packet), 1, errors), errors


def test_ipv4_tcp_with_options_and_padding() -> None:
    packet = (
        Ether()
        / IP(src="1.2.3.4", dst="5.6.7.8", options=[IPOption_RR()])
        / TCP(sport=10, dport=20, flags="PA", options=[("MSS", 1460)])
        / b"data"
    )
    layer, errors = decode(raw(packet) + b"\x00" * 6)  # Ethernet padding is not payload
    assert errors == {}
    assert layer is not None
    assert (layer.family, layer.proto, layer.sport, layer.dport) == (4, PROTO_TCP, 10, 20)
    assert layer.src == bytes([1, 2, 3, 4]) and layer.flags == 0x18 and layer.payload == b"data"


def test_ipv4_fragments_are_flagged_not_reassembled() -> None:
    first = (
        Ether()
        / IP(src="1.1.1.1", dst="2.2.2.2", flags="MF", id=7)
        / UDP(sport=1, dport=2)
        / (b"x" * 16)
    )
    later = Ether() / IP(src="1.1.1.1", dst="2.2.2.2", frag=3, proto=17, id=7) / (b"y" * 8)
    layer, _ = decode(first)
    assert layer is not None and layer.fragment and layer.sport == 1
    layer, _ = decode(later)
    assert layer is not None and layer.fragment and layer.sport == 0 and layer.payload == b"y" * 8


def test_ipv6_extension_chain() -> None:
    packet = (
        Ether()
        / IPv6(src="2001:db8::1", dst="2001:db8::2")
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrRouting()
        / IPv6ExtHdrDestOpt()
        / UDP(sport=53, dport=5353)
        / b"q"
    )
    layer, errors = decode(packet)
    assert errors == {}
    assert layer is not None and layer.family == 6 and layer.proto == PROTO_UDP
    assert (layer.sport, layer.dport, layer.payload) == (53, 5353, b"q")


def test_ipv6_fragment() -> None:
    first = Ether() / IPv6() / IPv6ExtHdrFragment(m=1, offset=0) / TCP(sport=1, dport=2)
    later = Ether() / IPv6() / IPv6ExtHdrFragment(m=0, offset=10, nh=6) / (b"z" * 8)
    layer, _ = decode(first)
    assert layer is not None and layer.fragment and layer.dport == 2
    layer, _ = decode(later)
    assert layer is not None and layer.fragment and layer.dport == 0 and layer.proto == PROTO_TCP


def test_ipv6_truncated_extension_chain() -> None:
    data = raw(Ether() / IPv6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / UDP())
    layer, errors = decode(data[: 14 + 40 + 8 + 3])
    assert layer is not None and errors.get("ipv6.ext_truncated") == 1


def test_icmp_icmpv6_and_sctp() -> None:
    layer, _ = decode(Ether() / IP() / ICMP(type=3, code=1))
    assert layer is not None and (layer.proto, layer.icmp_type, layer.icmp_code) == (
        PROTO_ICMP,
        3,
        1,
    )
    layer, _ = decode(Ether() / IPv6() / ICMPv6EchoRequest())
    assert layer is not None and (layer.proto, layer.icmp_type) == (PROTO_ICMPV6, 128)
    layer, _ = decode(Ether() / IP() / SCTP(sport=38412, dport=38412))
    assert layer is not None and (layer.proto, layer.sport, layer.dport) == (
        PROTO_SCTP,
        38412,
        38412,
    )


def test_vlan_depth_is_bounded() -> None:
    packet = Ether()
    for i in range(MAX_VLAN_DEPTH):
        packet = packet / Dot1Q(vlan=i + 1)
    layer, _ = decode(packet / IP() / TCP())
    assert layer is not None
    deeper = packet / Dot1Q(vlan=99) / IP() / TCP()
    layer, errors = decode(deeper)
    assert layer is None and errors == {"vlan.too_deep": 1}


def test_gtp_with_extension_header_and_inner_ipv6() -> None:
    inner = IPv6(src="2001:db8:45::1", dst="2001:db8::9") / TCP(sport=3, dport=443, flags="S")
    packet = (
        Ether()
        / IP(src="192.0.2.1", dst="192.0.2.2")
        / UDP(sport=2152, dport=2152)
        / GTP_U_Header(teid=0xABCDEF, gtp_type=255, E=1, next_ex=0x85)
        / GTPPDUSessionContainer(type=1, QFI=5)
        / inner
    )
    layer, errors = decode(packet)
    assert errors == {}
    assert layer is not None and layer.gtp is not None
    assert layer.gtp.teid == 0xABCDEF and layer.gtp.error is None
    inner_layer = layer.gtp.inner
    assert inner_layer is not None and inner_layer.family == 6 and inner_layer.dport == 443
    assert inner_layer.tunnel is layer and inner_layer.depth == 1


def gtp_raw(header: bytes, body: bytes = b"") -> bytes:
    return raw(
        Ether()
        / IP(src="192.0.2.1", dst="192.0.2.2")
        / UDP(sport=2152, dport=2152)
        / (header + body)
    )


def test_gtp_errors() -> None:
    cases = {
        # zero-length extension header
        "gtp.ext_zero_length": gtp_raw(
            b"\x34\xff\x00\x08" + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x85" + b"\x00\x00\x00\x00"
        ),
        # length shorter than the optional header it announces
        "gtp.length_short": gtp_raw(b"\x32\xff\x00\x02\x00\x00\x00\x01", b"\x00\x00"),
        # length longer than the packet
        "gtp.truncated": gtp_raw(b"\x30\xff\x00\x40\x00\x00\x00\x01", b"\x45"),
        "gtp.bad_version": gtp_raw(b"\x50\xff\x00\x00\x00\x00\x00\x01"),
        "gtp.inner_not_ip": gtp_raw(b"\x30\xff\x00\x04\x00\x00\x00\x01", b"\x00\x01\x02\x03"),
    }
    for reason, data in cases.items():
        errors: Errors = {}
        layer = decode_packet(data, 1, errors)
        assert layer is not None and layer.gtp is not None, reason
        assert layer.gtp.error == reason and errors == {reason: 1}


def test_gtp_echo_has_no_inner_packet() -> None:
    layer, errors = decode(
        Ether() / IP() / UDP(sport=2152, dport=2152) / GTP_U_Header(gtp_type=1, S=1)
    )
    assert errors == {} and layer is not None and layer.gtp is not None
    assert layer.gtp.msg_type == 1 and layer.gtp.inner is None


def test_nested_gtp_is_bounded() -> None:
    packet = IP(src="10.45.0.1", dst="1.1.1.1") / TCP()
    for _ in range(6):
        packet = (
            IP(src="192.0.2.1", dst="192.0.2.2")
            / UDP(sport=2152, dport=2152)
            / GTP_U_Header(gtp_type=255)
            / packet
        )
    layer, errors = decode(Ether() / packet)
    assert layer is not None and errors == {"gtp.too_deep": 1}
    depth = 0
    while layer is not None and layer.gtp is not None and layer.gtp.inner is not None:
        assert layer.gtp.nested == (layer.gtp.inner.gtp is not None)
        layer = layer.gtp.inner
        depth += 1
    assert depth == 3


def test_gtp_only_on_destination_port_2152() -> None:
    layer, _ = decode(
        Ether() / IP() / UDP(sport=2152, dport=9999) / GTP_U_Header(gtp_type=255) / IP()
    )
    assert layer is not None and layer.gtp is None


def test_truncated_transport_headers() -> None:
    for proto, reason in (
        (6, "tcp.truncated"),
        (17, "udp.truncated"),
        (1, "icmp.truncated"),
        (132, "sctp.truncated"),
    ):
        layer, errors = decode(Ether() / IP(proto=proto) / b"\x00\x01")
        assert layer is not None and errors == {reason: 1}
