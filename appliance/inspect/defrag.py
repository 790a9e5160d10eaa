"""IPv4 and IPv6 fragment reassembly, bounded.

Fragments are kept by (family, source, destination, protocol, identification) until the
datagram is whole, then its payload is decoded as one packet. Overlapping fragments drop the
whole datagram and are counted (RFC 5722 for IPv6; the same for IPv4, so that no overlap can
hide content from the rules). Bounds: datagrams of at most 65,535 bytes, ``max_datagrams``
in reassembly at once (the oldest evicted), ``max_bytes`` held in all, ``timeout`` seconds
for a datagram to complete.
"""

from __future__ import annotations

from collections import OrderedDict

from appliance.inspect.decode import Errors, Layer, count, decode_transport

MAX_DATAGRAM = 65535


class _Datagram:
    __slots__ = ("first", "parts", "size", "started", "total")

    def __init__(self, started: float) -> None:
        self.started = started
        self.parts: list[tuple[int, bytes]] = []  # (offset, bytes), sorted by offset
        self.total = -1  # the datagram's length, once its last fragment arrived
        self.size = 0  # bytes held
        self.first: Layer | None = None  # the fragment at offset 0


class Defragmenter:
    def __init__(
        self, max_datagrams: int = 1024, max_bytes: int = 4 << 20, timeout: float = 30.0
    ) -> None:
        self.max_datagrams = max_datagrams
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.held = 0  # bytes in all datagrams
        self._datagrams: OrderedDict[tuple[object, ...], _Datagram] = OrderedDict()

    def __len__(self) -> int:
        return len(self._datagrams)

    def add(self, ts: float, layer: Layer, errors: Errors) -> Layer | None:
        """The reassembled packet once ``layer`` completes its datagram, else None."""
        assert layer.frag is not None
        ident, offset, more, data = layer.frag
        key = (layer.family, layer.src, layer.dst, layer.proto, ident)
        self._expire(ts, errors)
        datagram = self._datagrams.get(key)
        if datagram is None:
            datagram = self._datagrams[key] = _Datagram(ts)
            while len(self._datagrams) > self.max_datagrams:
                self._drop(next(iter(self._datagrams)), errors, "frag.evicted")
        end = offset + len(data)
        if end > MAX_DATAGRAM or (more and len(data) % 8) or (not data and more):
            self._drop(key, errors, "frag.bad_fragment")
            return None
        if not more:
            if datagram.total >= 0 and datagram.total != end:
                self._drop(key, errors, "frag.overlap")
                return None
            datagram.total = end
        for start, part in datagram.parts:
            if (start < end and offset < start + len(part)) or (
                datagram.total >= 0 and start + len(part) > datagram.total
            ):
                self._drop(key, errors, "frag.overlap")
                return None
        datagram.parts.append((offset, data))
        datagram.parts.sort(key=lambda p: p[0])
        datagram.size += len(data)
        self.held += len(data)
        if offset == 0:
            datagram.first = layer
        while self.held > self.max_bytes and self._datagrams:
            oldest = next(iter(self._datagrams))
            self._drop(oldest, errors, "frag.memory")
            if oldest == key:
                return None
        if datagram.total < 0 or datagram.first is None or datagram.size != datagram.total:
            return None
        payload = b"".join(part for _, part in datagram.parts)
        first = datagram.first
        self._drop(key, errors, "")
        whole = Layer(first.family, first.src, first.dst, first.proto, first.depth)
        whole.tunnel = first.tunnel
        count(errors, "frag.reassembled")
        return decode_transport(whole, payload, errors)

    def _expire(self, ts: float, errors: Errors) -> None:
        while self._datagrams:
            key, oldest = next(iter(self._datagrams.items()))
            if ts - oldest.started < self.timeout:
                return
            self._drop(key, errors, "frag.timeout")

    def _drop(self, key: tuple[object, ...], errors: Errors, reason: str) -> None:
        datagram = self._datagrams.pop(key, None)
        if datagram is not None:
            self.held -= datagram.size
        if reason:
            count(errors, reason)
