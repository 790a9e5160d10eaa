"""TCP stream reassembly per flow direction, in order, bounded.

Each direction keeps the first ``depth`` bytes of its stream (stream offset 0 is the byte
after the SYN's sequence number, or the first payload byte seen when the SYN was missed).
A segment that arrives in order is appended; one that arrives ahead of the stream is held
until the gap is filled. Bytes once taken into the stream never change: a retransmission
that carries different bytes for a range already held is counted
(``stream.retransmit_conflict``) and its bytes are ignored. Sequence numbers are compared
modulo 2**32, so a stream whose sequence numbers wrap around reassembles like any other.

Bounds: per direction, ``depth`` bytes in order plus at most ``depth`` bytes (and
``MAX_PENDING_SEGMENTS`` segments) held out of order; in all flows together, ``max_pending``
bytes held out of order: past it, the directions that have held theirs the longest lose them
first (``stream.ooo_evicted``, one per segment); ``max_bytes`` held in order: past it, the
directions that grew least recently are ended (their bytes freed, ``stream.memory``). A
segment that cannot be held is dropped and counted (``stream.ooo_dropped``); bytes past the
depth are not kept (``stream.depth_reached``, once per direction).

A direction ends with its FIN (``Reassembler.finished``) once nothing of it can come any
more: no bytes held out of order, the FIN right after the bytes held (or the depth reached).
Its bytes are freed then, as the bound on all directions frees them: a closed connection
does not hold its streams until its flow times out. A segment that follows is inspected on
its own, as one past the depth is.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Set as AbstractSet

from appliance.inspect.decode import TCP_SYN, Errors, Layer, count
from appliance.inspect.flow import Flow
from appliance.inspect.match import ANCHOR_LIMIT, Group, in_place, rule_matches
from appliance.inspect.rules import PKT, Signature

DEFAULT_DEPTH = 64 * 1024
DEFAULT_MAX_PENDING = 4 << 20
DEFAULT_MAX_BYTES = 64 << 20
MAX_PENDING_SEGMENTS = 256
_MOD = 1 << 32
_HALF = 1 << 31


class StreamDirection:
    """One direction of a TCP stream: ``data`` holds its first bytes, in order."""

    __slots__ = (
        "base",
        "clear",
        "data",
        "full",
        "pending",
        "pending_bytes",
        "reported",
        "scanned",
        "waiting",
    )

    def __init__(self, base: int) -> None:
        self.base = base  # sequence number of stream offset 0 (-1: ended, memory bound)
        self.data = bytearray()
        self.pending: dict[int, bytes] = {}  # stream offset -> bytes, ahead of ``data``
        self.pending_bytes = 0
        self.full = False  # the depth was reached
        self.reported: set[int] = set()  # sids that alerted on this stream already
        self.scanned = 0  # bytes of ``data`` the prefilters went over
        # rules whose prefilter pattern is in the stream, the rest of them not (yet)
        self.waiting: list[Signature] = []
        # the group none of whose anchored rules has its fast pattern in its place at the
        # stream's start (known once the stream holds ANCHOR_LIMIT bytes: see head_clear)
        self.clear: Group | None = None


class Reassembler:
    """The streams of all flows share one bound on the bytes held out of order and one on
    the bytes held in order. (Slots: the compiled fast path reads and writes ``held``,
    ``max_bytes`` and ``_streams`` in place.)"""

    __slots__ = (
        "_holders",
        "_streams",
        "depth",
        "held",
        "max_bytes",
        "max_pending",
        "pending_bytes",
    )

    def __init__(
        self,
        depth: int = DEFAULT_DEPTH,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.depth = depth
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self.held = 0  # in-order bytes held in all directions
        # directions holding in-order bytes, the least recently grown first
        self._streams: OrderedDict[int, StreamDirection] = OrderedDict()
        self.pending_bytes = 0  # out-of-order bytes held in all directions
        # directions holding out-of-order bytes, the longest-holding first
        self._holders: OrderedDict[int, StreamDirection] = OrderedDict()

    def open(self, seq: int, syn: bool) -> StreamDirection:
        """A direction whose first segment (``syn``: its SYN) carries sequence ``seq``."""
        return StreamDirection((seq + 1) % _MOD if syn else seq)

    def add(self, stream: StreamDirection, seq: int, payload: bytes, errors: Errors) -> bool:
        """Take a segment into the stream; whether the in-order data grew."""
        if stream.base < 0:
            return False  # ended by the memory bound
        rel = (seq - stream.base) % _MOD
        if rel >= _HALF:
            rel -= _MOD  # before the stream's start (an old retransmission)
        end = rel + len(payload)
        if end <= 0 or not payload:
            return False
        if rel < 0:
            payload = payload[-rel:]
            rel = 0
        depth = self.depth
        if end > depth:
            if not stream.full:
                stream.full = True
                count(errors, "stream.depth_reached")
            if rel >= depth:
                return False
            payload = payload[: depth - rel]
        data = stream.data
        have = len(data)
        if rel > have:
            self._hold(stream, rel, payload, errors)
            return False
        if not self._append(stream, rel, payload, errors):
            return False
        if stream.pending:
            self._drain(stream, errors)
        self.grew(stream, have, errors)
        return bool(stream.data)

    def grew(self, stream: StreamDirection, have: int, errors: Errors) -> None:
        """Account for a direction's in-order data grown from ``have`` bytes: it is the most
        recently grown, and the bound on what all hold may end the least recent ones."""
        self.held += len(stream.data) - have
        streams = self._streams
        key = id(stream)
        if key in streams:
            streams.move_to_end(key)
        else:
            streams[key] = stream
        while self.held > self.max_bytes and streams:
            _, oldest = streams.popitem(last=False)
            count(errors, "stream.memory")
            self.held -= len(oldest.data)
            _end(oldest)
            self.release(oldest)

    def finished(self, stream: StreamDirection | int | None, end: int) -> None:
        """A FIN of a direction, ``end`` its sequence number (after the segment's payload):
        the direction ends (its bytes freed) if it holds no bytes out of order and the FIN
        follows the bytes it holds, or it reached its depth."""
        if type(stream) is not StreamDirection or stream.base < 0 or stream.pending:
            return
        if not stream.full and (end - stream.base) % _MOD != len(stream.data):
            return  # a gap before the FIN: the bytes to fill it may come yet
        self.close(stream)
        _end(stream)

    def close(self, stream: StreamDirection) -> None:
        """Forget a direction and all it holds (its connection ended)."""
        self.release(stream)
        if self._streams.pop(id(stream), None) is not None:
            self.held -= len(stream.data)

    def release(self, stream: StreamDirection) -> None:
        """Forget what a direction holds out of order (its flow ended)."""
        if stream.pending:
            self.pending_bytes -= stream.pending_bytes
            stream.pending.clear()
            stream.pending_bytes = 0
            self._holders.pop(id(stream), None)

    def _append(self, stream: StreamDirection, rel: int, payload: bytes, errors: Errors) -> bool:
        data = stream.data
        have = len(data)
        overlap = min(have - rel, len(payload))
        if overlap > 0:
            if data[rel : rel + overlap] != payload[:overlap]:
                count(errors, "stream.retransmit_conflict")
            payload = payload[overlap:]
        if not payload:
            return False
        data += payload
        return True

    def _hold(self, stream: StreamDirection, rel: int, payload: bytes, errors: Errors) -> None:
        pending = stream.pending
        size = len(payload)
        for offset, held in pending.items():
            lo, hi = max(offset, rel), min(offset + len(held), rel + size)
            if lo < hi and held[lo - offset : hi - offset] != payload[lo - rel : hi - rel]:
                count(errors, "stream.retransmit_conflict")
                return  # the bytes held first stay
        previous = pending.get(rel)
        if previous is not None and len(previous) >= size:
            return  # a plain retransmission of a held segment
        if len(pending) >= MAX_PENDING_SEGMENTS or size > self.max_pending:
            count(errors, "stream.ooo_dropped")
            return
        holders = self._holders
        while self.pending_bytes + size > self.max_pending and holders:
            _, oldest = holders.popitem(last=False)
            for _ in oldest.pending:
                count(errors, "stream.ooo_evicted")
            self.pending_bytes -= oldest.pending_bytes
            oldest.pending.clear()
            oldest.pending_bytes = 0
        if previous is not None:
            stream.pending_bytes -= len(previous)
            self.pending_bytes -= len(previous)
        pending[rel] = payload
        stream.pending_bytes += size
        self.pending_bytes += size
        if id(stream) not in holders:
            holders[id(stream)] = stream

    def _drain(self, stream: StreamDirection, errors: Errors) -> None:
        pending = stream.pending
        data = stream.data
        for offset in sorted(pending):
            if offset > len(data):
                break
            held = pending.pop(offset)
            stream.pending_bytes -= len(held)
            self.pending_bytes -= len(held)
            self._append(stream, offset, held, errors)
        if not pending:
            self._holders.pop(id(stream), None)


def _end(stream: StreamDirection) -> None:
    """A direction ended (by the bound on all directions' bytes, or its FIN): its bytes
    freed, and no more taken."""
    stream.data = bytearray()
    stream.full = True
    stream.base = -1


def stream_hits(
    reassembler: Reassembler,
    flow: Flow,
    to_server: bool,
    layer: Layer,
    group: Group,
    buffers: dict[str, bytes],
    hits: list[Signature],
    errors: Errors,
) -> None:
    """Feed a TCP segment of a direction whose rules read the payload to its stream, and add
    to ``hits`` the rules that match the reassembled stream (``pkt`` as the stream's bytes
    from its start, as Suricata inspects an established flow's stream) but not this packet
    alone. A rule alerts on a stream once; the rules the packet matched count as reported.

    A direction is held as the sequence number of its stream's start (an int in
    ``flow.streams``) until its first payload: a flow that carries none never costs a
    ``StreamDirection``."""
    streams = flow.streams
    if streams is None:
        streams = flow.streams = [None, None]
    stream: StreamDirection | int | None = streams[to_server]
    if layer.flags & TCP_SYN:
        if isinstance(stream, StreamDirection):
            reassembler.close(stream)  # a new connection on the same addresses and ports
        streams[to_server] = (layer.seq + 1) % _MOD
        return
    if stream is None:
        stream = streams[to_server] = layer.seq  # the SYN was not seen
    payload = layer.payload
    if not payload:
        return
    if type(stream) is int:
        stream = streams[to_server] = StreamDirection(stream)
    assert isinstance(stream, StreamDirection)
    if stream.full and not stream.pending:
        return
    reported = stream.reported
    for sig in hits:
        reported.add(sig.sid)
    data = stream.data
    have = len(data)
    if (
        not stream.pending
        and (layer.seq - stream.base) % _MOD == have
        and have + len(payload) <= reassembler.depth
        and stream.base >= 0
    ):  # the next bytes in order, within the depth: Reassembler.add's common case
        data += payload
        reassembler.grew(stream, have, errors)
        if not stream.data:
            return  # ended by the memory bound
    elif not reassembler.add(stream, layer.seq, payload, errors):
        return
    data = stream.data
    if not flow.established or len(data) <= len(payload):
        return
    # The stream is scanned once: each time from where the last scan ended (less a
    # pattern's length, for a pattern across the two); a rule whose pattern was found but
    # not the rest of it is checked again as the stream grows.
    scanned = stream.scanned
    stream.scanned = len(data)
    view: dict[str, bytes] | None = None
    found: list[Signature] = []
    reach = group.anchored_reach
    if group.anchored and (reach < 0 or scanned < reach):
        # a rule whose fast pattern is not in its place at the stream's start never matches
        # it: only the others are checked over the whole stream
        head = bytes(data[:ANCHOR_LIMIT])
        for sig in placed(group, head, reported):
            if view is None:
                view = dict(buffers)
                view[PKT] = bytes(data)
            if rule_matches(sig, layer, True, view):
                found.append(sig)
    waiting = stream.waiting
    checked: list[Signature] = []
    # the segment taken whole, in order, after what was scanned: where the packet's own
    # scan found nothing, only what spans its start is left to scan
    fresh = len(data) - scanned == len(payload) and data.endswith(payload)
    for prefilter, width in group.payload_scans:
        start = max(0, scanned - width + 1)
        if fresh and not prefilter.transforms and prefilter.none_in(payload):
            candidates = prefilter.candidates(bytes(data[start : scanned + width - 1]))
        else:
            candidates = prefilter.candidates(bytes(data[start:]))
        if candidates:
            checked.extend(candidates)
    checked.extend(waiting)
    for sig in checked:
        if sig.sid in reported or sig in found:
            continue
        if view is None:
            view = dict(buffers)
            view[PKT] = bytes(data)
        if rule_matches(sig, layer, True, view):
            found.append(sig)
        elif sig not in waiting:
            waiting.append(sig)
    for sig in found:
        reported.add(sig.sid)
        hits.append(sig)
        if sig in waiting:
            waiting.remove(sig)


def placed(group: Group, text: bytes, skip: AbstractSet[int] = frozenset()) -> list[Signature]:
    """The anchored rules of a group (but those of a sid in ``skip``) whose fast pattern is
    in its place in ``text`` (a payload, or a stream's first bytes): no other may match."""
    index = group.anchor_index
    if index is not None:
        return index.placed(text, skip)
    return in_place(group.anchored_fast, text, skip)


def head_clear(group: Group, stream: StreamDirection, payload: bytes) -> bool:
    """Whether ``stream_hits``'s check of a group's anchored rules over the stream's first
    bytes finds none once the in-order ``payload`` is appended: their reach is behind what
    was scanned, or no fast pattern of a rule not reported yet is in its place there."""
    reach = group.anchored_reach
    if stream.clear is group or (reach >= 0 and stream.scanned >= reach):
        return True
    data = stream.data
    have = len(data)
    if have >= ANCHOR_LIMIT:
        head = bytes(data[:ANCHOR_LIMIT])
    else:
        head = bytes(data) + payload[: ANCHOR_LIMIT - have]
    for _ in placed(group, head, stream.reported):
        return False
    if len(head) >= ANCHOR_LIMIT:
        stream.clear = group  # the head stays, the reported rules only grow
    return True


def count_segment(seqs: list[int], to_server: bool, seq: int, length: int, syn: int) -> None:
    """A side's count after one of its segments (``length`` payload bytes, ``syn`` its SYN
    flag): ``seqs`` is a flow's ``sizes``, each side's initial sequence number and the next
    one it sends (-1: not seen yet). The fast paths count the segments they take with it
    (the compiled one with its C form), as ``StreamSizes.update`` counts the full path's."""
    side = 0 if to_server else 2
    syn = 1 if syn else 0
    if syn or seqs[side] < 0:
        seqs[side] = seq if syn else (seq - 1) % _MOD
        seqs[side + 1] = (seqs[side] + 1) % _MOD
    end = (seq + length + syn) % _MOD
    if 0 < (end - seqs[side + 1]) % _MOD < _HALF:
        seqs[side + 1] = end


class StreamSizes:
    """``stream_size``: the bytes each side of a TCP flow has sent, as Suricata counts them
    (the next sequence number less the initial one: the SYN counts one). A side's initial
    sequence number is its SYN's, or one before its first segment seen; a side not seen yet
    counts its SYN once the handshake is complete. The count of the other side is as of its
    last segment the engine saw (the fast paths count those they take: ``count_segment``).
    Followed only when a rule reads it, on the flow (``Flow.sizes``): as long as the flow
    table keeps the flow."""

    def update(self, flow: Flow, to_server: bool, layer: Layer) -> bytes:
        """Take a segment; the sizes as the ``tcp.stream_size`` buffer (server, client)."""
        seqs = flow.sizes
        if seqs is None:
            seqs = flow.sizes = [-1, -1, -1, -1]
        count_segment(seqs, to_server, layer.seq, len(layer.payload), layer.flags & TCP_SYN)
        # a side not seen yet: its SYN, if the handshake is complete
        unseen = 1 if flow.established else 0
        server = (seqs[3] - seqs[2]) % _MOD if seqs[2] >= 0 else unseen
        client = (seqs[1] - seqs[0]) % _MOD if seqs[0] >= 0 else unseen
        return server.to_bytes(4, "big") + client.to_bytes(4, "big")
