"""A small, bounded HTTP/1.1 client on asyncio streams (and file:// URLs).

Bounded in every dimension a hostile or broken server controls: connect and read timeouts;
a total deadline for the whole exchange, and the same deadline again for the body alone once
the headers are in (a long poll's wait never lengthens a body that drips a byte a second); a
cap on the body size (checked against Content-Length before reading, and while reading); a cap
on the header size; and no decompression: a Content-Encoding other than identity is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import SplitResult, unquote, urlsplit

from appliance import __version__
from appliance.model.values import HostPort

USER_AGENT = f"appliance/{__version__}"
MAX_HEADER_BYTES = 32 * 1024


@dataclass(frozen=True)
class Tls:
    """How to reach the hub: ``ca`` (PEM bundle; default: the system's), a client certificate
    and key for mutual TLS, and an HTTP proxy (``http://HOST:PORT``: CONNECT for https,
    absolute-form requests for http)."""

    ca: str = ""
    cert: str = ""
    key: str = ""
    proxy: str = ""


@dataclass(frozen=True)
class Limits:
    connect_timeout: float = 5.0
    read_timeout: float = 10.0  # between two reads (beyond a long poll's wait for the headers)
    total_timeout: float = 30.0  # the whole exchange, body included (plus a long poll's wait)
    max_body: int = 64 * 1024 * 1024
    tls: Tls = field(default_factory=Tls)


@functools.lru_cache(maxsize=8)
def tls_context(ca: str, cert: str, key: str) -> ssl.SSLContext:
    """The client's TLS context (built once per setting: loading a CA bundle costs)."""
    try:
        context = ssl.create_default_context(cafile=ca or None)
        if cert:
            context.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as exc:
        raise TransportError("unreachable", f"TLS setup: {_reason(exc)}") from None
    return context


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case
    body: bytes = b""

    @property
    def etag(self) -> str:
        return self.headers.get("etag", "")


TransportFailure = Literal["unreachable", "too_large", "malformed", "http_error"]


class TransportError(Exception):
    """The exchange failed. ``result``: unreachable, too_large, malformed or http_error."""

    def __init__(self, result: TransportFailure, reason: str) -> None:
        self.result = result
        self.reason = reason
        super().__init__(reason)


def etag_of(data: bytes) -> str:
    """The strong ETag the reference hub (and file:// URLs) give bytes."""
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def etag_matches(header: str, etag: str) -> bool:
    """If-None-Match: does ``header`` name ``etag`` (or ``*``)? Weak prefixes compare equal."""
    if not header or not etag:
        return False
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(item.strip().removeprefix("W/") == bare for item in header.split(","))


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class ConnectionPool:
    """Keeps at most one idle keep-alive connection per origin: a hub client makes one request
    at a time, so its long poll, the bundle fetch and the status report share one connection.
    """

    def __init__(self, idle_timeout: float = 30.0) -> None:
        self.idle_timeout = idle_timeout
        self._idle: dict[tuple[str, str, int], tuple[Stream, float]] = {}

    def take(self, key: tuple[str, str, int]) -> Stream | None:
        entry = self._idle.pop(key, None)
        if entry is None:
            return None
        (reader, writer), since = entry
        fresh = time.monotonic() - since < self.idle_timeout
        if not fresh or reader.at_eof() or writer.is_closing():
            writer.close()
            return None
        return reader, writer

    def put(self, key: tuple[str, str, int], stream: Stream) -> None:
        old = self._idle.pop(key, None)
        if old is not None:
            old[0][1].close()
        self._idle[key] = (stream, time.monotonic())

    def close(self) -> None:
        for (_, writer), _ in self._idle.values():
            writer.close()
        self._idle.clear()


class _Stale(Exception):
    """A reused connection was closed by the server before any answer: try a new one."""


async def request(
    method: str,
    url: str,
    limits: Limits,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    wait: float = 0.0,
    max_body: int | None = None,
    pool: ConnectionPool | None = None,
) -> Response:
    """One exchange; TransportError on any failure. ``wait``: a long poll's extra time.

    With ``pool``, the connection is kept alive and reused (and a reused connection that
    turns out closed is replaced once, transparently).
    """
    cap = limits.max_body if max_body is None else max_body
    parts = urlsplit(url)
    if parts.scheme == "file":
        if method not in ("GET", "HEAD"):
            raise TransportError("http_error", f"{method} is not possible on a file:// URL")
        response = _file_get(unquote(parts.path), headers or {}, cap)
        if method == "HEAD":
            response.body = b""
        return response
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TransportError("unreachable", f"unsupported URL {url!r}")
    tls = parts.scheme == "https"
    key = (parts.scheme, parts.hostname, parts.port or (443 if tls else 80))
    try:
        async with asyncio.timeout(limits.total_timeout + wait):
            stream = pool.take(key) if pool is not None else None
            if stream is not None:
                try:
                    return await _exchange(
                        stream, method, parts, limits, headers or {}, body, wait, cap, pool, True
                    )
                except _Stale:
                    pass
            stream = await _connect(parts, limits)
            return await _exchange(
                stream, method, parts, limits, headers or {}, body, wait, cap, pool, False
            )
    except TimeoutError:
        raise TransportError(
            "unreachable", f"timed out after {limits.total_timeout + wait:g}s: {url}"
        ) from None
    except _Stale:
        raise TransportError("unreachable", f"{url}: connection closed without an answer") from None


def _file_get(path: str, headers: dict[str, str], cap: int) -> Response:
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > cap:
                raise TransportError("too_large", f"{path}: {size} bytes, over the cap of {cap}")
            data = handle.read(cap + 1)
    except FileNotFoundError:
        return Response(404)
    except IsADirectoryError:
        return Response(404)
    except OSError as exc:
        raise TransportError("unreachable", f"{path}: {exc.strerror or exc}") from None
    if len(data) > cap:
        raise TransportError("too_large", f"{path}: over the cap of {cap} bytes")
    etag = etag_of(data)
    if etag_matches(headers.get("If-None-Match", ""), etag):
        return Response(304, {"etag": etag})
    return Response(200, {"etag": etag}, data)


async def _connect(parts: SplitResult, limits: Limits) -> Stream:
    host = parts.hostname or ""
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    settings = limits.tls
    context = tls_context(settings.ca, settings.cert, settings.key) if tls else None
    try:
        if settings.proxy:
            stream = await asyncio.wait_for(
                _via_proxy(settings.proxy, host, port, context, limits),
                limits.connect_timeout,
            )
        else:
            stream = await asyncio.wait_for(
                asyncio.open_connection(
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if tls else None,
                    limit=MAX_HEADER_BYTES,
                ),
                limits.connect_timeout,
            )
        _watch_silence(stream[1], limits.total_timeout)
        return stream
    except TimeoutError:
        raise TransportError(
            "unreachable", f"connect to {host}:{port} timed out ({limits.connect_timeout:g}s)"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise TransportError("unreachable", f"connect to {host}:{port}: {_reason(exc)}") from None


def _watch_silence(writer: asyncio.StreamWriter, deadline: float) -> None:
    """A peer that goes silent on an open connection (a black hole: no reset, no answer)
    is noticed within ``deadline`` even while a long poll waits: keepalive probes start
    after half of it, and data or probes unacknowledged for half of it abort the
    connection (TCP_USER_TIMEOUT), which fails the exchange as unreachable."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    half = max(1, int(deadline / 2))
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, half)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, max(500, int(deadline * 500)))


async def _via_proxy(
    proxy: str, host: str, port: int, context: ssl.SSLContext | None, limits: Limits
) -> Stream:
    """A connection through an HTTP proxy: a CONNECT tunnel with TLS inside for https; for
    http the proxy itself (requests then carry the absolute URL)."""
    via = urlsplit(proxy)
    if via.scheme != "http" or not via.hostname:
        raise TransportError("unreachable", f"unsupported proxy {proxy!r} (http://HOST:PORT)")
    reader, writer = await asyncio.open_connection(
        via.hostname, via.port or 8080, limit=MAX_HEADER_BYTES
    )
    if context is None:
        return reader, writer
    target = str(HostPort(host, port))
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode("latin-1"))
    await writer.drain()
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        writer.close()
        raise TransportError("unreachable", f"proxy {proxy}: no answer to CONNECT") from None
    status, _ = _parse_head(head)
    if status != 200:
        writer.close()
        raise TransportError("unreachable", f"proxy {proxy}: CONNECT {target}: HTTP {status}")
    await writer.start_tls(context, server_hostname=host)
    return reader, writer


async def _exchange(
    stream: Stream,
    method: str,
    parts: SplitResult,
    limits: Limits,
    headers: dict[str, str],
    body: bytes | None,
    wait: float,
    cap: int,
    pool: ConnectionPool | None,
    reused: bool,
) -> Response:
    reader, writer = stream
    host = parts.hostname or ""
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    keep = False
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        if limits.tls.proxy and not tls:  # a plain proxy takes the absolute URL
            target = f"{parts.scheme}://{parts.netloc}{target}"
        host_header = HostPort(host, port).url_host
        if parts.port:
            host_header += f":{parts.port}"
        lines = [
            f"{method} {target} HTTP/1.1",
            f"Host: {host_header}",
            f"User-Agent: {USER_AGENT}",
            "Accept-Encoding: identity",
            "Connection: keep-alive" if pool is not None else "Connection: close",
        ]
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                raise TransportError("malformed", f"bad header value for {name}")
            lines.append(f"{name}: {value}")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        try:
            # asyncio.timeout, not wait_for: no extra task per read (a fleet's hub pays for it);
            # and none at all to drain what the socket took whole (a request almost always)
            if writer.transport.get_write_buffer_size():
                async with asyncio.timeout(limits.read_timeout):
                    await writer.drain()
            async with asyncio.timeout(limits.read_timeout + wait):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            raise TransportError("unreachable", f"no answer from {host}:{port}") from None
        except asyncio.IncompleteReadError as exc:
            if reused and not exc.partial:
                raise _Stale() from None
            raise TransportError(
                "unreachable", f"{host}:{port} closed the connection without an answer"
            ) from None
        except asyncio.LimitOverrunError:
            raise TransportError("malformed", "response headers too large") from None
        except (OSError, ssl.SSLError) as exc:
            if reused and isinstance(exc, ConnectionError):
                raise _Stale() from None
            raise TransportError("unreachable", f"{host}:{port}: {_reason(exc)}") from None
        status, response_headers = _parse_head(head)
        encoding = response_headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise TransportError("malformed", f"unexpected Content-Encoding {encoding!r}")
        framed = (
            "content-length" in response_headers
            or response_headers.get("transfer-encoding", "").lower() == "chunked"
        )
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            response = Response(status, response_headers)
            framed = True
        elif (data := await _buffered_body(reader, response_headers, cap)) is not None:
            response = Response(status, response_headers, data)  # it came with the headers
        else:
            # A long poll's wait ends with the headers: the body gets the plain deadline.
            try:
                async with asyncio.timeout(limits.total_timeout):
                    data = await _read_body(reader, response_headers, limits, cap)
            except TimeoutError:
                raise TransportError(
                    "unreachable",
                    f"timed out after {limits.total_timeout:g}s: {parts.geturl()}",
                ) from None
            response = Response(status, response_headers, data)
        keep = (
            pool is not None
            and framed
            and "close" not in response_headers.get("connection", "").lower()
        )
        return response
    finally:
        if keep and pool is not None:
            pool.put((parts.scheme, host, port), stream)
        else:
            writer.close()
            with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        raise TransportError("malformed", "bad response headers") from None
    lines = text.split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
        raise TransportError("malformed", f"bad status line {lines[0][:80]!r}")
    try:
        status = int(status_line[1])
    except ValueError:
        raise TransportError("malformed", f"bad status line {lines[0][:80]!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise TransportError("malformed", f"bad header line {line[:80]!r}")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return status, headers


async def _buffered_body(
    reader: asyncio.StreamReader, headers: dict[str, str], cap: int
) -> bytes | None:
    """The body when it is already read in whole (a small answer arrives with its headers):
    taken without a wait, so without a timer; None otherwise (then :func:`_read_body`)."""
    if "transfer-encoding" in headers:
        return None
    text = headers.get("content-length", "")
    if not (text.isascii() and text.isdigit()):
        return None
    length = int(text)
    buffered = getattr(reader, "_buffer", None)  # CPython's StreamReader; else the slow way
    if length > cap or not isinstance(buffered, bytearray) or len(buffered) < length:
        return None
    return await reader.readexactly(length)  # returns at once: the bytes are there


async def _read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], limits: Limits, cap: int
) -> bytes:
    async def read(n: int) -> bytes:
        try:
            async with asyncio.timeout(limits.read_timeout):
                return await reader.read(n)
        except TimeoutError:
            raise TransportError(
                "unreachable", f"read timed out ({limits.read_timeout:g}s without data)"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise TransportError("unreachable", f"read failed: {_reason(exc)}") from None

    async def read_line() -> bytes:
        try:
            async with asyncio.timeout(limits.read_timeout):
                return await reader.readuntil(b"\r\n")
        except TimeoutError:
            raise TransportError("unreachable", "read timed out") from None
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            raise TransportError("malformed", "bad chunked encoding") from None
        except (OSError, ssl.SSLError) as exc:
            raise TransportError("unreachable", f"read failed: {_reason(exc)}") from None

    async def read_exactly(n: int) -> bytes:
        chunks: list[bytes] = []
        while n > 0:
            chunk = await read(min(n, 256 * 1024))
            if not chunk:
                raise TransportError("unreachable", "connection closed in the middle of the body")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    transfer = headers.get("transfer-encoding", "").strip().lower()
    if transfer:
        if transfer != "chunked":
            raise TransportError("malformed", f"unexpected Transfer-Encoding {transfer!r}")
        out = bytearray()
        while True:
            size_line = (await read_line()).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise TransportError("malformed", "bad chunk size") from None
            if size == 0:
                break
            if len(out) + size > cap:
                raise TransportError("too_large", f"body over the cap of {cap} bytes")
            out += await read_exactly(size)
            await read_exactly(2)
        return bytes(out)
    length_text = headers.get("content-length")
    if length_text is not None:
        try:
            length = int(length_text)
        except ValueError:
            raise TransportError("malformed", f"bad Content-Length {length_text!r}") from None
        if length < 0:
            raise TransportError("malformed", f"bad Content-Length {length_text!r}")
        if length > cap:
            raise TransportError("too_large", f"body of {length} bytes, over the cap of {cap}")
        return await read_exactly(length)
    out = bytearray()
    while True:
        chunk = await read(256 * 1024)
        if not chunk:
            return bytes(out)
        out += chunk
        if len(out) > cap:
            raise TransportError("too_large", f"body over the cap of {cap} bytes")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
