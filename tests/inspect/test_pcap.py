"""pcap and pcapng readers."""

from __future__ import annotations

import io
import struct

import pytest
from scapy.all import IP, TCP, Ether, raw  # type: ignore[attr-defined]

from appliance.inspect.decode import decode_packet
from appliance.inspect.pcap import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    CaptureError,
    read_capture,
    write_pcap,
)

FRAME = raw(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, flags="S"))
IP_PACKET = FRAME[14:]


def read(data: bytes) -> list[tuple[float, bytes, int]]:
    return list(read_capture(io.BytesIO(data)))


def pcap(
    records: list[tuple[int, int, bytes]],
    magic: int = 0xA1B2C3D4,
    order: str = "<",
    linktype: int = 1,
) -> bytes:
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for sec, frac, data in records:
        out += struct.pack(order + "IIII", sec, frac, len(data), len(data)) + data
    return out


def test_round_trip() -> None:
    buf = io.BytesIO()
    write_pcap(buf, [(1.5, FRAME, 1), (2.25, FRAME[:20], 1)])
    assert read(buf.getvalue()) == [(1.5, FRAME, 1), (2.25, FRAME[:20], 1)]


def test_big_endian_and_nanosecond() -> None:
    assert read(pcap([(10, 500_000, FRAME)], order=">")) == [(10.5, FRAME, 1)]
    records = read(pcap([(10, 250_000_000, FRAME)], magic=0xA1B23C4D))
    assert records == [(10.25, FRAME, 1)]


def test_truncated_last_record_ends_quietly() -> None:
    data = pcap([(1, 0, FRAME), (2, 0, FRAME)])
    assert len(read(data[:-5])) == 1
    assert len(read(data[: -len(FRAME) - 10])) == 1


@pytest.mark.parametrize(
    "data",
    [b"", b"GIF89a....", b"\xd4\xc3\xb2\xa1\x02\x00"],
)
def test_not_a_capture(data: bytes) -> None:
    with pytest.raises(CaptureError):
        read(data)


def test_corrupt_record_length() -> None:
    data = pcap([]) + struct.pack("<IIII", 0, 0, 10_000_000, 10_000_000)
    with pytest.raises(CaptureError, match="corrupt"):
        read(data)


def block(btype: int, body: bytes, order: str = "<") -> bytes:
    body += b"\x00" * (-len(body) % 4)
    length = len(body) + 12
    return struct.pack(order + "II", btype, length) + body + struct.pack(order + "I", length)


def shb(order: str = "<") -> bytes:
    return block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1), order)


def idb(linktype: int, tsresol: int | None = None, order: str = "<") -> bytes:
    options = b""
    if tsresol is not None:
        options = struct.pack(order + "HH", 9, 1) + bytes([tsresol, 0, 0, 0]) + b"\x00" * 4
    return block(1, struct.pack(order + "HHI", linktype, 0, 65535) + options, order)


def epb(ifid: int, ts: int, data: bytes, order: str = "<") -> bytes:
    head = struct.pack(order + "IIIII", ifid, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data))
    return block(6, head + data, order)


def test_pcapng_interfaces_and_resolution() -> None:
    data = (
        shb()
        + idb(LINKTYPE_ETHERNET)
        + idb(LINKTYPE_RAW, tsresol=9)
        + block(4, b"name resolution, skipped")
        + epb(0, 1_500_000, FRAME)
        + epb(1, 2_250_000_000, IP_PACKET)
        + block(3, struct.pack("<I", len(FRAME)) + FRAME)
    )
    records = read(data)
    assert records == [
        (1.5, FRAME, LINKTYPE_ETHERNET),
        (2.25, IP_PACKET, LINKTYPE_RAW),
        (0.0, FRAME, LINKTYPE_ETHERNET),
    ]


def test_pcapng_big_endian_and_a_second_section() -> None:
    data = shb(">") + idb(1, order=">") + epb(0, 3_000_000, FRAME, ">")
    data += shb() + idb(LINKTYPE_RAW) + epb(0, 1_000_000, IP_PACKET)
    assert read(data) == [(3.0, FRAME, 1), (1.0, IP_PACKET, LINKTYPE_RAW)]


def test_pcapng_truncated_and_unknown_interface() -> None:
    data = shb() + idb(1) + epb(5, 0, FRAME) + epb(0, 0, FRAME)
    assert len(read(data)) == 1  # the packet of interface 5 has no interface: skipped
    assert len(read(data[:-7])) == 0


@pytest.mark.parametrize(
    ("linktype", "frame"),
    [
        (LINKTYPE_RAW, IP_PACKET),
        (LINKTYPE_LINUX_SLL, b"\x00\x00\x00\x01\x00\x06" + bytes(8) + b"\x08\x00" + IP_PACKET),
        (LINKTYPE_LINUX_SLL2, b"\x08\x00\x00\x00" + bytes(16) + IP_PACKET),
        (LINKTYPE_NULL, struct.pack("<I", 2) + IP_PACKET),
        (LINKTYPE_NULL, struct.pack(">I", 2) + IP_PACKET),
    ],
)
def test_link_types(linktype: int, frame: bytes) -> None:
    layer = decode_packet(frame, linktype, {})
    assert layer is not None
    assert (layer.src, layer.dst, layer.sport, layer.dport) == (
        bytes([10, 0, 0, 1]),
        bytes([10, 0, 0, 2]),
        1,
        2,
    )
