"""Application-layer decoders: DNS questions, the TLS ClientHello SNI, HTTP/1 requests.

Pure functions over a transport payload. Bad input returns ``None`` and counts its reason in
``errors``; nothing raises. Name decoding follows compression pointers with a hop limit, so
a pointer loop ends.
"""

from __future__ import annotations

import struct
from collections.abc import Set as AbstractSet
from functools import lru_cache
from operator import itemgetter
from urllib.parse import unquote_to_bytes

from appliance.inspect.decode import Errors, count

MAX_DNS_POINTERS = 16
MAX_DNS_NAME = 255
MAX_HTTP_HEADERS = 100

_u16 = struct.Struct("!H").unpack_from
_dns_head = struct.Struct("!HHHHHH").unpack_from

HTTP_METHODS = (
    b"GET",
    b"POST",
    b"HEAD",
    b"PUT",
    b"DELETE",
    b"OPTIONS",
    b"PATCH",
    b"CONNECT",
    b"TRACE",
    b"PROPFIND",
)
_METHOD_PREFIXES = frozenset(m[:3] for m in HTTP_METHODS)
_METHOD_REACH = max(map(len, HTTP_METHODS)) + 1  # where a method's space is, at the latest

DNS_TYPES = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    10: "NULL",
    12: "PTR",
    15: "MX",
    16: "TXT",
    28: "AAAA",
    33: "SRV",
    35: "NAPTR",
    43: "DS",
    46: "RRSIG",
    48: "DNSKEY",
    64: "SVCB",
    65: "HTTPS",
    252: "AXFR",
    255: "ANY",
}


class DnsQuery:
    __slots__ = ("id", "labels", "name", "qtype", "response")

    def __init__(
        self, ident: int, name: bytes, labels: list[bytes], qtype: int, response: bool
    ) -> None:
        self.id = ident
        self.name = name  # dotted, no trailing dot: b"www.example.com"
        self.labels = labels
        self.qtype = qtype
        self.response = response


class _Message:
    """What requests and responses share: headers and a body, de-chunked when read."""

    __slots__ = ("_body", "header_text", "headers", "raw_body")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []  # (name, value), values stripped
        self.raw_body = b""  # what of the body the message's bytes carry, as sent
        self._body: bytes | None = None
        # the http.header buffer when the parser had it at hand (the compiled one: the
        # message's own header lines, when each is already "Name: value"), else None
        self.header_text: bytes | None = None

    @property
    def body(self) -> bytes:
        """The body as ``http.request_body`` / ``http.response_body`` / ``file.data`` see it:
        de-chunked when the message says ``Transfer-Encoding: chunked`` (decoded once, on
        first use: only rules that read a body pay for it)."""
        found = self._body
        if found is None:
            found = self.raw_body
            if found and is_chunked(self.headers):
                found = dechunk(found)
            self._body = found
        return found


class HttpRequest(_Message):
    __slots__ = ("host", "method", "raw_uri", "uri", "user_agent")

    def __init__(self, method: bytes, raw_uri: bytes) -> None:
        self.headers = []  # as _Message's, without the call (one per request parsed)
        self.raw_body = b""
        self._body = None
        self.header_text = None
        self.method = method
        self.raw_uri = raw_uri
        self.uri = normalize_uri(raw_uri)
        self.host: bytes | None = None  # lower case, without the port
        self.user_agent: bytes | None = None


class HttpResponse(_Message):
    __slots__ = ("stat_code", "stat_msg")

    def __init__(self, stat_code: bytes, stat_msg: bytes) -> None:
        self.headers = []
        self.raw_body = b""
        self._body = None
        self.header_text = None
        self.stat_code = stat_code
        self.stat_msg = stat_msg


MAX_CHUNKS = 4096  # chunks of one body decoded at most (each is at least 3 bytes besides)
CHUNKED_OPEN = 1 << 40  # message_size of a chunked body whose last chunk has not come yet


def is_chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the message's last transfer coding is ``chunked`` (RFC 9112 6.1)."""
    for name, value in headers:
        if name.lower() == b"transfer-encoding":
            return value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
    return False


def _chunks(data: bytes | bytearray, pos: int, out: bytearray | None) -> int:
    """Walk the chunked body at ``data[pos:]``, adding its data to ``out`` (if given): where
    the body ends (after the last chunk and the trailer section), -1 when more is to
    come, -2 when it is malformed (``out`` then holds what came before)."""
    size = len(data)
    for _ in range(MAX_CHUNKS):
        line_end = data.find(b"\n", pos)
        if line_end < 0:
            return -1 if size - pos < 1024 else -2
        text = bytes(data[pos:line_end]).split(b";", 1)[0].strip()
        if not text or len(text) > 16 or any(c not in _HEX_DIGITS for c in text):
            return -2
        length = int(text, 16)
        pos = line_end + 1
        if length == 0:  # the last chunk: then trailer lines, up to an empty one
            for _ in range(MAX_HTTP_HEADERS + 1):
                line_end = data.find(b"\n", pos)
                if line_end < 0:
                    return -1
                empty = not bytes(data[pos:line_end]).strip(b"\r")
                pos = line_end + 1
                if empty:
                    return pos
            return -2
        if out is not None:
            out += data[pos : pos + length]
        if pos + length + 2 > size:
            return -1
        pos += length
        if data[pos : pos + 2] == b"\r\n":
            pos += 2
        elif data[pos : pos + 1] == b"\n":
            pos += 1
        else:
            return -2
    return -2


_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def dechunk(data: bytes) -> bytes:
    """A chunked body's data, as far as it goes (cut short or malformed: what came
    before)."""
    out = bytearray()
    _chunks(data, 0, out)
    return bytes(out)


def header_buffers(
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    wanted: AbstractSet[str],
    text: bytes | None = None,
) -> dict[str, bytes]:
    """Suricata's header buffers of a request or response, only those ``wanted``:
    ``http.header`` ("Name: value\\r\\n" each; ``text``, when the parser gave it),
    ``http.header_names`` ("\\r\\nName..."), ``http.cookie``, ``http.content_type`` and the
    others named after one header, and the body (``file.data``)."""
    out: dict[str, bytes] = {}
    if "http.header" in wanted:
        if text is None:
            text = b"\r\n".join(map(_COLON.join, headers)) + b"\r\n" if headers else b""
        out["http.header"] = text
    if "http.header_names" in wanted:
        out["http.header_names"] = b"\r\n".join([b"", *map(_NAME, headers), b"", b""])
    single = _single_buffers(wanted if isinstance(wanted, frozenset) else frozenset(wanted))
    if single:
        for name, value in headers:
            buffer = single.get(name.lower())
            if buffer is not None and buffer not in out:
                out[buffer] = value
    if body and "file.data" in wanted:
        out["file.data"] = body
    return out


# buffers holding one header's value
HEADER_BUFFERS = {
    b"cookie": "http.cookie",
    b"set-cookie": "http.cookie",
    b"content-type": "http.content_type",
    b"content-length": "http.content_len",
    b"referer": "http.referer",
    b"accept": "http.accept",
    b"accept-encoding": "http.accept_enc",
    b"accept-language": "http.accept_lang",
    b"connection": "http.connection",
    b"location": "http.location",
    b"server": "http.server",
}
_COLON = b": "
_NAME = itemgetter(0)  # of a (name, value) header


@lru_cache(maxsize=64)
def _single_buffers(wanted: frozenset[str]) -> dict[bytes, str]:
    """``HEADER_BUFFERS`` less the buffers not ``wanted`` (worked out once per set)."""
    return {name: buffer for name, buffer in HEADER_BUFFERS.items() if buffer in wanted}


# every buffer header_buffers() can build
HEADER_BUFFER_NAMES = frozenset(
    {"http.header", "http.header_names", "file.data", *HEADER_BUFFERS.values()}
)


def parse_http_response(payload: bytes) -> HttpResponse | None:
    """The status line, headers and the body's first bytes of an HTTP/1 response."""
    head_end = payload.find(b"\r\n\r\n")
    head = payload if head_end < 0 else payload[:head_end]
    lines = head.split(b"\r\n", MAX_HTTP_HEADERS + 1)
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return None
    response = HttpResponse(parts[1], parts[2] if len(parts) > 2 else b"")
    response.headers = _headers(lines)
    if head_end >= 0:
        response.raw_body = payload[head_end + 4 :]
    return response


def _headers(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    out = []
    for line in lines[1 : MAX_HTTP_HEADERS + 1]:
        name, sep, value = line.partition(b":")
        if sep:
            out.append((name.strip(), value.strip()))
    return out


def parse_dns(payload: bytes, errors: Errors, tcp: bool = False) -> DnsQuery | None:
    """The first question of a DNS message (over TCP, after its 2-byte length)."""
    if tcp:
        if len(payload) < 2:
            count(errors, "dns.truncated")
            return None
        payload = payload[2 : 2 + _u16(payload, 0)[0]]
    if len(payload) < 12:
        count(errors, "dns.truncated")
        return None
    ident, flags, qdcount, _an, _ns, _ar = _dns_head(payload, 0)
    if qdcount == 0:
        count(errors, "dns.no_question")
        return None
    if flags & 0x7800:  # not a standard query (notify, update, ...)
        count(errors, "dns.not_query")
        return None
    result = _dns_name(payload, 12, errors)
    if result is None:
        return None
    labels, pos = result
    if pos + 4 > len(payload):
        count(errors, "dns.truncated")
        return None
    qtype = _u16(payload, pos)[0]
    return DnsQuery(ident, b".".join(labels), labels, qtype, bool(flags & 0x8000))


def _dns_name(msg: bytes, pos: int, errors: Errors) -> tuple[list[bytes], int] | None:
    """Labels of the name at ``pos`` and the offset just after it in the message."""
    labels: list[bytes] = []
    total = 0
    after = -1
    jumps = 0
    size = len(msg)
    while True:
        if pos >= size:
            count(errors, "dns.truncated")
            return None
        n = msg[pos]
        if n == 0:
            pos += 1
            break
        kind = n & 0xC0
        if kind == 0xC0:
            if pos + 2 > size:
                count(errors, "dns.truncated")
                return None
            jumps += 1
            if jumps > MAX_DNS_POINTERS:
                count(errors, "dns.pointer_loop")
                return None
            if after < 0:
                after = pos + 2
            pos = _u16(msg, pos)[0] & 0x3FFF  # the hop limit bounds any loop
            continue
        if kind:
            count(errors, "dns.bad_label")
            return None
        if pos + 1 + n > size:
            count(errors, "dns.truncated")
            return None
        total += n + 1
        if total > MAX_DNS_NAME:
            count(errors, "dns.name_too_long")
            return None
        labels.append(msg[pos + 1 : pos + 1 + n])
        pos += 1 + n
    return labels, (after if after >= 0 else pos)


SSH_PROTO, SSH_SOFTWARE = "ssh.proto", "ssh.software"
SSH_BUFFERS = frozenset({SSH_PROTO, SSH_SOFTWARE})


def ssh_buffers(payload: bytes) -> dict[str, bytes]:
    """``ssh.proto`` and ``ssh.software`` of a segment that starts an SSH banner
    (``SSH-protoversion-softwareversion SP comments CR LF``, RFC 4253 4.2): the version
    (``2.0``) and the software up to the comments (``OpenSSH_9.2p1``); none for any other
    payload."""
    if not payload.startswith(b"SSH-"):
        return {}
    line = payload[4:256]
    end = len(line)
    for stop in (b"\r", b"\n"):
        at = line.find(stop)
        if 0 <= at < end:
            end = at
    line = line[:end]
    proto, dash, software = line.partition(b"-")
    if not dash or not proto:
        return {}
    return {SSH_PROTO: proto, SSH_SOFTWARE: software.split(b" ", 1)[0]}


def looks_like_tls(payload: bytes) -> bool:
    return len(payload) >= 6 and payload[0] == 0x16 and payload[1] == 0x03 and payload[5] == 1


def tls_record_size(payload: bytes) -> int:
    """The bytes of the TLS record ``payload`` starts (header included): a ClientHello
    larger than one segment (post-quantum key shares make them about 1.8 kB) needs them all."""
    return 5 + (payload[3] << 8 | payload[4]) if len(payload) >= 5 else 5


def parse_tls_sni(payload: bytes, errors: Errors) -> bytes | None:
    """The server name of a TLS ClientHello in one record (``None``: absent or malformed)."""
    if len(payload) < 9 or payload[0] != 0x16 or payload[1] != 0x03:
        count(errors, "tls.not_handshake")
        return None
    end = 5 + _u16(payload, 3)[0]
    if end > len(payload):
        end = len(payload)  # the hello continues in the next segment: parse what is here
    if payload[5] != 1:
        count(errors, "tls.not_client_hello")
        return None
    hs_end = 9 + int.from_bytes(payload[6:9], "big")
    if hs_end < end:
        end = hs_end
    pos = 9 + 2 + 32  # version, random
    if pos + 1 > end:
        return _tls_short(errors)
    pos += 1 + payload[pos]  # session id
    if pos + 2 > end:
        return _tls_short(errors)
    pos += 2 + _u16(payload, pos)[0]  # cipher suites
    if pos + 1 > end:
        return _tls_short(errors)
    pos += 1 + payload[pos]  # compression methods
    if pos + 2 > end:
        return None  # no extensions at all: a legal, old hello without SNI
    ext_end = pos + 2 + _u16(payload, pos)[0]
    pos += 2
    if ext_end > end:
        ext_end = end
    while pos + 4 <= ext_end:
        etype, elen = struct.unpack_from("!HH", payload, pos)
        pos += 4
        if pos + elen > ext_end:
            return _tls_short(errors)
        if etype == 0:
            return _sni_from_extension(payload[pos : pos + elen], errors)
        pos += elen
    return None


def _sni_from_extension(ext: bytes, errors: Errors) -> bytes | None:
    if len(ext) < 2:
        return _tls_short(errors)
    end = min(len(ext), 2 + _u16(ext, 0)[0])
    pos = 2
    while pos + 3 <= end:
        kind = ext[pos]
        size = _u16(ext, pos + 1)[0]
        pos += 3
        if pos + size > end:
            return _tls_short(errors)
        if kind == 0:
            return ext[pos : pos + size]
        pos += size
    return None


def _tls_short(errors: Errors) -> bytes | None:
    count(errors, "tls.truncated")
    return None


def looks_like_http_request(payload: bytes) -> bool:
    """Whether the payload starts with a method and then a space, or is a method alone.
    A space is looked for among the longest method's bytes only (a first word longer than
    that is no method) and the payload is not copied."""
    if payload[:3] not in _METHOD_PREFIXES:
        return False
    space = payload.find(b" ", 3, _METHOD_REACH)
    return (payload[:space] if space >= 0 else payload) in HTTP_METHODS


def parse_http_request(payload: bytes, errors: Errors) -> HttpRequest | None:
    """The request line and the Host / User-Agent headers of an HTTP/1 request."""
    head_end = payload.find(b"\r\n\r\n")
    head = payload if head_end < 0 else payload[:head_end]
    lines = head.split(b"\r\n", MAX_HTTP_HEADERS + 1)
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[0] not in HTTP_METHODS or not parts[2].startswith(b"HTTP/"):
        count(errors, "http.bad_request_line")
        return None
    request = HttpRequest(parts[0], parts[1])
    request.headers = _headers(lines)
    for name, value in request.headers:
        key = name.lower()
        if key == b"host" and request.host is None:
            request.host = normalize_host(value)
        elif key == b"user-agent" and request.user_agent is None:
            request.user_agent = value
    if head_end >= 0:
        request.raw_body = payload[head_end + 4 :]
    return request


def normalize_host(value: bytes) -> bytes:
    host = value.lower()
    if host.startswith(b"["):  # [v6]:port
        close = host.find(b"]")
        return host[1:close] if close > 0 else host
    if host.count(b":") == 1:
        host = host.split(b":", 1)[0]
    return host.rstrip(b".")


def normalize_uri(raw: bytes) -> bytes:
    """Percent-decoded URI, as the http.uri buffer presents it (the raw form stays)."""
    if b"%" not in raw:
        return raw
    return unquote_to_bytes(raw)


def request_buffers(request: HttpRequest, wanted: AbstractSet[str]) -> dict[str, bytes]:
    """The buffers of a request: its line's, Host and User-Agent, and of the header and body
    buffers those ``wanted``."""
    out = {
        "http.uri": request.uri,
        "http.raw_uri": request.raw_uri,
        "http.method": request.method,
    }
    if request.host is not None:
        out["http.host"] = request.host
    if request.user_agent is not None:
        out["http.user_agent"] = request.user_agent
    if wanted:
        out.update(header_buffers(request.headers, request.body, wanted, request.header_text))
        if request.body:
            out["http.request_body"] = request.body
    return out


def response_buffers(response: HttpResponse, wanted: AbstractSet[str]) -> dict[str, bytes]:
    """The buffers of a response: its status, and the header and body buffers ``wanted``."""
    out = {"http.stat_code": response.stat_code, "http.stat_msg": response.stat_msg}
    if wanted:
        out.update(header_buffers(response.headers, response.body, wanted))
        if response.body:
            out["http.response_body"] = response.body
    return out


START_BUFFERS = frozenset(
    {"http.request_line", "http.response_line", "http.start", "http.header.raw", "http.protocol"}
)


def start_buffers(data: bytes, request: bool, wanted: AbstractSet[str]) -> dict[str, bytes]:
    """``http.request_line`` (or ``http.response_line``): the first line without its CRLF;
    ``http.protocol``: its protocol (``HTTP/1.1``), the request line's last word or the
    response line's first;
    ``http.start``: the first line and the headers up to the empty line that ends them;
    ``http.header.raw``: the header lines as sent, with the empty line that ends them (once
    that line has come)."""
    out: dict[str, bytes] = {}
    line_end = data.find(b"\r\n")
    if line_end >= 0:
        name = "http.request_line" if request else "http.response_line"
        if name in wanted:
            out[name] = data[:line_end]
        if "http.protocol" in wanted:  # the line's HTTP/1.x: a request's last word
            line = data[:line_end]
            out["http.protocol"] = line.rpartition(b" ")[2] if request else line.partition(b" ")[0]
    if "http.start" in wanted or "http.header.raw" in wanted:
        head_end = data.find(b"\r\n\r\n")
        if "http.start" in wanted:
            out["http.start"] = data if head_end < 0 else data[: head_end + 4]
        if "http.header.raw" in wanted and head_end >= 0:
            out["http.header.raw"] = data[line_end + 2 : head_end + 4]
    return out


def message_size(data: bytes | bytearray, body: bool = True) -> int:
    """The bytes of the HTTP/1 message ``data`` starts: its head and, after it (``body``),
    the body its Content-Length announces, or its chunked body up to the last chunk
    (-1: the head is not complete yet; CHUNKED_OPEN: the last chunk has not come yet). A
    body without a length, or a malformed chunked one, counts as what has arrived."""
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return -1
    size = head_end + 4
    if not body:
        return size
    head = bytes(data[:head_end]).lower()
    at = head.find(b"\r\ncontent-length:")
    if b"\r\ntransfer-encoding:" in head:
        if not is_chunked(_headers(head.split(b"\r\n", MAX_HTTP_HEADERS + 1))):
            return len(data)
        end = _chunks(data, size, None)
        return CHUNKED_OPEN if end == -1 else end if end >= 0 else len(data)
    if at < 0:
        return len(data)
    line_end = head.find(b"\r\n", at + 2)
    value = head[at + 17 : line_end if line_end >= 0 else len(head)].strip()
    return size + int(value) if value.isdigit() else len(data)
