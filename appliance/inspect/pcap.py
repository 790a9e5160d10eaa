"""Capture file readers: classic pcap and pcapng, as generators over a binary file object.

Each yields ``(timestamp, data, linktype)``. Pure: no sockets, no global state. A file that
ends in the middle of a record stops the iteration quietly (captures cut off by a full disk
or a killed tcpdump are common); a file that is not a capture at all raises ``CaptureError``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

from appliance.errors import ApplianceError

Record = tuple[float, bytes, int]

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PCAPNG_SHB = 0x0A0D0D0A
_MAX_RECORD = 256 * 1024  # larger than any snaplen in use; bigger means a corrupt file
_MAX_BLOCK = 16 * 1024 * 1024


class CaptureError(ApplianceError):
    """The file is not a capture this reader understands (bad input: exit 2)."""

    exit_code = 2


def read_capture(handle: BinaryIO, name: str = "<capture>") -> Iterator[Record]:
    """Packets of a pcap or pcapng file, whichever the magic number says."""
    head = handle.read(4)
    if head in _PCAP_MAGICS:
        return _read_pcap(handle, head, name)
    if len(head) == 4 and struct.unpack("<I", head)[0] == _PCAPNG_SHB:
        return _read_pcapng(handle, head, name)
    if not head:
        raise CaptureError(f"{name}: empty file, not a capture")
    raise CaptureError(f"{name}: not a pcap or pcapng file (magic {head.hex()})")


def _read_pcap(handle: BinaryIO, magic: bytes, name: str) -> Iterator[Record]:
    order, scale = _PCAP_MAGICS[magic]
    rest = handle.read(20)
    if len(rest) < 20:
        raise CaptureError(f"{name}: truncated pcap file header")
    _major, _minor, _zone, _sigfigs, _snaplen, network = struct.unpack(order + "HHiIII", rest)
    linktype = network & 0x0FFFFFFF
    header = struct.Struct(order + "IIII")
    read = handle.read
    unpack = header.unpack
    while True:
        raw = read(16)
        if len(raw) < 16:
            return
        sec, frac, caplen, _origlen = unpack(raw)
        if caplen > _MAX_RECORD:
            raise CaptureError(f"{name}: corrupt pcap record (captured length {caplen})")
        data = read(caplen)
        if len(data) < caplen:
            return
        yield sec + frac * scale, data, linktype


def _read_pcapng(handle: BinaryIO, first: bytes, name: str) -> Iterator[Record]:
    order = "<"
    interfaces: list[tuple[int, float]] = []  # (linktype, seconds per timestamp unit)
    pending = first
    while True:
        head = pending + handle.read(8 - len(pending))
        pending = b""
        if len(head) < 8:
            return
        btype = struct.unpack(order + "I", head[:4])[0]
        if btype == _PCAPNG_SHB:
            bom = handle.read(4)
            if len(bom) < 4:
                return
            if bom == b"\x4d\x3c\x2b\x1a":
                order = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                order = ">"
            else:
                raise CaptureError(f"{name}: bad pcapng byte-order magic {bom.hex()}")
            length = struct.unpack(order + "I", head[4:8])[0]
            if length < 28 or length > _MAX_BLOCK or length % 4:
                raise CaptureError(f"{name}: corrupt pcapng section header (length {length})")
            body = handle.read(length - 12)
            if len(body) < length - 12:
                return
            interfaces = []
            continue
        length = struct.unpack(order + "I", head[4:8])[0]
        if length < 12 or length > _MAX_BLOCK or length % 4:
            raise CaptureError(f"{name}: corrupt pcapng block (type {btype}, length {length})")
        body = handle.read(length - 8)
        if len(body) < length - 8:
            return
        body = body[:-4]  # the trailing copy of the length
        if btype == 1:  # interface description
            if len(body) < 8:
                raise CaptureError(f"{name}: corrupt pcapng interface block")
            linktype = struct.unpack(order + "H", body[:2])[0]
            interfaces.append((linktype, _if_tsresol(body[8:], order)))
        elif btype in (6, 2):  # enhanced packet, obsolete packet
            if len(body) < 20:
                continue
            if btype == 6:
                ifid, high, low, caplen, _orig = struct.unpack(order + "IIIII", body[:20])
            else:
                ifid, _drops, high, low, caplen, _orig = struct.unpack(order + "HHIIII", body[:20])
            if ifid >= len(interfaces) or caplen > len(body) - 20:
                continue
            linktype, unit = interfaces[ifid]
            yield ((high << 32) | low) * unit, body[20 : 20 + caplen], linktype
        elif btype == 3:  # simple packet: interface 0, no timestamp
            if not interfaces or len(body) < 4:
                continue
            orig = struct.unpack(order + "I", body[:4])[0]
            linktype, _unit = interfaces[0]
            yield 0.0, body[4 : 4 + min(orig, len(body) - 4)], linktype
        # every other block type (name resolution, statistics, custom) is skipped


def _if_tsresol(options: bytes, order: str) -> float:
    """Seconds per timestamp unit from an interface block's options (default microseconds)."""
    pos = 0
    while pos + 4 <= len(options):
        code, size = struct.unpack(order + "HH", options[pos : pos + 4])
        if code == 0:
            break
        value = options[pos + 4 : pos + 4 + size]
        if code == 9 and size >= 1:
            raw = value[0]
            return 2.0 ** -(raw & 0x7F) if raw & 0x80 else 10.0**-raw
        pos += 4 + ((size + 3) & ~3)
    return 1e-6


def write_pcap(handle: BinaryIO, packets: Iterator[Record] | list[Record]) -> None:
    """Write a classic little-endian microsecond pcap (tests and benchmarks use it)."""
    linktype: int | None = None
    for ts, data, lt in packets:
        if linktype is None:
            linktype = lt
            handle.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, lt))
        elif lt != linktype:
            raise ValueError("a pcap file holds one link type; use pcapng for several")
        sec = int(ts)
        usec = round((ts - sec) * 1e6)
        if usec >= 1_000_000:
            sec, usec = sec + 1, usec - 1_000_000
        handle.write(struct.pack("<IIII", sec, usec, len(data), len(data)))
        handle.write(data)
    if linktype is None:
        handle.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, LINKTYPE_ETHERNET))
