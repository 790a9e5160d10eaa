"""Tests on numbers a rule reads outside any payload: the IP and TCP header (``ttl``, ``tos``,
``id``, ``fragbits``, ``fragoffset``, ``ipopts``, ``tcp.mss``, ``window``, ``seq``, ``ack``)
and what the TLS handshake told (``tls.version``, ``ssl_version``, ``ssl_state``,
``tls.cert_chain_len``).

A test reads its number from a buffer the engine fills only when a loaded rule needs it:
``ip:packet`` (the packet from its IP header on) or one of the ``tls:`` buffers
(``tlsinfo``). The sticky buffers ``ipv4.hdr``, ``ipv6.hdr``, ``tcp.hdr``, ``udp.hdr``,
``icmpv4.hdr`` and ``icmpv6.hdr`` (8 bytes: type, code, checksum and the rest of the header;
an ICMPv4 timestamp's 20, a router advertisement's 8 and its addresses, as Suricata counts
them) are the headers' bytes, cut from ``ip:packet`` (``header_buffers``). Pure: nothing here
raises on short or odd bytes; a field a packet does not have (``tos`` of IPv6, ``window`` of
UDP) makes the test fail, as in Suricata.
"""

from __future__ import annotations

from dataclasses import dataclass

IP_PACKET = "ip:packet"  # the packet from its IP header on (at most PACKET_BYTES)
PACKET_BYTES = 2048
TLS_VERSION = "tls:version"  # the direction's TLS version: 2 bytes, big-endian
TLS_STATE = "tls:state"  # the handshake messages this segment completed: 1 byte of bits
TLS_CHAIN = "tls:chain_len"  # the certificates the server sent: 4 bytes, big-endian

# ssl_state's names and their bits in TLS_STATE
SSL_STATES = {
    "client_hello": 0x01,
    "server_hello": 0x02,
    "client_keyx": 0x04,
    "server_keyx": 0x08,
    "unknown": 0x10,
}
# ssl_version's names
SSL_VERSIONS = {
    "sslv2": 0x0002,
    "sslv3": 0x0300,
    "tls1.0": 0x0301,
    "tls1.1": 0x0302,
    "tls1.2": 0x0303,
    "tls1.3": 0x0304,
}
# ipopts' names and the IPv4 option types they stand for
IP_OPTIONS = {
    "eol": 0,
    "nop": 1,
    "rr": 7,
    "ts": 68,
    "sec": 130,
    "lsrr": 131,
    "esec": 133,
    "satid": 136,
    "ssrr": 137,
    "any": -1,
}
# fragbits' letters: the bits of the IPv4 flags byte
FRAG_BITS = {"R": 0x80, "D": 0x40, "M": 0x20}

# sticky buffers of a packet's headers (each present only on a packet that has that header)
HEADER_BUFFERS = frozenset(
    {"ipv4.hdr", "ipv6.hdr", "tcp.hdr", "udp.hdr", "icmpv4.hdr", "icmpv6.hdr"}
)

# The header fields the new-flow path tests on a segment itself (an IPv4 header without
# options, then TCP), by the code the compiled core knows each by
SEGMENT_FIELDS = {
    "ttl": 0,
    "tos": 1,
    "id": 2,
    "fragbits": 3,
    "fragoffset": 4,
    "seq": 5,
    "ack": 6,
    "window": 7,
}
_SEGMENT_NAMES = {code: name for name, code in SEGMENT_FIELDS.items()}
_MODIFIERS = {"": 0, "*": 1, "+": 2, "!": 3}
# A header test compiled for it: (field's code, 0 range or 1 flags, low or bits, high or
# modifier's code, negated)
SegmentTest = tuple[int, int, int, int, bool]

_IPV6_EXT = (0, 43, 60, 135, 139, 140)
_MAX_EXT = 8
_MAX_OPTIONS = 40  # an IPv4 header holds at most 40 bytes of options (so do TCP's)


@dataclass(frozen=True)
class FieldTest:
    """``field`` read from the buffer, then: ``range`` (``low <= n <= high``, negated),
    ``flags`` (``bits`` with the ``modifier`` of ``fragbits``), ``option`` (an IPv4 option
    of type ``low``, -1: any), ``set`` (``values`` in, ``others`` out) or ``state`` (one of
    ``bits`` if any are named, none of ``others``)."""

    field: str
    kind: str = "range"
    low: int = 0
    high: int = 0
    negated: bool = False
    bits: int = 0
    modifier: str = ""
    values: frozenset[int] = frozenset()
    others: frozenset[int] = frozenset()

    def holds(self, data: bytes) -> bool:
        kind = self.kind
        if kind == "option":
            return has_ip_option(data, self.low)
        number = read_field(self.field, data)
        if number is None:
            return False
        if kind == "range":
            return (self.low <= number <= self.high) != self.negated
        if kind == "flags":
            bits, modifier = self.bits, self.modifier
            if modifier == "*":
                return bool(number & bits)
            if modifier == "+":
                return number & bits == bits
            if modifier == "!":
                return number & bits != bits
            return number == bits
        if kind == "set":
            if self.values and number not in self.values:
                return False
            return number not in self.others
        # state
        if self.bits and not number & self.bits:
            return False
        return not any(number & bit for bit in self.others)


def parse_uint(text: str, maximum: int) -> tuple[int, int, bool]:
    """Suricata's integer forms: ``N``, ``!N``, ``<N``, ``<=N``, ``>N``, ``>=N``, ``N-M`` and
    ``N<>M`` (both ends excluded) -> an inclusive (low, high, negated). ValueError if bad."""
    text = "".join(text.split())
    negated = text.startswith("!")
    if negated:
        text = text[1:]
    try:
        if "<>" in text or ("-" in text[1:] and not text.startswith(("<", ">"))):
            sep = "<>" if "<>" in text else "-"
            first, second = text.split(sep, 1)
            low, high = _number(first) + 1, _number(second) - 1
        elif text.startswith("<="):
            low, high = 0, _number(text[2:])
        elif text.startswith(">="):
            low, high = _number(text[2:]), maximum
        elif text.startswith("<"):
            low, high = 0, _number(text[1:]) - 1
        elif text.startswith(">"):
            low, high = _number(text[1:]) + 1, maximum
        else:
            low = high = _number(text.lstrip("="))
    except ValueError:
        raise ValueError(f"expected N, <N, >N, <=N, >=N, N-M or N<>M, got {text!r}") from None
    if low > high or low < 0 or high > maximum:
        raise ValueError(f"{text!r} is empty or out of range 0..{maximum}")
    return low, high, negated


def _number(text: str) -> int:
    if text[:1] in ("x", "X"):
        text = "0" + text  # tos:x08
    return int(text, 0)


def read_field(name: str, data: bytes) -> int | None:
    """A header field of the packet ``data`` (from its IP header on), or a ``tls:`` buffer's
    number; None when the packet has no such field."""
    if name == "number":
        return int.from_bytes(data, "big") if data else None
    if len(data) < 20:
        return None
    version = data[0] >> 4
    if name == "ttl":
        if version == 4:
            return data[8]
        return data[7] if version == 6 and len(data) >= 40 else None
    if version == 4:
        if name == "tos":
            return data[1]
        if name == "id":
            return data[4] << 8 | data[5]
        if name == "fragbits":
            return data[6] & 0xE0
        if name == "fragoffset":
            return (data[6] << 8 | data[7]) & 0x1FFF
    elif version == 6 and name == "fragoffset":
        return _ipv6_fragment_offset(data)
    if name in ("seq", "ack", "window", "tcp.mss"):
        at = tcp_offset(data)
        if at < 0 or at + 20 > len(data):
            return None
        if name == "seq":
            return int.from_bytes(data[at + 4 : at + 8], "big")
        if name == "ack":
            return int.from_bytes(data[at + 8 : at + 12], "big")
        if name == "window":
            return data[at + 14] << 8 | data[at + 15]
        return _tcp_mss(data, at)
    return None


def tcp_offset(data: bytes) -> int:
    """Where the TCP header of the packet begins (-1: not TCP, or not the first fragment)."""
    proto, at = transport_offset(data)
    return at if proto == 6 else -1


def transport_offset(data: bytes) -> tuple[int, int]:
    """The transport protocol of the packet and where its header begins (offset -1: none
    found, or not the first fragment)."""
    version = data[0] >> 4 if len(data) >= 20 else 0
    if version == 4:
        if (data[6] << 8 | data[7]) & 0x1FFF:
            return data[9], -1
        return data[9], (data[0] & 0x0F) << 2
    if version != 6 or len(data) < 40:
        return -1, -1
    nxt, pos = data[6], 40
    for _ in range(_MAX_EXT):
        if nxt not in _IPV6_EXT and nxt != 44 and nxt != 51:
            return nxt, pos
        if pos + 8 > len(data):
            return nxt, -1
        if nxt == 44:  # fragment: only the first carries the transport header
            if (data[pos + 2] << 8 | data[pos + 3]) & 0xFFF8:
                return data[pos], -1
            nxt, pos = data[pos], pos + 8
        elif nxt == 51:  # authentication header
            nxt, pos = data[pos], pos + (data[pos + 1] + 2) * 4
        else:
            nxt, pos = data[pos], pos + (data[pos + 1] + 1) * 8
    return nxt, -1


def header_buffers(data: bytes) -> dict[str, bytes]:
    """The header sticky buffers of the packet ``data`` (from its IP header on): those of
    the headers it has, each as it was sent (options included)."""
    out: dict[str, bytes] = {}
    if len(data) < 20:
        return out
    version = data[0] >> 4
    if version == 4:
        out["ipv4.hdr"] = data[: (data[0] & 0x0F) << 2]
    elif version == 6 and len(data) >= 40:
        out["ipv6.hdr"] = data[:40]
    proto, at = transport_offset(data)
    if at < 0:
        return out
    if proto == 6 and at + 20 <= len(data):
        out["tcp.hdr"] = data[at : at + ((data[at + 12] >> 4) << 2)]
    elif proto == 17 and at + 8 <= len(data):
        out["udp.hdr"] = data[at : at + 8]
    elif proto == 1 and version == 4 and at + 8 <= len(data):
        out["icmpv4.hdr"] = data[at : at + icmpv4_header_length(data, at)]
    elif proto == 58 and version == 6 and at + 8 <= len(data):
        out["icmpv6.hdr"] = data[at : at + 8]
    return out


def icmpv4_header_length(data: bytes, at: int) -> int:
    """The ICMPv4 header's length as Suricata counts it: 8 bytes; a timestamp or its reply
    20 (its three times); a router advertisement 8 and its addresses (when all are there)."""
    kind = data[at]
    size = 8
    if kind in (13, 14) and at + 20 <= len(data):
        size = 20
    elif kind == 9:
        size = 8 + data[at + 4] * data[at + 5] * 4
        if at + size > len(data):
            size = 8
    return size


def _ipv6_fragment_offset(data: bytes) -> int:
    nxt, pos = data[6], 40
    for _ in range(_MAX_EXT):
        if pos + 8 > len(data):
            return 0
        if nxt == 44:
            return (data[pos + 2] << 8 | data[pos + 3]) >> 3
        if nxt in _IPV6_EXT:
            nxt, pos = data[pos], pos + (data[pos + 1] + 1) * 8
        elif nxt == 51:
            nxt, pos = data[pos], pos + (data[pos + 1] + 2) * 4
        else:
            return 0
    return 0


def _tcp_mss(data: bytes, at: int) -> int | None:
    end = min(len(data), at + ((data[at + 12] >> 4) << 2))
    pos = at + 20
    for _ in range(_MAX_OPTIONS):
        if pos >= end:
            return None
        kind = data[pos]
        if kind == 0:
            return None
        if kind == 1:
            pos += 1
            continue
        if pos + 1 >= end or data[pos + 1] < 2:
            return None
        size = data[pos + 1]
        if kind == 2 and size == 4 and pos + 4 <= end:
            return data[pos + 2] << 8 | data[pos + 3]
        pos += size
    return None


def has_ip_option(data: bytes, kind: int) -> bool:
    """Whether an IPv4 packet carries an option of type ``kind`` (-1: any option)."""
    if len(data) < 20 or data[0] >> 4 != 4:
        return False
    end = min(len(data), (data[0] & 0x0F) << 2)
    pos = 20
    if kind < 0:
        return end > pos
    for _ in range(_MAX_OPTIONS):
        if pos >= end:
            return False
        option = data[pos]
        if option == kind:
            return True
        if option == 0:
            return False
        if option == 1:
            pos += 1
            continue
        if pos + 1 >= end or data[pos + 1] < 2:
            return False
        pos += data[pos + 1]
    return False


def segment_test(test: FieldTest) -> SegmentTest | None:
    """A header test as the new-flow path makes it of a segment (``segment_tests_hold``):
    a range or ``fragbits`` test of a field of ``SEGMENT_FIELDS``; None for any other."""
    code = SEGMENT_FIELDS.get(test.field)
    if code is None:
        return None
    if test.kind == "range":
        return (code, 0, test.low, test.high, test.negated)
    if test.kind == "flags" and test.modifier in _MODIFIERS:
        return (code, 1, test.bits, _MODIFIERS[test.modifier], False)
    return None


def segment_tests_hold(tests: tuple[SegmentTest, ...], data: bytes, ip: int) -> bool:
    """Whether every test holds of the segment at ``data[ip:]`` (no fragment), as
    ``FieldTest.holds``."""
    packet = data[ip:]
    for code, kind, low, high, negated in tests:
        number = read_field(_SEGMENT_NAMES[code], packet)
        if number is None:
            return False
        if kind == 0:
            if (low <= number <= high) == negated:
                return False
        elif high == 1:
            if not number & low:
                return False
        elif high == 2:
            if number & low != low:
                return False
        elif high == 3:
            if number & low == low:
                return False
        elif number != low:
            return False
    return True
