"""The engine end to end on crafted traffic: one test (or table) per rule-option family."""

from __future__ import annotations

import pytest
from scapy.all import DNS, DNSQR, ICMP, IP, TCP, UDP, Dot1Q, Ether, IPv6  # type: ignore[attr-defined]

from appliance.model.profile import Detectors
from appliance.model.values import parse_network
from tests.inspect.traffic import (
    client_hello,
    engine,
    frames,
    gtp,
    http_get,
    inspect,
    sids,
    tcp_session,
)

CLIENT, SERVER, OUTSIDE = "10.0.0.5", "10.0.0.80", "198.51.100.7"


def web(uri: str, headers: str = "", client: str = OUTSIDE) -> list[object]:
    return tcp_session(client, SERVER, 40000, 80, [http_get(uri, headers=headers)])


def rule(options: str, header: str = "tcp any any -> any any", action: str = "alert") -> str:
    return f'{action} {header} (msg:"t"; {options} sid:1;)\n'


@pytest.mark.parametrize(
    ("options", "payload", "fires"),
    [
        ('content:"evil";', b"xx evil xx", True),
        ('content:"evil";', b"xx EVIL xx", False),
        ('content:"evil"; nocase;', b"xx EvIl xx", True),
        ('content:"|de ad|be|ef|";', b"\x00\xde\xadbe\xef", True),
        ('content:"|de ad|be|ef|";', b"\x00\xde\xadbe\xee", False),
        ('content:"abc"; depth:3;', b"abcdef", True),
        ('content:"abc"; depth:4;', b"xabcdef", True),
        ('content:"abc"; depth:3;', b"xabcdef", False),
        ('content:"abc"; offset:1;', b"abcabc", True),
        ('content:"abc"; offset:1; depth:3;', b"abcabc", False),
        ('content:"abc"; offset:3; depth:3;', b"abcabc", True),
        ('content:"one"; content:"two";', b"two and one", True),
        ('content:"one"; content:"two";', b"one only", False),
        ('content:"one"; content:!"two";', b"one only", True),
        ('content:"one"; content:!"two";', b"one and two", False),
        ('content:"a|3b|b";', b"a;b", True),
    ],
)
def test_content_modifiers(options: str, payload: bytes, fires: bool) -> None:
    packets = tcp_session(CLIENT, SERVER, 40000, 9000, [payload])
    assert (sids(inspect(packets, rule(options))) == [1]) is fires


def test_prefilter_finds_a_pattern_hidden_inside_a_longer_one() -> None:
    rules = (
        'alert tcp any any -> any any (msg:"long"; content:"select * from"; sid:1;)\n'
        'alert tcp any any -> any any (msg:"short"; content:"select"; sid:2;)\n'
        'alert tcp any any -> any any (msg:"inner"; content:"* fr"; sid:3;)\n'
    )
    packets = tcp_session(CLIENT, SERVER, 40000, 9000, [b"q=select * from t"])
    assert sorted(sids(inspect(packets, rules))) == [1, 2, 3]


@pytest.mark.parametrize(
    ("uri", "headers", "options", "fires"),
    [
        ("/a?q=1%20UNION%20SELECT", "", 'http.uri; content:"union select"; nocase;', True),
        ("/a?q=1", "", 'http.uri; content:"union"; nocase;', False),
        ("/x", "", 'http.host; content:"app.example";', True),
        ("/x", "", 'http.host; content:"other.example";', False),
        # http.uri is the URI only: the Host header is not in it
        ("/x", "", 'http.uri; content:"app.example";', False),
        # the packet buffer is the whole request
        ("/x", "User-Agent: sqlmap/1.7\r\n", 'content:"User-Agent|3a| sqlmap"; nocase;', True),
        # pkt_data leaves the sticky buffer
        ("/y", "", 'http.uri; content:"/y"; pkt_data; content:"HTTP/1.1";', True),
    ],
)
def test_http_buffers(uri: str, headers: str, options: str, fires: bool) -> None:
    events = inspect(web(uri, headers), rule(options, "http any any -> any any"))
    assert (sids(events) == [1]) is fires
    if fires:
        assert events[0]["http"]["hostname"] == "app.example"
        assert events[0]["http"]["url"] == uri
        assert events[0]["app_proto"] == "http"


def test_http_host_is_lower_case_without_port() -> None:
    packets = tcp_session(CLIENT, SERVER, 40000, 8080, [http_get("/", host="WWW.Example.COM:8080")])
    events = inspect(
        packets, rule('http.host; content:"www.example.com";', "http any any -> any any")
    )
    assert sids(events) == [1]
    assert events[0]["http"]["hostname"] == "www.example.com"


def test_dns_query_buffer() -> None:
    query = Ether() / IP(src=CLIENT, dst="8.8.8.8") / UDP(sport=5353, dport=53)
    query = query / DNS(id=7, qd=DNSQR(qname="Files.Transfer.SH", qtype="TXT"))
    events = inspect(
        [query], rule('dns.query; content:"transfer.sh"; nocase;', "dns any any -> any any")
    )
    assert sids(events) == [1]
    assert events[0]["dns"] == {
        "type": "query",
        "id": 7,
        "rrname": "Files.Transfer.SH",
        "rrtype": "TXT",
    }
    assert events[0]["proto"] == "UDP"


def test_tls_sni_buffer() -> None:
    packets = tcp_session(CLIENT, "203.0.113.9", 40001, 443, [client_hello("c2.ngrok.io")])
    events = inspect(
        packets,
        rule('tls.sni; content:"ngrok"; flow:to_server,established;', "tls any any -> any any"),
    )
    assert sids(events) == [1]
    assert events[0]["tls"] == {"sni": "c2.ngrok.io"}
    assert events[0]["app_proto"] == "tls"


SNI_RULE = rule('tls.sni; content:"ngrok"; flow:to_server,established;', "tls any any -> any any")


def hello_segments(
    hello: bytes, cport: int = 40002, mss: int = 1448, seq: int = 101
) -> tuple[list[object], list[object]]:
    """A handshake, and the ClientHello cut into segments of ``mss`` bytes (with their seqs)."""
    handshake = tcp_session(CLIENT, "203.0.113.9", cport, 443)
    c2s = Ether() / IP(src=CLIENT, dst="203.0.113.9")
    segments = [
        c2s / TCP(sport=cport, dport=443, flags="PA", seq=seq + i, ack=501) / hello[i : i + mss]
        for i in range(0, len(hello), mss)
    ]
    return handshake, segments


@pytest.mark.parametrize("fast_path", [True, False])
def test_sni_of_a_client_hello_over_two_segments(fast_path: bool) -> None:
    hello = client_hello("c2.ngrok.io", key_share=1600)  # the SNI is past the first segment
    handshake, (first, second) = hello_segments(hello)
    events = inspect([*handshake, first, second], SNI_RULE, fast_path=fast_path)
    assert sids(events) == [1] and events[0]["tls"] == {"sni": "c2.ngrok.io"}
    # A retransmitted first segment in between adds nothing; the hello is whole all the same.
    events = inspect([*handshake, first, first, second], SNI_RULE, fast_path=fast_path)
    assert sids(events) == [1]
    # A second segment that repeats part of the first (new segmentation) adds only what is new.
    overlap = (
        Ether()
        / IP(src=CLIENT, dst="203.0.113.9")
        / TCP(sport=40002, dport=443, flags="PA", seq=101 + 1000, ack=501)
        / hello[1000:]
    )
    assert sids(inspect([*handshake, first, overlap], SNI_RULE, fast_path=fast_path)) == [1]


def test_client_hello_with_a_missing_segment_is_parsed_as_far_as_it_goes() -> None:
    hello = client_hello("c2.ngrok.io", key_share=3000)
    handshake, segments = hello_segments(hello)
    assert len(segments) == 3
    eng = engine(SNI_RULE)
    alerts = []
    for ts, data, linktype in frames([*handshake, segments[0], segments[2]]):
        alerts.extend(eng.process(ts, data, linktype))
    assert alerts == []
    assert eng.stats.errors.get("tls.hello_gap") == 1
    assert not eng._hellos


def test_after_the_client_hello_the_fast_path_takes_the_flow_again() -> None:
    hello = client_hello("www.example.com", key_share=1600)
    handshake, segments = hello_segments(hello)
    c2s = Ether() / IP(src=CLIENT, dst="203.0.113.9")
    after = 101 + len(hello)
    data = [
        c2s
        / TCP(sport=40002, dport=443, flags="PA", seq=after + i * 100, ack=501)
        / (b"\x17\x03\x03\x00\x5b" + bytes(95))
        for i in range(5)
    ]
    eng = engine(SNI_RULE)
    for ts, raw_frame, linktype in frames([*handshake, *segments, *data]):
        eng.process(ts, raw_frame, linktype)
    assert not eng._hellos
    # The full path saw the SYN and the two segments of the hello; the application data
    # after them (and the rest of the handshake) took the fast path.
    assert eng.stats.full == 3 and eng.stats.fast == 7


def test_pending_client_hellos_are_bounded() -> None:
    from appliance.inspect.engine import HELLO_MAX_FLOWS

    hello = client_hello("c2.ngrok.io", key_share=1600)
    eng = engine(SNI_RULE)
    count = HELLO_MAX_FLOWS + 50
    for n in range(count):
        handshake, segments = hello_segments(hello, cport=20000 + n)
        for ts, data, linktype in frames([*handshake, segments[0]]):
            eng.process(ts, data, linktype)
    assert len(eng._hellos) == HELLO_MAX_FLOWS
    assert eng.stats.errors.get("tls.hello_evicted") == 50


def test_app_protocol_rules_need_that_protocol() -> None:
    """An `http` rule does not fire on a TLS flow, nor a `tls` rule on an HTTP one."""
    rules = rule('content:"GET";', "tls any any -> any any") + rule(
        'content:"|16 03|";', "http any any -> any any"
    ).replace("sid:1", "sid:2")
    packets = tcp_session(CLIENT, SERVER, 40000, 80, [http_get("/")])
    packets += tcp_session(CLIENT, SERVER, 40001, 443, [client_hello("a.example")])
    assert sids(inspect(packets, rules)) == []


@pytest.mark.parametrize(
    ("flags_option", "packet_flags", "fires"),
    [
        ("flags:S;", "S", True),
        ("flags:S;", "SA", False),  # exactly SYN
        ("flags:S;", "SE", False),
        ("flags:S,12;", "SEC", True),  # ECN bits ignored
        ("flags:SA;", "SA", True),
        ("flags:S+;", "SA", True),  # SYN and maybe others
        ("flags:S+;", "A", False),
        ("flags:+S;", "SAP", True),
        ("flags:*SF;", "F", True),  # any of SYN, FIN
        ("flags:*SF;", "A", False),
        ("flags:!R;", "A", True),  # not RST
        ("flags:!R;", "RA", False),
        ("flags:0;", "", True),  # NULL
        ("flags:0;", "A", False),
        ("flags:FPU;", "FPU", True),  # XMAS
        ("flags:FPU;", "FPUA", False),
    ],
)
def test_flags(flags_option: str, packet_flags: str, fires: bool) -> None:
    packet = Ether() / IP(src=OUTSIDE, dst=SERVER) / TCP(sport=1234, dport=80, flags=packet_flags)
    assert (sids(inspect([packet], rule(flags_option))) == [1]) is fires


def test_flags_do_not_match_other_protocols() -> None:
    packet = Ether() / IP(src=OUTSIDE, dst=SERVER) / UDP(sport=1234, dport=80)
    assert sids(inspect([packet], rule("flags:0;", "ip any any -> any any"))) == []


def test_flow_direction_and_state() -> None:
    rules = (
        'alert tcp any any -> any any (msg:"to server"; flow:to_server; content:"ping"; sid:1;)\n'
        'alert tcp any any -> any any (msg:"to client"; flow:to_client; content:"pong"; sid:2;)\n'
        'alert tcp any any -> any any (msg:"est"; flow:established,to_server; content:"ping";'
        " sid:3;)\n"
        'alert tcp any any -> any any (msg:"not est"; flow:not_established; sid:4;)\n'
        'alert tcp any any -> any any (msg:"wrong way"; flow:to_client; content:"ping"; sid:5;)\n'
    )
    packets = tcp_session(CLIENT, SERVER, 40000, 9000, [b"ping"], [b"pong"])
    events = inspect(packets, rules)
    # not_established: the SYN, the SYN/ACK and the handshake's last ACK (state is updated by it)
    assert sorted(sids(events)) == [1, 2, 3, 4, 4]
    pong = next(e for e in events if e["alert"]["signature_id"] == 2)
    assert pong["src_ip"] == SERVER and pong["direction"] == "to_client"


def test_established_needs_the_handshake() -> None:
    """A data packet without a handshake seen is not `established`."""
    packet = Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=4, dport=9000, flags="PA") / b"ping"
    assert sids(inspect([packet], rule('flow:established; content:"ping";'))) == []


def test_udp_is_established_once_both_directions_seen() -> None:
    out = Ether() / IP(src=CLIENT, dst=SERVER) / UDP(sport=5000, dport=6000) / b"hello"
    back = Ether() / IP(src=SERVER, dst=CLIENT) / UDP(sport=6000, dport=5000) / b"hello"
    events = inspect(
        [out, back, out], rule('flow:established; content:"hello";', "udp any any -> any any")
    )
    assert len(events) == 2 and events[0]["direction"] == "to_client"


@pytest.mark.parametrize(
    ("header", "src", "dst", "sport", "dport", "fires"),
    [
        ("tcp $EXTERNAL_NET any -> $HOME_NET 80", OUTSIDE, SERVER, 1000, 80, True),
        ("tcp $EXTERNAL_NET any -> $HOME_NET 80", CLIENT, SERVER, 1000, 80, False),
        ("tcp $HOME_NET any -> $EXTERNAL_NET any", CLIENT, OUTSIDE, 1000, 80, True),
        ("tcp any any -> [10.0.0.0/24, !10.0.0.80] any", OUTSIDE, SERVER, 1000, 80, False),
        ("tcp any any -> [10.0.0.0/24, !10.0.0.80] any", OUTSIDE, "10.0.0.81", 1000, 80, True),
        ("tcp any any -> !10.0.0.80 any", OUTSIDE, SERVER, 1000, 80, False),
        ("tcp any any -> any 1024:", OUTSIDE, SERVER, 1000, 8080, True),
        ("tcp any any -> any 1024:", OUTSIDE, SERVER, 1000, 80, False),
        ("tcp any any -> any :1023", OUTSIDE, SERVER, 1000, 80, True),
        ("tcp any any -> any [80,443,8000:8100]", OUTSIDE, SERVER, 1000, 8050, True),
        ("tcp any any -> any [1:1000,!80]", OUTSIDE, SERVER, 1000, 80, False),
        ("tcp any any -> any !80", OUTSIDE, SERVER, 1000, 81, True),
        ("tcp any 1000 -> any 80", OUTSIDE, SERVER, 1000, 80, True),
        ("tcp any 1001 -> any 80", OUTSIDE, SERVER, 1000, 80, False),
        ("udp any any -> any any", OUTSIDE, SERVER, 1000, 80, False),
        ("ip any any -> 10.0.0.80 any", OUTSIDE, SERVER, 1000, 80, True),
        # <>: either direction
        ("tcp 10.0.0.80 80 <> 198.51.100.7 any", OUTSIDE, SERVER, 1000, 80, True),
        ("tcp 10.0.0.80 80 -> 198.51.100.7 any", OUTSIDE, SERVER, 1000, 80, False),
    ],
)
def test_header(header: str, src: str, dst: str, sport: int, dport: int, fires: bool) -> None:
    packet = Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="S")
    assert (sids(inspect([packet], rule("", header))) == [1]) is fires


def test_ipv6_and_icmp() -> None:
    rules = (
        'alert tcp any any -> fd00::80 22 (msg:"v6"; flags:S; sid:1;)\n'
        'alert icmp any any -> any any (msg:"ping"; content:"probe"; sid:2;)\n'
    )
    v6 = Ether() / IPv6(src="2001:db8::1", dst="fd00::80") / TCP(sport=5, dport=22, flags="S")
    ping = Ether() / IP(src=OUTSIDE, dst=SERVER) / ICMP(type=8) / b"probe"
    events = inspect([v6, ping], rules)
    assert sids(events) == [1, 2]
    assert events[0]["src_ip"] == "2001:db8::1" and events[0]["dest_ip"] == "fd00::80"
    assert events[1]["proto"] == "ICMP" and events[1]["icmp_type"] == 8


def test_vlan_and_qinq_tagged_packets_are_inspected() -> None:
    inner = IP(src=OUTSIDE, dst=SERVER) / TCP(sport=1, dport=80, flags="S")
    single = Ether() / Dot1Q(vlan=100) / inner
    double = Ether(type=0x88A8) / Dot1Q(vlan=10, type=0x8100) / Dot1Q(vlan=20) / inner
    assert sids(inspect([single, double], rule("flags:S;"))) == [1, 1]


def test_bad_checksums_are_inspected_like_any_other() -> None:
    tcp = (
        Ether()
        / IP(src=OUTSIDE, dst=SERVER, chksum=0xDEAD)
        / TCP(sport=1, dport=80, flags="S", chksum=0xBEEF)
    )
    udp = Ether() / IP(src=OUTSIDE, dst=SERVER) / UDP(sport=1, dport=9, chksum=0x1234) / b"bad sum"
    rules = rule("flags:S;") + rule('content:"bad sum";', "udp any any -> any any").replace(
        "sid:1", "sid:2"
    )
    assert sids(inspect([tcp, udp], rules)) == [1, 2]


def test_pass_rule_suppresses_other_alerts_for_the_packet() -> None:
    rules = (
        'alert tcp any any -> any any (msg:"all syns"; flags:S; sid:1;)\n'
        'pass tcp 10.0.0.5 any -> any any (msg:"trusted scanner"; flags:S; sid:2;)\n'
    )
    trusted = Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=1, dport=80, flags="S")
    other = Ether() / IP(src=OUTSIDE, dst=SERVER) / TCP(sport=1, dport=80, flags="S")
    assert sids(inspect([trusted, other], rules)) == [1]


def test_action_severity_category_and_rev() -> None:
    rules = (
        'drop tcp any any -> any any (msg:"bad"; flags:S; classtype:attempted-admin; sid:1;'
        " rev:4;)\n"
        'alert tcp any any -> any any (msg:"info"; flags:S; sid:2;)\n'
    )
    packet = Ether() / IP(src=OUTSIDE, dst=SERVER) / TCP(sport=1, dport=80, flags="S")
    events = inspect([packet], rules)
    first, second = events
    assert first["alert"] == {
        "action": "blocked",
        "gid": 1,
        "signature_id": 1,
        "rev": 4,
        "signature": "bad",
        "category": "Attempted Administrator Privilege Gain",
        "severity": 1,
    }
    assert second["alert"]["action"] == "allowed" and second["alert"]["severity"] == 3
    assert first["event_type"] == "alert" and first["proto"] == "TCP"
    assert first["timestamp"].startswith("2023-11-14T22:13:20.000000+0000")
    assert first["flow_id"] == second["flow_id"] and isinstance(first["flow_id"], int)


def test_drop_is_allowed_when_blocking_is_off_or_the_source_is_never_blocked() -> None:
    rules = 'drop tcp any any -> any any (msg:"bad"; flags:S; sid:1;)\n'
    packet = Ether() / IP(src=OUTSIDE, dst=SERVER) / TCP(sport=1, dport=80, flags="S")
    assert inspect([packet], rules, block=False)[0]["alert"]["action"] == "allowed"
    never = (parse_network("198.51.100.0/24"),)
    assert inspect([packet], rules, never_block=never)[0]["alert"]["action"] == "allowed"


class TestThreshold:
    def syns(self, n: int, src: str = OUTSIDE, step_dst: bool = False) -> list[object]:
        return [
            Ether()
            / IP(src=src, dst=f"10.0.0.{(i % 200) + 1}" if step_dst else SERVER)
            / TCP(sport=1000 + i, dport=80, flags="S")
            for i in range(n)
        ]

    def run(
        self,
        kind: str,
        count: int,
        n: int,
        seconds: int = 60,
        track: str = "by_src",
        step: float = 0.001,
    ) -> int:
        text = rule(
            f"flags:S; threshold: type {kind}, track {track}, count {count}, seconds {seconds};"
        )
        return len(inspect(self.syns(n), text, step=step))

    def test_limit(self) -> None:
        assert self.run("limit", 3, 10) == 3

    def test_threshold_every_nth(self) -> None:
        assert self.run("threshold", 3, 10) == 3  # the 3rd, 6th and 9th

    def test_both_once_per_window(self) -> None:
        assert self.run("both", 3, 10) == 1
        assert self.run("both", 20, 10) == 0

    def test_windows_restart(self) -> None:
        # one packet a second over 10 s, window 4 s, limit 1: windows start at 0, 4, 8
        assert self.run("limit", 1, 10, seconds=4, step=1.0) == 3

    def test_tracked_per_source(self) -> None:
        text = rule("flags:S; threshold: type limit, track by_src, count 1, seconds 60;")
        packets = self.syns(3, src="198.51.100.1") + self.syns(3, src="198.51.100.2")
        assert len(inspect(packets, text)) == 2

    def test_tracked_per_destination(self) -> None:
        text = rule("flags:S; threshold: type limit, track by_dst, count 1, seconds 60;")
        assert len(inspect(self.syns(5, step_dst=True), text)) == 5
        assert len(inspect(self.syns(5), text)) == 1


class TestGtp:
    inner = IP(src="10.45.0.7", dst="93.184.216.34") / TCP(sport=5555, dport=80, flags="S")

    def test_inner_packet_alert_reports_inner_addresses_and_gtp(self) -> None:
        events = inspect([gtp("192.0.2.10", "10.0.0.1", self.inner, teid=77)], rule("flags:S;"))
        assert len(events) == 1
        event = events[0]
        assert (event["src_ip"], event["src_port"]) == ("10.45.0.7", 5555)
        assert (event["dest_ip"], event["dest_port"]) == ("93.184.216.34", 80)
        assert event["proto"] == "TCP"
        assert event["gtp"]["teid"] == 77
        assert event["gtp"]["inner_src_ip"] == "10.45.0.7"
        assert event["gtp"]["inner_dest_ip"] == "93.184.216.34"
        assert event["tunnel"]["src_ip"] == "192.0.2.10"

    def test_gtp_rules_see_the_outer_packet(self) -> None:
        text = rule("", "gtp 192.0.2.0/24 any -> any any")
        events = inspect([gtp("192.0.2.10", "10.0.0.1", self.inner, teid=77)], text)
        assert len(events) == 1
        assert events[0]["src_ip"] == "192.0.2.10" and events[0]["dest_port"] == 2152
        assert events[0]["proto"] == "UDP" and events[0]["gtp"]["teid"] == 77
        assert events[0]["gtp"]["inner_src_ip"] == "10.45.0.7"

    def test_gtp_rules_do_not_see_the_inner_packet_nor_plain_udp(self) -> None:
        text = rule("", "gtp 10.45.0.0/16 any -> any any")
        plain = Ether() / IP(src="192.0.2.1", dst="10.0.0.1") / UDP(sport=1, dport=2153) / b"x"
        assert inspect([gtp("192.0.2.10", "10.0.0.1", self.inner), plain], text) == []

    def test_a_rule_matching_both_layers_alerts_once_on_the_inner(self) -> None:
        events = inspect(
            [gtp("192.0.2.10", "10.0.0.1", self.inner)], rule("", "ip any any -> any any")
        )
        assert len(events) == 1 and events[0]["src_ip"] == "10.45.0.7"

    def test_gtp_message_type_content_on_the_outer_payload(self) -> None:
        from scapy.contrib.gtp import GTP_U_Header

        echo = Ether() / IP(src="198.51.100.1", dst="10.0.0.1") / UDP(sport=2152, dport=2152)
        echo = echo / GTP_U_Header(teid=0, gtp_type=1, S=1, seq=1)
        text = rule('content:"|01|"; offset:1; depth:1;', "gtp any any -> any any")
        assert sids(inspect([echo], text)) == [1]

    def test_inner_ipv6(self) -> None:
        from scapy.all import IPv6  # type: ignore[attr-defined]

        inner = (
            IPv6(src="2001:db8:45::7", dst="2001:db8::1")
            / UDP(sport=1, dport=53)
            / DNS(qd=DNSQR(qname="x.dnslog.cn"))
        )
        events = inspect(
            [gtp("192.0.2.10", "10.0.0.1", inner, teid=9)],
            rule('dns.query; content:"dnslog.cn";', "dns any any -> any any"),
        )
        assert len(events) == 1
        assert events[0]["dns"]["rrname"] == "x.dnslog.cn"
        assert events[0]["gtp"] == {
            "teid": 9,
            "inner_src_ip": "2001:db8:45::7",
            "inner_dest_ip": "2001:db8::1",
            "inner_src_port": 1,
            "inner_dest_port": 53,
            "inner_proto": "UDP",
        }


def test_flow_table_stays_bounded() -> None:
    eng = engine(rule("flags:S;"), max_flows=100)
    packets = [
        Ether() / IP(src=OUTSIDE, dst=SERVER) / TCP(sport=1000 + i, dport=80, flags="S")
        for i in range(1000)
    ]
    for ts, data, linktype in frames(packets):
        eng.process(ts, data, linktype)
    assert len(eng.flows) == 100
    assert eng.flows.evicted == 900


def test_decoder_errors_are_counted_not_raised() -> None:
    eng = engine(rule("flags:S;"), detectors=Detectors())
    ipv4 = bytes(12) + b"\x08\x00"
    for data in (b"", b"\x00" * 13, ipv4 + b"\x45", ipv4 + b"\x4f" + bytes(30), bytes(14)):
        assert not eng.process(0.0, data, 1)
    assert eng.stats.errors == {
        "eth.truncated": 2,
        "ipv4.truncated": 1,
        "ipv4.bad_total_length": 1,
        "eth.not_ip": 1,
    }
    assert eng.stats.packets == 5 and eng.stats.decoded == 0 and eng.stats.fast == 0
