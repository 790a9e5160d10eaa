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
- ``timestamp.json`` (TUF) answers carry ``X-TUF-Root-Version: N``, the newest
  ``N.root.json`` PATH serves: a client that trusts root N need not ask for ``N+1.root.json``
  (the hub could as well answer that with 404; the header is worth no more and no less).
- ``POST /PATH/status`` takes a JSON object (at most MAX_STATUS bytes) and keeps the latest
  per PATH (an existing bundle directory); ``GET /fleet`` answers ``{PATH: report}``, each
  report with the time it arrived and the version the hub offers at PATH.

Bundles are static signed files: the hub needs no key and is not trusted; any static server
(nginx, an object store, a CDN) can serve the same directory, without long polls and /fleet.

Built for fleets: one :class:`asyncio.Protocol` per connection (no task, stream or timer per
request), answers to files kept as ready bytes (headers and body, per file version),
directories resolved below DIR by a walk of their own components, the long-pollers of a file
answered in batches when it changes, and idle connections closed by one periodic sweep.
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
from appliance.sync.keys import KeyFileError, PublicKey
from appliance.sync.transport import etag_matches, etag_of

MAX_WAIT = 300.0
WATCH_INTERVAL = 0.05
WAKE_BATCH = 200  # long polls answered before the hub reads what came in meanwhile
MAX_WAITERS = 100_000
MAX_STATUS = 64 * 1024
MAX_HEAD = 16 * 1024
IDLE_TIMEOUT = 75.0
BODY_TIMEOUT = 10.0  # a request, head and body, must arrive within this once begun
SWEEP_INTERVAL = 1.0
MAX_FILE = 256 * 1024 * 1024
RESOLVE_TTL = 1.0
MAX_RESOLVED = 100_000
MAX_LINKS = 40  # symlinks followed in one path (a loop ends there)
SERVED = (BUNDLE_FILE, SIG_FILE)
APPLIANCE_KEY = "appliance.pub"  # when present: status reports for PATH must be signed by it
STATUS_SIGNATURE_HEADER = "x-appliance-signature"
ROOT_HINT_HEADER = "X-TUF-Root-Version"
TIMESTAMP = "timestamp.json"
MAX_ROOTS = 100_000  # root versions counted when looking for the newest
# TUF metadata and targets by content (appliance.sync.repository writes them).
_TUF_NAME = re.compile(
    r"(?:\d{1,19}\.)?root\.json|\d{1,19}\.(?:snapshot|targets)\.json"
    r"|timestamp\.json|[0-9a-f]{64}\.bundle\.json"
)


def served(name: str) -> bool:
    known = _SERVED_NAMES.get(name)
    if known is None:
        known = name in SERVED or _TUF_NAME.fullmatch(name) is not None
        if len(_SERVED_NAMES) >= MAX_NAMES:
            _SERVED_NAMES.clear()
        _SERVED_NAMES[name] = known
    return known


MAX_NAMES = 4096
_SERVED_NAMES: dict[str, bool] = {}  # a fleet asks for the same few names


_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class StatusKeys:
    """The appliances' public keys (``DIR/PATH/appliance.pub``), read again only when the
    file changes (inode, size, mtime)."""

    def __init__(self) -> None:
        self._keys: dict[str, tuple[tuple[int, int, int], PublicKey | str]] = {}

    def get(self, directory: Path) -> PublicKey | str | None:
        """The key, None when there is none, or why it is unusable."""
        path = os.path.join(directory, APPLIANCE_KEY)
        try:
            st = os.stat(path)
        except OSError:
            self._keys.pop(path, None)
            return None
        version = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._keys.get(path)
        if cached is not None and cached[0] == version:
            return cached[1]
        from appliance.sync.keys import load_public

        try:
            key: PublicKey | str = load_public(path)
        except KeyFileError as exc:
            key = f"status key unusable: {exc}"
        if len(self._keys) >= MAX_RESOLVED:
            self._keys.clear()
        self._keys[path] = (version, key)
        return key


_STATUS_KEYS = StatusKeys()


def check_status_signature(
    directory: Path,
    body: bytes,
    signature: str,
    report: dict[str, Any],
    last: dict[str, Any] | None,
    keys: StatusKeys = _STATUS_KEYS,
) -> str:
    """When ``DIR/PATH/appliance.pub`` exists, only the appliance holding its key may report
    for PATH: the body must carry its signature (``X-Appliance-Signature: KEYID BASE64``)
    and a ``sent`` time (seconds, fractional) later than the last report's (no replay). The
    refusal, or ""."""
    key = keys.get(directory)
    if key is None:
        return ""
    if isinstance(key, str):
        return key
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


_COMMON = f"X-Long-Poll-Max: {MAX_WAIT:g}\r\nCache-Control: no-cache\r\n"


@dataclass
class _File:
    stat: tuple[int, int, int]  # inode, size, mtime_ns
    data: bytes
    etag: str
    _answers: dict[tuple[int, str, bool, bool, str], bytes] = field(default_factory=dict)

    def answer(
        self, status: int, ctype: str, keep: bool, head_only: bool, extra: str = ""
    ) -> bytes:
        """The whole answer (200 or 304) to a GET or HEAD of this file, built once;
        ``extra``: header lines to add (each ending in CRLF)."""
        key = (status, ctype, keep, head_only, extra)
        ready = self._answers.get(key)
        if ready is None:
            connection = "keep-alive" if keep else "close"
            if status == 304:
                ready = (
                    f"HTTP/1.1 304 Not Modified\r\n{_COMMON}{extra}ETag: {self.etag}\r\n"
                    f"Connection: {connection}\r\n\r\n"
                ).encode("latin-1")
            else:
                ready = (
                    f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(self.data)}\r\n{_COMMON}{extra}ETag: {self.etag}\r\n"
                    f"Connection: {connection}\r\n\r\n"
                ).encode("latin-1")
                if not head_only:
                    ready += self.data
            if len(self.data) <= 1 << 20 or head_only or status == 304:
                self._answers[key] = ready  # a big file's answer is not kept twice
        return ready


class BundleFiles:
    """Reads ``DIR/PATH/FILE`` safely, caching bytes and ETags by (inode, size, mtime)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self._root_text = str(self.root)
        self._cache: dict[str, _File] = {}
        self._resolved: dict[str, tuple[str, float]] = {}
        self._roots: dict[str, int] = {}

    def locate(self, bundle_path: str) -> Path | None:
        """The directory for PATH (``a/b``), or None if PATH is not acceptable."""
        found = self._directory(bundle_path)
        return None if found is None else Path(found)

    def real_path(self, bundle_path: str, name: str, fresh: bool = False) -> Path | None:
        """The file PATH/name stands for (symlinks resolved, inside DIR), or None."""
        found = self._file(bundle_path, name, fresh)
        return None if found is None else Path(found[0])

    def _file(
        self, bundle_path: str, name: str, fresh: bool = False
    ) -> tuple[str, os.stat_result] | None:
        """The real path of PATH/name and its stat, when it is a regular file inside DIR."""
        if not served(name):
            return None
        directory = self._directory(bundle_path, fresh)
        if directory is None:
            return None
        path = directory + "/" + name
        try:
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                return path, st
            if not stat.S_ISLNK(st.st_mode):
                return None
            real = os.path.realpath(path, strict=True)
            st = os.stat(real)
        except (OSError, ValueError):
            return None
        inside = real.startswith(self._root_text + os.sep)
        return (real, st) if inside and stat.S_ISREG(st.st_mode) else None

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
            found = _walk(self._root_text, segments, [0])
        except (OSError, ValueError):
            return None
        if found is None or not found[0].startswith(self._root_text + os.sep):
            return None
        return found[0] if stat.S_ISDIR(found[1]) else None

    def newest_root(self, bundle_path: str) -> int:
        """N of the newest ``N.root.json`` PATH serves (1, 2, ... each present), 0 for none.
        Remembered per directory and checked again at each call by one look for N+1, so a
        root published a moment ago counts at once."""
        directory = self._directory(bundle_path)
        if directory is None:
            return 0
        newest = self._roots.get(directory, 0)
        if newest and self._file(bundle_path, f"{newest}.root.json") is None:
            newest = 0  # roots taken away: count again
        while newest < MAX_ROOTS and self._file(bundle_path, f"{newest + 1}.root.json"):
            newest += 1
        if len(self._roots) >= MAX_RESOLVED:
            self._roots.clear()
        self._roots[directory] = newest
        return newest

    def read(self, bundle_path: str, name: str) -> _File | None:
        found = self._file(bundle_path, name)
        return None if found is None else self._read(found[0], found[1])

    def read_real(self, real: Path) -> _File | None:
        try:
            st = os.stat(real)
        except OSError:
            self._cache.pop(str(real), None)
            return None
        return self._read(str(real), st)

    def _read(self, path: str, st: os.stat_result) -> _File | None:
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE:
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._cache.get(path)
        if cached is not None and cached.stat == key:
            return cached
        try:
            with open(path, "rb") as handle:
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


def _walk(base: str, parts: list[str], links: list[int]) -> tuple[str, int] | None:
    """``base`` (a real directory) joined with ``parts``, every symlink resolved the way
    ``os.path.realpath`` does, one ``lstat`` per component: the real path and its mode.
    OSError when a component is missing; None past MAX_LINKS symlinks (a loop)."""
    current, mode = base, stat.S_IFDIR
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            current, mode = os.path.dirname(current) or "/", stat.S_IFDIR
            continue
        path = current.rstrip("/") + "/" + part
        st = os.lstat(path)
        if not stat.S_ISLNK(st.st_mode):
            current, mode = path, st.st_mode
            continue
        links[0] += 1
        if links[0] > MAX_LINKS:
            return None
        target = os.readlink(path)
        found = _walk("/" if target.startswith("/") else current, target.split("/"), links)
        if found is None:
            return None
        current, mode = found
    return current, mode


@dataclass(eq=False)
class _Waiter:
    """A long poll held: the connection, what it asked, and when its time is up."""

    http: _Http
    directory: str
    name: str
    condition: str
    keep: bool
    head_only: bool
    watch: _Watch | None = None
    timer: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class _Watch:
    key: str
    waiters: set[_Waiter] = field(default_factory=set)
    task: asyncio.Task[None] | None = None


class _Http(asyncio.Protocol):
    """One client connection: requests parsed from a buffer and answered in order (at most
    one request in progress; later pipelined ones wait in the buffer)."""

    def __init__(self, hub: HubServer) -> None:
        self.hub = hub
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: _Waiter | None = None
        self.writing_paused = False
        self.reading_paused = False
        self.active = time.monotonic()
        self.started = self.active  # when the request now in the buffer began to arrive
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.hub._http.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.hub._http.discard(self)
        if self.waiter is not None:
            self.hub._forget(self.waiter)
            self.waiter = None

    def data_received(self, data: bytes) -> None:
        self.active = time.monotonic()
        if not self.buffer:
            self.started = self.active
        self.buffer += data
        self.advance()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.advance()

    def busy(self) -> bool:
        return self.waiter is not None or self.writing_paused

    def advance(self) -> None:
        """Answer the requests complete in the buffer, while nothing holds the connection."""
        while not self.closed and not self.busy():
            end = self.buffer.find(b"\r\n\r\n", 0, MAX_HEAD)
            if end < 0:
                if len(self.buffer) >= MAX_HEAD:
                    self.close()  # a head too long
                break
            if not self.request(end + 4):
                break
        # A client that keeps sending while its answer waits is read no further.
        pause = self.busy() and len(self.buffer) > MAX_HEAD + MAX_STATUS
        if self.transport is not None and pause != self.reading_paused and not self.closed:
            self.reading_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def request(self, head_end: int) -> bool:
        """Handle the request whose head ends at ``head_end``; False when its body is not
        all here yet or the connection is done."""
        hub = self.hub
        lines = self.buffer[: head_end - 4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            hub.requests += 1
            return self.send(400, b"bad request\n", keep=False)
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "transfer-encoding" in headers:
            hub.requests += 1
            return self.send(501, b"no request bodies in chunks\n", keep=False)
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            hub.requests += 1
            return self.send(400, b"bad Content-Length\n", keep=False)
        if length < 0 or length > MAX_STATUS:
            hub.requests += 1
            return self.send(413, b"too large\n", keep=False)
        if len(self.buffer) < head_end + length:
            return False  # the body is still coming (the sweep ends a stalled one)
        body = bytes(self.buffer[head_end : head_end + length])
        del self.buffer[: head_end + length]
        self.started = time.monotonic()  # for whatever follows in the buffer
        hub.requests += 1
        return hub.handle(self, method, target, headers, body, keep)

    def write(self, data: bytes, keep: bool) -> bool:
        if self.transport is None or self.closed:
            return False
        self.transport.write(data)
        self.active = time.monotonic()
        if not keep:
            self.close()
        return keep

    def send(
        self,
        status: int,
        body: bytes,
        keep: bool,
        ctype: str = "text/plain",
        extra: dict[str, str] | None = None,
        head_only: bool = False,
    ) -> bool:
        return self.write(_answer(status, body, keep, ctype, extra, head_only), keep)

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()


class HubServer:
    def __init__(self, root: str | os.PathLike[str], clock: Any = time.time) -> None:
        self.files = BundleFiles(root)
        self.clock = clock
        self.reports: dict[str, dict[str, Any]] = {}
        self.server: asyncio.AbstractServer | None = None
        self._watches: dict[str, _Watch] = {}
        self._waiters = 0
        self._http: set[_Http] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.status_keys = StatusKeys()
        self.requests = 0
        self._time_text = (-1, "")

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _Http(self), host or None, port, backlog=4096
        )
        self._sweeper = asyncio.create_task(self._sweep())
        sock = self.server.sockets[0].getsockname()
        return str(sock[0]), int(sock[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for watch in list(self._watches.values()):
            if watch.task is not None:
                watch.task.cancel()
        for http in list(self._http):
            if http.transport is not None:
                http.transport.abort()
        tasks = [w.task for w in self._watches.values() if w.task is not None]
        if self._sweeper is not None:
            tasks.append(self._sweeper)
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
        self.server = None

    async def _sweep(self) -> None:
        """Close connections idle for IDLE_TIMEOUT, or with a request begun BODY_TIMEOUT ago
        and still not whole (a held long poll is not idle)."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            for http in list(self._http):
                if http.waiter is not None:
                    continue
                stalled = bool(http.buffer) and now - http.started > BODY_TIMEOUT
                if stalled or now - http.active > IDLE_TIMEOUT:
                    http.close()

    # ---- requests -----------------------------------------------------------------------

    def handle(
        self,
        http: _Http,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        keep: bool,
    ) -> bool:
        """Answer one request (or hold it: a long poll); False when the connection stops
        taking requests for now."""
        if not target.startswith("/") or "?" in target or "%" in target or "#" in target:
            url = urlsplit(target)
            path, query = unquote(url.path), url.query
        else:
            path, query = target, ""
        head_only = method == "HEAD"
        if method in ("GET", "HEAD") and path == "/fleet":
            data = json.dumps(self.fleet(), indent=2, sort_keys=True).encode() + b"\n"
            return http.send(200, data, keep, "application/json", head_only=head_only)
        directory, _, name = path.strip("/").rpartition("/")
        if method == "POST" and name == "status":
            signature = headers.get(STATUS_SIGNATURE_HEADER, "")
            return http.send(*self._status(directory, body, signature), keep)  # type: ignore[misc]
        if method not in ("GET", "HEAD"):
            extra = {"Allow": "GET, HEAD"}
            return http.send(405, b"method not allowed\n", keep, extra=extra)
        if not served(name) or not path.startswith("/") or path.endswith("/"):
            return http.send(404, b"not found\n", keep)
        wait = 0.0
        if query:
            values = parse_qs(query).get("wait")
            if values:
                try:
                    wait = min(MAX_WAIT, max(0.0, float(values[0])))
                except ValueError:
                    return http.send(400, b"bad wait\n", keep)
                if wait != wait:  # NaN
                    wait = 0.0
        condition = headers.get("if-none-match", "")
        found = self.files._file(directory, name)
        entry = None if found is None else self.files._read(*found)
        held = wait > 0 and found is not None and self._waiters < MAX_WAITERS
        if held and entry is not None and etag_matches(condition, entry.etag):
            assert found is not None
            self._hold(_Waiter(http, directory, name, condition, keep, head_only), found[0], wait)
            return False
        return self._answer_file(http, directory, name, entry, condition, keep, head_only)

    def _answer_file(
        self,
        http: _Http,
        directory: str,
        name: str,
        entry: _File | None,
        condition: str,
        keep: bool,
        head_only: bool,
    ) -> bool:
        if entry is None:
            extra = {"X-Long-Poll-Max": f"{MAX_WAIT:g}", "Cache-Control": "no-cache"}
            return http.send(404, b"not found\n", keep, extra=extra)
        ctype = "application/json" if name == BUNDLE_FILE else "text/plain"
        status = 304 if etag_matches(condition, entry.etag) else 200
        hint = ""
        if name == TIMESTAMP:
            newest = self.files.newest_root(directory)
            hint = f"{ROOT_HINT_HEADER}: {newest}\r\n" if newest else ""
        return http.write(entry.answer(status, ctype, keep, head_only, hint), keep)

    # ---- long polls ---------------------------------------------------------------------

    def _hold(self, waiter: _Waiter, key: str, wait: float) -> None:
        watch = self._watches.get(key)  # paths that lead to the same file share one watch
        if watch is None:
            watch = self._watches[key] = _Watch(key)
            etag = self.files._cache[key].etag
            watching = self._watch(watch, waiter.directory, waiter.name, etag)
            watch.task = asyncio.create_task(watching)
        waiter.watch = watch
        watch.waiters.add(waiter)
        waiter.http.waiter = waiter
        self._waiters += 1
        waiter.timer = asyncio.get_running_loop().call_later(wait, self._release, waiter)

    def _forget(self, waiter: _Waiter) -> None:
        """The waiter leaves its watch (answered, timed out or disconnected)."""
        watch = waiter.watch
        if watch is not None and waiter in watch.waiters:
            watch.waiters.discard(waiter)
            self._waiters -= 1
        if waiter.timer is not None:
            waiter.timer.cancel()
        waiter.watch = None

    def _release(self, waiter: _Waiter) -> None:
        """Answer a held long poll with the file as it is now (new, or 304 when time is up),
        then go on with what the client sent meanwhile."""
        self._forget(waiter)
        http = waiter.http
        if http.waiter is not waiter or http.closed:
            return
        http.waiter = None
        entry = self.files.read(waiter.directory, waiter.name)
        keep = self._answer_file(
            http, waiter.directory, waiter.name, entry, waiter.condition, waiter.keep,
            waiter.head_only,
        )  # fmt: skip
        if keep:
            http.advance()

    async def _watch(self, watch: _Watch, directory: str, name: str, etag: str) -> None:
        """Stat the file every WATCH_INTERVAL while anyone waits; answer them all on a
        change."""
        try:
            while True:
                await asyncio.sleep(WATCH_INTERVAL)
                if not watch.waiters:
                    break
                found = self.files._file(directory, name, fresh=True)
                entry = None if found is None else self.files._read(*found)
                if (entry.etag if entry else "") != etag:
                    if self._watches.get(watch.key) is watch:
                        del self._watches[watch.key]  # long polls from now on watch anew
                    for count, waiter in enumerate(list(watch.waiters), 1):
                        self._release(waiter)
                        if count % WAKE_BATCH == 0:
                            await asyncio.sleep(0)  # the answered clients' requests get in
                    break
        finally:
            if self._watches.get(watch.key) is watch:
                del self._watches[watch.key]
            for waiter in list(watch.waiters):  # cancelled: the server is closing
                self._forget(waiter)

    # ---- status reports -----------------------------------------------------------------

    def _status(self, directory: str, body: bytes, signature: str) -> tuple[int, bytes]:
        located = self.files.locate(directory)
        if located is None:
            return 404, b"no such bundle path\n"
        try:
            report = json.loads(body)
        except (ValueError, RecursionError):
            report = None
        if not isinstance(report, dict):
            return 400, b"expected a JSON object\n"
        refusal = check_status_signature(
            located, body, signature, report, self.reports.get(directory), self.status_keys
        )
        if refusal:
            return 403, refusal.encode() + b"\n"
        report["signed"] = bool(signature)
        report["received"] = self._received(self.clock())
        self.reports[directory] = report
        return 204, b""

    def _received(self, now: float) -> str:
        """``now`` as RFC 3339 (whole seconds), formatted once a second."""
        second = int(now)
        if self._time_text[0] != second:
            self._time_text = (second, format_time(second))
        return self._time_text[1]

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


def _answer(
    status: int,
    body: bytes,
    keep: bool,
    ctype: str = "text/plain",
    extra: dict[str, str] | None = None,
    head_only: bool = False,
) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
    if status not in (204, 304):
        lines.append(f"Content-Type: {ctype}")
        lines.append(f"Content-Length: {len(body)}")
    for name, value in (extra or {}).items():
        lines.append(f"{name}: {value}")
    lines.append("Connection: keep-alive" if keep else "Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if body and not head_only and status not in (204, 304):
        return head + body
    return head


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
