"""The reference hub: paths, ETags and 304, long polls, status reports and /fleet."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.sync.hub import MAX_STATUS, HubServer, parse_listen
from appliance.sync.transport import Limits, Response, etag_of, request
from tests.conftest import run_appliance
from tests.sync.conftest import Publisher, run


async def raw(port: int, text: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(text)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(1 << 20), 5)
    writer.close()
    return data


def with_hub(root: Path, body: object) -> None:
    async def main() -> None:
        server = HubServer(root)
        _, port = await server.start("127.0.0.1", 0)
        try:
            await body(server, port)  # type: ignore[operator]
        finally:
            await server.close()

    run(main())


def get(port: int, path: str, headers: dict[str, str] | None = None, **kw: object) -> object:
    return request("GET", f"http://127.0.0.1:{port}{path}", Limits(), headers, **kw)  # type: ignore[arg-type]


def test_serves_nested_paths_with_etags(publisher: Publisher) -> None:
    data = publisher.publish(1)

    async def body(server: HubServer, port: int) -> None:
        resp: Response = await get(port, "/site/edge-1/bundle.json")  # type: ignore[assignment]
        assert resp.status == 200 and resp.body == data
        assert resp.etag == etag_of(data)
        assert resp.headers["x-long-poll-max"]
        again: Response = await get(  # type: ignore[assignment]
            port, "/site/edge-1/bundle.json", {"If-None-Match": resp.etag}
        )
        assert again.status == 304 and again.body == b"" and again.etag == resp.etag
        sig: Response = await get(port, "/site/edge-1/bundle.json.sig")  # type: ignore[assignment]
        assert sig.status == 200 and sig.body.startswith(publisher.signers[0].public.id.encode())
        head: Response = await request(  # type: ignore[assignment]
            "HEAD", f"http://127.0.0.1:{port}/site/edge-1/bundle.json", Limits()
        )
        assert head.status == 200 and head.headers["content-length"] == str(len(data))

    with_hub(publisher.root, body)


@pytest.mark.parametrize(
    "path",
    [
        "/site/../site/edge-1/bundle.json",
        "/site/edge-1/../edge-1/bundle.json",
        "/site/%2e%2e/site/edge-1/bundle.json",
        "/../hub/site/edge-1/bundle.json",
        "/site//edge-1/bundle.json",
        "/site/edge-1/other.txt",
        "/site/edge-1/",
        "/site/.hidden/bundle.json",
        "/escape/bundle.json",
        "/bundle.json",
    ],
)
def test_no_path_traversal(publisher: Publisher, tmp_path: Path, path: str) -> None:
    publisher.publish(1)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "bundle.json").write_text("secret")
    os.symlink(outside, publisher.root / "escape")
    (publisher.root / "site" / ".hidden").mkdir()
    (publisher.root / "site" / ".hidden" / "bundle.json").write_text("hidden")
    (publisher.root / "bundle.json").write_text("top")

    async def body(server: HubServer, port: int) -> None:
        answer = await raw(
            port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        assert answer.startswith(b"HTTP/1.1 404"), answer[:80]

    with_hub(publisher.root, body)


def test_long_poll_waits_for_a_change(publisher: Publisher) -> None:
    data = publisher.publish(1)
    etag = etag_of(data)

    async def body(server: HubServer, port: int) -> None:
        started = time.monotonic()
        resp: Response = await get(  # type: ignore[assignment]
            port, "/site/edge-1/bundle.json?wait=0.3", {"If-None-Match": etag}, wait=0.3
        )
        assert resp.status == 304
        assert 0.25 <= time.monotonic() - started < 2

        async def publish_soon() -> float:
            await asyncio.sleep(0.3)
            publisher.publish(2)
            return time.monotonic()

        task = asyncio.create_task(publish_soon())
        waiters = [
            get(port, "/site/edge-1/bundle.json?wait=10", {"If-None-Match": etag}, wait=10)
            for _ in range(20)
        ]
        answers = await asyncio.gather(*waiters)
        published = await task
        assert all(a.status == 200 for a in answers)  # type: ignore[attr-defined]
        assert time.monotonic() - published < 2
        assert json.loads(answers[0].body)["version"] == 2  # type: ignore[attr-defined]
        assert not server._watches  # nothing watched without waiters

    with_hub(publisher.root, body)


def test_long_poll_without_a_matching_etag_answers_at_once(publisher: Publisher) -> None:
    publisher.publish(1)

    async def body(server: HubServer, port: int) -> None:
        started = time.monotonic()
        resp: Response = await get(  # type: ignore[assignment]
            port, "/site/edge-1/bundle.json?wait=30", {"If-None-Match": '"old"'}, wait=30
        )
        assert resp.status == 200 and time.monotonic() - started < 2

    with_hub(publisher.root, body)


def test_status_reports_and_fleet(publisher: Publisher) -> None:
    publisher.publish(4)
    other = publisher.root / "site" / "edge-2"
    other.mkdir()

    async def post(port: int, path: str, body: bytes) -> Response:
        return await request(  # type: ignore[no-any-return]
            "POST",
            f"http://127.0.0.1:{port}{path}",
            Limits(),
            {"Content-Type": "application/json"},
            body,
        )

    async def body(server: HubServer, port: int) -> None:
        report = {
            "name": "edge-1",
            "version": 3,
            "result": "bad_signature",
            "last_error": "x",
            "table_hash": "abc",
            "time": "2030-01-01T00:00:00Z",
        }
        assert (await post(port, "/site/edge-1/status", json.dumps(report).encode())).status == 204
        assert (await post(port, "/site/edge-2/status", b'{"name": "edge-2"}')).status == 204
        assert (await post(port, "/nowhere/status", b"{}")).status == 404
        assert (await post(port, "/site/edge-1/status", b"[1]")).status == 400
        assert (await post(port, "/site/edge-1/status", b"{bad")).status == 400
        big = b'{"x": "' + b"a" * MAX_STATUS + b'"}'
        assert (await post(port, "/site/edge-1/status", big)).status == 413
        resp: Response = await get(port, "/fleet")  # type: ignore[assignment]
        fleet = json.loads(resp.body)
        assert set(fleet) == {"site/edge-1", "site/edge-2"}
        assert fleet["site/edge-1"]["result"] == "bad_signature"
        assert fleet["site/edge-1"]["version"] == 3
        assert fleet["site/edge-1"]["offered_version"] == 4  # behind what the hub offers
        assert fleet["site/edge-2"]["offered_version"] is None

    with_hub(publisher.root, body)


def test_keep_alive_and_bad_requests(publisher: Publisher) -> None:
    publisher.publish(1)

    async def body(server: HubServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):
            writer.write(b"GET /site/edge-1/bundle.json.sig HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        writer.close()
        assert (await raw(port, b"BLAH\r\n\r\n")).startswith(b"HTTP/1.1 400")
        assert (await raw(port, b"DELETE /site/edge-1/bundle.json HTTP/1.1\r\n\r\n")).startswith(
            b"HTTP/1.1 405"
        )

    with_hub(publisher.root, body)


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    assert parse_listen(":8080") == ("", 8080)
    with pytest.raises(Exception, match="listen"):
        parse_listen("nonsense")


def test_hub_serve_command(publisher: Publisher, tmp_path: Path) -> None:
    """`appliance hub serve` in a child process, checked by `bundle verify URL`, stopped by
    SIGTERM."""
    publisher.publish(1)
    pub = tmp_path / "k.pub"
    pub.write_text(publisher.signers[0].public.encode() + "\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "appliance", "hub", "serve", str(publisher.root)]
    child = subprocess.Popen(
        [*command, "--listen", f"127.0.0.1:{port}"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert f"127.0.0.1:{port}" in child.stdout.readline()
        url = f"http://127.0.0.1:{port}/site/edge-1/"
        result = run_appliance("bundle", "verify", url, "--trust", str(pub), timeout=30)
        assert result.returncode == 0, result.stderr
        assert "version 1" in result.stdout
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            assert child.wait(10) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(5)


def test_publishing_by_swapping_a_directory_symlink_wakes_long_polls(publisher: Publisher) -> None:
    """DIR/PATH may be a symlink to a release directory, swapped to publish."""
    root = publisher.root
    for version in (1, 2):
        Publisher(root, f"releases/v{version}", publisher.signers).publish(version)
    os.symlink("releases/v1", root / "edge-9")
    first = (root / "releases" / "v1" / "bundle.json.sig").read_bytes()

    async def body(server: HubServer, port: int) -> None:
        async def swap() -> float:
            await asyncio.sleep(0.3)
            os.symlink("releases/v2", root / ".edge-9.new")
            os.replace(root / ".edge-9.new", root / "edge-9")
            return time.monotonic()

        task = asyncio.create_task(swap())
        resp: Response = await get(  # type: ignore[assignment]
            port, "/edge-9/bundle.json.sig?wait=10", {"If-None-Match": etag_of(first)}, wait=10
        )
        swapped = await task
        assert resp.status == 200 and resp.body != first
        assert time.monotonic() - swapped < 2
        data: Response = await get(port, "/edge-9/bundle.json")  # type: ignore[assignment]
        assert json.loads(data.body)["version"] == 2

    with_hub(root, body)


def test_status_reports_signed_by_the_appliance_key(publisher: Publisher, tmp_path: Path) -> None:
    """With PATH/appliance.pub, only the appliance holding the key reports for PATH."""
    from appliance.sync import keys
    from appliance.sync.client import HubClient, SyncResult

    appliance_key = keys.generate()
    (publisher.directory / "appliance.pub").write_text(appliance_key.public.encode() + "\n")
    publisher.publish(1)

    async def body(server: HubServer, port: int) -> None:
        url = f"http://127.0.0.1:{port}/{publisher.path}/"
        status = url + "status"
        plain = await request("POST", status, Limits(), {}, b'{"name": "intruder", "sent": 9e9}')
        assert plain.status == 403 and publisher.path not in server.fleet()
        other = HubClient(url, [], tmp_path / "o", name="intruder", status_key=keys.generate())
        assert not await other.report(SyncResult("applied", version=99))
        good = HubClient(url, [], tmp_path / "g", name="edge-1", status_key=appliance_key)
        assert await good.report(SyncResult("applied", version=1))
        report = server.fleet()[publisher.path]
        assert report["name"] == "edge-1" and report["signed"] is True
        # A signed report accepted once, then the very same request again (a replay).
        import base64

        sent = json.dumps({"name": "edge-1", "result": "not_modified", "sent": time.time()})
        signature = base64.b64encode(appliance_key.sign(sent.encode())).decode()
        headers = {"X-Appliance-Signature": f"{appliance_key.public.id} {signature}"}
        first = await request("POST", status, Limits(), headers, sent.encode())
        assert first.status == 204
        replay = await request("POST", status, Limits(), headers, sent.encode())
        assert replay.status == 403 and b"replayed" in replay.body
        assert server.fleet()[publisher.path]["result"] == "not_modified"

    with_hub(publisher.root, body)


def test_pipelined_requests_are_answered_in_order(publisher: Publisher) -> None:
    """A request sent behind a long poll on the same connection is answered after it."""
    publisher.publish(1)
    sig = (publisher.directory / "bundle.json.sig").read_bytes()
    path = f"/{publisher.path}"

    async def body(server: HubServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET {path}/bundle.json.sig?wait=0.3 HTTP/1.1\r\nHost: x\r\n"
            f"If-None-Match: {etag_of(sig)}\r\n\r\n"
            f"HEAD {path}/bundle.json HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
        assert first.startswith(b"HTTP/1.1 304") and second.startswith(b"HTTP/1.1 200")
        assert b"application/json" in second

    with_hub(publisher.root, body)


def test_a_stalled_body_or_a_symlink_loop_ends_there(
    publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance.sync import hub

    monkeypatch.setattr(hub, "BODY_TIMEOUT", 0.2)
    monkeypatch.setattr(hub, "SWEEP_INTERVAL", 0.05)
    publisher.publish(1)
    os.symlink("loop-b", publisher.root / "loop-a")
    os.symlink("loop-a", publisher.root / "loop-b")

    async def body(server: HubServer, port: int) -> None:
        answer = await raw(port, b"GET /loop-a/bundle.json HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 404")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"POST /{publisher.path}/status HTTP/1.1\r\nContent-Length: 90\r\n\r\n".encode()
        )
        closed = asyncio.create_task(reader.read())
        for _ in range(80):  # a body that drips in a byte at a time is ended all the same
            if closed.done():
                break
            writer.write(b" ")
            await asyncio.sleep(0.05)
        try:
            ended = await asyncio.wait_for(closed, 5)
        except ConnectionResetError:  # closed while the last bytes were on their way
            ended = b""
        assert ended == b""  # closed, nothing answered
        writer.close()
        assert publisher.path not in server.reports

    with_hub(publisher.root, body)


def test_long_polls_are_answered_in_batches_all_of_them(
    publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance.sync import hub

    monkeypatch.setattr(hub, "WAKE_BATCH", 2)
    etag = etag_of(publisher.publish(1))

    async def body(server: HubServer, port: int) -> None:
        path = f"/{publisher.path}/bundle.json?wait=10"
        waiters = [get(port, path, {"If-None-Match": etag}, wait=10) for _ in range(7)]
        task = asyncio.gather(*waiters)
        for _ in range(1000):  # until every long poll is held (10 s at most)
            if server._waiters == 7:
                break
            await asyncio.sleep(0.01)
        assert server._waiters == 7
        publisher.publish(2)
        answers = await asyncio.wait_for(task, 10)
        assert [a.status for a in answers] == [200] * 7  # type: ignore[attr-defined]
        assert not server._watches and server._waiters == 0

    with_hub(publisher.root, body)


def test_timestamp_answers_announce_the_newest_root(publisher: Publisher) -> None:
    """``timestamp.json`` answers (200 and 304) carry the newest ``N.root.json`` the path
    serves, counted again as soon as a root is added; other files and paths without roots
    carry nothing."""
    directory = publisher.directory
    publisher.publish(1, ["192.0.2.1"])
    (directory / "timestamp.json").write_bytes(b'{"signed": {}}\n')

    async def body(server: HubServer, port: int) -> None:
        path = f"/{publisher.path}/timestamp.json"
        plain = await get(port, path)
        assert plain.status == 200 and "x-tuf-root-version" not in plain.headers
        (directory / "1.root.json").write_bytes(b"{}\n")
        first = await get(port, path)
        assert first.headers["x-tuf-root-version"] == "1"
        (directory / "2.root.json").write_bytes(b"{}\n")
        again = await get(port, path, {"If-None-Match": first.etag})
        assert again.status == 304 and again.headers["x-tuf-root-version"] == "2"
        other = await get(port, f"/{publisher.path}/bundle.json")
        assert other.status == 200 and "x-tuf-root-version" not in other.headers

    with_hub(publisher.root, body)
