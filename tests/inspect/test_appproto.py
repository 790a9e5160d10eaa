"""DNS, TLS ClientHello and HTTP request decoders."""

from __future__ import annotations

import struct

from scapy.all import DNS, DNSQR, raw  # type: ignore[attr-defined]

from appliance.inspect.appproto import (
    HTTP_METHODS,
    MAX_DNS_POINTERS,
    looks_like_http_request,
    normalize_host,
    parse_dns,
    parse_http_request,
    parse_tls_sni,
)
from appliance.inspect.decode import Errors
from tests.inspect.traffic import client_hello


def test_dns_question() -> None:
    errors: Errors = {}
    query = parse_dns(raw(DNS(id=9, qd=DNSQR(qname="www.Example.com", qtype="AAAA"))), errors)
    assert query is not None and errors == {}
    assert (query.id, query.name, query.qtype, query.response) == (9, b"www.Example.com", 28, False)
    assert query.labels == [b"www", b"Example", b"com"]


def test_dns_over_tcp() -> None:
    message = raw(DNS(qd=DNSQR(qname="a.b")))
    query = parse_dns(struct.pack("!H", len(message)) + message, {}, tcp=True)
    assert query is not None and query.name == b"a.b"


def header(qdcount: int = 1) -> bytes:
    return struct.pack("!HHHHHH", 1, 0x0100, qdcount, 0, 0, 0)


def test_dns_compression_pointer() -> None:
    # the question's name points at a name stored after it (legal, if unusual)
    message = header() + b"\x03www\xc0\x16" + b"\x00\x01\x00\x01" + b"\x07example\x03com\x00"
    query = parse_dns(message, {})
    assert query is not None and query.name == b"www.example.com"


def test_dns_pointer_loop_ends() -> None:
    errors: Errors = {}
    message = header() + b"\xc0\x0c" + b"\x00\x01\x00\x01"  # points at itself
    assert parse_dns(message, errors) is None
    assert errors == {"dns.pointer_loop": 1}
    two = header() + b"\x01a\xc0\x10\x01b\xc0\x0c"  # a -> b -> a -> ...
    errors = {}
    assert parse_dns(two, errors) is None and errors == {"dns.pointer_loop": 1}
    assert MAX_DNS_POINTERS < 100


def test_dns_bad_input() -> None:
    for data, reason in (
        (b"\x00" * 5, "dns.truncated"),
        (header(0), "dns.no_question"),
        (header() + b"\x05ab", "dns.truncated"),
        (header() + b"\x80ab\x00", "dns.bad_label"),
        (
            header()
            + b"\x3f"
            + b"a" * 63
            + b"\x3f"
            + b"a" * 63
            + b"\x3f"
            + b"a" * 63
            + b"\x3f"
            + b"a" * 63
            + b"\x00",
            "dns.name_too_long",
        ),
    ):
        errors: Errors = {}
        assert parse_dns(data, errors) is None
        assert errors == {reason: 1}, data


def test_tls_sni() -> None:
    assert parse_tls_sni(client_hello("secure.example.org"), {}) == b"secure.example.org"


def test_tls_without_sni_and_truncated() -> None:
    hello = client_hello("x.example")
    errors: Errors = {}
    for cut in range(9, len(hello) - 1):
        result = parse_tls_sni(hello[:cut], errors)
        assert result is None or b"x.example".startswith(result)
    assert errors.get("tls.truncated", 0) > 0
    errors = {}
    assert parse_tls_sni(b"\x17\x03\x03\x00\x05hello", errors) is None
    assert errors == {"tls.not_handshake": 1}


def test_http_request() -> None:
    data = (
        b"POST /a%20b?c=%27 HTTP/1.1\r\n"
        b"host: WWW.Example.com:8080\r\nUser-Agent: curl/8\r\n\r\nbody"
    )
    assert looks_like_http_request(data)
    request = parse_http_request(data, {})
    assert request is not None
    assert request.method == b"POST" and request.raw_uri == b"/a%20b?c=%27"
    assert request.uri == b"/a b?c='"
    assert request.host == b"www.example.com" and request.user_agent == b"curl/8"


def test_http_request_start() -> None:
    # a method, then a space (or the method alone): the first word as split would give it
    cases = [
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET",
        b"GET ",
        b"GETX / HTTP/1.1",
        b"GE",
        b"",
        b"PROPFIND / HTTP/1.1",
        b"PROPFIND",
        b"PROPFINDX / HTTP/1.1",
        b"PROPFINDXYZ",
        b"POSTAL code",
        b"PUT\r\n",
        b"get / HTTP/1.1",
        b"DELETE" + b"x" * 100 + b" /",
        b"OPTIONS * HTTP/1.1",
        b"CON",
        b"CONNECT",
        b"HEAD  /",
    ]
    for data in cases:
        expected = data.split(b" ", 1)[0] in HTTP_METHODS
        assert looks_like_http_request(data) is expected, data


def test_http_not_a_request() -> None:
    assert not looks_like_http_request(b"HTTP/1.1 200 OK\r\n\r\n")
    errors: Errors = {}
    assert parse_http_request(b"GET /only-a-line-without-version\r\n", errors) is None
    assert errors == {"http.bad_request_line": 1}


def test_normalize_host() -> None:
    assert normalize_host(b"[2001:DB8::1]:443") == b"2001:db8::1"
    assert normalize_host(b"Example.COM.") == b"example.com"


def test_ssh_banner_buffers() -> None:
    from appliance.inspect.appproto import ssh_buffers

    assert ssh_buffers(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n") == {
        "ssh.proto": b"2.0",
        "ssh.software": b"OpenSSH_9.2p1",
    }
    assert ssh_buffers(b"SSH-1.99-libssh_0.9.6\n") == {
        "ssh.proto": b"1.99",
        "ssh.software": b"libssh_0.9.6",
    }
    assert ssh_buffers(b"SSH-2.0-") == {"ssh.proto": b"2.0", "ssh.software": b""}
    assert ssh_buffers(b"\x00\x00\x01\x0c\x0a\x14") == {}
    assert ssh_buffers(b"SSH-2.0OpenSSH") == {}
