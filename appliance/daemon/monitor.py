"""Watch the table through the kernel's nf_tables events: a change made by another
process wakes the drift read-back at once instead of at the next resync tick.

The events come from netlink (``appliance.adapters.nftevents``), read in the daemon's own
loop: no ``nft monitor`` child, which would list every element of every set before its
first event (hundreds of MiB for a million-element set). A transaction ends with its new
generation and the process that committed it. Transactions of this process are ours and
ignored; any other change of our table is a hint, element additions included (another
writer's element tagged as the profile's is drift). The events only hint: the periodic
read-back stays the authority.

With a journal (``Engine.follow_events``), every transaction is recorded with the element
changes of our table, by generation: the read-back a hint wakes then takes what others
added and deleted from there, without a dump of the sets. Events lost mark a gap in it.
The elements of a transaction no read-back will start before (the daemon's own delta,
once its read-back stands) are not kept.

The watch does not end quietly: events lost to a full receive queue are a hint (the
read-back looks), and a socket that fails is opened again (1, 2, 4 ... 30 s later). Each
such failure is one warning line, counted in ``errors`` (and told to ``on_error``, for a
metric or status); so is a hint that fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable, Iterable

from appliance.adapters.nftevents import (
    NFPROTO_INET,
    Change,
    Transactions,
    open_events,
)
from appliance.compile.nftjson import TABLE_NAME
from appliance.reconcile.readback import EventJournal


def foreign_drift(changes: Iterable[Change], pid: int | None, own_pid: int) -> bool:
    """Whether a transaction's ``changes`` (by process ``pid``) may have changed our table."""
    if pid == own_pid:
        return False
    for change in changes:
        if change.kind == -1:
            return True  # more than was held: cannot tell, look
        if change.family != NFPROTO_INET or change.table != TABLE_NAME:
            continue
        return True
    return False


def _drained(sock: socket.socket) -> bool | None:
    """Whether nothing waits in the socket's receive queue (None: events were lost)."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError as exc:
        return None if exc.errno == errno.ENOBUFS else False
    return False


RESTART_MAX = 30.0  # seconds between two openings of an event socket that keeps failing
RECEIVE_SIZE = 256 * 1024  # one read: many datagrams' worth is never needed at once
# A read that finds a datagram waiting does not give the loop a turn: a burst of events
# (the daemon's own load of 100,000 elements is as many messages, 0.4 to 0.8 s of decoding)
# would keep the control socket and the metrics waiting until it is all read. The watch
# gives the loop a turn after reading for this long.
TURN_SECONDS = 0.005


class TableMonitor:
    def __init__(
        self,
        on_drift: Callable[[], None],
        own_pid: int,
        logger: logging.Logger,
        opener: Callable[[], socket.socket] = open_events,
        on_error: Callable[[str], None] | None = None,
        restart_pause: float = 1.0,
        journal: EventJournal | None = None,
        turn: float = TURN_SECONDS,
    ) -> None:
        self.on_drift = on_drift
        self.turn = turn  # seconds of reading before the loop gets a turn
        self.own_pid = own_pid
        self.log = logger
        self.opener = opener
        self.on_error = on_error
        self.restart_pause = restart_pause
        self.journal = journal
        if journal is not None:
            journal.on_read = self._read_back
        self.sock: socket.socket | None = None
        self.task: asyncio.Task[None] | None = None
        self.errors = 0  # failures the watch went on after (reopenings, failed hints)
        self.lost = 0  # times events were lost to a full receive queue (each one a hint)
        self.stopping = False

    async def start(self) -> bool:
        try:
            self.sock = self.opener()
        except OSError as exc:
            self.log.info(
                "nf_tables events unavailable; drift is found by read-back only",
                extra={"error": str(exc)},
            )
            return False
        self.task = asyncio.create_task(self._watch())
        if self.journal is not None:
            self.journal.set_live(True)
        return True

    def _failed(self, reason: str) -> None:
        """One line, counted; the watch goes on."""
        self.errors += 1
        self.log.warning(f"table watch: {reason}", extra={"errors": self.errors})
        if self.on_error is not None:
            with contextlib.suppress(Exception):
                self.on_error(reason)

    def _read_back(self, followed: bool, detail: str) -> None:
        """A read-back after other transactions (told from the kernel worker thread)."""
        if followed:
            self.log.info("table read back from nf_tables events", extra={"detail": detail})
        else:
            self.log.info("table read back by a dump of its sets", extra={"detail": detail})

    def _hint(self) -> None:
        try:
            self.on_drift()
        except Exception as exc:  # a failed hint: the read-back stays the authority
            self._failed(f"drift hint failed: {exc!r}")

    async def _watch(self) -> None:
        """Follow the events; open the socket again whenever it fails."""
        pause = self.restart_pause
        while True:
            reason = await self._read()
            if self.stopping:
                return
            self._close()
            if self.journal is not None:
                self.journal.set_live(False)
            self._failed(f"event socket failed ({reason}); opened again in {pause:g} s")
            await asyncio.sleep(pause)
            pause = min(pause * 2, RESTART_MAX)
            try:
                self.sock = self.opener()
            except OSError as exc:
                self._failed(f"event socket did not open again: {exc}")
                continue
            if self.journal is not None:
                self.journal.set_live(True)
            self._hint()  # what happened while it was closed is unknown: look

    async def _read(self) -> str:
        """Follow the current socket until it fails; why it failed.

        The kernel reports events dropped from a full queue once (ENOBUFS, from a read or
        as the socket's error) and drops more silently until the queue has drained: from
        the report until the queue is empty, no transaction that ends is taken as wholly
        known (its first messages may be gone)."""
        sock = self.sock
        assert sock is not None
        loop = asyncio.get_running_loop()
        journal = self.journal
        transactions = Transactions(
            keep=(NFPROTO_INET, TABLE_NAME),
            wanted=journal.wanted if journal is not None else None,
        )
        overrun = False
        turn_ends = loop.time() + self.turn
        while True:
            if loop.time() >= turn_ends:
                await asyncio.sleep(0)  # the loop's turn: a burst of events shares it
                turn_ends = loop.time() + self.turn
            try:
                datagram = await loop.sock_recv(sock, RECEIVE_SIZE)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    return str(exc)
                overrun = self._overrun(transactions)
                continue
            if not datagram:
                return "closed"
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ENOBUFS:
                overrun = self._overrun(transactions)
            if overrun:
                transactions.lost()
            for done in transactions.feed(datagram):
                if self.journal is not None:
                    self.journal.record(done)
                if foreign_drift(done.changes, done.pid, self.own_pid):
                    self._hint()
            if overrun:
                drained = _drained(sock)
                if drained is None:
                    self._overrun(transactions)
                overrun = not drained

    def _overrun(self, transactions: Transactions) -> bool:
        """The kernel dropped events (a burst of element events, ours mostly): what was
        lost is unknown, so look; the count is for status."""
        self.lost += 1
        transactions.lost()
        if self.journal is not None:
            self.journal.lost()
        self._hint()
        return True

    def _close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    async def stop(self) -> None:
        self.stopping = True
        if self.journal is not None:
            self.journal.set_live(False)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        self._close()
        self.task = None
