"""base64_decode and base64_data: the decoded bytes of a buffer (from a place, relative to
the previous match, a count of them), the items after base64_data matched against them;
what is refused or skipped; crafted traffic; any bytes decoded."""

from __future__ import annotations

import base64
import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.errors import RuleFileError
from appliance.inspect.match import contents_match
from appliance.inspect.rules import Signature, Variables, load_rules, parse_rules
from tests.inspect.traffic import http_get, inspect, sids, tcp_session

VARS = Variables.from_networks([ipaddress.ip_network("10.0.0.0/8")])
TOKEN = base64.b64encode(b"secret=1234 cmd").decode()  # c2VjcmV0PTEyMzQgY21k
PAYLOAD = f"GET /x?q={TOKEN}&z=1 HTTP/1.1\r\n".encode()


def rule(options: str) -> Signature:
    return next(parse_rules(f"alert tcp any any -> any any ({options} sid:1;)", "t", VARS))


def hits(options: str, data: bytes = PAYLOAD, uri: bytes = b"") -> bool:
    return contents_match(rule(options), {"pkt": data, "http.uri": uri})


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ('content:"q="; base64_decode:relative; base64_data; content:"secret";', True),
        ('content:"q="; base64_decode:relative; base64_data; content:"secret"; depth:6;', True),
        ('content:"q="; base64_decode:relative; base64_data; content:"1234"; depth:6;', False),
        ('content:"q="; base64_decode:relative; base64_data; content:"nothere";', False),
        # bytes: only that many of the buffer decoded (8 characters: 6 bytes)
        ('content:"q="; base64_decode:bytes 8, relative; base64_data; content:"secret";', True),
        ('content:"q="; base64_decode:bytes 8, relative; base64_data; content:"1234";', False),
        # offset: skipped before decoding (from the match's end when relative)
        ('content:"q="; base64_decode:offset 4, relative; base64_data; content:"ret=";', True),
        ('content:"q="; base64_decode:offset 1, relative; base64_data; content:"secret";', False),
        ('base64_decode:offset 9; base64_data; content:"secret"; depth:6;', True),
        # not relative: from the buffer's start ("GET" is no base64 of "secret")
        ('content:"q="; base64_decode; base64_data; content:"secret";', False),
        # positions count from the decoded bytes' start; the decoding stops at "&"
        ('content:"q="; base64_decode:relative; base64_data; content:"cmd"; distance:0;', True),
        ('content:"q="; base64_decode:relative; base64_data; content:"z=1";', False),
        # base64_decode alone holds when something decodes
        ('content:"q="; base64_decode:relative;', True),
        ('content:"HTTP/1.1"; base64_decode:relative;', False),  # "\r": nothing decodes
        ('content:"q="; base64_decode:relative; base64_data; content:!"secret";', False),
        ('content:"q="; base64_decode:relative; base64_data; content:!"other";', True),
        # other buffers' items stay theirs after base64_data
        (
            'content:"q="; base64_decode:relative; base64_data; content:"secret"; '
            'http.uri; content:"/x";',
            False,  # no /x in the uri given
        ),
    ],
)
def test_base64_decode_and_data(options: str, expected: bool) -> None:
    assert hits(options) is expected


def test_the_decoding_reads_the_sticky_buffer_or_the_previous_contents() -> None:
    uri = f"/x?q={TOKEN}".encode()
    assert hits(
        'http.uri; content:"q="; base64_decode:relative; base64_data; content:"cmd";', b"", uri
    )
    # the older form: the content moved to http.uri by its modifier, the decoding follows it
    assert hits(
        'content:"q="; http_uri; base64_decode:relative; base64_data; content:"cmd";', b"", uri
    )
    assert not hits(
        'content:"q="; http_uri; base64_decode:relative; base64_data; content:"cmd";', b"", b"/x"
    )


def test_the_decoded_items_are_no_prefilter_patterns() -> None:
    sig = rule('content:"q="; base64_decode:relative; base64_data; content:"secret";')
    assert [c.literal for c in sig.contents] == [True, False, False]
    assert [c.decoded for c in sig.contents] == [False, False, True]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ('base64_data; content:"a";', "base64_data needs a base64_decode"),
        ('base64_decode:relative; base64_data; content:"a";', "relative needs a content"),
        ('content:"a"; base64_decode:bytes 70000; base64_data;', "out of range"),
        ('content:"a"; base64_decode:bytes; base64_data;', "expected bytes N"),
        ('content:"a"; base64_decode:size 4; base64_data;', "expected bytes N"),
        ('content:"a"; base64_decode:offset 1, offset 2; base64_data;', "offset given twice"),
    ],
)
def test_bad_base64_decode_is_refused(options: str, message: str) -> None:
    with pytest.raises(RuleFileError, match=message):
        rule(options)


def test_forms_not_run_are_skipped_with_their_keyword(tmp_path: Path) -> None:
    path = tmp_path / "b.rules"
    path.write_text(
        'alert tcp any any -> any any (content:"a"; base64_decode; base64_data; '
        'content:"b"; pkt_data; content:"c"; sid:1;)\n'
        'alert tcp any any -> any any (content:"a"; base64_decode; base64_data; '
        'content:"b"; base64_decode; base64_data; content:"c"; sid:2;)\n'
        'alert tcp any any -> any any (content:"a"; base64_decode; base64_data; '
        'to_lowercase; content:"b"; sid:3;)\n'
        'alert tcp any any -> any any (content:"a"; base64_decode; base64_data; '
        'content:"b"; sid:4;)\n'
    )
    rules = load_rules([str(path)], VARS)
    assert [s.sid for s in rules.signatures] == [4]
    assert rules.reasons() == {"base64_data": 2, "base64_decode": 1}


def test_base64_on_crafted_traffic() -> None:
    rules = (
        'alert http any any -> any any (msg:"b64 uri"; flow:to_server; http.uri; '
        'content:"q="; base64_decode:bytes 40, relative; base64_data; content:"cmd"; sid:1;)\n'
        'alert tcp any any -> any 25 (msg:"b64 mail"; flow:to_server; '
        'content:"Content-Transfer-Encoding: base64|0d 0a 0d 0a|"; '
        'base64_decode:relative; base64_data; content:"MZ"; depth:2; sid:2;)\n'
    )
    body = base64.b64encode(b"MZ\x90\x00" + bytes(60)).decode()
    mail = f"Subject: x\r\nContent-Transfer-Encoding: base64\r\n\r\n{body}\r\n".encode()
    match = tcp_session("10.0.0.5", "198.51.100.7", 40000, 80, [http_get(f"/x?q={TOKEN}")])
    match += tcp_session("10.0.0.5", "198.51.100.8", 40001, 25, [mail])
    assert sorted(sids(inspect(match, rules))) == [1, 2]
    # "cmd" in clear, a zip attachment, "MZ" in clear: nothing
    other = base64.b64encode(b"PK\x03\x04MZ" + bytes(20)).decode()
    zipped = f"Content-Transfer-Encoding: base64\r\n\r\n{other}\r\nMZ".encode()
    miss = tcp_session("10.0.0.5", "198.51.100.7", 40002, 80, [http_get("/x?q=cmd")])
    miss += tcp_session("10.0.0.5", "198.51.100.8", 40003, 25, [zipped])
    assert sids(inspect(miss, rules)) == []


@given(
    st.binary(max_size=200),
    st.integers(0, 300),
    st.integers(0, 300),
    st.booleans(),
)
def test_any_bytes_decode_without_error(
    data: bytes, nbytes: int, offset: int, relative: bool
) -> None:
    where = ", relative" if relative else ""
    sig = rule(
        f'content:"="; base64_decode:bytes {nbytes}, offset {offset}{where}; base64_data; '
        'content:"a"; isdataat:1,relative;'
    )
    assert isinstance(contents_match(sig, {"pkt": data}), bool)
