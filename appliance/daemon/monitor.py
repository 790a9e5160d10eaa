"""Watch the table through ``nft monitor``: a change made by another process wakes the
drift read-back at once instead of at the next resync tick.

``nft monitor`` prints each event of a transaction, then ``# new generation N by process
PID (NAME)``. Transactions of this process are ours and ignored; so are element additions
by others (run-time elements are never drift). The monitor only hints: the periodic
read-back stays the authority, and without the ``nft`` binary the daemon runs without it.
The ``nft monitor`` child dies with the daemon, also when the daemon is killed with SIGKILL.

The watch does not end quietly: when ``nft monitor`` ends (killed, or the kernel ended its
socket) it is started again (1, 2, 4 ... 30 s later), and a hint that fails is logged and
the watch goes on. Each such failure is one warning line, counted in ``errors`` (and told
to ``on_error``, for a metric or status).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
from collections.abc import Callable, Iterable

from appliance.compile.nftjson import TABLE_FAMILY, TABLE_NAME
from appliance.daemon.children import die_with_parent

_GENERATION = re.compile(r"^# new generation \d+ by process (\d+)")
_OURS = f" {TABLE_FAMILY} {TABLE_NAME}"


def foreign_drift(events: Iterable[str], pid: int | None, own_pid: int) -> bool:
    """Whether a transaction's ``events`` (by process ``pid``) may have changed our table."""
    if pid == own_pid:
        return False
    for event in events:
        words = event.split(" ", 3)
        if len(words) < 4 or f" {words[2]} {words[3].split(' ', 1)[0]}" != _OURS:
            continue
        if words[0] == "add" and words[1] == "element":
            continue
        return True
    return False


RESTART_MAX = 30.0  # seconds between two starts of an ``nft monitor`` that keeps ending


class TableMonitor:
    def __init__(
        self,
        on_drift: Callable[[], None],
        own_pid: int,
        logger: logging.Logger,
        command: tuple[str, ...] = ("nft", "monitor"),
        on_error: Callable[[str], None] | None = None,
        restart_pause: float = 1.0,
    ) -> None:
        self.on_drift = on_drift
        self.own_pid = own_pid
        self.log = logger
        self.command = command
        self.on_error = on_error
        self.restart_pause = restart_pause
        self.proc: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None
        self.errors = 0  # failures the watch went on after (restarts, failed hints)
        self.stopping = False

    async def start(self) -> bool:
        if shutil.which(self.command[0]) is None:
            self.log.info("nft monitor unavailable; drift is found by read-back only")
            return False
        try:
            await self._spawn()
        except OSError as exc:
            self.log.warning("nft monitor did not start", extra={"error": str(exc)})
            return False
        self.task = asyncio.create_task(self._watch())
        return True

    async def _spawn(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=16 * 1024 * 1024,
            preexec_fn=die_with_parent(),  # no orphan when the daemon is killed
        )

    def _failed(self, reason: str) -> None:
        """One line, counted; the watch goes on."""
        self.errors += 1
        self.log.warning(f"table watch: {reason}", extra={"errors": self.errors})
        if self.on_error is not None:
            with contextlib.suppress(Exception):
                self.on_error(reason)

    async def _watch(self) -> None:
        """Follow ``nft monitor``; start it again whenever it ends."""
        pause = self.restart_pause
        while True:
            code = await self._read()
            if self.stopping:
                return
            self._failed(f"nft monitor ended (exit {code}); started again in {pause:g} s")
            await asyncio.sleep(pause)
            pause = min(pause * 2, RESTART_MAX)
            try:
                await self._spawn()
            except OSError as exc:
                self._failed(f"nft monitor did not start again: {exc}")
                continue

    async def _read(self) -> int | None:
        """Follow the current ``nft monitor`` until it ends; its exit status."""
        assert self.proc is not None and self.proc.stdout is not None
        events: list[str] = []
        while True:
            try:
                raw = await self.proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):
                events.append("? inet appliance overlong")  # cannot tell: look
                continue
            if not raw:
                break
            line = raw.decode(errors="replace").rstrip("\n")
            match = _GENERATION.match(line)
            if match is None:
                if line and not line.startswith("#"):
                    events.append(line)
                continue
            if foreign_drift(events, int(match.group(1)), self.own_pid):
                try:
                    self.on_drift()
                except Exception as exc:  # a failed hint: the read-back stays the authority
                    self._failed(f"drift hint failed: {exc!r}")
            events = []
        return await self.proc.wait()

    async def stop(self) -> None:
        self.stopping = True
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.wait(), 5)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        self.proc = None
        self.task = None
