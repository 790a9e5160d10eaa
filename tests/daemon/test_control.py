"""The control socket without a daemon: framing, errors, permissions, stale sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.daemon.control import (
    MAX_REQUEST_BYTES,
    ControlServer,
    NoDaemon,
    checked,
    request,
)
from appliance.errors import ApplianceError, UsageError


async def handler(message: dict[str, Any]) -> dict[str, Any]:
    if message["op"] == "echo":
        return {"ok": True, "echo": message}
    if message["op"] == "boom":
        raise RuntimeError("a bug")
    raise UsageError(f"unknown request {message['op']!r}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "run" / "control.sock")
    loop = asyncio.new_event_loop()
    control = ControlServer(handler)
    loop.run_until_complete(control.start(path))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        asyncio.run_coroutine_threadsafe(control.close(), loop).result(5)
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0.05), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def test_request_and_response(server: str) -> None:
    answer = request(server, {"op": "echo", "x": [1, 2]})
    assert answer == {"ok": True, "echo": {"op": "echo", "x": [1, 2]}}


def test_socket_is_private(server: str) -> None:
    assert os.stat(server).st_mode & 0o777 == 0o600


def test_errors_carry_the_exit_code(server: str) -> None:
    answer = request(server, {"op": "nope"})
    assert answer["ok"] is False and answer["exit"] == 2
    with pytest.raises(ApplianceError) as info:
        checked(answer)
    assert info.value.exit_code == 2


def test_large_requests(server: str) -> None:
    items = [f"10.0.{i >> 8}.{i & 255}" for i in range(50_000)]
    assert request(server, {"op": "echo", "items": items})["echo"]["items"] == items


def test_no_daemon(tmp_path: Path) -> None:
    with pytest.raises(NoDaemon):
        request(str(tmp_path / "absent.sock"), {"op": "status"})


def test_a_second_server_refuses_a_live_socket(server: str) -> None:
    with pytest.raises(ApplianceError, match="another daemon"):
        asyncio.run(ControlServer(handler).start(server))


def test_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))  # bound, never listening: a dead daemon's leftover

    async def scenario() -> None:
        control = ControlServer(handler)
        await control.start(path)
        await control.close()

    asyncio.run(scenario())
    assert not path.exists()


def test_a_failing_request_answers_one_line_and_the_server_goes_on(server: str) -> None:
    answer = request(server, {"op": "boom"})
    assert answer == {"ok": False, "error": "internal error: RuntimeError: a bug", "exit": 1}
    assert request(server, {"op": "echo"})["ok"] is True


def test_a_request_above_the_bound_is_answered_with_an_error_and_the_server_goes_on(
    server: str,
) -> None:
    """The server reads no more than the bound, answers exit 2 and closes; the client
    sending the rest sees the pipe closed at worst."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(server)
        chunk = b"x" * (1 << 20)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(MAX_REQUEST_BYTES // len(chunk) + 2):  # bounded: the bound + 2 MiB
                sock.sendall(chunk)
        answer = json.loads(sock.makefile("rb").readline())
    assert answer == {"ok": False, "error": "request larger than 8 MiB", "exit": 2}
    assert request(server, {"op": "echo"})["ok"] is True


def test_the_client_refuses_a_request_above_the_bound_before_sending_it(server: str) -> None:
    with pytest.raises(UsageError, match="request larger than 8 MiB") as info:
        request(server, {"op": "echo", "blob": "x" * MAX_REQUEST_BYTES})
    assert info.value.exit_code == 2


def test_a_client_that_does_not_read_its_answers_does_not_hold_the_server(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client sends requests and never reads: once the socket's buffers are full the
    server drops it (after the write deadline) and answers others meanwhile."""
    monkeypatch.setattr("appliance.daemon.control.WRITE_SECONDS", 0.5)
    big = json.dumps({"op": "echo", "pad": "y" * 200_000}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stuck:
        stuck.connect(server)
        stuck.settimeout(30)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(200):  # bounded: about 40 MB of answers it never reads
                stuck.sendall(big)
                assert request(server, {"op": "echo"}, timeout=10)["ok"] is True
        # the server gave up on it: its end is closed (or reset)
        stuck.settimeout(30)
        with contextlib.suppress(ConnectionResetError):
            while stuck.recv(1 << 20):
                pass


@pytest.mark.parametrize("sent", [b"", b'{"op": "ec', b'{"op": "echo"'])
def test_a_request_that_stalls_is_closed_after_the_read_deadline(
    server: str, monkeypatch: pytest.MonkeyPatch, sent: bytes
) -> None:
    """Nothing, half a request, or all but its newline, then nothing: the server closes the
    connection unanswered once the read deadline passes, and answers others meanwhile."""
    monkeypatch.setattr("appliance.daemon.control.READ_SECONDS", 0.5)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stalled:
        stalled.connect(server)
        stalled.settimeout(30)  # bounds the test; the deadline is far below it
        stalled.sendall(sent)
        assert request(server, {"op": "echo"}, timeout=10)["ok"] is True
        with contextlib.suppress(ConnectionResetError):
            assert stalled.recv(1024) == b""  # closed, no answer


def test_a_request_dripped_a_byte_at_a_time_is_closed_at_the_deadline(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline holds for the whole request, not between bytes (slowloris)."""
    monkeypatch.setattr("appliance.daemon.control.READ_SECONDS", 0.5)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as drip:
        drip.connect(server)
        drip.settimeout(0.05)
        closed = False
        for byte in b'{"op": "echo", "pad": "' + b"x" * 2000:  # bounded: at most 2000 tries
            try:
                drip.sendall(bytes([byte]))
                if drip.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        assert closed


def test_a_client_waits_while_the_queue_of_connections_is_full(tmp_path: Path) -> None:
    """A busy daemon whose queue of pending connections is full: the client waits for its
    turn (within its timeout) instead of failing at once with EAGAIN."""
    path = str(tmp_path / "busy.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(0)
    queued: list[socket.socket] = []
    try:
        for _ in range(8):  # fill the queue: connects that would block fail at once
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.connect(path)
            except BlockingIOError:
                sock.close()
                break
            queued.append(sock)
        else:
            pytest.fail("the queue of connections never filled")
        answered = threading.Event()

        def serve() -> None:  # accepts only once the client is waiting, then answers it
            for _ in range(len(queued)):
                server.accept()[0].close()
            conn, _ = server.accept()
            with conn:
                assert conn.recv(1024).endswith(b"\n")
                answered.set()
                conn.sendall(b'{"ok": true}\n')

        thread = threading.Thread(target=serve, daemon=True)
        timer = threading.Timer(0.3, thread.start)
        timer.start()
        assert request(path, {"op": "status"}, timeout=20) == {"ok": True}
        assert answered.is_set()
        timer.join()
        thread.join(timeout=20)
    finally:
        for sock in queued:
            sock.close()
        server.close()
