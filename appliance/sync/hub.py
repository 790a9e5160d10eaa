"""The reference hub: ``appliance hub serve DIR [--listen ADDR]``.

A small asyncio HTTP/1.1 server (standard library only):

- ``GET|HEAD /PATH/bundle.json`` and ``/PATH/bundle.json.sig`` serve ``DIR/PATH/...``
  (PATH: one or more segments of letters, digits, ``_ . -``; no ``..``, no hidden names,
  nothing outside DIR even through a symlink), with a strong ETag (a hash of the bytes) and
  304 on If-None-Match.
- ``?wait=SECONDS`` (a long poll, at most MAX_WAIT) with a matching If-None-Match holds the
  answer until the file's ETag changes or the time is up (then 304). Files with waiters are
  watched by one stat poll each (every WATCH_INTERVAL); nothing is watched without waiters.
  Every answer carries ``X-Long-Poll-Max`` so clients know they may wait.
- ``POST /PATH/status`` takes a JSON object (at most MAX_STATUS bytes) and keeps the latest
  per PATH (an existing bundle directory); ``GET /fleet`` answers ``{PATH: report}``, each
  report with the time it arrived and the version the hub offers at PATH.

Bundles are static signed files: the hub needs no key and is not trusted; any static server
(nginx, an object store, a CDN) can serve the same directory, without long polls and /fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from appliance.errors import UsageError
from appliance.model.values import parse_host_port
from appliance.sync.bundle import BUNDLE_FILE, SIG_FILE, format_time, parse_signatures
from appliance.sync.transport import etag_matches, etag_of

MAX_WAIT = 300.0
WATCH_INTERVAL = 0.05
MAX_WAITERS = 100_000
MAX_STATUS = 64 * 1024
MAX_HEAD = 16 * 1024
IDLE_TIMEOUT = 75.0
MAX_FILE = 256 * 1024 * 1024
RESOLVE_TTL = 1.0
MAX_RESOLVED = 100_000
SERVED = (BUNDLE_FILE, SIG_FILE)
APPLIANCE_KEY = "appliance.pub"  # when present: status reports for PATH must be signed by it
STATUS_SIGNATURE_HEADER = "x-appliance-signature"
# TUF metadata and targets by content (appliance.sync.repository writes them).
_TUF_NAME = re.compile(
    r"(?:\d{1,19}\.)?root\.json|\d{1,19}\.(?:snapshot|targets)\.json"
    r"|timestamp\.json|[0-9a-f]{64}\.bundle\.json"
)


def served(name: str) -> bool:
    return name in SERVED or _TUF_NAME.fullmatch(name) is not None


_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def check_status_signature(
    directory: Path,
    body: bytes,
    signature: str,
    report: dict[str, Any],
    last: dict[str, Any] | None,
) -> str:
    """When ``DIR/PATH/appliance.pub`` exists, only the appliance holding its key may report
    for PATH: the body must carry its signature (``X-Appliance-Signature: KEYID BASE64``)
    and a ``sent`` time (seconds, fractional) later than the last report's (no replay). The
    refusal, or ""."""
    pub = directory / APPLIANCE_KEY
    if not pub.exists():
        return ""
    from appliance.sync.keys import KeyFileError, load_public

    try:
        key = load_public(pub)
    except KeyFileError as exc:
        return f"status key unusable: {exc}"
    if not any(kid == key.id and key.verify(raw, body) for kid, raw in parse_signatures(signature)):
        return "status not signed by the appliance's key"
    sent = report.get("sent")
    if isinstance(sent, bool) or not isinstance(sent, (int, float)):
        return "signed status without a sent time"
    before = (last or {}).get("sent")
    if isinstance(before, (int, float)) and sent <= before:
        return "status not newer than the last one (replayed)"
    return ""


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` (an empty HOST: every address; port 0: any free
    port); UsageError if malformed."""
    try:
        address = parse_host_port(text, any_host=True, any_port=True)
    except ValueError as exc:
        raise UsageError(f"--listen: {exc}") from None
    return address.host, address.port


@dataclass
class _File:
    stat: tuple[int, int, int]  # inode, size, mtime_ns
    data: bytes
    etag: str


@dataclass
class _Watch:
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    waiters: int = 0
    task: asyncio.Task[None] | None = None


class BundleFiles:
    """Reads ``DIR/PATH/FILE`` safely, caching bytes and ETags by (inode, size, mtime)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self._root_text = str(self.root)
        self._cache: dict[Path, _File] = {}
        self._resolved: dict[str, tuple[str, float]] = {}

    def locate(self, bundle_path: str) -> Path | None:
        """The directory for PATH (``a/b``), or None if PATH is not acceptable."""
        found = self._directory(bundle_path)
        return None if found is None else Path(found)

    def real_path(self, bundle_path: str, name: str, fresh: bool = False) -> Path | None:
        """The file PATH/name stands for (symlinks resolved, inside DIR), or None."""
        if not served(name):
            return None
        directory = self._directory(bundle_path, fresh)
        if directory is None:
            return None
        path = os.path.join(directory, name)
        try:
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                return Path(path)
            if not stat.S_ISLNK(mode):
                return None
            real = os.path.realpath(path, strict=True)
        except (OSError, ValueError):
            return None
        inside = real.startswith(self._root_text + os.sep)
        return Path(real) if inside and os.path.isfile(real) else None

    def _directory(self, bundle_path: str, fresh: bool = False) -> str | None:
        """Real path of the directory PATH, remembered for RESOLVE_TTL when found: a fleet
        polls the same few paths, and resolving walks every component. Both files of a pair
        go through the same answer, so a directory symlink swapped to publish never mixes
        them."""
        now = time.monotonic()
        hit = None if fresh else self._resolved.get(bundle_path)
        if hit is not None and hit[1] > now:
            return hit[0]
        found = self._resolve_directory(bundle_path)
        if found is None:
            self._resolved.pop(bundle_path, None)
            return None
        if len(self._resolved) >= MAX_RESOLVED:
            self._resolved.clear()
        self._resolved[bundle_path] = (found, now + RESOLVE_TTL)
        return found

    def _resolve_directory(self, bundle_path: str) -> str | None:
        if not bundle_path:
            return None
        segments = bundle_path.split("/")
        if not all(_SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments):
            return None
        try:
            real = os.path.realpath(os.path.join(self._root_text, *segments), strict=True)
        except (OSError, ValueError):
            return None
        if not real.startswith(self._root_text + os.sep) or not os.path.isdir(real):
            return None
        return real

    def read(self, bundle_path: str, name: str) -> _File | None:
        real = self.real_path(bundle_path, name)
        return None if real is None else self.read_real(real)

    def read_real(self, real: Path) -> _File | None:
        path = real
        try:
            st = os.stat(real)
        except OSError:
            self._cache.pop(path, None)
            return None
        if not os.path.isfile(real) or st.st_size > MAX_FILE:
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._cache.get(path)
        if cached is not None and cached.stat == key:
            return cached
        try:
            with open(real, "rb") as handle:
                data = handle.read(MAX_FILE + 1)
        except OSError:
            return None
        entry = _File(key, data, etag_of(data))
        self._cache[path] = entry
        return entry

    def offered_version(self, bundle_path: str) -> int | None:
        """The version in PATH/bundle.json (read from its head, without parsing it all)."""
        entry = self.read(bundle_path, BUNDLE_FILE)
        if entry is None:
            return None
        match = re.match(rb'\{"version":(\d{1,19})[,}]', entry.data[:64])
        if match:
            return int(match.group(1))
        try:
            value = json.loads(entry.data).get("version")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, int) and not isinstance(value, bool) else None


class HubServer:
    def __init__(self, root: str | os.PathLike[str], clock: Any = time.time) -> None:
        self.files = BundleFiles(root)
        self.clock = clock
        self.reports: dict[str, dict[str, Any]] = {}
        self.server: asyncio.AbstractServer | None = None
        self._watches: dict[Path, _Watch] = {}
        self._waiters = 0
        self._connections: set[asyncio.Task[Any]] = set()
        self.requests = 0

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self.server = await asyncio.start_server(
            self._connection, host or None, port, limit=MAX_HEAD, backlog=4096
        )
        sock = self.server.sockets[0].getsockname()
        return str(sock[0]), int(sock[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for watch in self._watches.values():
            if watch.task is not None:
                watch.task.cancel()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
        self.server = None

    # ---- connections --------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            while True:
                try:
                    async with asyncio.timeout(IDLE_TIMEOUT):
                        head = await reader.readuntil(b"\r\n\r\n")
                except (
                    TimeoutError,
                    asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError,
                    ConnectionError,
                ):
                    return
                keep = await self._request(head, reader, writer)
                if not keep:
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    async def _request(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        self.requests += 1
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await _send(writer, 400, b"bad request\n", keep=False)
            return False
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "transfer-encoding" in headers:
            await _send(writer, 501, b"no request bodies in chunks\n", keep=False)
            return False
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            await _send(writer, 400, b"bad Content-Length\n", keep=False)
            return False
        if length < 0 or length > MAX_STATUS:
            await _send(writer, 413, b"too large\n", keep=False)
            return False
        body = b""
        if length:
            try:
                async with asyncio.timeout(10):
                    body = await reader.readexactly(length)
            except (TimeoutError, asyncio.IncompleteReadError):
                return False
        url = urlsplit(target)
        path = unquote(url.path)
        if method in ("GET", "HEAD") and path == "/fleet":
            data = json.dumps(self.fleet(), indent=2, sort_keys=True).encode() + b"\n"
            await _send(writer, 200, data, keep, "application/json", head_only=method == "HEAD")
            return keep
        directory, _, name = path.strip("/").rpartition("/")
        if method == "POST" and name == "status":
            signature = headers.get(STATUS_SIGNATURE_HEADER, "")
            return await self._status(writer, directory, body, keep, signature)
        if method not in ("GET", "HEAD"):
            await _send(writer, 405, b"method not allowed\n", keep, extra={"Allow": "GET, HEAD"})
            return keep
        if not served(name) or not path.startswith("/") or path.endswith("/"):
            await _send(writer, 404, b"not found\n", keep)
            return keep
        wait = 0.0
        query = parse_qs(url.query)
        if "wait" in query:
            try:
                wait = min(MAX_WAIT, max(0.0, float(query["wait"][0])))
            except ValueError:
                await _send(writer, 400, b"bad wait\n", keep)
                return keep
            if wait != wait:  # NaN
                wait = 0.0
        return await self._serve_file(writer, directory, name, headers, wait, keep, method)

    async def _serve_file(
        self,
        writer: asyncio.StreamWriter,
        directory: str,
        name: str,
        headers: dict[str, str],
        wait: float,
        keep: bool,
        method: str,
    ) -> bool:
        entry = self.files.read(directory, name)
        condition = headers.get("if-none-match", "")
        if entry is not None and wait > 0 and etag_matches(condition, entry.etag):
            entry = await self._wait_change(directory, name, entry.etag, wait)
        extra = {"X-Long-Poll-Max": f"{MAX_WAIT:g}", "Cache-Control": "no-cache"}
        if entry is None:
            await _send(writer, 404, b"not found\n", keep, extra=extra)
            return keep
        extra["ETag"] = entry.etag
        if etag_matches(condition, entry.etag):
            await _send(writer, 304, b"", keep, extra=extra)
            return keep
        ctype = "application/json" if name == BUNDLE_FILE else "text/plain"
        await _send(writer, 200, entry.data, keep, ctype, extra, head_only=method == "HEAD")
        return keep

    async def _wait_change(self, directory: str, name: str, etag: str, wait: float) -> _File | None:
        key = self.files.real_path(directory, name)
        if key is None or self._waiters >= MAX_WAITERS:
            return self.files.read(directory, name)
        watch = self._watches.get(key)  # paths that lead to the same file share one watch
        if watch is None:
            watch = self._watches[key] = _Watch()
            watch.task = asyncio.create_task(self._watch(key, directory, name, etag, watch))
        watch.waiters += 1
        self._waiters += 1
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await watch.changed.wait()
        finally:
            watch.waiters -= 1
            self._waiters -= 1
        return self.files.read(directory, name)

    async def _watch(self, key: Path, directory: str, name: str, etag: str, watch: _Watch) -> None:
        """Stat the file every WATCH_INTERVAL while anyone waits; wake them all on a change."""
        try:
            while True:
                await asyncio.sleep(WATCH_INTERVAL)
                if watch.waiters == 0:
                    break
                real = self.files.real_path(directory, name, fresh=True)
                entry = None if real is None else self.files.read_real(real)
                current = entry.etag if entry else ""
                if current != etag:
                    watch.changed.set()
                    break
        finally:
            if self._watches.get(key) is watch:
                del self._watches[key]

    async def _status(
        self,
        writer: asyncio.StreamWriter,
        directory: str,
        body: bytes,
        keep: bool,
        signature: str = "",
    ) -> bool:
        located = self.files.locate(directory)
        if located is None:
            await _send(writer, 404, b"no such bundle path\n", keep)
            return keep
        try:
            report = json.loads(body)
        except (ValueError, RecursionError):
            report = None
        if not isinstance(report, dict):
            await _send(writer, 400, b"expected a JSON object\n", keep)
            return keep
        refusal = check_status_signature(
            located, body, signature, report, self.reports.get(directory)
        )
        if refusal:
            await _send(writer, 403, refusal.encode() + b"\n", keep)
            return keep
        report["signed"] = bool(signature)
        report["received"] = format_time(self.clock())
        self.reports[directory] = report
        await _send(writer, 204, b"", keep)
        return keep

    def fleet(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for path, report in sorted(self.reports.items()):
            entry = dict(report)
            entry["offered_version"] = self.files.offered_version(path)
            out[path] = entry
        return out


_REASONS = {
    200: "OK",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    501: "Not Implemented",
}


async def _send(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    keep: bool,
    ctype: str = "text/plain",
    extra: dict[str, str] | None = None,
    head_only: bool = False,
) -> None:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
    if status not in (204, 304):
        lines.append(f"Content-Type: {ctype}")
        lines.append(f"Content-Length: {len(body)}")
    for name, value in (extra or {}).items():
        lines.append(f"{name}: {value}")
    lines.append("Connection: keep-alive" if keep else "Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if body and not head_only and status not in (204, 304):
        if len(body) <= 1 << 20:
            writer.write(head + body)  # one send for the usual small answer
        else:
            writer.write(head)
            writer.write(body)
    else:
        writer.write(head)
    await writer.drain()


def serve(root: str, listen: str) -> int:
    """Run the hub in the foreground until SIGTERM or SIGINT."""
    if not os.path.isdir(root):
        raise UsageError(f"{root}: not a directory")
    host, port = parse_listen(listen)

    async def main() -> None:
        hub = HubServer(root)
        bound = await hub.start(host, port)
        print(f"hub serving {hub.files.root} on {bound[0]}:{bound[1]}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await hub.close()

    asyncio.run(main())
    return 0
