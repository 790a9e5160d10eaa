"""IPv4 and IPv6 fragment reassembly, bounded.

Fragments are kept by (family, source, destination, protocol, identification) until the
datagram is whole, then its payload is decoded as one packet. Overlapping fragments drop the
whole datagram and are counted (RFC 5722 for IPv6; the same for IPv4, so that no overlap can
hide content from the rules). Bounds: datagrams of at most 65,535 bytes, ``max_datagrams``
in reassembly at once (the oldest evicted), ``max_bytes`` held in all, ``timeout`` seconds
for a datagram to complete.

The reassembled packet has its first fragment's IP header, as Suricata builds it, for the
header keywords (``ttl``, ``id``, ``ipv4.hdr``, ...): IPv4's with the total length of the
datagram and the flags and fragment offset cleared (its checksum made again); IPv6's with
the fragment header taken out of the chain and the payload length of the datagram.
"""

from __future__ import annotations

import struct
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
        header = first_header(first, len(payload))
        if header:
            whole.raw = header + payload
            whole.ip_at = 0
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


_IPV6_EXT = (0, 43, 60, 51)  # the headers a fragment header may follow
_MAX_EXT = 8


def first_header(first: Layer, size: int) -> bytes:
    """The IP header of a datagram of ``size`` payload bytes reassembled from ``first``,
    its fragment at offset 0 (b"" when that fragment's bytes were not kept)."""
    raw = getattr(first, "raw", None)
    if raw is None:
        return b""
    at = first.ip_at
    if first.family == 4:
        hlen = (raw[at] & 0x0F) << 2
        header = bytearray(raw[at : at + hlen])
        if len(header) < 20 or hlen + size > 0xFFFF:
            return b""
        struct.pack_into("!H", header, 2, hlen + size)
        header[6:8] = b"\0\0"
        header[10:12] = b"\0\0"
        struct.pack_into("!H", header, 10, _checksum(header))
        return bytes(header)
    nxt_at, pos = at + 6, at + 40  # where the next-header byte pointing at pos is
    for _ in range(_MAX_EXT):
        if pos + 8 > len(raw):
            return b""
        nxt = raw[nxt_at]
        if nxt == 44:
            header = bytearray(raw[at:pos])
            if len(header) - 40 + size > 0xFFFF:
                return b""
            header[nxt_at - at] = raw[pos]  # the fragment header's next header
            struct.pack_into("!H", header, 4, len(header) - 40 + size)
            return bytes(header)
        if nxt not in _IPV6_EXT:
            return b""
        step = (raw[pos + 1] + 2) * 4 if nxt == 51 else (raw[pos + 1] + 1) * 8
        nxt_at, pos = pos, pos + step
    return b""


def _checksum(header: bytes | bytearray) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
