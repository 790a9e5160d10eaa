"""Header keywords (ttl, tos, id, fragbits, fragoffset, ipopts, tcp.mss, window, seq, ack)
against packets scapy builds, and the integer forms they take."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.all import (  # type: ignore[attr-defined]
    ICMP,
    IP,
    TCP,
    UDP,
    Ether,
    ICMPv6EchoRequest,
    IPOption_LSRR,
    IPOption_RR,
    IPv6,
    IPv6ExtHdrFragment,
    fragment,
    raw,
)
from scapy.layers.inet6 import fragment6

from appliance.inspect.fields import (
    HEADER_BUFFERS,
    IP_OPTIONS,
    IP_PACKET,
    SEGMENT_FIELDS,
    has_ip_option,
    header_buffers,
    parse_uint,
    read_field,
    segment_test,
    segment_tests_hold,
)
from appliance.inspect.match import contents_match
from appliance.inspect.rules import Signature, Variables, parse_rules
from tests.inspect.traffic import inspect, sids

VARS = Variables.from_networks([ipaddress.ip_network("10.0.0.0/8")])
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # no ARP lookups


def rule(options: str) -> Signature:
    return next(parse_rules(f"alert ip any any -> any any ({options} sid:1;)", "t", VARS))


def holds(options: str, packet: object) -> bool:
    return contents_match(rule(options), {"pkt": b"", IP_PACKET: raw(packet)})


V4 = IP(src="10.0.0.1", dst="10.0.0.2", ttl=3, tos=0x10, id=31337, flags="DF")
SYN = TCP(sport=1, dport=2, flags="S", seq=1000, ack=0, window=1024, options=[("MSS", 500)])


@pytest.mark.parametrize(
    ("options", "packet", "expected"),
    [
        ("ttl:3;", V4 / SYN, True),
        ("ttl:4;", V4 / SYN, False),
        ("ttl:<4;", V4 / SYN, True),
        ("ttl:>3;", V4 / SYN, False),
        ("ttl:>=3;", V4 / SYN, True),
        ("ttl:<=2;", V4 / SYN, False),
        ("ttl:2<>4;", V4 / SYN, True),  # both ends left out
        ("ttl:3<>5;", V4 / SYN, False),
        ("ttl:2-4;", V4 / SYN, True),
        ("ttl:!3;", V4 / SYN, False),
        ("ttl:7;", IPv6(src="fc00::1", dst="fc00::2", hlim=7) / SYN, True),  # the hop limit
        ("tos:16;", V4 / SYN, True),
        ("tos:0x10;", V4 / SYN, True),
        ("tos:!16;", V4 / SYN, False),
        ("tos:0;", IPv6(src="fc00::1", dst="fc00::2") / SYN, False),  # IPv4 only
        ("id:31337;", V4 / SYN, True),
        ("id:1;", V4 / SYN, False),
        ("fragbits:D;", V4 / SYN, True),
        ("fragbits:M;", V4 / SYN, False),
        ("fragbits:*MD;", V4 / SYN, True),
        ("fragbits:+D;", IP(flags="DF+MF") / SYN, True),
        ("fragbits:D;", IP(flags="DF+MF") / SYN, False),  # exactly these
        ("fragbits:!D;", V4 / SYN, False),
        ("fragbits:M+;", IP(flags="MF") / UDP(), True),
        ("fragoffset:0;", V4 / SYN, True),
        ("fragoffset:>0;", IP(frag=185) / (b"x" * 8), True),
        ("fragoffset:185;", IP(frag=185) / (b"x" * 8), True),
        (
            "fragoffset:100;",
            IPv6(src="fc00::1", dst="fc00::2") / IPv6ExtHdrFragment(offset=100) / (b"x" * 8),
            True,
        ),
        ("ipopts:lsrr;", IP(options=[IPOption_LSRR(routers=["10.0.0.9"])]) / SYN, True),
        ("ipopts:rr;", IP(options=[IPOption_LSRR(routers=["10.0.0.9"])]) / SYN, False),
        ("ipopts:rr;", IP(options=[IPOption_RR()]) / SYN, True),
        ("ipopts:any;", IP(options=[IPOption_RR()]) / SYN, True),
        ("ipopts:any;", V4 / SYN, False),
        ("window:1024;", V4 / SYN, True),
        ("window:!1024;", V4 / SYN, False),
        ("window:1024;", V4 / UDP(), False),  # no TCP header
        ("seq:1000;", V4 / SYN, True),
        ("ack:0;", V4 / SYN, True),
        ("ack:1;", V4 / SYN, False),
        ("tcp.mss:500;", V4 / SYN, True),
        ("tcp.mss:<536;", V4 / SYN, True),
        ("tcp.mss:>=536;", V4 / SYN, False),
        ("tcp.mss:500;", V4 / TCP(options=[("NOP", None), ("WScale", 7)]), False),  # none
        ("window:1024;", IPv6(src="fc00::1", dst="fc00::2") / SYN, True),
        ("ttl:3; window:1024; tcp.mss:500;", V4 / SYN, True),
    ],
)
def test_header_keywords(options: str, packet: object, expected: bool) -> None:
    assert holds(options, packet) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5", (5, 5, False)),
        ("!5", (5, 5, True)),
        ("<5", (0, 4, False)),
        ("<=5", (0, 5, False)),
        (">5", (6, 255, False)),
        (">=5", (5, 255, False)),
        ("1<>5", (2, 4, False)),
        ("1-5", (2, 4, False)),
        ("0x10", (16, 16, False)),
        ("x10", (16, 16, False)),
    ],
)
def test_integer_forms(text: str, expected: tuple[int, int, bool]) -> None:
    assert parse_uint(text, 255) == expected


@pytest.mark.parametrize("text", ["", "a", "300", "<0", "5<>6", ">255", "1-"])
def test_bad_integer_forms(text: str) -> None:
    with pytest.raises(ValueError):
        parse_uint(text, 255)


def test_short_or_odd_bytes_read_as_no_field() -> None:
    for data in (b"", b"\x45", bytes(19), b"\x60" + bytes(20), b"\x45" + bytes(30)):
        for name in ("ttl", "tos", "id", "fragoffset", "seq", "ack", "window", "tcp.mss"):
            read_field(name, data)  # never raises


def test_header_keywords_on_crafted_traffic() -> None:
    """Through the engine: rules with a content and header keywords, over IPv4 and IPv6, and
    rules of header keywords alone."""
    rules = (
        'alert udp any any -> any any (msg:"low ttl probe"; content:"probe"; ttl:<5; sid:1;)\n'
        'alert tcp any any -> any any (msg:"small window"; content:"hi"; window:<600; sid:2;)\n'
        'alert tcp any any -> any any (msg:"syn mss"; flags:S; tcp.mss:<536; sid:3;)\n'
        'alert ip any any -> any any (msg:"ttl alone"; ttl:1; sid:4;)\n'
    )
    udp = UDP(sport=999, dport=7) / b"probe"
    tcp = TCP(sport=5, dport=80, flags="PA") / b"hi"
    packets = [
        ETH / IP(src="10.0.0.5", dst="192.0.2.9", ttl=2) / udp,
        ETH / IP(src="10.0.0.5", dst="192.0.2.9", ttl=64) / udp,
        ETH / IPv6(src="fc00::5", dst="fc00::9", hlim=1) / udp,
        ETH
        / IP(src="10.0.0.6", dst="192.0.2.9")
        / TCP(sport=6, dport=80, flags="PA", window=512)
        / b"hi",
        ETH / IP(src="10.0.0.7", dst="192.0.2.9") / tcp,  # scapy's window: 8192
        # header keywords alone, on bare SYNs and on any IP packet
        ETH / IP(src="10.0.0.8", dst="192.0.2.9") / TCP(sport=8, flags="S", options=[("MSS", 100)]),
        ETH
        / IP(src="10.0.0.8", dst="192.0.2.9")
        / TCP(sport=9, flags="S", options=[("MSS", 1460)]),
        ETH / IP(src="10.0.0.9", dst="192.0.2.9", ttl=1, proto=47) / (b"x" * 8),
    ]
    assert sids(inspect(packets, rules)) == [1, 1, 4, 2, 3, 4]  # 4: the IPv6 hop limit 1


@given(st.binary(max_size=120), st.sampled_from(sorted(IP_OPTIONS.values())))
def test_any_bytes_read_as_a_field_or_none(data: bytes, option: int) -> None:
    for name in ("ttl", "tos", "id", "fragbits", "fragoffset", "seq", "ack", "window"):
        found = read_field(name, data)
        assert found is None or 0 <= found < 2**32
    mss = read_field("tcp.mss", data)
    assert mss is None or 0 <= mss <= 65535
    has_ip_option(data, option)
    for name, header in header_buffers(data).items():
        assert name in HEADER_BUFFERS and len(header) <= len(data)


@pytest.mark.parametrize(
    ("options", "packet", "expected"),
    [
        ('ipv4.hdr; content:"|40 06|"; offset:8; depth:2;', IP(ttl=64) / TCP(), True),
        ('ipv4.hdr; content:"|40 11|"; offset:8; depth:2;', IP(ttl=64) / TCP(), False),
        ("ipv4.hdr; bsize:24;", IP(options=[IPOption_RR()]) / TCP(), True),  # options in
        ("ipv4.hdr; bsize:20;", IP() / TCP(), True),
        ('ipv6.hdr; content:"|06 07|"; offset:6; depth:2;', IPv6(hlim=7) / TCP(), True),
        ('ipv6.hdr; content:"|06|";', IP() / TCP(), False),  # no IPv6 header
        ('tcp.hdr; content:"|02|"; offset:13; depth:1;', IP() / TCP(flags="S"), True),
        ('tcp.hdr; content:"|02 04 01 f4|"; offset:20;', V4 / SYN, True),  # the MSS option
        ("tcp.hdr; bsize:>20;", V4 / SYN, True),
        ('tcp.hdr; content:"|00 50|"; offset:2; depth:2;', IPv6() / TCP(dport=80), True),
        ('udp.hdr; content:"|00 35|"; offset:2; depth:2;', IP() / UDP(dport=53), True),
        ('udp.hdr; content:"|00 35|";', IP() / TCP(dport=53), False),  # no UDP header
        ('udp.hdr; to_lowercase; content:"|00 35|"; offset:2;', IP() / UDP(dport=53), True),
        ('icmpv4.hdr; content:"|08 00|"; depth:2;', IP() / ICMP(type=8), True),
        ('icmpv4.hdr; content:"|08 00|"; depth:2;', IP() / ICMP(type=0), False),
        ('icmpv4.hdr; content:"|12 34|"; offset:4; depth:2;', IP() / ICMP(id=0x1234), True),
        ("icmpv4.hdr; bsize:8;", IP() / ICMP() / (b"x" * 40), True),  # the payload is not in
        ("icmpv4.hdr; bsize:20;", IP() / ICMP(type=13, ts_ori=1, ts_rx=2, ts_tx=3), True),
        ('icmpv4.hdr; content:"|00 00 00 03|"; offset:16;', IP() / ICMP(type=14, ts_tx=3), True),
        (
            "icmpv4.hdr; bsize:16;",  # a router advertisement of one address (2 words each)
            IP(proto=1) / (b"\x09\0\0\0\x01\x02\x07\x08" + b"\x0a\0\0\1" + bytes(4)),
            True,
        ),
        (
            "icmpv4.hdr; bsize:8;",  # its addresses cut short: the 8 bytes
            IP(proto=1) / (b"\x09\0\0\0\x04\x02\x07\x08" + bytes(8)),
            True,
        ),
        ('icmpv4.hdr; content:"|08|";', IPv6() / ICMPv6EchoRequest(), False),
        ('icmpv6.hdr; content:"|80 00|"; depth:2;', IPv6() / ICMPv6EchoRequest(), True),
        ('icmpv6.hdr; content:"|00 07|"; offset:6;', IPv6() / ICMPv6EchoRequest(seq=7), True),
        ("icmpv6.hdr; bsize:8;", IPv6() / ICMPv6EchoRequest(data=b"y" * 30), True),
        ('icmpv6.hdr; content:"|80|";', IP() / ICMP(type=8), False),  # no ICMPv6 header
    ],
)
def test_header_buffers(options: str, packet: object, expected: bool) -> None:
    data = raw(packet)
    sig = rule(options)
    assert contents_match(sig, {"pkt": b"", IP_PACKET: data, **header_buffers(data)}) is expected
    assert sig.header and sig.app == ""


def test_header_buffers_through_the_engine() -> None:
    rules = (
        'alert tcp any any -> any any (msg:"syn with mss 100"; tcp.hdr; '
        'content:"|02 04 00 64|"; offset:20; sid:1;)\n'
        'alert udp any any -> any any (msg:"udp length 9"; udp.hdr; content:"|00 09|"; '
        "offset:4; depth:2; sid:2;)\n"
    )
    src = ETH / IP(src="10.0.0.8", dst="192.0.2.9")
    packets = [
        src / TCP(sport=8, flags="S", options=[("MSS", 100)]),
        src / TCP(sport=9, flags="S", options=[("MSS", 1460)]),
        src / UDP(sport=1, dport=9) / b"x",
        src / UDP(sport=1, dport=9) / b"xy",
    ]
    assert sids(inspect(packets, rules)) == [1, 2]


def test_icmp_header_buffers_through_the_engine() -> None:
    rules = (
        'alert icmp any any -> any any (msg:"echo id 0x4242"; icmpv4.hdr; '
        'content:"|08 00|"; depth:2; content:"|42 42|"; offset:4; depth:2; sid:1;)\n'
        'alert icmpv6 any any -> any any (msg:"echo6 seq 9"; icmpv6.hdr; '
        'content:"|80 00|"; depth:2; content:"|00 09|"; offset:6; sid:2;)\n'
    )
    v4 = ETH / IP(src="10.0.0.8", dst="192.0.2.9")
    v6 = ETH / IPv6(src="fc00::8", dst="fc00::9")
    packets = [
        v4 / ICMP(type=8, id=0x4141) / b"BB",  # the id in the payload only: no match
        v4 / ICMP(type=8, id=0x4242),
        v6 / ICMPv6EchoRequest(seq=8, data=b"\x00\x09"),
        v6 / ICMPv6EchoRequest(seq=9),
    ]
    assert sids(inspect(packets, rules)) == [1, 2]


def test_header_keywords_see_the_first_fragment_of_a_reassembled_datagram() -> None:
    """Suricata's reassembled packet: the first fragment's IP header (its TTL, id, TOS and
    options), the datagram's length, the fragment bits and offset cleared."""
    rules = (
        'alert udp any any -> any any (msg:"ttl of the first"; ttl:3; content:"tail"; sid:1;)\n'
        'alert udp any any -> any any (msg:"id"; id:4242; content:"tail"; sid:2;)\n'
        'alert udp any any -> any any (msg:"fragbits"; fragbits:M; content:"tail"; sid:3;)\n'
        'alert udp any any -> any any (msg:"hdr"; ipv4.hdr; content:"|10|"; offset:1; '
        "depth:1; sid:4;)\n"
        'alert ip any any -> any any (msg:"v6 hop limit"; ttl:9; sid:5;)\n'
        'alert udp any any -> any any (msg:"udp hdr"; udp.hdr; content:"|27 0f|"; offset:2; '
        "depth:2; sid:6;)\n"
        'alert ip any any -> any any (msg:"offset"; fragoffset:>0; sid:7;)\n'
    )
    body = UDP(sport=1000, dport=9999) / (b"h" * 60 + b"tail")
    first, *rest = fragment(IP(src="10.0.0.1", dst="10.0.0.2", id=4242, ttl=3, tos=0x10) / body, 24)
    rest = [IP(raw(f)) for f in rest]
    for f in rest:
        f.ttl = 200  # later fragments' TTL is not the datagram's
        del f.chksum
    v6 = IPv6(src="fd00::1", dst="fd00::2", hlim=9) / IPv6ExtHdrFragment(id=5) / body
    frames = [ETH / p for p in [first, *rest, *fragment6(v6, 64)]]
    assert len(frames) >= 6
    assert sorted(sids(inspect(frames, rules))) == [1, 2, 4, 5, 6, 6]  # 6: v4 and v6
    # the same datagram with a TTL of 64 in its first fragment: only the other rules
    first, *rest = fragment(IP(src="10.0.0.1", dst="10.0.0.2", id=4242, ttl=64) / body, 24)
    assert sorted(sids(inspect([ETH / p for p in [first, *rest]], rules))) == [2, 6]


SEGMENT_OPTIONS = [
    "ttl:3;",
    "ttl:>250;",
    "ttl:<10;",
    "ttl:!64;",
    "ttl:1-5;",
    "tos:16;",
    "tos:!0;",
    "id:97;",
    "id:>1000;",
    "fragbits:D;",
    "fragbits:!D;",
    "fragbits:*DM;",
    "fragbits:+D;",
    "fragbits:M;",
    "fragoffset:0;",
    "fragoffset:>10;",
    "fragoffset:!0;",
    "seq:1000;",
    "seq:<5;",
    "ack:0;",
    "ack:!0;",
    "window:1024;",
    "window:>60000;",
    "window:!1024;",
]


@pytest.mark.parametrize("options", SEGMENT_OPTIONS)
def test_a_segment_s_header_tests_hold_as_the_fields_read(options: str) -> None:
    """The new-flow path's tests of a segment's fields (``segment_tests_hold``) answer as
    the rule's own test of the packet, over packets of values on both sides of the tests'
    (no fragment: the new-flow path takes none)."""
    (content,) = rule(options).contents
    assert content.head is not None
    compiled = segment_test(content.head)
    assert compiled is not None and compiled[0] == SEGMENT_FIELDS[content.head.field]
    seen = set()
    for ttl in (1, 3, 64, 255):
        for flags, frag in (("DF", 0), ("", 0), ("evil", 0), ("evil+DF", 0)):
            for window, seq, ack in ((1024, 1000, 0), (65535, 3, 7), (0, 2**32 - 1, 1)):
                packet = IP(
                    ttl=ttl, tos=0x10 if ttl > 3 else 0, id=ttl * 97, flags=flags, frag=frag
                ) / TCP(window=window, seq=seq, ack=ack, flags="S")
                data = b"\x00" * 14 + raw(packet)
                want = holds(options, packet)
                assert segment_tests_hold((compiled,), data, 14) is want, (options, packet)
                seen.add(want)
    # both answers seen, but where the field is the same on every packet that is no fragment
    assert seen == {True, False} or options.startswith(("fragoffset", "fragbits:M"))


def test_tests_the_new_flow_path_does_not_make() -> None:
    for options in ("tcp.mss:>100;", "ipopts:rr;", "ttl:3; tcp.mss:500;"):
        heads = [c.head for c in rule(options).contents if c.head is not None]
        assert any(segment_test(head) is None for head in heads), options
