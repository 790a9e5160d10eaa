"""The control socket: newline-delimited JSON requests and responses over a unix stream
socket (mode 0600). The server runs on the daemon's event loop; the client is what the CLI
uses (``status``, ``set``, ``confirm``).

A request is ``{"op": NAME, ...}``; a response is ``{"ok": true, ...}`` or
``{"ok": false, "error": "one line", "exit": CODE}``.

A request is at most :data:`MAX_REQUEST_BYTES` (8 MiB: a ``set add`` of the most elements
one request may carry, the longest IPv6 prefixes); a longer one is answered with an error
(exit 2) once that much has been read, and the connection closed. A request must arrive
whole (up to its newline) within :data:`READ_SECONDS` of the moment the server starts
waiting for it, and a client must read its answer within :data:`WRITE_SECONDS`; a client
that stalls (half a request, a byte now and then, nothing at all) is closed and its buffer
freed: no peer holds the loop or memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError, UsageError

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_REQUEST_BYTES = 8 * 1024 * 1024
WRITE_SECONDS = 10.0
READ_SECONDS = 10.0
# Connections the kernel queues before the daemon accepts them: a burst of clients (or of
# stalled ones) waits in the queue instead of being turned away.
BACKLOG = 1024
CONNECT_RETRY = 0.02  # seconds between connects while the queue is full


class ControlServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.server: asyncio.AbstractServer | None = None
        self.path: Path | None = None

    async def start(self, path: str | os.PathLike[str]) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        _remove_stale(target)
        old_umask = os.umask(0o177)  # the socket is born 0600: no window with wider access
        try:
            self.server = await asyncio.start_unix_server(
                self._serve, path=str(target), limit=MAX_REQUEST_BYTES, backlog=BACKLOG
            )
        finally:
            os.umask(old_umask)
        os.chmod(target, 0o600)
        self.path = target

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
            self.server = None
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                    os.unlink(self.path)
            self.path = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), READ_SECONDS)
                except (asyncio.LimitOverrunError, ValueError):  # the limit, not all of it
                    await _send(writer, TOO_LARGE)
                    break
                except TimeoutError:  # a stalled request: no answer, the connection closed
                    writer.transport.abort()
                    break
                if not line:
                    break
                await _send(writer, await self._answer(line))
        except (ConnectionError, TimeoutError):
            writer.transport.abort()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "request is not JSON", "exit": 2}
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return {"ok": False, "error": "request needs an op", "exit": 2}
        try:
            return await self.handler(request)
        except ApplianceError as exc:
            return {"ok": False, "error": str(exc), "exit": exc.exit_code}
        except Exception as exc:  # a bug: one line to the caller, the daemon keeps serving
            logging.getLogger("appliance.control").exception("request failed")
            return {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}", "exit": 1}


TOO_LARGE = {
    "ok": False,
    "error": f"request larger than {MAX_REQUEST_BYTES // (1024 * 1024)} MiB",
    "exit": 2,
}


async def _send(writer: asyncio.StreamWriter, response: dict[str, Any]) -> None:
    """One response line; TimeoutError if the client does not take it in time."""
    writer.write(json.dumps(response).encode() + b"\n")
    await asyncio.wait_for(writer.drain(), WRITE_SECONDS)


def _remove_stale(path: Path) -> None:
    """Remove a socket left behind by a daemon that is gone; refuse if one still answers."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ApplianceError(f"control socket {path}: exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)
            return
    raise ApplianceError(f"control socket {path}: another daemon answers there")


class NoDaemon(ApplianceError):
    """Nothing answers on the control socket."""

    exit_code = 1


def _connect(sock: socket.socket, path: str, deadline: float) -> None:
    """Connect, waiting while the daemon's queue of connections is full (a socket with a
    timeout is told EAGAIN at once, where a blocking one would wait) until ``deadline``."""
    while True:
        try:
            sock.connect(path)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError("the daemon's queue of connections stayed full") from None
            time.sleep(CONNECT_RETRY)


def request(path: str, message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request and return the response. NoDaemon if nothing listens on ``path``;
    a request above :data:`MAX_REQUEST_BYTES` is refused before it is sent (exit 2)."""
    data = json.dumps(message).encode() + b"\n"
    if len(data) > MAX_REQUEST_BYTES:
        raise UsageError(str(TOO_LARGE["error"]))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        try:
            _connect(sock, path, time.monotonic() + timeout)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as exc:
            raise NoDaemon(f"no daemon answers on {path} ({exc.strerror})") from None
        except PermissionError:
            raise ApplianceError(
                f"control socket {path}: permission denied (the daemon answers root only)"
            ) from None
        except OSError as exc:
            raise NoDaemon(f"no daemon answers on {path} ({exc.strerror or exc})") from None
        try:
            sock.sendall(data)
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ApplianceError(f"the daemon on {path} did not answer in {timeout:g}s") from None
        except OSError as exc:
            raise ApplianceError(f"control socket {path}: {exc.strerror or exc}") from None
    if not data:
        raise ApplianceError(f"the daemon on {path} closed the connection without answering")
    response = json.loads(data)
    if not isinstance(response, dict):
        raise ApplianceError(f"the daemon on {path} sent a malformed answer")
    return response


def checked(response: dict[str, Any]) -> dict[str, Any]:
    """The response, or its error raised as an ApplianceError with the daemon's exit code."""
    if response.get("ok"):
        return response
    error = ApplianceError(str(response.get("error", "the daemon refused the request")))
    error.exit_code = int(response.get("exit", 1))
    raise error
