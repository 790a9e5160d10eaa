"""Watch the table through ``nft monitor``: a change made by another process wakes the
drift read-back at once instead of at the next resync tick.

``nft monitor`` prints each event of a transaction, then ``# new generation N by process
PID (NAME)``. Transactions of this process are ours and ignored; so are element additions
by others (run-time elements are never drift). The monitor only hints: the periodic
read-back stays the authority, and without the ``nft`` binary the daemon runs without it.
The ``nft monitor`` child dies with the daemon, also when the daemon is killed with SIGKILL.
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


class TableMonitor:
    def __init__(
        self,
        on_drift: Callable[[], None],
        own_pid: int,
        logger: logging.Logger,
        command: tuple[str, ...] = ("nft", "monitor"),
    ) -> None:
        self.on_drift = on_drift
        self.own_pid = own_pid
        self.log = logger
        self.command = command
        self.proc: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> bool:
        if shutil.which(self.command[0]) is None:
            self.log.info("nft monitor unavailable; drift is found by read-back only")
            return False
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                limit=16 * 1024 * 1024,
                preexec_fn=die_with_parent(),  # no orphan when the daemon is killed
            )
        except OSError as exc:
            self.log.warning("nft monitor did not start", extra={"error": str(exc)})
            return False
        self.task = asyncio.create_task(self._read())
        return True

    async def _read(self) -> None:
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
                self.on_drift()
            events = []
        self.log.warning("nft monitor ended; drift is found by read-back only")

    async def stop(self) -> None:
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
