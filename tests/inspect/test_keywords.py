"""Suricata's payload keywords against crafted buffers and traffic: content modifiers, the
relative chain, pcre, sizes, the older modifier forms, and what is skipped and why."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from scapy.all import DNS, DNSQR, IP, TCP, UDP, Ether, Packet  # type: ignore[attr-defined]

from appliance.errors import RuleFileError
from appliance.inspect.match import contents_match, fast_pattern
from appliance.inspect.rules import Signature, Variables, load_rules, parse_rules
from tests.inspect.traffic import http_get, inspect, sids, tcp_session

MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"  # no ARP lookups
VARS = Variables.from_networks([ipaddress.ip_network("10.0.0.0/8")])


def rule(options: str, proto: str = "tcp") -> Signature:
    sigs = list(parse_rules(f"alert {proto} any any -> any any ({options} sid:1;)", "t", VARS))
    return sigs[0]


def hits(options: str, data: bytes, buffer: str = "pkt") -> bool:
    sig = rule(options)
    return contents_match(sig, {"pkt": data, buffer: data})


@pytest.mark.parametrize(
    ("options", "data", "expected"),
    [
        # distance / within from the end of the previous match (Suricata's window)
        ('content:"ab"; content:"cd"; distance:2;', b"ab..cd", True),
        ('content:"ab"; content:"cd"; distance:3;', b"ab..cd", False),
        ('content:"ab"; content:"cd"; within:4;', b"ab..cd", True),
        ('content:"ab"; content:"cd"; within:3;', b"ab..cd", False),
        ('content:"ab"; content:"cd"; distance:1; within:2;', b"ab..cd", False),
        ('content:"ab"; content:"cd"; distance:1; within:4;', b"ab..cd", True),
        ('content:"ab"; content:"cd"; distance:-4; within:4;', b"cdab", True),
        # the first "ab" fails its follower; the second is tried (backtracking)
        ('content:"ab"; content:"cd"; within:2;', b"ab....abcd", True),
        # negated relative content: absent in its window
        ('content:"ab"; content:!"cd"; within:4;', b"ab..cd", False),
        ('content:"ab"; content:!"cd"; within:4;', b"ab....cd", True),
        # depth / offset / nocase / startswith / endswith
        ('content:"GET"; depth:3;', b"GET /", True),
        ('content:"GET"; offset:1; depth:3;', b"GET /", False),
        ('content:"get"; nocase;', b"GET /", True),
        ('content:"GET"; startswith;', b" GET /", False),
        ('content:".exe"; endswith;', b"/a.exe", True),
        ('content:".exe"; endswith;', b"/a.exe?x", False),
        # isdataat, absolute and relative
        ("isdataat:4;", b"abcde", True),
        ("isdataat:5;", b"abcde", False),
        ('content:"ab"; isdataat:2,relative;', b"abcde", True),
        ('content:"ab"; isdataat:3,relative;', b"abcde", False),
        ('content:"ab"; isdataat:!3,relative;', b"abcde", True),
        # pcre: flags, relative, negation
        ('pcre:"/^get\\s+\\/x/i";', b"GET /x", True),
        ('pcre:"/a.b/s";', b"a\nb", True),
        ('pcre:"/a.b/";', b"a\nb", False),
        ('pcre:"/^b$/m";', b"a\nb\nc", True),
        ('pcre:"/a  b/x";', b"ab", True),
        ('content:"id="; pcre:"/^\\d+/R";', b"x=1 id=42", True),
        ('content:"id="; pcre:"/^\\d+/R";', b"42 id=x", False),
        ('pcre:!"/evil/";', b"good", True),
        # sizes
        ("dsize:5;", b"abcde", True),
        ("dsize:>5;", b"abcde", False),
        ("dsize:<6;", b"abcde", True),
        ("dsize:2<>6;", b"abcde", True),
        ("dsize:5<>9;", b"abcde", False),
        ('content:"a"; bsize:5;', b"abcde", True),
    ],
)
def test_payload_keywords(options: str, data: bytes, expected: bool) -> None:
    assert hits(options, data) is expected


def test_fast_pattern_is_the_prefilter_pattern() -> None:
    sig = rule('content:"ab"; fast_pattern; content:"longer one";')
    found = fast_pattern(sig)
    assert found is not None and found.pattern == b"ab"
    sig = rule('content:"ab"; content:"longer one"; pcre:"/x/";')
    found = fast_pattern(sig)
    assert found is not None and found.pattern == b"longer one"


@pytest.mark.parametrize(
    ("options", "buffer"),
    [
        ('content:"/x"; http_uri;', "http.uri"),
        ('uricontent:"/x";', "http.uri"),
        ('http.uri; content:"/x";', "http.uri"),
        ('content:"/x"; http_raw_uri;', "http.raw_uri"),
        ('http.uri.raw; content:"/x";', "http.raw_uri"),
        ('content:"h.example"; http_host;', "http.host"),
        ('http.host; content:"h.example";', "http.host"),
        ('content:"GET"; http_method;', "http.method"),
        ('http.method; content:"GET";', "http.method"),
        ('content:"curl"; http_user_agent;', "http.user_agent"),
        ('http.user_agent; content:"curl";', "http.user_agent"),
        ('dns_query; content:"evil";', "dns.query"),
        ('dns.query; content:"evil";', "dns.query"),
        ('tls_sni; content:"evil";', "tls.sni"),
        ('tls.sni; content:"evil";', "tls.sni"),
        ('pcre:"/x/U";', "http.uri"),
        ('pcre:"/x/I";', "http.raw_uri"),
        ('pcre:"/x/W";', "http.host"),
    ],
)
def test_older_and_sticky_forms_select_the_same_buffer(options: str, buffer: str) -> None:
    sig = rule(options)
    assert [c.buffer for c in sig.contents] == [buffer]


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ('dataset:isset,bad,type string; content:"a";', "dataset"),
        ('content:"a"; ja4.hash;', "unknown"),
        ('lua:check.lua; content:"a";', "lua"),
        ('flowvar:name,"x";', "flowvar"),
        ("dnp3_func:1;", "dnp3_func"),
        ('content:"a"; frobnicate;', "unknown"),
    ],
)
def test_unsupported_keywords_skip_the_rule_with_a_bounded_reason(
    tmp_path: Path, options: str, reason: str
) -> None:
    path = tmp_path / "r.rules"
    path.write_text(
        f"alert tcp any any -> any any ({options} sid:7;)\n"
        'alert tcp any any -> any any (content:"ok"; sid:8;)\n'
    )
    rules = load_rules([str(path)], VARS)
    assert [s.sid for s in rules.signatures] == [8]
    assert rules.reasons() == {reason: 1}
    keyword = options.split(";")[-2].strip().split(":")[0] if reason == "unknown" else reason
    assert rules.skipped[0].warning == f"{path}:1: sid 7: unsupported keyword {keyword!r}"
    with pytest.raises(RuleFileError, match=r"r.rules:1: "):
        load_rules([str(path)], VARS, strict=True)


@pytest.mark.parametrize(
    "pcre",
    [
        '"/a(?|b|c)/"',  # branch reset
        '"/(*UTF8)a/"',  # verbs
        '"/a\\Kb/"',  # \K
        '"/(a)(?1)/"',  # recursion
        '"/a/q"',  # an unknown flag
        '"/(/"',  # not an expression
        '"x"',  # not /…/
    ],
)
def test_pcre_python_cannot_run_is_refused_cleanly(tmp_path: Path, pcre: str) -> None:
    path = tmp_path / "r.rules"
    path.write_text(f"alert tcp any any -> any any (pcre:{pcre}; sid:7;)\n")
    rules = load_rules([str(path)], VARS)
    assert rules.signatures == []
    assert rules.reasons() == {"invalid": 1}
    assert rules.skipped[0].warning.startswith(f"{path}:1: pcre: ")


def test_msg_is_optional_and_bad_rules_never_raise_other_errors(tmp_path: Path) -> None:
    path = tmp_path / "r.rules"
    lines = [
        'alert tcp any any -> any any (content:"x"; sid:1;)',
        'alert tcp any any -> any any (content:"x"; http_uri; http_uri; sid:2;)',
        "alert tcp any any -> any any (http_uri; sid:3;)",
        "alert tcp any any -> any any (dns_query; tls_sni; sid:4;)",
        'alert tcp any any -> any any (content:"x"; http_host; dns_query; content:"y"; sid:5;)',
        "alert tcp any any -> any any (isdataat:1,relative; sid:6;)",
        "alert tcp any any -> any any (dsize:9<>2; sid:7;)",
        'alert tcp any any -> any any (content:"x"; distance:1; depth:3; sid:8;)',
    ]
    path.write_text("\n".join(lines) + "\n")
    rules = load_rules([str(path)], VARS)
    assert [s.sid for s in rules.signatures] == [1]
    assert rules.signatures[0].msg == ""
    assert len(rules.skipped) == len(lines) - 1
    assert all(s.reason == "invalid" for s in rules.skipped)


def test_http_buffers_in_traffic() -> None:
    rules = "\n".join(
        [
            'alert http any any -> any any (msg:"m"; content:"POST"; http_method; sid:1;)',
            'alert http any any -> any any (msg:"u"; http.user_agent; content:"curl/"; '
            "startswith; sid:2;)",
            'alert http any any -> any any (msg:"r"; content:"%2e%2e"; http_raw_uri; sid:3;)',
            'alert http any any -> any any (msg:"d"; content:"/../"; http_uri; sid:4;)',
            'alert http any any -> any any (msg:"p"; pcre:"/\\/a\\/\\.\\.\\/b$/U"; sid:5;)',
            'alert http any any -> any any (msg:"l"; urilen:>100; sid:6;)',
            'alert tcp any any -> any any (msg:"c"; content:"GET"; depth:3; '
            'content:"HTTP/1.1"; distance:0; within:40; sid:7;)',
        ]
    )
    request = http_get("/a/%2e%2e/b", headers="User-Agent: curl/8.0\r\n")
    events = inspect(tcp_session("198.51.100.7", "10.0.0.80", 40000, 80, [request]), rules)
    assert sorted(set(sids(events))) == [2, 3, 4, 5, 7]


def test_http_header_family_bodies_and_responses_in_traffic() -> None:
    rules = "\n".join(
        [
            'alert http any any -> any any (msg:"h"; content:"X-Api|3a| evil"; http_header; '
            "sid:1;)",
            'alert http any any -> any any (msg:"n"; http.header_names; '
            'content:"|0d 0a|X-Api|0d 0a|"; sid:2;)',
            'alert http any any -> any any (msg:"c"; content:"session=1"; http_cookie; sid:3;)',
            'alert http any any -> any any (msg:"t"; http.content_type; content:"text/x"; sid:4;)',
            'alert http any any -> any any (msg:"b"; content:"secret"; http_client_body; sid:5;)',
            'alert http any any -> any any (msg:"f"; flow:to_server; file_data; content:"secret"; '
            "sid:6;)",
            'alert http any any -> any any (msg:"s"; flow:to_client; content:"404"; '
            "http_stat_code; sid:7;)",
            'alert http any any -> any any (msg:"m"; http.stat_msg; content:"Not Found"; sid:8;)',
            'alert http any any -> any any (msg:"r"; flow:to_client; file_data; content:"gone"; '
            "sid:9;)",
            'alert http any any -> any any (msg:"v"; http.server; content:"nginx"; sid:10;)',
            'alert http any any -> any any (msg:"x"; content:"secret"; http_header; sid:11;)',
        ]
    )
    request = (
        b"POST /form HTTP/1.1\r\nHost: a.example\r\nX-Api: evil\r\nCookie: session=1\r\n"
        b"Content-Type: text/x\r\nContent-Length: 6\r\n\r\nsecret"
    )
    response = b"HTTP/1.1 404 Not Found\r\nServer: nginx\r\n\r\ngone"
    packets = tcp_session("198.51.100.7", "10.0.0.80", 40000, 80, [request], [response])
    assert sorted(set(sids(inspect(packets, rules)))) == list(range(1, 11))


def test_flowbits_set_on_one_packet_checked_on_a_later_one() -> None:
    rules = "\n".join(
        [
            'alert http any any -> any any (msg:"login"; content:"/login"; http_uri; '
            "flowbits:set,seen.login; flowbits:noalert; sid:1;)",
            'alert http any any -> any any (msg:"after login"; flow:to_client; '
            'content:"200"; http_stat_code; flowbits:isset,seen.login; sid:2;)',
            'alert http any any -> any any (msg:"no login"; flow:to_client; '
            'content:"200"; http_stat_code; flowbits:isnotset,seen.login; sid:3;)',
            'alert http any any -> any any (msg:"either"; flow:to_client; '
            'content:"200"; http_stat_code; flowbits:isset,other|seen.login; sid:4;)',
            'alert http any any -> any any (msg:"both"; flow:to_client; '
            'content:"200"; http_stat_code; flowbits:isset,other&seen.login; sid:5;)',
        ]
    )
    ok = b"HTTP/1.1 200 OK\r\n\r\n"
    login = tcp_session("198.51.100.7", "10.0.0.80", 40000, 80, [http_get("/login")], [ok])
    other = tcp_session("198.51.100.7", "10.0.0.80", 40001, 80, [http_get("/")], [ok])
    assert sorted(set(sids(inspect(login, rules)))) == [2, 4]
    assert sorted(set(sids(inspect(other, rules)))) == [3]


@pytest.mark.parametrize(
    "options",
    ["flowbits:frob,x;", "flowbits:set;", "flowbits:set,a|b;", "flowbits:isset,a|b&c;"],
)
def test_bad_flowbits_are_refused(options: str) -> None:
    with pytest.raises(RuleFileError, match="flowbits"):
        rule(options)


@pytest.mark.parametrize(
    ("options", "data", "expected"),
    [
        ("byte_test:2,>,255,0;", b"\x01\x00", True),
        ("byte_test:2,>,256,0;", b"\x01\x00", False),
        ("byte_test:2,=,1,0,little;", b"\x01\x00", True),
        ("byte_test:2,!=,1,0,little;", b"\x01\x00", False),
        ("byte_test:1,&,0x80,1;", b"\x00\x81", True),
        ("byte_test:3,=,123,0,string,dec;", b"123abc", True),
        ("byte_test:2,=,255,0,string,hex;", b"ff", True),
        ("byte_test:1,=,3,0,bitmask 0xf0;", b"\x30", True),
        ('content:"LEN"; byte_test:1,=,5,0,relative;', b"LEN\x05", True),
        ("byte_test:4,>,0,10;", b"short", False),
        # byte_jump moves the position the next relative item starts from
        ('content:"|00|"; byte_jump:1,0,relative; content:"OK"; within:2;', b"\x00\x03abcOK", True),
        (
            'content:"|00|"; byte_jump:1,0,relative; content:"OK"; within:2;',
            b"\x00\x02abcOK",
            False,
        ),
        ('byte_jump:1,0,from_beginning; content:"Z"; within:1;', b"\x03..Z", True),
        ('byte_jump:1,0,post_offset 1; content:"Z"; within:1;', b"\x01.xZ", True),
        ('byte_jump:1,0,multiplier 2; content:"Z"; within:1;', b"\x01..Z", True),
        ('byte_jump:1,0,align; content:"Z"; within:1;', b"\x01...Z", True),
    ],
)
def test_byte_test_and_byte_jump(options: str, data: bytes, expected: bool) -> None:
    assert hits(options, data) is expected


def test_detection_filter_alerts_after_count() -> None:
    from appliance.inspect.rules import Threshold
    from appliance.inspect.threshold import ThresholdState

    sig = rule('content:"x"; detection_filter:track by_src, count 3, seconds 60;')
    assert sig.threshold == Threshold("detection_filter", "by_src", 3, 60)
    state = ThresholdState()
    answers = [state.allow(1, sig.threshold, b"a", b"b", float(t)) for t in range(6)]
    assert answers == [False, False, False, True, True, True]
    with pytest.raises(RuleFileError, match="type must be"):
        rule("threshold:type detection_filter, track by_src, count 1, seconds 1;")


def test_icmp_type_code_ip_proto_and_app_layer_protocol_in_traffic() -> None:
    from scapy.all import ICMP, IP, Ether  # type: ignore[attr-defined]

    rules = "\n".join(
        [
            'alert icmp any any -> any any (msg:"echo"; itype:8; icode:0; sid:1;)',
            'alert icmp any any -> any any (msg:"unreach"; itype:3; sid:2;)',
            'alert icmp any any -> any any (msg:"big"; itype:>5; dsize:>50; sid:3;)',
            'alert ip any any -> any any (msg:"icmp proto"; ip_proto:1; sid:4;)',
            'alert ip any any -> any any (msg:"not icmp"; ip_proto:!1; sid:5;)',
        ]
    )
    echo = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=8) / (b"x" * 60)
    assert sorted(sids(inspect([echo], rules))) == [1, 3, 4]
    app_rules = "\n".join(
        [
            'alert tcp any any -> any any (msg:"not http"; app-layer-protocol:!http; '
            'content:"hello"; sid:1;)',
            'alert tcp any any -> any any (msg:"http"; app-layer-protocol:http; '
            'content:"GET"; sid:2;)',
            'alert ssh any any -> any any (msg:"ssh port"; flow:to_server; content:"SSH-"; sid:3;)',
        ]
    )
    web = tcp_session("198.51.100.7", "10.0.0.80", 40000, 80, [http_get("/")])
    other = tcp_session("198.51.100.7", "10.0.0.80", 40001, 7000, [b"hello SSH-2.0"])
    ssh = tcp_session("198.51.100.7", "10.0.0.80", 40002, 22, [b"SSH-2.0-x\r\n"])
    assert sids(inspect(web, app_rules)) == [2]
    assert sids(inspect(other, app_rules)) == [1]
    assert sids(inspect(ssh, app_rules)) == [3]


@pytest.mark.parametrize(
    ("options", "data", "expected"),
    [
        # a length field read, then the content that far on (Suricata's documented pattern)
        (
            'content:"LEN"; byte_extract:2,0,len,relative; content:"END"; distance:len;',
            b"LEN\x00\x03abcEND",
            True,
        ),
        (
            'content:"LEN"; byte_extract:2,0,len,relative; content:"END"; distance:len;',
            b"LEN\x00\x04abcEND",
            False,
        ),
        (
            'content:"LEN"; byte_extract:2,0,n,relative; content:"END"; within:n;',
            b"LEN\x00\x05abEND",
            True,
        ),
        (
            'content:"LEN"; byte_extract:2,0,n,relative; content:"END"; within:n;',
            b"LEN\x00\x04abEND",
            False,
        ),
        # as text, little-endian, multiplied, aligned
        ('byte_extract:2,0,n,string,dec; content:"X"; offset:n; depth:1;', b"03.X", True),
        ('byte_extract:2,0,n,string,dec; content:"X"; offset:n; depth:1;', b"02.X", False),
        ("byte_extract:2,0,n,little; byte_test:1,=,n,2;", b"\x07\x00\x07", True),
        ("byte_extract:1,0,n,multiplier 2; isdataat:n;", b"\x02abcd", True),
        ("byte_extract:1,0,n,multiplier 2; isdataat:n;", b"\x03abcd", False),
        ("byte_extract:1,0,n,align 4; byte_test:1,=,n,1;", b"\x05\x08", True),
        # the value and offset of byte_test, the offset of byte_jump
        ("byte_extract:1,0,v; byte_extract:1,1,at; byte_test:1,>,v,at;", b"\x05\x02\x09", True),
        ("byte_extract:1,0,v; byte_extract:1,1,at; byte_test:1,>,v,at;", b"\x05\x02\x04", False),
        (
            'byte_extract:1,0,skip; byte_jump:1,skip; content:"Z"; within:1;',
            b"\x02\x00\x01\x00Z",
            True,
        ),
        # too short to read: the rule does not hold
        ('content:"LEN"; byte_extract:4,0,n,relative; content:"E"; distance:n;', b"LEN\x00", False),
    ],
)
def test_byte_extract_variables(options: str, data: bytes, expected: bool) -> None:
    assert hits(options, data) is expected


@pytest.mark.parametrize(
    "options",
    [
        'content:"a"; distance:nope;',  # not defined
        'byte_extract:1,0,n; byte_extract:1,1,n; content:"a";',  # defined twice
        'byte_extract:1,0,n; http.uri; content:"a"; offset:n;',  # another buffer's
        "byte_extract:1,0,n,align 3;",
        "byte_extract:1,0;",
        "stream_size:sideways,<,5;",
        "stream_size:server,~,5;",
    ],
)
def test_bad_byte_extract_and_stream_size_are_refused(options: str) -> None:
    with pytest.raises(RuleFileError, match=r"^t:1: "):
        rule(options)


def test_byte_extract_in_traffic() -> None:
    ruleset = (
        'alert tcp any any -> any 9000 (msg:"len"; flow:established,to_server; content:"LEN"; '
        'byte_extract:2,0,len,relative; content:"END"; distance:len; within:3; sid:1;)\n'
    )
    good = tcp_session("10.0.0.1", "203.0.113.9", 40000, 9000, [b"LEN\x00\x02xxEND"])
    bad = tcp_session("10.0.0.1", "203.0.113.9", 40001, 9000, [b"LEN\x00\x01xxEND"])
    assert sids(inspect(good, ruleset)) == [1]
    assert sids(inspect(bad, ruleset)) == []


def test_stream_size_in_traffic() -> None:
    """stream_size counts each side's bytes as Suricata does (the SYN counts one)."""
    ruleset = (
        'alert tcp any any -> any 9000 (msg:"small"; flow:established,to_server; '
        'stream_size:client,<,8; content:"x"; sid:1;)\n'
        'alert tcp any any -> any 9000 (msg:"big"; flow:established,to_server; '
        "stream_size:client,>=,12; sid:2;)\n"
        'alert tcp any any -> any 9000 (msg:"server quiet"; flow:established,to_server; '
        'stream_size:server,=,1; content:"x"; sid:3;)\n'
        'alert tcp any 9000 -> any any (msg:"either"; flow:established,to_client; '
        "stream_size:either,>,100; sid:4;)\n"
    )
    c2s = Ether(src=MAC_A, dst=MAC_B) / IP(src="10.0.0.1", dst="192.0.2.9")
    s2c = Ether(src=MAC_B, dst=MAC_A) / IP(src="192.0.2.9", dst="10.0.0.1")
    packets = [
        c2s / TCP(sport=40000, dport=9000, flags="S", seq=100),
        s2c / TCP(sport=9000, dport=40000, flags="SA", seq=500),
        c2s / TCP(sport=40000, dport=9000, flags="A", seq=101),
        c2s / TCP(sport=40000, dport=9000, flags="PA", seq=101) / (b"x" * 5),
        s2c / TCP(sport=9000, dport=40000, flags="PA", seq=501) / (b"y" * 200),
        c2s / TCP(sport=40000, dport=9000, flags="PA", seq=106) / (b"x" * 6),
    ]
    # 1 + 5 bytes: small; then the server answers 200 bytes; 1 + 11 bytes: big
    assert sids(inspect(packets, ruleset)) == [1, 3, 4, 2]


@pytest.mark.parametrize(
    ("options", "data", "expected"),
    [
        # endswith keeps its content a content: nocase and fast_pattern may follow it
        ('content:".herominers.com"; nocase; endswith; fast_pattern;', b"x.HEROMINERS.com", True),
        ('content:".herominers.com"; endswith; nocase;', b"x.herominers.com.evil", False),
        ('content:"/"; content:".exe"; distance:0; endswith;', b"/a/b.exe", True),
        ('content:"/"; content:".exe"; distance:0; within:4; endswith;', b"/ab.exe", False),
        ('content:"x"; startswith; endswith;', b"xx", False),
        ('content:!".exe"; endswith;', b"a.exe.txt", True),
    ],
)
def test_endswith(options: str, data: bytes, expected: bool) -> None:
    assert hits(options, data) is expected
    assert rule(options).contents[-1].regex is None


def test_endswith_content_is_the_fast_pattern() -> None:
    sig = rule('dns.query; content:"a"; content:".herominers.com"; nocase; endswith;', "dns")
    fast = fast_pattern(sig)
    assert fast is not None and fast.pattern == b".herominers.com"


@pytest.mark.parametrize(
    ("flag", "buffer"),
    [
        ("H", "http.header"),
        ("C", "http.cookie"),
        ("P", "http.request_body"),
        ("Q", "http.response_body"),
        ("S", "http.stat_code"),
        ("Y", "http.stat_msg"),
    ],
)
def test_pcre_http_buffer_flags(flag: str, buffer: str) -> None:
    assert [c.buffer for c in rule(f'pcre:"/x/{flag}";').contents] == [buffer]


def test_tcp_pkt_and_tcp_stream_run_as_tcp() -> None:
    for proto in ("tcp-pkt", "tcp-stream"):
        assert rule('content:"x";', proto).proto == "tcp"


def forbidden_exchange() -> list[Packet]:
    """A GET of /index.php?id=1 (HTTP/1.1) answered 403 Forbidden by the server "edge"."""
    return tcp_session(
        "10.0.0.1",
        "203.0.113.9",
        40000,
        80,
        [http_get("/index.php?id=1")],
        [b"HTTP/1.1 403 Forbidden\r\nServer: edge\r\n\r\n"],
    )


def test_request_line_response_line_and_start_in_traffic() -> None:
    ruleset = (
        'alert http any any -> any any (msg:"line"; http.request_line; '
        'content:"GET /index.php?id=1 HTTP/1.1"; startswith; endswith; sid:1;)\n'
        'alert http any any -> any any (msg:"start"; http.start; content:"|0d 0a|Host|3a| '
        'app.example|0d 0a 0d 0a|"; endswith; sid:2;)\n'
        'alert http any any -> any any (msg:"legacy"; http_request_line; content:"HTTP/1.0"; '
        "sid:3;)\n"
        'alert http any any -> any any (msg:"response"; flow:to_client; http.response_line; '
        'content:"HTTP/1.1 403 Forbidden"; endswith; sid:4;)\n'
        'alert http any any -> any any (msg:"response start"; flow:to_client; http_start; '
        'content:"Server|3a| edge"; sid:5;)\n'
    )
    packets = forbidden_exchange()
    assert sorted(sids(inspect(packets, ruleset))) == [1, 2, 4, 5]


def test_http_protocol_of_requests_and_responses_in_traffic() -> None:
    ruleset = (
        'alert http any any -> any any (msg:"1.0"; flow:to_server; http.protocol; '
        'content:"HTTP/1.0"; startswith; endswith; sid:1;)\n'
        'alert http any any -> any any (msg:"1.1"; flow:to_server; http.protocol; '
        'content:"HTTP/1.1"; startswith; endswith; sid:2;)\n'
        'alert http any any -> any any (msg:"legacy"; flow:to_client; http_protocol; '
        'content:"HTTP/1.1"; endswith; sid:3;)\n'
    )
    packets = forbidden_exchange()
    assert sorted(sids(inspect(packets, ruleset))) == [2, 3]


def test_isdataat_relative_first_in_a_sticky_buffer_counts_from_its_start() -> None:
    """As Suricata takes ``http.accept_lang; isdataat:100,relative;``: nothing matched before
    it in its buffer, so from the buffer's start (not from a content of another buffer)."""
    sig = rule('http.uri; content:"/x"; http.accept_lang; isdataat:5,relative;', "http")
    assert contents_match(sig, {"http.uri": b"/x", "http.accept_lang": b"en-US,en"})
    assert not contents_match(sig, {"http.uri": b"/x", "http.accept_lang": b"en-US"})


def test_tag_is_accepted_and_changes_nothing_matched() -> None:
    tagged = rule('content:"evil"; tag:session,5,packets;')
    plain = rule('content:"evil";')
    assert tagged.contents == plain.contents
    assert contents_match(tagged, {"pkt": b"an evil payload"})


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"awsdns.vpnrf.com", True), (b"a.awsdns.vpnrf.com", True), (b"aawsdns.vpnrf.com", False)],
)
def test_dotprefix_matches_the_domain_and_its_subdomains(data: bytes, expected: bool) -> None:
    sig = rule('tls.sni; dotprefix; content:".awsdns.vpnrf.com"; endswith; fast_pattern;', "tls")
    assert contents_match(sig, {"tls.sni": data}) is expected


def test_dotprefix_in_traffic() -> None:
    ruleset = (
        'alert dns any any -> any any (msg:"d"; dns.query; dotprefix; content:".evil.example"; '
        "endswith; sid:1;)\n"
    )

    def query(name: str) -> list[object]:
        return [
            Ether(src=MAC_A, dst=MAC_B)
            / IP(src="10.0.0.1", dst="192.0.2.53")
            / UDP(sport=5353, dport=53)
            / DNS(rd=1, qd=DNSQR(qname=name))
        ]

    assert sids(inspect(query("evil.example"), ruleset)) == [1]
    assert sids(inspect(query("www.evil.example"), ruleset)) == [1]
    assert sids(inspect(query("notevil.example"), ruleset)) == []


def test_modifiers_apply_to_the_last_content_past_other_items() -> None:
    """As in Suricata: fast_pattern or nocase after bsize or isdataat change the content."""
    sig = rule(
        'http.host; content:".web.app"; isdataat:!1,relative; fast_pattern; '
        'http.uri; content:"/login"; bsize:6; nocase;'
    )
    host, _, uri, _ = sig.contents
    assert host.fast and uri.nocase
    with pytest.raises(RuleFileError, match="must follow a content"):
        rule("dsize:5; nocase;")


def test_http_header_raw_is_the_header_block_as_sent() -> None:
    rules = "\n".join(
        [
            # sticky form; the normalized http.header would have "Name: value" only
            'alert http any any -> any any (msg:"raw spacing"; flow:to_server; '
            'http.header.raw; content:"X-Tab:|09|a|0d 0a 0d 0a|"; sid:1;)',
            'alert http any any -> any any (msg:"normalized"; flow:to_server; '
            'http.header; content:"X-Tab:|09|a"; sid:2;)',
            # older modifier form, relative items; the request line is not in it
            'alert http any any -> any any (msg:"modifier"; flow:to_server; '
            'content:"Host|3a 20|"; http_raw_header; content:"app.example"; distance:0; '
            "http_raw_header; sid:3;)",
            'alert http any any -> any any (msg:"not the line"; flow:to_server; '
            'content:"GET"; http_raw_header; sid:4;)',
            # the response's header block, pcre's /D
            'alert http any any -> any any (msg:"response"; flow:to_client; '
            'pcre:"/^Server: +Odd\\r$/mD"; sid:5;)',
        ]
    )
    request = http_get("/", headers="X-Tab:\ta\r\n")
    response = b"HTTP/1.1 200 OK\r\nServer:  Odd\r\nContent-Length: 0\r\n\r\n"
    packets = tcp_session("198.51.100.7", "10.0.0.80", 40000, 80, [request], [response])
    assert sorted(set(sids(inspect(packets, rules)))) == [1, 3, 5]


def test_http_header_raw_across_segments_once_the_head_is_complete() -> None:
    rule_text = (
        'alert http any any -> any any (msg:"raw"; flow:to_server; '
        'http.header.raw; content:"User-Agent: Mozilla|0d 0a|"; sid:1;)'
    )
    c2s = Ether(src=MAC_A, dst=MAC_B) / IP(src="198.51.100.7", dst="10.0.0.80")
    s2c = Ether(src=MAC_B, dst=MAC_A) / IP(src="10.0.0.80", dst="198.51.100.7")
    first = b"GET / HTTP/1.1\r\nHost: app.example\r\nUser-Agent: Moz"
    second = b"illa\r\n\r\n"
    packets = [
        c2s / TCP(sport=40000, dport=80, flags="S", seq=100),
        s2c / TCP(sport=80, dport=40000, flags="SA", seq=500, ack=101),
        c2s / TCP(sport=40000, dport=80, flags="A", seq=101, ack=501),
        c2s / TCP(sport=40000, dport=80, flags="PA", seq=101, ack=501) / first,
        c2s / TCP(sport=40000, dport=80, flags="PA", seq=101 + len(first), ack=501) / second,
    ]
    assert sids(inspect(packets[:4], rule_text)) == []
    assert sids(inspect(packets, rule_text)) == [1]


@pytest.mark.parametrize(
    ("options", "data", "expected"),
    [
        # 0 bytes as text: the number that starts there, however long (Suricata's strtoull)
        ("byte_test:0,=,0,0,string,dec;", b"0", True),
        ("byte_test:0,=,0,0,string,dec;", b"10", False),
        ("byte_test:0,=,123456789012,0,string,dec;", b"123456789012", True),
        ("byte_test:0,=,42,0,string,dec;", b" 42abc", True),
        ("byte_test:0,=,255,0,string,hex;", b"0xff;", True),
        ("byte_test:0,>,0,0,string,dec;", b"abc", False),  # no number: no match
        ("byte_test:0,>,0,0,string,dec;", b"99999999999999999999999", False),  # > 64 bits
        ('content:"len="; byte_test:0,=,7,0,relative,string,dec;', b"len=7&x=1", True),
        ('content:"len="; byte_test:0,=,7,0,relative,string,dec;', b"len=", False),
    ],
)
def test_byte_test_of_zero_bytes_reads_the_whole_number(
    options: str, data: bytes, expected: bool
) -> None:
    assert hits(options, data) is expected


def test_byte_test_of_zero_bytes_needs_string() -> None:
    with pytest.raises(RuleFileError, match="cannot read 0 bytes"):
        rule("byte_test:0,=,0,0;")


def test_byte_test_of_zero_bytes_on_the_content_length() -> None:
    rules = (
        'alert http any any -> any any (msg:"empty"; flow:established,to_client; '
        'http.stat_code; content:"200"; http.content_len; byte_test:0,=,0,0,string,dec; sid:1;)'
    )
    empty = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    full = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"
    for response, expected in ((empty, [1]), (full, [])):
        packets = tcp_session("10.0.0.7", "198.51.100.80", 40000, 80, [http_get("/")], [response])
        assert sids(inspect(packets, rules)) == expected


def test_dotprefix_after_items_on_a_dns_query() -> None:
    rules = (
        'alert dns any any -> any any (msg:"relay"; dns.query; content:"rs-"; startswith; '
        'fast_pattern; pcre:"/[a-z]{2}/Ri"; dotprefix; content:".rustdesk.com"; nocase; '
        "endswith; sid:1;)"
    )

    def query(name: str) -> list:  # type: ignore[type-arg]
        return [
            Ether(src=MAC_A, dst=MAC_B)
            / IP(src="10.0.0.7", dst="198.51.100.53")
            / UDP(sport=40000, dport=53)
            / DNS(rd=1, qd=DNSQR(qname=name))
        ]

    assert sids(inspect(query("rs-ny.rustdesk.com"), rules)) == [1]
    assert sids(inspect(query("rs-ny.rustdesk.com.example"), rules)) == []
    assert sids(inspect(query("xrs-ny.rustdesk.com"), rules)) == []


SSH_RULES = "\n".join(
    [
        'alert ssh any any -> any any (msg:"libssh client"; flow:established,to_server; '
        'ssh.software; content:"libssh-"; sid:1;)',
        'alert ssh any any -> any any (msg:"old server"; flow:established,to_client; '
        'ssh_software; content:"OpenSSH_7"; startswith; sid:2;)',
        'alert ssh any any -> any any (msg:"v1 compat"; flow:to_server; '
        "ssh.protoversion:2_compat; sid:3;)",
        'alert ssh any any -> any any (msg:"1.99 only"; ssh.proto; content:"1.99"; '
        "bsize:4; sid:4;)",
        'alert ssh any any -> any any (msg:"old form"; flow:to_server; '
        "ssh.softwareversion:libssh; sid:5;)",
    ]
)


@pytest.mark.parametrize(
    ("client", "server", "expected"),
    [
        (b"SSH-2.0-libssh-0.9.6\r\n", b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n", [1, 3, 5]),
        (b"SSH-1.99-PuTTY_Release_0.78\r\n", b"SSH-2.0-OpenSSH_7.4\r\n", [2, 3, 4]),
        # the banner's words elsewhere in the payload: not a banner
        (b"hello SSH-2.0-libssh-0.9.6\r\n", b"x SSH-2.0-OpenSSH_7.4\r\n", []),
    ],
)
def test_ssh_banner_keywords(client: bytes, server: bytes, expected: list[int]) -> None:
    packets = tcp_session("198.51.100.7", "10.0.0.22", 40000, 22, [client], [server])
    assert sorted(set(sids(inspect(packets, SSH_RULES)))) == expected


def test_ip_proto_below_and_above() -> None:
    rules = "\n".join(
        [
            'alert ip any any -> any any (msg:"unassigned"; ip_proto:>134; sid:1;)',
            'alert ip any any -> any any (msg:"low"; ip_proto:<2; sid:2;)',
            'alert ip any any -> any any (msg:"not low"; ip_proto:!<2; sid:3;)',
        ]
    )
    reserved = Ether() / IP(src="10.0.0.1", dst="10.0.0.2", proto=200) / (b"x" * 8)
    assigned = Ether() / IP(src="10.0.0.1", dst="10.0.0.2", proto=134) / (b"x" * 8)
    icmp = Ether() / IP(src="10.0.0.1", dst="10.0.0.2", proto=1) / (b"\x08\x00" + b"x" * 6)
    assert sorted(sids(inspect([reserved], rules))) == [1, 3]
    assert sorted(sids(inspect([assigned], rules))) == [3]
    assert sorted(sids(inspect([icmp], rules))) == [2]
    with pytest.raises(RuleFileError, match="ip_proto"):
        rule("ip_proto:>255;")


def test_flow_no_stream_matches_the_packet() -> None:
    rules = (
        'alert ftp any any -> any any (msg:"long command"; flow:to_server,established,'
        "no_stream; dsize:>100; sid:1;)"
    )
    long = tcp_session("198.51.100.7", "10.0.0.21", 40000, 21, [b"USER " + b"A" * 120 + b"\r\n"])
    short = tcp_session("198.51.100.7", "10.0.0.21", 40001, 21, [b"USER anonymous\r\n"])
    assert sids(inspect(long, rules)) == [1]
    assert sids(inspect(short, rules)) == []


def test_a_quote_inside_an_option_splits_as_suricata_splits_it() -> None:
    """ET's ``pcre:"/^["']?post/Ri";``: Suricata ends an option at a ';' not after a
    backslash, whatever the quotes; such a rule loads and runs."""
    sig = rule('content:"method="; pcre:"/^["\']?post/Ri";')
    assert contents_match(sig, {"pkt": b"<form method='POST'>"})
    assert not contents_match(sig, {"pkt": b"<form method='get'>"})
    assert rule('content:"a|3b|b"; content:"x\\;y";').contents[1].pattern == b"x;y"
