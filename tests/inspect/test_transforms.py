"""Transformations of sticky buffers, with Suricata's semantics: each on its own, chained in
rule order, and in rules run over crafted HTTP and DNS traffic."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.all import DNS, DNSQR, IP, UDP, Ether  # type: ignore[attr-defined]

from appliance.errors import RuleFileError
from appliance.inspect import transforms
from appliance.inspect.match import contents_match
from appliance.inspect.rules import Signature, Variables, parse_rules
from tests.inspect.traffic import http_get, inspect, sids, tcp_session

VARS = Variables.from_networks([ipaddress.ip_network("10.0.0.0/8")])
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # no ARP lookups


def rule(options: str) -> Signature:
    return next(parse_rules(f"alert tcp any any -> any any ({options} sid:1;)", "t", VARS))


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("dotprefix", b"a.example", b".a.example"),
        ("to_lowercase", b"GET /A\xc3\x89", b"get /a\xc3\x89"),  # ASCII letters only
        ("to_uppercase", b"get /a", b"GET /A"),
        ("strip_whitespace", b" a\tb\r\nc\x0b\x0cd ", b"abcd"),
        ("compress_whitespace", b"I  \t J", b"I J"),
        ("compress_whitespace", b" A B  ", b" A B "),
        ("compress_whitespace", b"a\t\tb", b"a\tb"),  # the run's first byte stays
        ("url_decode", b"Suricata%20is+%27%61wesome%21%27", b"Suricata is 'awesome!'"),
        ("url_decode", b"%00%ZZ%4", b"\x00%ZZ%4"),  # bad escapes stay as they are
        ("url_decode", b"%%41", b"%%41"),
        ("url_decode", b"a%2+b", b"a%2+b"),  # a "+" inside a bad escape is not a space
        (
            "header_lowercase",
            b"Header1: Value1\nheader2:Value2\n",
            b"header1: Value1\nheader2:Value2\n",
        ),
        (
            "header_lowercase",
            b"Host: A.Example\r\nUser-Agent: X\r\n",
            b"host: A.Example\r\nuser-agent: X\r\n",
        ),
        (
            "strip_pseudo_headers",
            b"Header1: Value1\n:method:get\nheader2:Value2\n:scheme:https\nheader3:Value3\n",
            b"Header1: Value1\nheader2:Value2\nheader3:Value3\n",
        ),
        ("strip_pseudo_headers", b":method:get", b""),
        ("strip_pseudo_headers", b":method:get\nheader2:Value2", b"header2:Value2"),
    ],
)
def test_each_transformation(name: str, data: bytes, expected: bytes) -> None:
    assert transforms.apply(data, [(name, b"")]) == expected


def test_hashes_are_raw_digests() -> None:
    data = b"GET /index.html HTTP/1.1"
    assert transforms.apply(data, [("to_md5", b"")]) == hashlib.md5(data).digest()
    assert transforms.apply(data, [("to_sha1", b"")]) == hashlib.sha1(data).digest()
    assert transforms.apply(data, [("to_sha256", b"")]) == hashlib.sha256(data).digest()


def test_xor_repeats_its_key() -> None:
    key = bytes.fromhex("0d0ac8ff")
    plain = b"This is a secret message"
    hidden = bytes(b ^ key[i % 4] for i, b in enumerate(plain))
    assert transforms.xor(hidden, key) == plain
    assert transforms.xor(b"", key) == b""


@given(st.binary(max_size=200))
def test_url_decode_matches_a_byte_by_byte_reading(data: bytes) -> None:
    """Against a plain reading of Suricata's state machine, one byte at a time."""
    hexd = b"0123456789abcdefABCDEF"
    out = bytearray()
    i = 0
    while i < len(data):
        c = data[i]
        if c == 0x25:  # %
            a = data[i + 1 : i + 2]
            b = data[i + 2 : i + 3]
            if a and a[0] in hexd and b and b[0] in hexd:
                out.append(int(a + b, 16))
                i += 3
            elif a and a[0] in hexd:
                out += data[i : i + 3]
                i += 3
            else:
                out += data[i : i + 2]
                i += 2
        else:
            out.append(0x20 if c == 0x2B else c)
            i += 1
    assert transforms.url_decode(data) == bytes(out)


@given(st.binary(max_size=200))
def test_whitespace_transformations_hold_their_promise(data: bytes) -> None:
    stripped = transforms.apply(data, [("strip_whitespace", b"")])
    assert not any(c in b" \t\n\x0b\x0c\r" for c in stripped)
    compressed = transforms.apply(data, [("compress_whitespace", b"")])
    spaces = b" \t\n\x0b\x0c\r"
    assert not any(a in spaces and b in spaces for a, b in itertools.pairwise(compressed))
    assert compressed.translate(None, spaces) == stripped


@pytest.mark.parametrize(
    ("options", "data", "expected"),
    [
        ('http.uri; to_lowercase; content:"/admin";', b"/ADMIN/x", True),
        ('http.uri; content:"/admin";', b"/ADMIN/x", False),
        ('http.uri; to_uppercase; content:"/ADMIN";', b"/admin", True),
        ('http.uri; url_decode; content:"/a b";', b"/a%20b", True),
        ('http.uri; strip_whitespace; content:"window.navigate(";', b"window.navigate (", True),
        ('http.uri; compress_whitespace; content:"a b";', b"a \t b", True),
        # chained, in rule order: decoded, then lowered
        ('http.uri; url_decode; to_lowercase; content:"/admin";', b"/%41DMIN", True),
        ('http.uri; to_lowercase; content:"/a"; content:"b"; distance:0;', b"/A..B", True),
        (
            'http.uri; to_md5; content:"|0c c1 75 b9 c0 f1 b6 a8 31 c3 99 e2 69 77 26 61|";',
            b"a",
            True,
        ),
        ('http.uri; xor:"01"; content:"`";', b"a", True),
        ("http.uri; to_lowercase; bsize:2;", b"AB", True),
        ("http.uri; to_sha256; bsize:32;", b"anything", True),
        ('http.uri; dotprefix; content:".example"; endswith;', b"a.example", True),
        ('http.uri; dotprefix; to_uppercase; content:".A.EX";', b"a.ex", True),
        ('http.uri; to_lowercase; pcre:"/^\\/admin$/";', b"/Admin", True),
    ],
)
def test_transformed_buffers_in_rules(options: str, data: bytes, expected: bool) -> None:
    sig = rule(options)
    assert contents_match(sig, {"pkt": b"", "http.uri": data}) is expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"rs-ab.rustdesk.com", True),
        (b"rs-ab.RUSTDESK.com", True),
        (b"xrs-ab.rustdesk.com", False),  # the untransformed items: startswith
        (b"rs-ab.rustdesk.com.evil", False),  # the transformed view: endswith
    ],
)
def test_a_transformation_after_items_starts_a_transformed_view(
    data: bytes, expected: bool
) -> None:
    # as Suricata: the items before it see the buffer as it is, those after it a new
    # buffer, transformed, whose chain starts over
    sig = rule(
        'http.uri; content:"rs-"; startswith; fast_pattern; pcre:"/[a-z]{2}/Ri"; '
        'dotprefix; content:".rustdesk.com"; nocase; endswith;'
    )
    assert contents_match(sig, {"pkt": b"", "http.uri": data}) is expected


def test_transformation_after_a_content_or_without_a_buffer_is_refused() -> None:
    with pytest.raises(RuleFileError, match="to_lowercase must come before"):
        rule('http.uri; dotprefix; content:"a"; to_lowercase;')
    with pytest.raises(RuleFileError, match="to_lowercase needs a sticky buffer"):
        rule('to_lowercase; content:"a";')
    with pytest.raises(RuleFileError, match="xor needs a key"):
        rule('http.uri; xor:"0g"; content:"a";')
    with pytest.raises(RuleFileError, match="to_md5 takes no value"):
        rule('http.uri; to_md5:1; content:"a";')


def test_a_transformed_content_is_no_prefilter_pattern() -> None:
    sig = rule('http.uri; to_lowercase; content:"/admin";')
    assert not sig.contents[0].literal


def test_transformations_on_crafted_traffic() -> None:
    rules = (
        'alert http any any -> any any (msg:"lowered uri"; flow:to_server; http.uri; '
        'url_decode; to_lowercase; content:"/admin/"; sid:1;)\n'
        'alert http any any -> any any (msg:"header names"; flow:to_server; http.header; '
        'header_lowercase; content:"x-evil: Yes"; sid:2;)\n'
        'alert dns any any -> any any (msg:"domain"; dns.query; dotprefix; to_lowercase; '
        'content:".example.org"; endswith; sid:3;)\n'
    )
    request = http_get("/%41dmin/Panel", headers="X-EVIL: Yes\r\n")
    packets = tcp_session("10.0.0.5", "198.51.100.7", 40000, 80, [request])
    query = ETH / IP(src="10.0.0.5", dst="198.51.100.53") / UDP(sport=5353, dport=53)
    packets.append(query / DNS(rd=1, qd=DNSQR(qname="WWW.Example.ORG")))
    packets.append(query / DNS(rd=1, qd=DNSQR(qname="www.notexample.org")))
    assert sorted(sids(inspect(packets, rules))) == [1, 2, 3]


ARGUMENTS = {
    "xor": b"\x5a\xa5",
    "pcrexform": transforms.parse_argument("pcrexform", '"a(b*)c|(x)"'),
    "from_base64": transforms.parse_argument("from_base64", None),
}


@given(st.binary(max_size=300), st.lists(st.sampled_from(sorted(transforms.NAMES)), max_size=4))
def test_every_transformation_takes_any_bytes(data: bytes, names: list[str]) -> None:
    chain = [(name, ARGUMENTS.get(name, b"")) for name in names]
    assert isinstance(transforms.apply(data, chain), bytes)


@given(
    st.binary(max_size=300),
    st.integers(0, 400),
    st.integers(0, 400),
    st.sampled_from(transforms.BASE64_MODES),
)
def test_base64_decodes_any_bytes(data: bytes, nbytes: int, offset: int, mode: str) -> None:
    argument = transforms.parse_argument(
        "from_base64", f"bytes {nbytes}, offset {offset}, mode {mode}"
    )
    out = transforms.apply(data, [("from_base64", argument)])
    assert isinstance(out, bytes) and len(out) <= len(data)
    assert isinstance(transforms.base64_decode(data, mode), bytes)


@given(st.binary(max_size=200))
def test_base64_of_encoded_bytes_gives_them_back_in_every_mode(data: bytes) -> None:
    encoded = base64.b64encode(data)
    for mode in transforms.BASE64_MODES:
        assert transforms.base64_decode(encoded, mode) == data
    # a line break every 76 characters, as MIME writes: only rfc2045 reads past it
    wrapped = b"\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    assert transforms.base64_decode(wrapped, "rfc2045") == data


@pytest.mark.parametrize(
    ("options", "data", "expected"),
    [
        (None, b"aGVsbG8gd29ybGQ=", b"hello world"),
        (None, b"aGVsbG8=junk", b"hello" + base64.b64decode(b"junk")),  # "=" ends a group
        (None, b"aGk=aGk=", b"hihi"),
        (None, b"aG=k", b"h"),  # "=" third: 1 byte, the fourth character ignored
        (None, b"=aGk", b""),  # "=" first: the input refused
        (None, b"aGVs bG8=", b"hel"),  # and at any byte outside the alphabet
        (None, b"aGVsbG8", b"hello"),  # a last group of 3 characters: 2 bytes
        (None, b"aGVsb", b""),  # of 1 character: the input refused
        (None, b"!!!!", b""),  # nothing decoded: empty
        ("mode rfc2045", b"aGVs\r\nbG8=", b"hello"),  # bytes outside the alphabet skipped
        ("mode rfc2045", b"aG-Vs*bG8=", b"hello"),
        ("mode rfc2045", b"aG-Vs*bG8", b"hel"),  # a last incomplete group dropped
        ("mode strict", b"aGVsbG8=", b"hello"),
        ("mode strict", b"aGVsbG8", b""),  # unpadded: refused whole
        ("mode strict", b"aGVs bG8=", b""),
        ("offset 4", b"XXXXaGVsbG8=", b"hello"),
        ("offset 4, bytes 4", b"XXXXaGVsbG8=", b"hel"),
        ("bytes 4, offset 4", b"XXXXaGVsbG8=", b"hel"),
        ("offset 12", b"XXXXaGVsbG8=", b"XXXXaGVsbG8="),  # past the end: as it is
        ("bytes 12", b"XXXXaGVsbG8=", b"XXXXaGVsbG8="),  # to the end or past: as it is
        ("offset 4, bytes 8", b"XXXXaGVsbG8=", b"XXXXaGVsbG8="),  # the whole buffer, as it was
    ],
)
def test_from_base64(options: str | None, data: bytes, expected: bytes) -> None:
    argument = transforms.parse_argument("from_base64", options)
    assert transforms.apply(data, [("from_base64", argument)]) == expected


@pytest.mark.parametrize(
    ("regex", "data", "expected"),
    [
        ('"user=([a-z]+)"', b"id=1&user=bob&x", b"bob"),
        ('"user=([a-z]+)"', b"nothing here", b"nothing here"),  # no match: as it is
        ('"(?:a(x)|b(y))"', b"b y by", b""),  # the first group, unset: empty
        ('"[a-zA-Z]+\\s+(.*)\\s+HTTP"', b"GET /index.html HTTP/1.0", b"/index.html"),
        # as for pcre: \\g back references, look-behinds of alternatives of other widths
        ('"(a|b)=([^&]*)&\\g{1}=\\g2"', b"x&b=7&b=7", b"b"),
        ('"(a|b)=([^&]*)&\\g{-2}=(\\g{-2})"', b"a=1&a=2&a=2&a=2", b"a"),
        ('"(?<=user=|login=)([a-z]+)"', b"login=eve&user=bob", b"eve"),
    ],
)
def test_pcrexform(regex: str, data: bytes, expected: bytes) -> None:
    argument = transforms.parse_argument("pcrexform", regex)
    assert transforms.apply(data, [("pcrexform", argument)]) == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ('http.uri; from_base64: mode other; content:"a";', "mode 'other'"),
        ('http.uri; from_base64: bytes 70000; content:"a";', "bytes must be a number"),
        ('http.uri; from_base64: bytes 4, bytes 5; content:"a";', "bytes given twice"),
        ('http.uri; from_base64: size 4; content:"a";', "expected bytes N"),
        ('http.uri; pcrexform:"abc"; content:"a";', "needs a capture group"),
        ('http.uri; pcrexform:"(a"; content:"a";', "not a supported expression"),
        ('http.uri; pcrexform:"(?|(a)|(b))"; content:"a";', "PCRE construct"),
        ('http.uri; pcrexform:"a\\Kb(c)"; content:"a";', "PCRE construct"),
        ('http.uri; pcrexform; content:"a";', "quoted regex"),
        ('http.uri; pcrexform:"(a)\\g<1>"; content:"a";', "PCRE construct"),
        ('http.uri; pcrexform:"(?<=a+)(b)"; content:"a";', "look-behind of variable width"),
    ],
)
def test_bad_from_base64_and_pcrexform_are_refused(options: str, message: str) -> None:
    with pytest.raises(RuleFileError, match=message):
        rule(options)


def test_from_base64_and_pcrexform_on_crafted_traffic() -> None:
    token = base64.b64encode(b"cmd=exec&target=vault").decode()
    rules = (
        'alert http any any -> any any (msg:"b64 token"; flow:to_server; http.uri; '
        'pcrexform:"token=([A-Za-z0-9+/=]+)"; from_base64; content:"cmd=exec"; sid:1;)\n'
        'alert http any any -> any any (msg:"b64 cookie"; flow:to_server; http.cookie; '
        'from_base64: offset 2, mode rfc2045; content:"admin=1"; sid:2;)\n'
        'alert http any any -> any any (msg:"b64 strict"; flow:to_server; http.uri; '
        'pcrexform:"token=([^&]+)"; from_base64: mode strict; content:"target"; sid:3;)\n'
    )
    cookie = "c=" + base64.b64encode(b"user=a;admin=1").decode()
    match = http_get(f"/q?token={token}", headers=f"Cookie: {cookie}\r\n")
    packets = tcp_session("10.0.0.5", "198.51.100.7", 40000, 80, [match])
    assert sorted(sids(inspect(packets, rules))) == [1, 2, 3]
    # the same words in clear, or a token that is not valid base64 for strict: nothing
    clear = http_get("/q?token=cmd=exec", headers="Cookie: c=admin=1\r\n")
    packets = tcp_session("10.0.0.5", "198.51.100.7", 40001, 80, [clear])
    assert sids(inspect(packets, rules)) == []
    broken = http_get(f"/q?token={token[:-2]}*", headers="")
    packets = tcp_session("10.0.0.5", "198.51.100.7", 40002, 80, [broken])
    assert sids(inspect(packets, rules)) == [1]
