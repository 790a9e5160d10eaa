"""``asn1``: BER objects decoded from a place in a buffer and checked, as Suricata does.

The objects are read one after another from the offset (at most ``max_frames`` of them,
and as deep); reading stops at the first that is malformed or cut short (those before it
are checked, a cut one is not). A rule holds when some object, or an object inside one,
has a length above ``oversize_length``, is a BIT STRING whose unused-bits octet exceeds its
length in bits (``bitstring_overflow``), or a REAL of more than 256 bytes in decimal form
(``double_overflow``). Pure: nothing here touches the system.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_FRAMES = 30  # Suricata's default


@dataclass(frozen=True)
class Asn1Check:
    oversize_length: int | None = None
    bitstring_overflow: bool = False
    double_overflow: bool = False
    max_frames: int = MAX_FRAMES


class _Bad(Exception):
    """A malformed or cut object: reading stops."""


def parse_asn1(value: str) -> tuple[Asn1Check, int | None, bool]:
    """The check, its offset and whether the offset is relative (to the previous match).
    Raises ValueError with the message to show."""
    oversize: int | None = None
    bitstring = double = False
    frames = MAX_FRAMES
    offset: int | None = None
    relative = False
    for part in value.split(","):
        word, _, arg = part.strip().partition(" ")
        arg = arg.strip()
        if word in ("bitstring_overflow", "double_overflow") and not arg:
            bitstring = bitstring or word == "bitstring_overflow"
            double = double or word == "double_overflow"
            continue
        if word not in ("oversize_length", "absolute_offset", "relative_offset", "max_frames"):
            raise ValueError(f"asn1: unknown option {part.strip()!r}")
        try:
            number = int(arg)
        except ValueError:
            raise ValueError(f"asn1: {word} needs a number, not {arg!r}") from None
        if word == "relative_offset":
            if not -65535 <= number <= 65535 or offset is not None:
                raise ValueError("asn1: one offset, from -65535 to 65535")
            offset, relative = number, True
        elif not 0 <= number < (65536 if word != "oversize_length" else 2**32):
            raise ValueError(f"asn1: {word} {number} is out of range")
        elif word == "absolute_offset":
            if offset is not None:
                raise ValueError("asn1: one offset")
            offset = number
        elif word == "oversize_length":
            oversize = number
        else:
            frames = number
    if oversize is None and not bitstring and not double:
        raise ValueError("asn1: nothing to check")
    return Asn1Check(oversize, bitstring, double, frames), offset, relative


def asn1_holds(check: Asn1Check, data: bytes, offset: int) -> bool:
    """Whether a decoded object at ``offset`` of ``data`` fails one of the checks."""
    if not 0 <= offset < len(data) or offset >= 65536:
        return False
    pos, end = offset, len(data)
    found = 0
    held = False
    while pos < end:
        if found >= check.max_frames:
            return False  # too many objects: Suricata decodes none
        try:
            pos, hit = _object(check, data, pos, end, check.max_frames)
        except _Bad:
            break  # the objects before it are checked
        held = held or hit
        found += 1
    return held


def _object(check: Asn1Check, data: bytes, pos: int, end: int, depth: int) -> tuple[int, bool]:
    """One object from ``pos``: where it ends, and whether it or one inside it fails a
    check."""
    if depth <= 0 or pos >= end:
        raise _Bad
    first = data[pos]
    pos += 1
    universal = first >> 6 == 0
    constructed = bool(first & 0x20)
    tag = first & 0x1F
    if tag == 0x1F:  # the tag number in base 128 after it
        tag = 0
        for _ in range(4):
            if pos >= end:
                raise _Bad
            octet = data[pos]
            pos += 1
            tag = tag << 7 | octet & 0x7F
            if not octet & 0x80:
                break
        else:
            raise _Bad
        universal = False  # high tag numbers are none of the types checked
    if pos >= end:
        raise _Bad
    octet = data[pos]
    pos += 1
    if octet == 0x80:  # indefinite: constructed objects up to the end-of-contents octets
        if not constructed:
            raise _Bad
        hit = False
        while True:
            if pos + 2 <= end and data[pos] == 0 and data[pos + 1] == 0:
                pos += 2
                break
            pos, inner = _object(check, data, pos, end, depth - 1)
            hit = hit or inner
        return pos, hit
    if octet & 0x80:
        count = octet & 0x7F
        if count == 0x7F or count > 8 or pos + count > end:
            raise _Bad
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    else:
        length = octet
    if pos + length > end:
        raise _Bad  # cut short: not decoded
    content_end = pos + length
    if check.oversize_length is not None and length > check.oversize_length:
        hit = True
    elif universal and not constructed and tag == 3 and check.bitstring_overflow:
        if length == 0:
            raise _Bad
        hit = data[pos] > length * 8
    elif universal and not constructed and tag == 9 and check.double_overflow:
        hit = length > 256 and data[pos] & 0xC0 == 0
    else:
        hit = False
    if constructed:
        inner_pos = pos
        while inner_pos < content_end:
            inner_pos, inner = _object(check, data, inner_pos, content_end, depth - 1)
            hit = hit or inner
    return content_end, hit
