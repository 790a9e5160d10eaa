"""The HTTP transport against small misbehaving servers on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from appliance.model.values import parse_host_port
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


def _pki(directory: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer_key: ec.EllipticCurvePrivateKey,
             issuer: str, ca: bool = False, ip: str = "") -> x509.Certificate:  # fmt: skip
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ip:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    files: dict[str, str] = {}

    def write(label: str, data: bytes) -> None:
        path = directory / f"{label}.pem"
        path.write_bytes(data)
        files[label] = str(path)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("hub CA", ca_key, ca_key, "hub CA", ca=True)
    write("ca", ca.public_bytes(serialization.Encoding.PEM))
    for label, ip in (("server", "127.0.0.1"), ("client", "")):
        key = ec.generate_private_key(ec.SECP256R1())
        pem_key = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write(f"{label}-key", pem_key)
        write(label, cert(f"edge-{label}", key, ca_key, "hub CA", ip=ip).public_bytes(
            serialization.Encoding.PEM))  # fmt: skip
    return files


async def _tls_server(files: dict[str, str]) -> tuple[asyncio.AbstractServer, int]:
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=files["ca"])
    context.load_cert_chain(files["server"], files["server-key"])
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS

    async def answer(reader: Reader, writer: Writer) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            peer = writer.get_extra_info("peercert") or {}
            subject = dict(item[0] for item in peer.get("subject", ()))
            body = str(subject.get("commonName", "")).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


async def _connect_proxy(seen: list[str]) -> tuple[asyncio.AbstractServer, int]:
    async def pipe(reader: Reader, writer: Writer) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def tunnel(reader: Reader, writer: Writer) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        seen.append(head.split("\r\n", 1)[0])
        target = parse_host_port(head.split()[1])
        up_reader, up_writer = await asyncio.open_connection(target.host, target.port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(tunnel, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_https_with_a_ca_bundle_a_client_certificate_and_a_proxy(tmp_path: Path) -> None:
    from appliance.sync.transport import Tls

    files = _pki(tmp_path)

    async def main() -> None:
        server, port = await _tls_server(files)
        seen: list[str] = []
        proxy, proxy_port = await _connect_proxy(seen)
        url = f"https://127.0.0.1:{port}/edge/timestamp.json"
        mutual = Tls(ca=files["ca"], cert=files["client"], key=files["client-key"])
        try:
            resp = await request("GET", url, Limits(tls=mutual))
            assert resp.status == 200 and resp.body == b"edge-client"
            # The hub's certificate is not trusted without the CA bundle.
            with pytest.raises(TransportError) as caught:
                await request("GET", url, Limits())
            assert caught.value.result == "unreachable"
            assert "CERTIFICATE_VERIFY_FAILED" in caught.value.reason
            # Without the client certificate the hub refuses the appliance.
            with pytest.raises(TransportError) as caught:
                await request("GET", url, Limits(tls=Tls(ca=files["ca"])))
            assert caught.value.result == "unreachable"
            # Through an HTTP proxy: a CONNECT tunnel, TLS end to end.
            proxied = Tls(
                ca=files["ca"],
                cert=files["client"],
                key=files["client-key"],
                proxy=f"http://127.0.0.1:{proxy_port}",
            )
            resp = await request("GET", url, Limits(tls=proxied))
            assert resp.status == 200 and resp.body == b"edge-client"
            assert seen == [f"CONNECT 127.0.0.1:{port} HTTP/1.1"]
        finally:
            for s in (server, proxy):
                s.close()

    run(main())


def test_a_bad_ca_file_is_a_one_line_failure(tmp_path: Path) -> None:
    from appliance.sync.transport import Tls

    async def main() -> None:
        with pytest.raises(TransportError) as caught:
            limits = Limits(tls=Tls(ca=str(tmp_path / "missing.pem")))
            await request("GET", "https://127.0.0.1:9/x", limits)
        assert caught.value.result == "unreachable" and "TLS setup" in caught.value.reason

    run(main())


def test_plain_http_through_a_proxy_sends_the_absolute_url() -> None:
    from appliance.sync.transport import Tls

    seen: list[str] = []

    async def proxy(reader: Reader, writer: Writer) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        seen.append(head.split("\r\n", 1)[0])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(proxy, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            limits = Limits(tls=Tls(proxy=f"http://127.0.0.1:{port}"))
            resp = await request("GET", "http://hub.invalid:8080/edge/bundle.json", limits)
            assert resp.status == 200 and resp.body == b"ok"
            assert seen == ["GET http://hub.invalid:8080/edge/bundle.json HTTP/1.1"]
        finally:
            server.close()

    run(main())


def test_a_kept_connection_watches_for_a_silent_peer() -> None:
    """Every hub connection carries keepalive probes and a user timeout of half the
    deadline: a hub that goes silent under an open long poll (a black hole) fails the
    exchange within the deadline, not after the long poll's wait."""
    import socket

    from appliance.sync.transport import ConnectionPool

    async def main() -> None:
        server, url = await serve(answer("HTTP/1.1 200 OK\r\nContent-Length: 2", b"ok"))
        pool = ConnectionPool()
        try:
            resp = await request("GET", url, Limits(total_timeout=8.0), pool=pool)
            assert resp.status == 200
            stream = pool.take(("http", "127.0.0.1", int(url.split(":")[2].split("/")[0])))
            assert stream is not None
            sock = stream[1].get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 4
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 4000
            stream[1].close()
        finally:
            pool.close()
            server.close()
            await server.wait_closed()

    run(main())
