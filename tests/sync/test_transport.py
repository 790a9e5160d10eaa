"""The HTTP transport against small misbehaving servers on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from appliance.sync.transport import Limits, TransportError, etag_matches, etag_of, request
from tests.sync.conftest import run

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler) -> tuple[asyncio.AbstractServer, str]:
    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/x/bundle.json"


async def exchange(handler: Handler, limits: Limits, **kw: object) -> object:
    server, url = await serve(handler)
    try:
        return await request("GET", url, limits, **kw)  # type: ignore[arg-type]
    finally:
        server.close()
        await server.wait_closed()


def answer(head: str, body: bytes = b"") -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head.encode() + b"\r\n\r\n" + body)
        await writer.drain()

    return handler


def failure(handler: Handler, limits: Limits | None = None, **kw: object) -> TransportError:
    with pytest.raises(TransportError) as info:
        run(exchange(handler, limits or Limits(), **kw))
    return info.value


def test_plain_answer_and_chunked() -> None:
    resp = run(
        exchange(answer('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: "a"', b"hello"), Limits())
    )
    assert resp.status == 200 and resp.body == b"hello" and resp.etag == '"a"'  # type: ignore[attr-defined]
    chunked = answer(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    assert run(exchange(chunked, Limits())).body == b"abcde"  # type: ignore[attr-defined]
    until_close = answer("HTTP/1.0 200 OK", b"all of it")
    assert run(exchange(until_close, Limits())).body == b"all of it"  # type: ignore[attr-defined]


def test_oversized_body_is_too_large_before_reading() -> None:
    exc = failure(answer("HTTP/1.1 200 OK\r\nContent-Length: 1000000000"), max_body=1000)
    assert exc.result == "too_large"
    chunked = answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", b"800\r\n" + b"x" * 2048)
    assert failure(chunked, max_body=1000).result == "too_large"
    stream = answer("HTTP/1.0 200 OK", b"x" * 5000)
    assert failure(stream, max_body=1000).result == "too_large"


async def drip(reader: Reader, writer: Writer) -> None:
    """Headers at once, then a body of 100 bytes, one a second."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    for _ in range(100):
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(1)


def test_a_body_that_drips_fails_within_the_deadline() -> None:
    limits = Limits(connect_timeout=1, read_timeout=2, total_timeout=3)
    started = time.monotonic()
    exc = failure(drip, limits)
    elapsed = time.monotonic() - started
    assert exc.result == "unreachable"
    assert "timed out" in exc.reason
    assert elapsed < 5


def test_a_long_poll_waits_for_the_headers_but_not_for_a_dripping_body() -> None:
    async def held_then_answered(reader: Reader, writer: Writer) -> None:
        await asyncio.sleep(2)  # the hub holds the long poll, then answers at once
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    limits = Limits(connect_timeout=1, read_timeout=2, total_timeout=3)
    held = run(exchange(held_then_answered, limits, wait=30))
    assert held.body == b"ok"  # type: ignore[attr-defined]
    started = time.monotonic()
    exc = failure(drip, limits, wait=30)
    assert exc.result == "unreachable" and "timed out after 3s" in exc.reason
    assert time.monotonic() - started < 6  # not the 33 s of the long poll's whole deadline


def test_silent_server_hits_the_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    started = time.monotonic()
    exc = failure(silent, Limits(read_timeout=0.5, total_timeout=10))
    assert exc.result == "unreachable"
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
def test_unexpected_content_encoding_is_refused(encoding: str) -> None:
    handler = answer(
        f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\nContent-Length: 3", b"abc"
    )
    exc = failure(handler)
    assert exc.result == "malformed"
    assert encoding in exc.reason


def test_status_codes_are_returned() -> None:
    for code in (500, 504, 404):
        resp = run(exchange(answer(f"HTTP/1.1 {code} X\r\nContent-Length: 0"), Limits()))
        assert resp.status == code  # type: ignore[attr-defined]


def test_garbage_answer_is_malformed() -> None:
    assert failure(answer("SSH-2.0-OpenSSH")).result == "malformed"


def test_nobody_listening_is_unreachable() -> None:
    async def closed_port() -> str:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        return f"http://127.0.0.1:{port}/bundle.json"

    url = run(closed_port())
    with pytest.raises(TransportError) as info:
        run(request("GET", str(url), Limits(connect_timeout=1)))
    assert info.value.result == "unreachable"


def test_file_urls(tmp_path: Path) -> None:
    (tmp_path / "bundle.json").write_bytes(b"{}")
    url = f"file://{tmp_path}/bundle.json"
    resp = run(request("GET", url, Limits()))
    assert resp.status == 200 and resp.etag == etag_of(b"{}")  # type: ignore[attr-defined]
    again = run(request("GET", url, Limits(), {"If-None-Match": etag_of(b"{}")}))
    assert again.status == 304  # type: ignore[attr-defined]
    assert run(request("GET", url + ".sig", Limits())).status == 404  # type: ignore[attr-defined]
    with pytest.raises(TransportError) as info:
        run(request("GET", url, Limits(), max_body=1))
    assert info.value.result == "too_large"


def test_etag_matching() -> None:
    assert etag_matches('"a", "b"', '"b"')
    assert etag_matches('W/"a"', '"a"')
    assert etag_matches("*", '"a"')
    assert not etag_matches('"a"', '"b"')
    assert not etag_matches("", '"b"')
