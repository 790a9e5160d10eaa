"""Chunked HTTP bodies: de-chunked for the body buffers, in one segment or gathered across
several up to the last chunk, within the bounds of split messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import Packet, raw  # type: ignore[attr-defined]

from appliance.inspect import appproto
from appliance.inspect.appproto import CHUNKED_OPEN, dechunk, message_size
from appliance.inspect.httpsplit import HTTP_MAX_BYTES
from appliance.inspect.pcap import read_capture
from tests.inspect.test_httpsplit import cut, run, session
from tests.inspect.traffic import run_cli


def chunked(*parts: bytes, trailer: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n" + trailer + b"\r\n"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (chunked(b"MZ-S", b"PLIT-EXE"), b"MZ-SPLIT-EXE"),
        (b"4;name=value\r\nMZ-S\r\n8\r\nPLIT-EXE\r\n0\r\n\r\n", b"MZ-SPLIT-EXE"),  # extensions
        (b"4\nMZ-S\n0\n\n", b"MZ-S"),  # bare line feeds
        (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
        (b"4\r\nMZ-S\r\n8\r\nPLI", b"MZ-SPLI"),  # cut short: as far as it goes
        (b"4\r\nMZ-S\r\nzz\r\nrest", b"MZ-S"),  # a bad size: what came before
        (b"4\r\nMZ-SXX8\r\n", b"MZ-S"),  # no line end after the data
        (b"", b""),
        (b"ffffffffffffffffff\r\nx", b""),  # a size too long to be one
    ],
)
def test_dechunk(body: bytes, expected: bytes) -> None:
    assert dechunk(body) == expected


def test_message_size_waits_for_the_last_chunk() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = chunked(b"hello", b"world", trailer=b"X-Sum: 1\r\n")
    whole = head + body
    assert message_size(whole) == len(whole)
    assert message_size(whole + b"HTTP/1.1 200 OK\r\n") == len(whole)  # the next response
    for end in range(len(head), len(whole)):
        assert message_size(whole[:end]) == CHUNKED_OPEN
    assert message_size(whole[: len(head) - 1]) == -1
    assert message_size(whole, body=False) == len(head)
    # gzip, chunked: chunked is last; chunked, gzip is not chunked framing
    gz = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + body
    assert message_size(gz) == len(gz)
    other = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc"
    assert message_size(other) == len(other)


def test_body_property_dechunks_once_and_only_chunked_bodies() -> None:
    errors: dict[str, int] = {}
    request = appproto.parse_http_request(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n" + chunked(b"a=", b"1"), errors
    )
    assert request is not None and request.body == b"a=1"
    assert request.body is request.body
    plain = appproto.parse_http_request(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n3\r\na", {})
    assert plain is not None and plain.body == b"3\r\na"


RULES = (
    'alert http any any -> any any (msg:"file"; flow:to_client; file_data; '
    'content:"MZ-SPLIT-EXE"; sid:5;)\n'
    'alert http any any -> any any (msg:"chunk text"; flow:to_client; http.response_body; '
    'content:"|0d 0a|8|0d 0a|"; sid:8;)\n'
    'alert http any any -> any any (msg:"body"; http.request_body; content:"payload=DROP"; '
    "sid:4;)\n"
    'alert http any any -> any any (msg:"ends"; http.request_body; content:"z=2"; endswith; '
    "sid:9;)\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b"....MZ-S", b"PLIT-EXE....")
)
REQUEST = (
    b"POST /upload HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\n\r\n"
    + chunked(b"a=1&pay", b"load=D", b"ROP&z=2")
)


def test_a_chunked_response_in_one_segment() -> None:
    found, _ = run(session([b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"], [RESPONSE]), RULES)
    assert found == [5]


@pytest.mark.parametrize("at", [(60,), (90, 100), (70, 81, 95, 110)])
def test_a_chunked_request_across_segments(at: tuple[int, ...]) -> None:
    found, errors = run(session(cut(REQUEST, *at)), RULES)
    assert sorted(found) == [4, 9]
    assert not errors.get("http.truncated")


def test_a_chunked_response_across_segments() -> None:
    request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    for at in range(60, len(RESPONSE) - 1, 7):
        found, _ = run(session([request], cut(RESPONSE, at)), RULES)
        assert found == [5], at


def test_a_chunked_body_past_the_bound_is_inspected_as_it_is() -> None:
    big = chunked(b"x" * 70000, b"y" * 10)
    head = b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    message = head + big
    rules = (
        'alert http any any -> any any (msg:"x"; http.request_body; content:"xxxx"; sid:1;)\n'
        'alert http any any -> any any (msg:"y"; http.request_body; content:"yyyy"; sid:2;)\n'
    )
    parts = cut(message, *range(1400, len(message), 1400))
    found, errors = run(session(parts), rules)
    assert found == [1]  # the first chunk, once, cut at the bound; the second is past it
    assert errors.get("http.truncated") == 1
    assert len(message) > HTTP_MAX_BYTES


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.integers(1, len(REQUEST) - 1), max_size=6, unique=True))
def test_a_chunked_request_cut_anywhere(at: list[int]) -> None:
    found, _ = run(session(cut(REQUEST, *sorted(at))), RULES)
    assert sorted(found) == [4, 9]


CORPUS = Path(__file__).parent / "corpus"
CAPTURE = "http-chunked-split"


def capture_packets() -> list[Packet]:
    """A chunked request in three segments (the body's pattern across two chunks and two
    segments) and its chunked response in two."""
    return session(cut(REQUEST, 70, 95), cut(RESPONSE, 90))


def test_the_committed_capture_through_the_cli(tmp_path: Path) -> None:
    """The capture (committed; written from capture_packets) read by ``appliance inspect``:
    the de-chunked bodies match, the chunk framing does not, and the request's alerts carry
    its EVE http object."""
    pcap = CORPUS / f"{CAPTURE}.pcap"
    rules = tmp_path / "chunked.rules"
    rules.write_text(RULES)
    code, events, stderr = run_cli("--pcap", str(pcap), "--rules", str(rules))
    assert code == 0, stderr
    assert sorted(e["alert"]["signature_id"] for e in events) == [4, 5, 9]
    request_alerts = [e for e in events if e["alert"]["signature_id"] in (4, 9)]
    assert all(e["http"]["url"] == "/upload" for e in request_alerts)
    # the capture is what the packets built here give
    with open(pcap, "rb") as handle:
        assert [r[1] for r in read_capture(handle, CAPTURE)] == [raw(p) for p in capture_packets()]
