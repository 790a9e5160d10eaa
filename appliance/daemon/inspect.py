"""Live inspection in the daemon: capture -> bounded queue -> engine thread -> alerts, blocks.

- Capture (``sample``: the NFLOG group the compiled table logs to; ``mirror``: AF_PACKET on
  ``[inspect].interfaces``; ``inline``: the NFQUEUE numbers the compiled table queues to)
  is read on the event loop from non-blocking sockets
  (``loop.add_reader``), at most a batch per wake-up, so the control socket, metrics and
  the reconcile loop keep their turn.
- Packets go into a bounded queue. When it is full the packet is dropped and counted in
  ``appliance_inspect_dropped_total`` (so are the losses the kernel reports); nothing ever
  waits for the engine, and forwarding never waits for the daemon at all.
- The engine runs in its own thread (not the kernel worker). Its alerts are appended as EVE
  JSON lines to ``[inspect].alerts`` and counted in ``appliance_alerts_total``.
- An alert whose action is ``blocked`` (a ``drop`` signature, or any detector with
  ``[inspect].block = true``; the engine leaves ``never_block`` sources ``allowed``) hands
  its source to the daemon on the event loop, which adds it to ``autoblock_v4``/``_v6``
  with ``[protect].block_timeout`` through its ordinary set-delta path. A source already
  blocked is not added again until its block has run out.
- Inline: every queued packet gets its verdict from the engine thread once inspected: drop
  when it raised a ``blocked`` alert, else accept. A packet that finds the queue full is
  accepted at once (and counted as dropped from inspection).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import os
import queue
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from appliance.daemon.defaults import INSPECT_QUEUE
from appliance.inspect.settle import settle, unsettle

if TYPE_CHECKING:
    from appliance.adapters.capture import InlinePacket, NfqueueReader, Packet
    from appliance.daemon.metrics import Metrics
    from appliance.inspect.engine import InspectionEngine
    from appliance.model.profile import Profile

READ_BATCH = 256  # packets read per wake-up of the event loop
WRITE_BATCH = 512  # packets the engine takes from the queue at a time
DROP_POLL = 1.0  # seconds between reads of AF_PACKET drop statistics
LIVE_MODES = ("sample", "mirror", "inline")


class Reader(Protocol):
    kernel_drops: int

    def fileno(self) -> int: ...
    def read(self, limit: int = ...) -> list[Packet]: ...
    def close(self) -> None: ...


def settings_key(profile: Profile, alerts: str | None) -> str:
    """What a running inspection depends on: the ``[inspect]`` and ``[protect]`` sections,
    the sets ``never_block`` names, the rule, classification and reference files' contents
    and the alerts path."""
    digest = hashlib.sha256()
    digest.update(repr((profile.inspect, profile.protect, alerts)).encode())
    for spec in profile.sets:
        digest.update(repr((spec.name, spec.elements)).encode())
    inspect = profile.inspect
    extra = [p for p in (inspect.classification, inspect.reference) if p]
    for path in (*inspect.rules, *extra):
        try:
            with open(path, "rb") as handle:
                digest.update(handle.read())
        except OSError:
            digest.update(b"\0missing\0" + path.encode())
    return digest.hexdigest()


@dataclass
class Counts:
    received: int = 0
    inspected: int = 0
    queue_drops: int = 0
    kernel_drops: int = 0
    alerts: int = 0
    blocks: int = 0
    dropped_inline: int = 0  # packets dropped by their verdict (inline mode)
    block_errors: int = 0
    reopened: int = 0  # times the alert file was opened afresh after a rotation
    errors: dict[str, int] = field(default_factory=dict)


class LiveInspection:
    """One running inspection: its capture sockets, queue, engine thread and alert file."""

    def __init__(
        self,
        profile: Profile,
        *,
        metrics: Metrics,
        block: Callable[[str], Awaitable[None]],
        logger: logging.Logger,
        alerts: str | None = None,
        queue_size: int = INSPECT_QUEUE,
        readers: list[Reader] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.profile = profile
        self.mode = profile.inspect.mode
        self.metrics = metrics
        self._block_source = block
        self.log = logger
        self.alerts_path = alerts or profile.inspect.alerts
        self.block_timeout = profile.protect.block_timeout
        # batches, each with the interface it was captured on ("" when not known)
        self.queue: queue.Queue[tuple[str, list[Packet] | list[InlinePacket]] | None] = (
            queue.Queue()
        )
        self.capacity = queue_size
        self._queued = 0  # packets in the queue (batches are lists)
        self._queued_lock = threading.Lock()
        self.counts = Counts()
        self._readers: list[Reader] = list(readers or [])
        self._given_readers = readers is not None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._blocked: dict[str, float] = {}  # source -> when its block runs out (monotonic)
        self._tasks: set[asyncio.Task[None]] = set()
        self._clock = clock
        self._last_drop_poll = 0.0
        self._engine: InspectionEngine | None = None
        self._rules_loaded = 0
        self._rules_skipped: dict[str, int] = {}
        self._eve: Any = None
        self._inline: NfqueueReader | None = None

    # ---- start and stop ------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Build the engine, open the alert file and the capture sockets, start the engine
        thread. Raises ApplianceError (a bad rule file, a socket that cannot be bound)."""
        from appliance.inspect.engine import InspectionConfig, InspectionEngine

        self._loop = loop
        config = InspectionConfig.from_profile(self.profile)
        self._engine = InspectionEngine(config)
        settle()  # the rule set, kept out of the collector's passes while it runs
        self._rules_loaded = len(config.signatures)
        for skipped in config.skipped:
            self.log.warning(skipped.warning)
        self._rules_skipped = dict(Counter(skipped.reason for skipped in config.skipped))
        gauge = self.metrics.inspect_rules_skipped
        gauge.clear()
        for reason, number in self._rules_skipped.items():
            gauge.labels(reason=reason).set(number)
        directory = os.path.dirname(self.alerts_path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._eve = open(self.alerts_path, "a", buffering=1 << 16)  # noqa: SIM115 - see stop()
        try:
            if not self._given_readers:
                self._readers = self._open_readers()
            elif self.mode == "inline":
                self._inline = self._readers[0]  # type: ignore[assignment]
            for reader in self._readers:
                loop.add_reader(reader.fileno(), self._readable, reader)
        except BaseException:
            self._close_readers()
            self._eve.close()
            raise
        self._thread = threading.Thread(target=self._work, name="inspect", daemon=True)
        self._thread.start()
        self.log.info(
            "inspection started",
            extra={"mode": self.mode, "alerts": self.alerts_path, "queue": self.capacity},
        )

    def _open_readers(self) -> list[Reader]:
        from appliance.adapters.capture import NflogReader, NfqueueReader, PacketReader
        from appliance.compile.ruleset import INLINE_QUEUES, SAMPLE_GROUP

        if self.mode == "sample":
            return [NflogReader(SAMPLE_GROUP)]
        if self.mode == "inline":
            self._inline = NfqueueReader(*INLINE_QUEUES)
            return [self._inline]
        readers: list[Reader] = []
        try:
            for ifname in self.profile.inspect.interfaces:
                readers.append(PacketReader(ifname))
        except BaseException:
            for reader in readers:
                reader.close()
            raise
        return readers

    def _close_readers(self) -> None:
        self._unwatch()
        for reader in self._readers:
            with contextlib.suppress(Exception):
                reader.close()
        self._readers = []
        self._inline = None

    def _unwatch(self) -> None:
        for reader in self._readers:
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(reader.fileno())

    async def stop(self) -> None:
        self._unwatch()
        for task in list(self._tasks):
            task.cancel()
        if self._thread is not None:
            with contextlib.suppress(queue.Empty):
                while True:  # what is queued is not inspected (held packets are accepted)
                    item = self.queue.get_nowait()
                    if item is not None:
                        self._accept_all(item[1])
            self.queue.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10)
            self._thread = None
        self._close_readers()
        if self._eve is not None:
            with contextlib.suppress(OSError):
                self._eve.close()
            self._eve = None
        self._engine = None
        unsettle()  # the rule set, freed by the collector's next pass
        self.log.info("inspection stopped", extra={"mode": self.mode})

    # ---- capture, on the event loop ----------------------------------------------------

    def _readable(self, reader: Reader) -> None:
        packets: list[Packet] | list[InlinePacket]
        try:
            if reader is self._inline:
                packets = self._inline.read_inline(READ_BATCH)
            else:
                packets = reader.read(READ_BATCH)
        except OSError as exc:
            self._count_error("read")
            self.log.error("capture read failed", extra={"error": str(exc)})
            return
        self._kernel_drops()
        if not packets:
            return
        self.counts.received += len(packets)
        with self._queued_lock:
            room = max(0, self.capacity - self._queued)
            self._queued += min(room, len(packets))
        taken, rest = packets[:room], packets[room:]
        if taken:
            self.queue.put_nowait((getattr(reader, "ifname", ""), taken))
        dropped = len(rest)
        if dropped:
            self._accept_all(rest)
            self.counts.queue_drops += dropped
            self.metrics.inspect_dropped.inc(dropped)

    def _kernel_drops(self) -> None:
        now = self._clock()
        if now - self._last_drop_poll >= DROP_POLL:
            self._last_drop_poll = now
            for reader in self._readers:
                poll = getattr(reader, "poll_drops", None)
                if poll is not None:
                    poll()
        total = sum(reader.kernel_drops for reader in self._readers)
        if total > self.counts.kernel_drops:
            self.metrics.inspect_dropped.inc(total - self.counts.kernel_drops)
            self.counts.kernel_drops = total

    def _accept_all(self, packets: list[Packet] | list[InlinePacket]) -> None:
        """Release held packets without inspection (inline mode; a no-op otherwise)."""
        inline = self._inline
        if inline is None:
            return
        for packet in packets:
            if len(packet) == 5:
                inline.verdict(packet[3], packet[4], True)  # type: ignore[misc]

    def _count_error(self, reason: str) -> None:
        self.counts.errors[reason] = self.counts.errors.get(reason, 0) + 1

    # ---- the engine thread -------------------------------------------------------------

    def _work(self) -> None:
        engine = self._engine
        assert engine is not None and self._loop is not None
        from appliance.inspect.eve import eve_line

        host = socket.gethostname()
        get = self.queue.get
        decode_errors = engine.stats.errors
        exported: dict[str, int] = {}  # decoder errors already in the metric
        while True:
            item = get()
            if item is None:
                return
            iface, batch = item
            process = engine.process  # (the compiled fast path's own once it is loaded)
            lines: list[str] = []
            blocked: list[str] = []
            by_sid: dict[int, int] = {}
            inline = self._inline
            for packet in batch:
                accept = True
                try:
                    for alert in process(packet[0], packet[1], packet[2]):
                        alert.in_iface = iface
                        lines.append(eve_line(alert, host))
                        by_sid[alert.sid] = by_sid.get(alert.sid, 0) + 1
                        if alert.action == "blocked":
                            blocked.append(str(ipaddress.ip_address(alert.layer.src)))
                            accept = False
                except Exception:  # the thread must not die on one packet
                    self._count_error("engine")
                    self.log.exception("inspection of a packet failed")
                if inline is not None and len(packet) == 5:
                    inline.verdict(packet[3], packet[4], accept)  # type: ignore[misc]
                    if not accept:
                        self.counts.dropped_inline += 1
            with self._queued_lock:  # (queued until inspected: the status adds up at any time)
                self._queued -= len(batch)
                self.counts.inspected += len(batch)
            self.metrics.inspect_packets.inc(len(batch))
            if exported != decode_errors:
                for reason, number in list(decode_errors.items()):
                    if number != exported.get(reason, 0):
                        metric = self.metrics.inspect_decode_errors.labels(reason=reason)
                        metric.inc(number - exported.get(reason, 0))
                        exported[reason] = number
            if blocked:
                self._loop.call_soon_threadsafe(self._block_all, blocked)
            if lines:
                self.counts.alerts += len(lines)
                for sid, number in by_sid.items():
                    self.metrics.alerts.labels(signature_id=str(sid)).inc(number)
                try:
                    self._reopen_if_rotated()
                    self._eve.write("\n".join(lines) + "\n")
                    self._eve.flush()
                except (OSError, ValueError) as exc:
                    self._count_error("eve_write")
                    self.log.error("cannot write alerts", extra={"error": str(exc)})

    def _reopen_if_rotated(self) -> None:
        """A rotated alert file (renamed or removed, as logrotate does before its HUP) is
        closed and the path opened afresh, so alerts never go to the old file."""
        try:
            current = os.stat(self.alerts_path)
            opened = os.fstat(self._eve.fileno())
            if (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
                return
        except FileNotFoundError:
            pass
        old, self._eve = self._eve, open(self.alerts_path, "a", buffering=1 << 16)  # noqa: SIM115
        with contextlib.suppress(OSError):
            old.close()
        self.counts.reopened += 1
        self.log.info("alert file reopened", extra={"alerts": self.alerts_path})

    # ---- blocks, on the event loop -----------------------------------------------------

    def _block_all(self, sources: list[str]) -> None:
        now = self._clock()
        if len(self._blocked) > 4096:
            self._blocked = {s: t for s, t in self._blocked.items() if t > now}
        for source in sources:
            if self._blocked.get(source, 0.0) > now:
                continue  # blocked already (or being blocked)
            self._blocked[source] = now + self.block_timeout
            task = asyncio.get_running_loop().create_task(self._block(source))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _block(self, source: str) -> None:
        try:
            await self._block_source(source)
        except Exception as exc:
            self._blocked.pop(source, None)  # a later alert tries again
            self.counts.block_errors += 1
            self.log.error("automatic block failed", extra={"source": source, "error": str(exc)})
            return
        self.counts.blocks += 1
        self.log.warning("source blocked", extra={"source": source, "timeout": self.block_timeout})

    # ---- status ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        counts = self.counts
        with self._queued_lock:  # (read together: received = inspected + queued + dropped)
            queued, inspected = self._queued, counts.inspected
        return {
            "mode": self.mode,
            "running": True,
            "alerts_file": self.alerts_path,
            "alerts_file_reopened": counts.reopened,
            "queue": {"capacity": self.capacity, "queued": queued},
            "received": counts.received,
            "inspected": inspected,
            "dropped": counts.queue_drops + counts.kernel_drops,
            "kernel_drops": counts.kernel_drops,
            "alerts": counts.alerts,
            "blocks": counts.blocks,
            "packets_dropped_inline": counts.dropped_inline,
            "block_errors": counts.block_errors,
            "errors": dict(counts.errors),
            "decode_errors": dict(self._engine.stats.errors) if self._engine else {},
            "rules": {
                "loaded": self._rules_loaded,
                "skipped": sum(self._rules_skipped.values()),
                "skipped_by_reason": dict(self._rules_skipped),
            },
            "blocked_now": sum(1 for t in self._blocked.values() if t > self._clock()),
        }
