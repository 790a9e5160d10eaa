"""Where a TLS flow turns encrypted: its records followed until the first application data.

Suricata's default handling of encrypted TLS (``encryption-handling: track-only``) stops
inspecting a flow's payload once an application data record is seen in either direction:
what follows is ciphertext, in which a rule's content would only match by chance. Rules on
the handshake's buffers (``tls.sni``, ``ja3.hash``, the certificate's) and on the packet
headers still apply. ``[inspect].encryption_handling = "full"`` keeps inspecting it all.

A direction's records are followed from its first payload once the flow is TLS, in order,
by their headers alone (type, version, length), and only while the direction's rules read
the payload. Following ends without effect (the payload stays inspected) at anything that
cannot be followed: a header that is not TLS, a segment out of order, ``RECORDS_MAX`` bytes
without application data. Application data from the client before any handshake record of
the server (0-RTT early data) does not count, as Suricata does not count it before the
server's hello.
"""

from __future__ import annotations

from typing import Any

from appliance.inspect.decode import Layer

RECORDS_MAX = 64 * 1024  # bytes of a direction followed at most
MAX_FLOWS = 8192  # flows followed at once (the oldest go first: their payload stays inspected)
_MOD = 1 << 32
_HANDSHAKE, _APPLICATION_DATA = 22, 23
_RECORD_TYPES = frozenset((20, 21, 22, 23, 24))  # cipher spec, alert, handshake, data, heartbeat


class _Direction:
    __slots__ = ("carry", "next", "start", "until")

    def __init__(self, seq: int) -> None:
        # the sequence number of the direction's first byte followed (-1: its next payload)
        self.start = seq
        self.next = seq  # where the next record's header starts
        self.until = seq  # the end of the bytes seen in order
        self.carry = b""  # the first bytes of a header the last segment cut


class _Flow:
    __slots__ = ("changed", "directions", "encrypted", "flow", "server_handshake")

    def __init__(self, flow: Any) -> None:
        self.flow = flow
        # by to_server: a direction's state; None: not followed (not begun, or ended)
        self.directions: list[_Direction | None] = [None, None]
        self.encrypted = False
        self.server_handshake = False  # the server sent a handshake record
        self.changed = False  # turned encrypted since the full path last asked


# What the compiled fast path's walk (``_fastpath.tls_walk``) reads: the classes of a flow's
# and a direction's state (their slots) and RECORDS_MAX; it reads the segments the fast path
# takes as ``TlsRecords.walk`` does, and leaves a state of another shape to it
WALK_SHAPE = (_Flow, _Direction, RECORDS_MAX)


class TlsRecords:
    """The TLS flows whose records are followed, and those found encrypted."""

    def __init__(self) -> None:
        # by flow key, the oldest first: the flows followed or found encrypted (the fast path
        # looks here first)
        self.followed: dict[bytes, _Flow] = {}

    def _state(self, flow: Any) -> _Flow | None:
        state = self.followed.get(flow.key)
        if state is None or state.flow is not flow:
            return None
        return state

    def encrypted(self, flow: Any) -> bool:
        """Whether the flow's payload is no longer inspected."""
        state = self._state(flow)
        return state is not None and state.encrypted

    def following(self, flow: Any, to_server: bool) -> bool:
        """Whether the direction's records are followed (its segments are to be read here)."""
        state = self._state(flow)
        return state is not None and not state.encrypted and state.directions[to_server] is not None

    def begin(self, flow: Any, seq: int, payload: bytes) -> None:
        """A client's first TLS payload (``payload``, at ``seq``): the flow's records are
        followed, the client's from there (this payload's read here), the server's from its
        next payload."""
        flows = self.followed
        flows.pop(flow.key, None)
        state = flows[flow.key] = _Flow(flow)
        state.directions = [_Direction(-1), _Direction(seq)]
        if len(flows) > MAX_FLOWS:
            del flows[next(iter(flows))]
        self._read_state(state, True, seq, payload, 0, len(payload))

    def segment(self, flow: Any, to_server: bool, layer: Layer) -> bool:
        """The full path's: read the record headers of a TLS flow's segment. True when the
        flow turned encrypted, here or as the fast path read the segment (``walk``)."""
        state = self._state(flow)
        if state is None:
            return False
        if not state.encrypted:
            payload = layer.payload
            self._read_state(state, to_server, layer.seq, payload, 0, len(payload))
        if state.changed:
            state.changed = False
            return True
        return False

    def changed(self, flow: Any) -> bool:
        """Whether the flow turned encrypted since the last ``segment`` or ``changed`` (which
        forgets it)."""
        state = self._state(flow)
        if state is None or not state.changed:
            return False
        state.changed = False
        return True

    def walk(self, flow: Any, to_server: bool, data: bytes, ip: int, start: int, end: int) -> bool:
        """The fast paths': read the record headers of a TLS flow's data segment
        ``data[start:end]`` (its IPv4 header at ``ip``) in place. True when the flow turned
        encrypted: the segment is inspected with the groups it has, then the flow regrouped
        (the engine's ``_tls_taken`` if a fast path takes it, else after ``segment`` says so
        again on the full path)."""
        seq = int.from_bytes(data[ip + 4 * 6 : ip + 4 * 7], "big")
        return self._read(flow, to_server, seq, data, start, end)

    def _read(
        self, flow: Any, to_server: bool, seq: int, data: bytes, start: int, end: int
    ) -> bool:
        state = self._state(flow)
        if state is None or state.encrypted:
            return False
        return self._read_state(state, to_server, seq, data, start, end)

    def _read_state(
        self, state: _Flow, to_server: bool, seq: int, data: bytes, start: int, end: int
    ) -> bool:
        direction = state.directions[to_server]
        if direction is None:
            return False
        size = end - start
        if direction.start < 0:  # the server's first payload
            direction.start = direction.next = direction.until = seq
        rel = (seq - direction.until) % _MOD
        if rel >= _MOD // 2 and not 0 < (seq + size - direction.until) % _MOD < _MOD // 2:
            return False  # all of it seen before: a retransmission
        if rel != 0:
            return self._end(state, to_server)  # out of order, or overlapping what was seen
        carry = direction.carry
        if carry:  # a header the last segment cut: read with this segment's bytes
            data, start, end = carry + data[start:end], 0, size + len(carry)
        base = (seq - len(carry)) % _MOD  # the sequence number of data[start]
        pos = start + (direction.next - base) % _MOD  # where the next header is in data
        while pos + 5 <= end:
            kind = data[pos]
            if kind not in _RECORD_TYPES or data[pos + 1] != 3:
                return self._end(state, to_server)
            if kind == _APPLICATION_DATA and (state.server_handshake or not to_server):
                state.encrypted = state.changed = True
                state.directions = [None, None]
                return True
            if kind == _HANDSHAKE and not to_server:
                state.server_handshake = True
            pos += 5 + (data[pos + 3] << 8 | data[pos + 4])
        direction.until = (seq + size) % _MOD
        direction.next = (base + pos - start) % _MOD
        direction.carry = bytes(data[pos:end]) if pos < end else b""
        if (direction.until - direction.start) % _MOD >= RECORDS_MAX:
            return self._end(state, to_server)
        return False

    def _end(self, state: _Flow, to_server: bool) -> bool:
        state.directions[to_server] = None
        if state.directions == [None, None]:  # nothing more to follow: forgotten
            self.followed.pop(state.flow.key, None)
        return False
