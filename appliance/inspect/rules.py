"""Signature files: the Suricata rule subset of the product contract, parsed into ``Signature``.

``ACTION PROTO SRC SPORT -> DST DPORT (OPTIONS)``; a line ending in ``\\`` continues on the
next; ``#`` starts a comment line. Every error is a ``RuleFileError`` naming ``FILE:LINE``
(the first line of the rule).
"""

from __future__ import annotations

import datetime
import ipaddress
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import Literal, cast, get_args

from appliance.errors import RuleFileError, UsageError
from appliance.inspect import transforms
from appliance.inspect.asn1 import Asn1Check, asn1_holds, parse_asn1
from appliance.inspect.classification import CLASSTYPES, DEFAULT_PRIORITY
from appliance.inspect.fields import (
    FRAG_BITS,
    HEADER_BUFFERS,
    IP_OPTIONS,
    IP_PACKET,
    SSL_STATES,
    SSL_VERSIONS,
    TLS_CHAIN,
    TLS_STATE,
    TLS_VERSION,
    FieldTest,
    parse_uint,
)
from appliance.inspect.flowint import Flowint, parse_flowint
from appliance.inspect.flowint import order as flowint_order
from appliance.inspect.flowint import uses as _uses
from appliance.inspect.pcrecompat import compile_pcre
from appliance.inspect.transforms import Transform
from appliance.inspect.xbits import Xbit, parse_xbits

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address

Action = Literal["alert", "drop", "pass"]
ACTIONS: tuple[Action, ...] = get_args(Action)
AddrKind = Literal["any", "net", "list", "not"]
PortKind = Literal["any", "range", "list", "not"]
ThresholdType = Literal["limit", "threshold", "both", "detection_filter"]
Track = Literal["by_src", "by_dst"]
RuleProto = Literal["ip", "tcp", "udp", "icmp", "icmpv6", "sctp", "dns", "tls", "http", "gtp"]
PROTOCOLS: tuple[str, ...] = get_args(RuleProto)
# The buffers the engine fills, their application protocol, and the older names and content
# modifiers that select them (Suricata's legacy forms)
BUFFER_APP = {
    "dns.query": "dns",
    "tls.sni": "tls",
    "http.host": "http",
    "http.uri": "http",
    "http.raw_uri": "http",
    "http.method": "http",
    "http.user_agent": "http",
    "http.header": "http",
    "http.header_names": "http",
    "http.cookie": "http",
    "http.content_type": "http",
    "http.content_len": "http",
    "http.referer": "http",
    "http.accept": "http",
    "http.accept_enc": "http",
    "http.accept_lang": "http",
    "http.connection": "http",
    "http.location": "http",
    "http.server": "http",
    "http.request_body": "http",
    "http.response_body": "http",
    "http.stat_code": "http",
    "http.stat_msg": "http",
    "file.data": "http",
    "http.request_line": "http",
    "http.response_line": "http",
    "http.protocol": "http",
    "http.start": "http",
    "http.header.raw": "http",
    # the TLS handshake (appliance/inspect/tlsinfo.py): the server's certificates, JA3
    "tls.cert_subject": "tls",
    "tls.cert_issuer": "tls",
    "tls.cert_serial": "tls",
    "tls.cert_fingerprint": "tls",
    "tls.cert_validity": "tls",
    "tls.cert_notbefore": "tls",
    "tls.cert_notafter": "tls",
    "tls.certs": "tls",
    "ja3.hash": "tls",
    "ja3.string": "tls",
    "ja3s.hash": "tls",
    "ja3s.string": "tls",
    # what tls.version / ssl_version, ssl_state and tls.cert_chain_len read (fields.py)
    TLS_VERSION: "tls",
    TLS_STATE: "tls",
    TLS_CHAIN: "tls",
}
BUFFERS = tuple(BUFFER_APP)
# buffers of one message holding several values (tls.certs: each certificate); a rule
# matches when its items all hold in one of them
MULTI_BUFFERS = frozenset({"tls.certs"})
# the TCP stream sizes of a flow (stream_size), filled only when a rule reads them
STREAM_SIZE = "tcp.stream_size"
# older names of sticky buffers
LEGACY_STICKY = {
    "dns_query": "dns.query",
    "tls_sni": "tls.sni",
    "file_data": "file.data",
    "http_header_names": "http.header_names",
    "http_content_type": "http.content_type",
    "http_content_len": "http.content_len",
    "http_referer": "http.referer",
    "http_accept": "http.accept",
    "http_accept_enc": "http.accept_enc",
    "http_accept_lang": "http.accept_lang",
    "http_connection": "http.connection",
    "http_request_line": "http.request_line",
    "http_response_line": "http.response_line",
    "http_start": "http.start",
    "http_protocol": "http.protocol",
    "tls_cert_subject": "tls.cert_subject",
    "tls_cert_issuer": "tls.cert_issuer",
    "tls_cert_serial": "tls.cert_serial",
    "tls_cert_fingerprint": "tls.cert_fingerprint",
    "ja3_hash": "ja3.hash",
    "ja3_string": "ja3.string",
}
STICKY_ALIASES = {
    "http.uri.raw": "http.raw_uri",
    "dns.query.name": "dns.query",
    "http.request_body": "http.request_body",
    "http.response_body": "http.response_body",
    **LEGACY_STICKY,
}
# content modifiers (the older form: ``content:"x"; http_uri;``)
CONTENT_MODIFIERS = {
    "http_uri": "http.uri",
    "http_raw_uri": "http.raw_uri",
    "http_host": "http.host",
    "http_method": "http.method",
    "http_user_agent": "http.user_agent",
    "http_header": "http.header",
    "http_cookie": "http.cookie",
    "http_client_body": "http.request_body",
    "http_server_body": "http.response_body",
    "http_stat_code": "http.stat_code",
    "http_stat_msg": "http.stat_msg",
    "http_raw_header": "http.header.raw",
}
# the SSH banner's buffers (read from a payload that starts one), and their older names
SSH_STICKY = {
    "ssh.proto": "ssh.proto",
    "ssh.software": "ssh.software",
    "ssh_proto": "ssh.proto",
    "ssh_software": "ssh.software",
}
FLOWBIT_COMMANDS = ("set", "unset", "toggle", "isset", "isnotset")
IP_PROTO_NAMES = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51}
IP_PROTO_NAMES.update({"ipv6-icmp": 58, "icmpv6": 58, "sctp": 132, "ipip": 4, "ipv6": 41})
# application protocols the engine does not detect, run as TCP rules on their ports
APP_PORTS = {
    "ssh": "22",
    "ftp": "21",
    "smtp": "[25,465,587]",
    "imap": "[143,993]",
    "pop3": "[110,995]",
    "smb": "[139,445]",
    "rdp": "3389",
    "ftp-data": "20",
}

# tcp-pkt and tcp-stream (Suricata 7: packets only, the stream only) run as tcp rules, which
# see both
PROTO_ALIASES = {"tcp-pkt": "tcp", "tcp-stream": "tcp"}

# Options that change nothing the engine decides on
# options that change nothing of what a rule matches here: gid, target, rawbytes; tag (the
# packets a match tags for a packet log, which the engine does not keep)
IGNORED_OPTIONS = frozenset({"gid", "target", "rawbytes", "tag"})
PROTO_APP = {"dns": "dns", "tls": "tls", "http": "http", "gtp": "gtp"}
PKT = "pkt"

# Suricata's default variables besides HOME_NET / EXTERNAL_NET
ADDRESS_ALIASES = (
    "HTTP_SERVERS",
    "SMTP_SERVERS",
    "SQL_SERVERS",
    "DNS_SERVERS",
    "TELNET_SERVERS",
    "DC_SERVERS",
)
PORT_VARS: dict[str, str] = {
    "HTTP_PORTS": "[80,8000,8008,8080,8888]",
    "SSH_PORTS": "22",
    "FTP_PORTS": "21",
    "DNS_PORTS": "53",
    "GTP_PORTS": "2152",
    "ORACLE_PORTS": "1521",
    "SHELLCODE_PORTS": "!80",
    "FILE_DATA_PORTS": "[80,8000,8008,8080,8888,110,143]",
}

# Where $HOME_NET falls back to when the profile names no networks at all
DEFAULT_HOME_NET = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")

_FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40}
_FLAG_BITS.update({"C": 0x80, "1": 0x80, "2": 0x40})


# ---- header expressions -------------------------------------------------------------------


@dataclass(frozen=True)
class AddrExpr:
    """``any``, networks, ``[a, b]`` lists and ``!x`` negations, evaluated as Suricata does."""

    kind: AddrKind
    net: IPNet | None = None
    items: tuple[AddrExpr, ...] = ()

    def match(self, addr: IPAddr) -> bool:
        kind = self.kind
        if kind == "any":
            return True
        if kind == "net":
            assert self.net is not None
            return addr.version == self.net.version and addr in self.net
        if kind == "not":
            return not self.items[0].match(addr)
        positives = [i for i in self.items if i.kind != "not"]
        if positives and not any(i.match(addr) for i in positives):
            return False
        return not any(i.items[0].match(addr) for i in self.items if i.kind == "not")

    @property
    def is_any(self) -> bool:
        return self.kind == "any"


@dataclass(frozen=True)
class PortExpr:
    kind: PortKind
    low: int = 0
    high: int = 65535
    items: tuple[PortExpr, ...] = ()

    def match(self, port: int) -> bool:
        kind = self.kind
        if kind == "any":
            return True
        if kind == "range":
            return self.low <= port <= self.high
        if kind == "not":
            return not self.items[0].match(port)
        positives = [i for i in self.items if i.kind != "not"]
        if positives and not any(i.match(port) for i in positives):
            return False
        return not any(i.items[0].match(port) for i in self.items if i.kind == "not")

    @property
    def is_any(self) -> bool:
        return self.kind == "any"


ANY_ADDR = AddrExpr("any")
ANY_PORT = PortExpr("any")


# ---- options ------------------------------------------------------------------------------


# the number as text a byte_test of 0 bytes reads: white space, a sign, digits of its base
_LEADING_NUMBER = {
    10: re.compile(rb"[ \t\n\v\f\r]*([+-]?)([0-9]+)"),
    16: re.compile(rb"[ \t\n\v\f\r]*([+-]?)(?:0[xX](?=[0-9a-fA-F]))?([0-9a-fA-F]+)"),
    8: re.compile(rb"[ \t\n\v\f\r]*([+-]?)([0-7]+)"),
}


@dataclass(frozen=True)
class ByteOp:
    """``byte_test`` (compare a number read from the buffer), ``byte_jump`` (move the
    position by one), ``byte_extract`` (keep it in a rule variable, ``name``) or
    ``byte_math`` (keep ``number oper value`` in the variable ``name``)."""

    kind: Literal["test", "jump", "extract", "math", "asn1"]
    count: int
    offset: int
    relative: bool = False
    big_endian: bool = True
    base: int = 0  # 0: binary; 8, 10, 16: the number as text
    op: str = "="
    value: int = 0
    negated: bool = False
    bitmask: int = 0
    multiplier: int = 1
    post_offset: int = 0
    from_beginning: bool = False
    align: bool = False
    name: str = ""  # byte_extract: the variable
    align_to: int = 0  # byte_extract: the value rounded up to a multiple of this (2, 4)
    oper: str = ""  # byte_math: + - * / << >>
    math_mask: int = 0  # byte_math: its bitmask, applied to the result
    asn1: Asn1Check | None = None  # asn1: the BER objects from ``offset`` checked

    def computed(self, number: int) -> int | None:
        """byte_math's result: ``number oper value`` (64-bit, as Suricata), then the bitmask
        (applied after the operation, its trailing zeros shifted out); None: a division
        by zero."""
        value, oper = self.value, self.oper
        if oper == "+":
            number += value
        elif oper == "-":
            number -= value
        elif oper == "*":
            number *= value
        elif oper == "/":
            if not value:
                return None
            number //= value
        elif oper == "<<":
            number <<= min(value, 64)
        elif oper == ">>":
            number >>= min(value, 64)
        number &= (1 << 64) - 1
        if self.math_mask:
            number &= self.math_mask
            mask = self.math_mask
            while number and mask and not mask & 1:
                number >>= 1
                mask >>= 1
        return number

    def read(self, data: bytes, prev_end: int) -> tuple[int, int] | None:
        """(the number, where it ends) or None when the buffer is too short or not a number."""
        pos = (prev_end if self.relative else 0) + self.offset
        if pos < 0 or pos + self.count > len(data):
            return None
        raw = data[pos : pos + self.count]
        if not self.count:
            # byte_test of 0 bytes as text (Suricata's strtoull over the buffer): the number
            # that starts there, however many digits it has; none, or above 64 bits: None
            found = _LEADING_NUMBER[self.base].match(data, pos)
            if found is None:
                return None
            number = int(found[2], self.base)
            if number >> 64:
                return None
            if found[1] == b"-":
                number = -number & ((1 << 64) - 1)
            raw = data[pos : found.end()]
        elif self.base:
            try:
                number = int(raw.decode("ascii"), self.base)
            except ValueError:
                return None
        else:
            number = int.from_bytes(raw, "big" if self.big_endian else "little")
        if self.bitmask:
            number &= self.bitmask
            mask = self.bitmask
            while mask and not mask & 1:
                number >>= 1
                mask >>= 1
        return number, pos + len(raw)

    def extracted(self, number: int) -> int:
        """A byte_extract's value: multiplied, then aligned."""
        number *= self.multiplier
        if self.align_to and number % self.align_to:
            number += self.align_to - number % self.align_to
        return number

    def holds(self, number: int) -> bool:
        op, value = self.op, self.value
        if op == "<":
            result = number < value
        elif op == ">":
            result = number > value
        elif op == "<=":
            result = number <= value
        elif op == ">=":
            result = number >= value
        elif op == "&":
            result = bool(number & value)
        elif op == "^":
            result = bool(number ^ value)
        else:
            result = number == value
        return result != self.negated


@dataclass(frozen=True)
class Content:
    """One item of a buffer's chain: a ``content`` (``pattern``), a ``pcre`` (``regex``) or
    an ``isdataat`` (``data_at``). ``distance``/``within`` (or a relative ``pcre`` /
    ``isdataat``) place it after the end of the previous item's match, as Suricata does."""

    pattern: bytes
    buffer: str = PKT
    nocase: bool = False
    negated: bool = False
    offset: int = 0
    depth: int | None = None
    distance: int | None = None
    within: int | None = None
    fast: bool = False  # fast_pattern: the rule's prefilter pattern
    regex: re.Pattern[bytes] | None = field(default=None, compare=False)
    data_at: int | None = None  # isdataat
    size: tuple[int, int] | None = None  # dsize, bsize, urilen: the buffer's length range
    byte_op: ByteOp | None = None  # byte_test, byte_jump, byte_extract
    # fields given by a byte_extract variable: (field, variable); the field holds a
    # placeholder that makes the item match at least where it could (0, or no limit)
    refs: tuple[tuple[str, str], ...] = ()
    # stream_size: (sides, operator, bytes); sides 1 server, 2 client, 3 both, 4 either
    stream: tuple[int, str, int] | None = None
    # tls_cert_notbefore / notafter: the inclusive range of seconds since the epoch that the
    # buffer's time (8 bytes, big-endian, signed) must fall in
    date: tuple[int, int] | None = None
    ends: bool = False  # endswith: the match ends where the buffer does
    # the buffer's transformations (dotprefix, to_lowercase, ...): what the item sees
    transforms: tuple[Transform, ...] = ()
    # base64_decode: (bytes, offset) of the buffer decoded (from the previous item's end
    # when relative: then ``distance`` is 0); the items after it in the chain (base64_data,
    # ``decoded``) match the decoded bytes
    decode: tuple[int, int] | None = None
    decoded: bool = False
    # a header field (ttl, window, ...) or a TLS handshake fact (tls.version, ...) and
    # the test it must pass
    head: FieldTest | None = None
    # plain: a content at a fixed place (no relative placement, pcre, isdataat, variable),
    # checked on its own; literal: a positive ``content`` (a prefilter pattern may be taken
    # from it). Both follow from the fields above.
    plain: bool = field(default=False, init=False, compare=False, repr=False)
    literal: bool = field(default=False, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # what is searched for: lower case for nocase (then in the lower-cased data)
        object.__setattr__(self, "_needle", self.pattern.lower() if self.nocase else self.pattern)
        multi = self.buffer in MULTI_BUFFERS
        object.__setattr__(self, "_multi", multi)
        literal = (
            self.regex is None
            and self.data_at is None
            and self.size is None
            and self.byte_op is None
            and self.stream is None
            and self.date is None
            and self.head is None
            and not self.transforms  # a transformed buffer: no prefilter pattern of it
            and self.decode is None
            and not self.decoded  # base64_data: what the buffer decodes to
        )
        object.__setattr__(self, "literal", literal and not self.negated)
        # the items of a buffer of several values hold in one of them together: a chain
        # (a header or handshake field test is checked on its own as well: no chain)
        plain = (
            (literal or self.head is not None)
            and not self.relative
            and not self.refs
            and not multi
            and not self.ends
        )
        object.__setattr__(self, "plain", plain)

    @property
    def relative(self) -> bool:
        return self.distance is not None or self.within is not None

    def matches(self, data: bytes) -> bool:
        if self._multi:  # type: ignore[attr-defined]
            return any(self.find(part, 0) is not None for part in parts_of(data))
        return self.find(data, 0) is not None

    def bind(self, values: Mapping[str, int]) -> Content | None:
        """This item with its variables' values in place (None: one is not set)."""
        changes: dict[str, object] = {}
        byte_op = self.byte_op
        for name, var in self.refs:
            value = values.get(var)
            if value is None:
                return None
            if name == "byte_value":
                assert byte_op is not None
                byte_op = replace(byte_op, value=value)
            elif name == "byte_offset":
                assert byte_op is not None
                byte_op = replace(byte_op, offset=value)
            else:
                changes[name] = value
        return replace(self, refs=(), byte_op=byte_op, **changes)  # type: ignore[arg-type]

    def find(self, data: bytes, prev_end: int, start: int = -1) -> tuple[int, int] | None:
        """Where this item matches (start, end) searching from ``start`` (default: where its
        placement begins); a negated item or ``isdataat`` gives (prev_end, prev_end). None if
        it does not hold. ``data`` is the buffer after its transformations: an item of a
        transformed buffer is never plain, so ``chain_matches`` (which transforms the buffer
        once for all its items) is what runs it."""
        head = self.head
        if head is not None:
            return (prev_end, prev_end) if head.holds(data) else None
        stream = self.stream
        if stream is not None:
            return (prev_end, prev_end) if stream_size_holds(stream, data) else None
        date = self.date
        if date is not None:
            when = int.from_bytes(data, "big", signed=True) if len(data) == 8 else None
            held = when is not None and date[0] <= when <= date[1]
            return (prev_end, prev_end) if held else None
        byte_op = self.byte_op
        if byte_op is not None:
            if byte_op.asn1 is not None:
                at = (prev_end if byte_op.relative else 0) + byte_op.offset
                return (prev_end, prev_end) if asn1_holds(byte_op.asn1, data, at) else None
            read = byte_op.read(data, prev_end)
            if read is None:
                return None
            number, end = read
            if byte_op.kind == "test":
                return (prev_end, prev_end) if byte_op.holds(number) else None
            if byte_op.kind == "extract":
                return (end, end)
            target = (0 if byte_op.from_beginning else end) + number * byte_op.multiplier
            if byte_op.align and target % 4:
                target += 4 - target % 4
            target += byte_op.post_offset
            return (target, target) if 0 <= target <= len(data) else None
        size = self.size
        if size is not None:
            held = (size[0] <= len(data) <= size[1]) != self.negated
            return (prev_end, prev_end) if held else None
        if self.data_at is not None:
            base = prev_end if self.relative else 0
            held = (len(data) > base + self.data_at) != self.negated
            return (prev_end, prev_end) if held else None
        if self.relative:
            low = max(prev_end + (self.distance or 0), 0)
            high = None if self.within is None else low + self.within
        else:
            low = self.offset
            high = None if self.depth is None else self.offset + self.depth
        if start > low:
            low = start
        found: tuple[int, int] | None = None
        regex = self.regex
        if regex is not None:
            # on the slice: ``^`` anchors where a relative expression starts, as in PCRE
            hit = regex.search(data[low:high] if low or high is not None else data)
            if hit is not None:
                found = (hit.start() + low, hit.end() + low)
        else:
            needle: bytes = self._needle  # type: ignore[attr-defined]
            hay = data.lower() if self.nocase else data
            if self.ends:
                at = len(hay) - len(needle)
                beyond = high is not None and at + len(needle) > high
                if at < low or beyond or not hay.endswith(needle):
                    at = -1
            else:
                at = hay.find(needle, low) if high is None else hay.find(needle, low, high)
            if at >= 0:
                found = (at, at + len(needle))
        if self.negated:
            return (prev_end, prev_end) if found is None else None
        return found


class MultiBuffer(bytes):
    """A buffer of several values (``tls.certs``): its bytes are the values joined (what a
    prefilter scans: a superset of where a pattern occurs); ``parts`` are the values."""

    parts: tuple[bytes, ...] = ()

    @classmethod
    def of(cls, parts: Sequence[bytes]) -> MultiBuffer:
        buffer = cls(b"".join(parts))
        buffer.parts = tuple(parts)
        return buffer


def parts_of(data: bytes) -> tuple[bytes, ...]:
    return data.parts if isinstance(data, MultiBuffer) else (data,)


_STREAM_OPS: dict[str, Callable[[int, int], bool]] = {
    "<": operator.lt,
    ">": operator.gt,
    "=": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
}


def stream_size_holds(spec: tuple[int, str, int], data: bytes) -> bool:
    """``stream_size`` over the ``tcp.stream_size`` buffer (8 bytes: the bytes the server
    and the client sent, big-endian 32-bit each)."""
    if len(data) != 8:
        return False
    sides, op, value = spec
    compare = _STREAM_OPS[op]
    server = compare(int.from_bytes(data[:4], "big"), value)
    client = compare(int.from_bytes(data[4:], "big"), value)
    if sides == 1:
        return server
    if sides == 2:
        return client
    if sides == 3:
        return server and client
    return server or client


def independent(items: Sequence[Content]) -> bool:
    """Whether each of a buffer's items holds or not whatever the others matched: none is
    placed relative to another, reads or sets a variable, or decodes what follows. The
    items then hold together when each holds on its own (``items_hold``): the retries of
    ``chain_matches`` never happen."""
    for item in items:
        if item.relative or item.refs or item.decode is not None:
            return False
        byte_op = item.byte_op
        if byte_op is not None and (byte_op.kind == "extract" or byte_op.kind == "math"):
            return False
    return True


def items_hold(items: Sequence[Content], data: bytes) -> bool:
    """``chain_matches`` for items that are ``independent``: each looked for on its own."""
    if isinstance(data, MultiBuffer):
        return any(items_hold(items, part) for part in data.parts)
    if items and items[0].transforms:  # the items of a buffer share its transformations
        data = transforms.apply(data, items[0].transforms)
    return all(item.find(data, 0) is not None for item in items)


def item_check(item: Content) -> Callable[[bytes], bool]:
    """Whether an item holds at its own place in a buffer's bytes (``item.find(data, 0)``
    found): a closure made once for the item's kind, reading none of its fields per
    buffer. A content at a fixed place, a header test, ``dsize``/``bsize``, ``isdataat``,
    a ``pcre`` and a ``byte_test`` have their own; any other item asks ``find``. Not for a
    buffer of several values (``MultiBuffer``) nor for a transformed buffer: the caller
    hands the bytes the item sees."""
    find = item.find
    if item.refs or item.relative or item.buffer in MULTI_BUFFERS:
        return lambda data: find(data, 0) is not None
    negated = item.negated
    head, byte_op, size = item.head, item.byte_op, item.size
    if head is not None:
        return head.holds
    if item.stream is not None or item.date is not None or item.decode is not None:
        return lambda data: find(data, 0) is not None
    if byte_op is not None:
        if byte_op.asn1 is not None or byte_op.kind != "test":
            return lambda data: find(data, 0) is not None
        read, holds = byte_op.read, byte_op.holds

        def byte_test(data: bytes) -> bool:
            found = read(data, 0)
            return found is not None and holds(found[0])

        return byte_test
    if size is not None:
        low_size, high_size = size
        return lambda data: (low_size <= len(data) <= high_size) != negated
    data_at = item.data_at
    if data_at is not None:
        return lambda data: (len(data) > data_at) != negated
    low = item.offset
    high = None if item.depth is None else item.offset + item.depth
    regex = item.regex
    if regex is not None:
        search = regex.search
        if low or high is not None:
            return lambda data: (search(data[low:high]) is None) is negated
        return lambda data: (search(data) is None) is negated
    if item.ends:
        return lambda data: find(data, 0) is not None
    needle: bytes = item._needle  # type: ignore[attr-defined]
    if item.nocase:
        if high is None:
            return lambda data: (data.lower().find(needle, low) < 0) is negated
        return lambda data: (data.lower().find(needle, low, high) < 0) is negated
    if high is None:
        return lambda data: (data.find(needle, low) < 0) is negated
    return lambda data: (data.find(needle, low, high) < 0) is negated


def chain_matches(items: Sequence[Content], data: bytes, budget: int = 64) -> bool:
    """Whether one buffer's items all hold in order; a relative item that fails makes the
    items before it try their next match (at most ``budget`` retries), as Suricata does.
    ``byte_extract`` items set variables that later items read."""
    if isinstance(data, MultiBuffer):
        return any(chain_matches(items, part, budget) for part in data.parts)
    if items and items[0].transforms:  # the items of a buffer share its transformations
        data = transforms.apply(data, items[0].transforms)
    tries = [budget]
    values: dict[str, int] = {}

    def walk(i: int, prev_end: int) -> bool:
        if i == len(items):
            return True
        item: Content | None = items[i]
        assert item is not None
        if item.refs:
            item = item.bind(values)
            if item is None:
                return False
        decode = item.decode
        if decode is not None:  # base64_decode: the items after it read what it decodes
            start = decode[1] + (prev_end if item.distance is not None else 0)
            chunk = data[start : start + decode[0]] if decode[0] else data[start:]
            decoded = transforms.base64_decode(chunk[:BASE64_MAX])
            return bool(decoded) and chain_matches(items[i + 1 :], decoded, tries[0])
        byte_op = item.byte_op
        if byte_op is not None and (byte_op.kind == "extract" or byte_op.kind == "math"):
            read = byte_op.read(data, prev_end)
            if read is None:
                return False
            if byte_op.kind == "math":
                result = byte_op.computed(read[0])
                if result is None:
                    return False
                values[byte_op.name] = result
            else:
                values[byte_op.name] = byte_op.extracted(read[0])
            return walk(i + 1, read[1])
        start = -1
        while True:
            found = item.find(data, prev_end, start)
            if found is None:
                return False
            if walk(i + 1, found[1]):
                return True
            if (not item.literal and item.regex is None) or item.negated or tries[0] <= 0:
                return False
            if not any(later.relative for later in items[i + 1 :]):
                return False
            tries[0] -= 1
            start = found[0] + 1

    return walk(0, 0)


@dataclass(frozen=True)
class Flags:
    """``flags``: exact by default; ``+`` all of these and maybe others; ``*`` any of these;
    ``!`` not all of these. ``mask`` clears the flags named after the comma."""

    bits: int
    modifier: str = ""
    mask: int = 0xFF

    def matches(self, packet_flags: int) -> bool:
        if not self.bits and packet_flags:
            return self.modifier == "!"
        flags = packet_flags & self.mask
        if self.modifier == "*":
            return bool(flags & self.bits)
        if self.modifier == "+":
            return flags & self.bits == self.bits
        if self.modifier == "!":
            return flags & self.bits != self.bits
        return flags == self.bits


@dataclass(frozen=True)
class Threshold:
    type: ThresholdType
    track: Track
    count: int
    seconds: int


@dataclass(frozen=True)
class Signature:
    action: Action
    proto: RuleProto
    src: AddrExpr
    sport: PortExpr
    dst: AddrExpr
    dport: PortExpr
    bidirectional: bool
    sid: int
    msg: str
    rev: int = 1
    classtype: str | None = None
    category: str = ""
    priority: int = DEFAULT_PRIORITY
    contents: tuple[Content, ...] = ()
    flow_to_server: bool | None = None
    flow_established: bool | None = None
    flags: Flags | None = None
    threshold: Threshold | None = None
    app: str = ""  # the application protocol the rule needs ("" for none)
    path: str = ""
    line: int = 0
    references: tuple[str, ...] = field(default=(), compare=False)
    metadata: tuple[str, ...] = field(default=(), compare=False)
    # flowbits: (command, names) in order; conditions (isset, isnotset) and actions (set,
    # unset, toggle); noalert: the rule only sets bits
    flowbits: tuple[tuple[str, str], ...] = ()
    noalert: bool = False
    # xbits: (command, name, track, expire) in order, kept per host or address pair
    xbits: tuple[Xbit, ...] = ()
    # flowint: (name, modifier, value) in order; conditions checked, assignments made when
    # the rule matches
    flowint: tuple[Flowint, ...] = ()
    itype: tuple[int, int] | None = None  # ICMP type range
    icode: tuple[int, int] | None = None
    ip_proto: tuple[int, int, bool] | None = None  # (lowest, highest, negated)
    not_app: str = ""  # app-layer-protocol:!X
    # a header keyword (ttl, window, ...) or buffer (tcp.hdr, ...): reads ip:packet
    header: bool = False


# ---- parsing ------------------------------------------------------------------------------


class UnsupportedKeyword(RuleFileError):
    """A rule uses a keyword the engine cannot run: skipped, unless loading is strict."""

    def __init__(self, path: str, line: int, sid: int, keyword: str) -> None:
        self.sid = sid
        self.keyword = keyword
        super().__init__(path, line, f"sid {sid}: unsupported keyword {keyword!r}")

    @property
    def reason(self) -> str:
        """The metric label: the keyword when Suricata knows it, else ``unknown`` (bounded)."""
        return self.keyword if self.keyword in SURICATA_KEYWORDS else "unknown"


@dataclass(frozen=True)
class Skipped:
    """A rule left out: its warning line and the (bounded) reason it counts under."""

    warning: str
    reason: str


@dataclass
class RuleSet:
    signatures: list[Signature]
    skipped: list[Skipped] = field(default_factory=list)

    def reasons(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.skipped:
            counts[item.reason] = counts.get(item.reason, 0) + 1
        return counts


@dataclass
class Variables:
    """Rule variables: ``$HOME_NET`` from the profile, ``$EXTERNAL_NET`` its complement."""

    home_net: tuple[IPNet, ...]
    ports: Mapping[str, str] = field(default_factory=lambda: dict(PORT_VARS))
    classtypes: Mapping[str, tuple[str, int]] = field(default_factory=lambda: CLASSTYPES)

    @classmethod
    def from_networks(cls, networks: Iterable[IPNet] | None) -> Variables:
        nets = tuple(networks or ())
        if not nets:
            nets = tuple(ipaddress.ip_network(n) for n in DEFAULT_HOME_NET)
        return cls(home_net=nets)

    def home(self) -> AddrExpr:
        return AddrExpr("list", items=tuple(AddrExpr("net", n) for n in self.home_net))


def parse_rule_files(paths: Sequence[str], variables: Variables) -> list[Signature]:
    """All signatures of the files, in order (strict: the first bad rule refuses them)."""
    return load_rules(paths, variables, strict=True).signatures


def load_rules(paths: Sequence[str], variables: Variables, strict: bool = False) -> RuleSet:
    """The signatures of the files, in order; a sid may appear once across them. Not
    strict: a rule the engine cannot run (an unsupported keyword, a malformed option, a
    repeated sid) is left out with one warning line and counted by reason, as Suricata
    does; strict: it refuses the whole set (``RuleFileError``)."""
    signatures: list[Signature] = []
    skipped: list[Skipped] = []
    seen: dict[int, Signature] = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise UsageError(f"{path}: cannot read rule file: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            line = text_line_of(path, exc.start)
            raise RuleFileError(path, line, f"not UTF-8 text (byte {exc.start})") from None
        for line_no, rule in _logical_lines(text):
            try:
                sig = parse_rule(rule, path, line_no, variables, strict_options=strict)
                first = seen.get(sig.sid)
                if first is not None:
                    raise RuleFileError(
                        path,
                        sig.line,
                        f"duplicate sid {sig.sid} (first at {first.path}:{first.line})",
                    )
            except UnsupportedKeyword as exc:
                skipped.append(Skipped(str(exc), exc.reason))
                continue
            except RuleFileError as exc:
                if strict:
                    raise
                skipped.append(Skipped(str(exc), "invalid"))
                continue
            seen[sig.sid] = sig
            signatures.append(sig)
    return RuleSet(signatures, skipped)


def text_line_of(path: str, offset: int) -> int:
    """The line number of a byte offset in a file."""
    try:
        with open(path, "rb") as handle:
            return handle.read(offset).count(b"\n") + 1
    except OSError:
        return 1


def parse_rules(text: str, path: str, variables: Variables) -> Iterator[Signature]:
    """Every rule of a text, strictly: the first it cannot run raises ``RuleFileError``."""
    for line_no, rule in _logical_lines(text):
        yield parse_rule(rule, path, line_no, variables, strict_options=True)


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending:
            if not line or line.startswith("#"):
                continue
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        yield start, " ".join(pending)
        pending = []
    if pending:
        yield start, " ".join(pending)


def parse_rule(
    text: str, path: str, line: int, variables: Variables, strict_options: bool = False
) -> Signature:
    def fail(message: str) -> RuleFileError:
        return RuleFileError(path, line, message)

    open_at = _find_outside_brackets(text, "(")
    if open_at < 0 or not text.rstrip().endswith(")"):
        raise fail("expected 'ACTION PROTO SRC SPORT -> DST DPORT (OPTIONS)'")
    header = _split_header(text[:open_at])
    if len(header) != 7:
        raise fail(
            f"the rule header needs 7 fields (ACTION PROTO SRC SPORT -> DST DPORT), "
            f"got {len(header)}: {text[:open_at].strip()!r}"
        )
    action, proto, src, sport, direction, dst, dport = header
    if action not in ACTIONS:
        raise fail(f"unknown action {action!r} (expected one of {', '.join(ACTIONS)})")
    proto = proto.lower()
    proto = PROTO_ALIASES.get(proto, proto)
    app_ports = APP_PORTS.get(proto)
    if app_ports is not None:
        proto = "tcp"
    if proto not in PROTOCOLS:
        raise fail(f"unknown protocol {proto!r} (expected one of {', '.join(PROTOCOLS)})")
    if direction not in ("->", "<>"):
        raise fail(f"bad direction {direction!r} (expected -> or <>)")
    try:
        src_expr = parse_address(src, variables)
        dst_expr = parse_address(dst, variables)
        sport_expr = parse_ports(sport, variables)
        dport_expr = parse_ports(dport, variables)
    except ValueError as exc:
        raise fail(str(exc)) from None
    body = text[open_at + 1 : text.rstrip().rfind(")")]
    try:
        options = list(_split_options(body, fail))
    except RuleFileError:
        # Suricata ends an option at any ';' not after a backslash, quotes or not: a quote
        # inside a value (pcre:"/^["']?post/Ri") splits as Suricata splits it
        options = list(_split_options(body, fail, quotes=False))
    sid_text = next((v for n, v in options if n == "sid" and v), "")
    sid = int(sid_text) if sid_text.strip().isdigit() else 0

    def unsupported(keyword: str) -> RuleFileError:
        return UnsupportedKeyword(path, line, sid, keyword)

    builder = _Builder(fail, unsupported if not strict_options else None, variables.classtypes)
    for name, value in options:
        builder.option(name, value)
    if app_ports is not None:  # the protocol's ports on the server side
        if builder.flow_to_server is False:
            if sport_expr.is_any:
                sport_expr = parse_ports(app_ports, variables)
        elif dport_expr.is_any:
            dport_expr = parse_ports(app_ports, variables)
    return builder.build(
        action=action,
        proto=proto,
        src=src_expr,
        sport=sport_expr,
        dst=dst_expr,
        dport=dport_expr,
        bidirectional=direction == "<>",
        path=path,
        line=line,
    )


def _find_outside_brackets(text: str, char: str) -> int:
    depth = 0
    for i, c in enumerate(text):
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        elif c == char and depth == 0:
            return i
    return -1


def _split_header(text: str) -> list[str]:
    fields: list[str] = []
    current = ""
    depth = 0
    for c in text.strip():
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        if c.isspace() and depth <= 0:
            if current:
                fields.append(current)
                current = ""
            continue
        current += c
    if current:
        fields.append(current)
    return fields


def _split_options(
    body: str, fail: type[RuleFileError] | object, quotes: bool = True
) -> Iterator[tuple[str, str | None]]:
    """``name: value;`` pairs; ``;`` after a backslash (or, with ``quotes``, inside quotes)
    does not end one."""
    current = ""
    quoted = False
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            current += c + body[i + 1]
            i += 2
            continue
        if c == '"' and quotes:
            quoted = not quoted
        if c == ";" and not quoted:
            yield _option(current)
            current = ""
        else:
            current += c
        i += 1
    if current.strip():
        raise _call(fail, f"option {current.strip()!r} is not ended by ';'")
    if quoted:
        raise _call(fail, "unterminated quoted string in the options")


def _call(fail: object, message: str) -> RuleFileError:
    assert callable(fail)
    error = fail(message)
    assert isinstance(error, RuleFileError)
    return error


def _option(text: str) -> tuple[str, str | None]:
    name, sep, value = text.partition(":")
    return name.strip(), (value.strip() if sep else None)


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1]
    out = []
    i = 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append(value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def parse_content(value: str) -> tuple[bytes, bool]:
    """A content string (``"GET |20|/"``, ``!"x"``) -> (bytes, negated). ValueError if bad."""
    value = value.strip()
    negated = value.startswith("!")
    if negated:
        value = value[1:].strip()
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        raise ValueError(f"content must be a quoted string, got {value!r}")
    text = value[1:-1]
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "|":
            close = text.find("|", i + 1)
            if close < 0:
                raise ValueError("unterminated |hex| section in content")
            digits = "".join(text[i + 1 : close].split())
            try:
                out += bytes.fromhex(digits)
            except ValueError:
                raise ValueError(f"bad hex in content: |{text[i + 1 : close]}|") from None
            i = close + 1
        elif c == "\\" and i + 1 < len(text):
            out += text[i + 1].encode("utf-8")
            i += 2
        else:
            if c == '"' or c == ";":
                raise ValueError(f"unescaped {c!r} in content")
            out += c.encode("utf-8")
            i += 1
    if not out:
        raise ValueError("empty content")
    return bytes(out), negated


class _Builder:
    def __init__(
        self,
        fail: object,
        unsupported: object = None,
        classtypes: Mapping[str, tuple[str, int]] = CLASSTYPES,
    ) -> None:
        self.fail = fail
        self.classtypes = classtypes
        self.unsupported = unsupported
        self.msg: str | None = None
        self.sid: int | None = None
        self.rev = 1
        self.classtype: str | None = None
        self.priority: int | None = None
        self.contents: list[Content] = []
        self.buffer = PKT
        self.buffers_used: set[str] = set()
        self.flow_to_server: bool | None = None
        self.flow_established: bool | None = None
        self.flags: Flags | None = None
        self.threshold: Threshold | None = None
        self.references: list[str] = []
        self.metadata: list[str] = []
        self.flowbits: list[tuple[str, str]] = []
        self.noalert = False
        self.xbits: list[Xbit] = []
        self.flowint: list[Flowint] = []
        self.itype: tuple[int, int] | None = None
        self.icode: tuple[int, int] | None = None
        self.ip_proto: tuple[int, int, bool] | None = None
        self.app_protocol: tuple[str, bool] | None = None
        self.seen: set[str] = set()
        self.byte_vars: dict[str, str] = {}  # byte_extract variables -> their buffer
        self._last_index = -1  # the content the modifiers change (see _last_content)
        # the transformations of each sticky buffer, in rule order
        self.transforms: dict[str, list[Transform]] = {}
        # by buffer, the first item its transformations apply to (transformations named
        # after items start a new view of the buffer: the items before see it untransformed)
        self.transform_from: dict[str, int] = {}
        self.base64: str | None = None  # the buffer base64_decode decodes
        self.base64_data = False  # base64_data chosen: the items read the decoded bytes

    def error(self, message: str) -> RuleFileError:
        return _call(self.fail, message)

    def option(self, name: str, value: str | None) -> None:
        if name in IGNORED_OPTIONS:
            return
        if name in CONTENT_MODIFIERS:
            self._modifier(name, value)
            return
        if name in BUFFER_APP or name in STICKY_ALIASES:
            self._sticky(name, value)
            return
        if name in transforms.NAMES:
            self._transform(name, value)
            return
        if name in HEADER_BUFFERS:  # ipv4.hdr, tcp.hdr, ...: no application protocol
            self._flag_only(name, value)
            self.buffer = name
            return
        if name in SSH_STICKY:  # the SSH banner's, read from the payload (appproto.py)
            self._flag_only(name, value)
            self._leave_base64(SSH_STICKY[name])
            self.buffer = SSH_STICKY[name]
            return
        handler = getattr(self, "_opt_" + name.replace(".", "_").replace("-", "_"), None)
        if not name or handler is None:
            if self.unsupported is not None:
                raise _call(self.unsupported, name)
            raise self.error(f"unknown rule option {name!r}")
        single = ("msg", "sid", "rev", "classtype", "flow", "flags", "threshold", "priority")
        if name in single:
            if name in self.seen:
                raise self.error(f"option {name!r} given twice")
            self.seen.add(name)
        handler(name, value)

    def _need(self, name: str, value: str | None) -> str:
        if value is None or not value.strip():
            raise self.error(f"option {name!r} needs a value")
        return value

    def _flag_only(self, name: str, value: str | None) -> None:
        if value is not None:
            raise self.error(f"option {name!r} takes no value")

    def _int(self, name: str, value: str | None, low: int = 0, high: int = 2**32 - 1) -> int:
        text = self._need(name, value).strip()
        try:
            number = int(text)
        except ValueError:
            raise self.error(f"option {name!r}: expected an integer, got {text!r}") from None
        if not low <= number <= high:
            raise self.error(f"option {name!r}: {number} is out of range {low}..{high}")
        return number

    # metadata
    def _opt_msg(self, name: str, value: str | None) -> None:
        self.msg = _unquote(self._need(name, value))

    def _opt_sid(self, name: str, value: str | None) -> None:
        self.sid = self._int(name, value, 1)

    def _opt_rev(self, name: str, value: str | None) -> None:
        self.rev = self._int(name, value, 0)

    def _opt_classtype(self, name: str, value: str | None) -> None:
        text = self._need(name, value).strip()
        if text not in self.classtypes:
            raise self.error(f"unknown classtype {text!r}")
        self.classtype = text

    def _opt_priority(self, name: str, value: str | None) -> None:
        self.priority = self._int(name, value, 1, 255)

    def _opt_reference(self, name: str, value: str | None) -> None:
        self.references.append(self._need(name, value).strip())

    def _opt_metadata(self, name: str, value: str | None) -> None:
        for item in self._need(name, value).split(","):
            if item.strip():
                self.metadata.append(" ".join(item.split()))

    # payload
    def _opt_content(self, name: str, value: str | None) -> None:
        try:
            pattern, negated = parse_content(self._need(name, value))
        except ValueError as exc:
            raise self.error(str(exc)) from None
        self.contents.append(Content(pattern, buffer=self.buffer, negated=negated))
        self._last_index = len(self.contents) - 1

    def _opt_uricontent(self, name: str, value: str | None) -> None:
        self._opt_content(name, value)
        self._to_buffer(self.contents[-1], "http.uri")

    def _last_content(self, name: str) -> Content:
        """The last ``content`` of the rule, which a modifier changes (as in Suricata, items
        that are no content in between, such as ``bsize`` or ``isdataat``, are passed)."""
        for index in range(len(self.contents) - 1, -1, -1):
            item = self.contents[index]
            if item.pattern and item.regex is None:
                self._last_index = index
                return item
        raise self.error(f"option {name!r} must follow a content")

    def _replace_last(self, **changes: object) -> None:
        """Change the content ``_last_content`` found."""
        index = self._last_index
        self.contents[index] = replace(self.contents[index], **changes)  # type: ignore[arg-type]

    def _opt_nocase(self, name: str, value: str | None) -> None:
        self._flag_only(name, value)
        self._last_content(name)
        self._replace_last(nocase=True)

    def _var(self, name: str, value: str | None) -> str | None:
        """The byte_extract variable a numeric option names (it must read the same buffer)."""
        text = (value or "").strip()
        if not text or not (text[0].isalpha() or text[0] == "_"):
            return None
        buffer = self.byte_vars.get(text)
        if buffer is None:
            raise self.error(f"{name}: unknown variable {text!r} (byte_extract defines them)")
        if buffer != self.contents[self._last_index].buffer:
            raise self.error(f"{name}: variable {text!r} reads another buffer")
        return text

    def _ref_last(self, name: str, var: str, **placeholder: object) -> None:
        last = self.contents[self._last_index]
        self._replace_last(refs=(*last.refs, (name, var)), **placeholder)

    def _opt_depth(self, name: str, value: str | None) -> None:
        last = self._last_content(name)
        var = self._var(name, value)
        if var is not None:
            if last.relative:
                raise self.error("depth cannot be mixed with distance or within")
            self._ref_last("depth", var, depth=None)
            return
        depth = self._int(name, value, 1, 65535)
        if depth < len(last.pattern):
            raise self.error(f"depth {depth} is shorter than its content ({len(last.pattern)})")
        if last.relative:
            raise self.error("depth cannot be mixed with distance or within")
        self._replace_last(depth=depth)

    def _opt_offset(self, name: str, value: str | None) -> None:
        last = self._last_content(name)
        if last.relative:
            raise self.error("offset cannot be mixed with distance or within")
        var = self._var(name, value)
        if var is not None:
            self._ref_last("offset", var, offset=0)
            return
        self._replace_last(offset=self._int(name, value, 0, 65535))

    def _relative_to(self, name: str) -> Content:
        last = self._last_content(name)
        if last.offset or last.depth is not None:
            raise self.error(f"{name} cannot be mixed with offset or depth")
        if not any(c.buffer == last.buffer for c in self.contents[:-1]):
            # Suricata: relative to the start of the buffer when nothing comes before
            return last
        return last

    def _opt_distance(self, name: str, value: str | None) -> None:
        self._relative_to(name)
        var = self._var(name, value)
        if var is not None:
            self._ref_last("distance", var, distance=0)
            return
        self._replace_last(distance=self._int(name, value, -65535, 65535))

    def _opt_within(self, name: str, value: str | None) -> None:
        last = self._relative_to(name)
        var = self._var(name, value)
        if var is not None:
            # no limit until the variable's value is known
            distance = 0 if last.distance is None else last.distance
            self._ref_last("within", var, distance=distance, within=1 << 32)
            return
        within = self._int(name, value, 1, 65535)
        if within < len(last.pattern):
            raise self.error(f"within {within} is shorter than its content ({len(last.pattern)})")
        self._replace_last(within=within)

    def _opt_fast_pattern(self, name: str, value: str | None) -> None:
        self._last_content(name)
        self._replace_last(fast=True)

    def _opt_startswith(self, name: str, value: str | None) -> None:
        self._flag_only(name, value)
        last = self._last_content(name)
        self._replace_last(offset=0, depth=len(last.pattern))

    def _opt_endswith(self, name: str, value: str | None) -> None:
        self._flag_only(name, value)
        self._last_content(name)
        self._replace_last(ends=True)

    def _opt_isdataat(self, name: str, value: str | None) -> None:
        text = self._need(name, value).strip()
        negated = text.startswith("!")
        number, _, rest = text.lstrip("!").partition(",")
        relative = rest.strip() == "relative"
        if rest.strip() not in ("", "relative"):
            raise self.error(f"isdataat: unknown modifier {rest.strip()!r}")
        var = None
        if self.contents and self.contents[-1].buffer == self.buffer:
            var = self._var(name, number)
        at = 0 if var is not None else self._int(name, number, 0, 65535)
        if relative and not any(c.buffer == self.buffer for c in self.contents):
            if self.buffer == PKT:
                raise self.error("isdataat: relative needs a content before it")
            # first in a sticky buffer: relative to the buffer's start, as Suricata takes
            # ``http.accept_lang; isdataat:100,relative;``
            relative = False
        self.contents.append(
            Content(
                b"",
                buffer=self.buffer,
                negated=negated,
                data_at=at,
                distance=0 if relative else None,
                refs=(("data_at", var),) if var is not None else (),
            )
        )

    def _size(self, name: str, value: str | None, buffer: str) -> None:
        text = self._need(name, value).strip()
        try:
            low, high = parse_size(text)
        except ValueError as exc:
            raise self.error(f"{name}: {exc}") from None
        if buffer != PKT:
            self.buffers_used.add(buffer)
        self.contents.append(Content(b"", buffer=buffer, size=(low, high)))

    def _opt_dsize(self, name: str, value: str | None) -> None:
        self._size(name, value, PKT)

    def _opt_bsize(self, name: str, value: str | None) -> None:
        self._size(name, value, self.buffer)

    def _opt_urilen(self, name: str, value: str | None) -> None:
        text = self._need(name, value).strip()
        text, _, form = text.partition(",")
        buffer = "http.raw_uri" if form.strip() == "raw" else "http.uri"
        self._size(name, text, buffer)

    def _opt_pcre(self, name: str, value: str | None) -> None:
        try:
            regex, buffer, relative, negated = parse_pcre(self._need(name, value))
        except ValueError as exc:
            raise self.error(f"pcre: {exc}") from None
        if buffer is None:
            buffer = self.buffer
        elif buffer != PKT:
            self.buffers_used.add(buffer)
        if relative and not any(c.buffer == buffer for c in self.contents):
            relative = False  # Suricata: relative to the buffer's start then
        self.contents.append(
            Content(
                b"",
                buffer=buffer,
                negated=negated,
                regex=regex,
                distance=0 if relative else None,
            )
        )

    def _sticky(self, name: str, value: str | None) -> None:
        self._flag_only(name, value)
        buffer = LEGACY_STICKY.get(name, STICKY_ALIASES.get(name, name))
        self._leave_base64(buffer)
        self.buffer = buffer
        self.buffers_used.add(buffer)

    def _modifier(self, name: str, value: str | None) -> None:
        """``content:...; http_uri;``: the older form, moving the content to a buffer."""
        self._flag_only(name, value)
        last = self._last_content(name)
        if last.buffer != PKT:
            raise self.error(f"{name}: the content is already in {last.buffer}")
        self._to_buffer(last, CONTENT_MODIFIERS[name])

    def _to_buffer(self, last: Content, buffer: str) -> None:
        self._replace_last(buffer=buffer)
        self.buffers_used.add(buffer)

    def _number_or_var(self, name: str, text: str, field: str, refs: list[tuple[str, str]]) -> int:
        """An integer field of a byte keyword, or a byte_extract variable of this buffer."""
        if text and (text[0].isalpha() or text[0] == "_"):
            buffer = self.byte_vars.get(text)
            if buffer is None:
                raise ValueError(f"unknown variable {text!r} (byte_extract defines them)")
            if buffer != self.buffer:
                raise ValueError(f"variable {text!r} reads another buffer")
            refs.append((field, text))
            return 0
        return int(text, 0)

    def _byte_op(
        self, name: str, value: str | None, kind: Literal["test", "jump", "extract"]
    ) -> None:
        parts = [p.strip() for p in self._need(name, value).split(",")]
        need = 2 if kind == "jump" else 3 if kind == "extract" else 4
        if len(parts) < need:
            raise self.error(f"{name}: expected at least {need} fields, got {len(parts)}")
        fields: dict[str, object] = {"kind": kind}
        refs: list[tuple[str, str]] = []
        try:
            fields["count"] = int(parts[0])
            if kind == "test":
                op = parts[1]
                fields["negated"] = op.startswith("!")
                op = op.lstrip("!") or "="
                if op not in ("<", ">", "=", "<=", ">=", "&", "^"):
                    raise ValueError(f"unknown operator {op!r}")
                fields["op"] = op
                fields["value"] = self._number_or_var(name, parts[2], "byte_value", refs)
                fields["offset"] = self._number_or_var(name, parts[3], "byte_offset", refs)
                rest = parts[4:]
            elif kind == "extract":
                fields["offset"] = int(parts[1], 0)
                var = parts[2]
                if not re.fullmatch(r"[A-Za-z_]\w*", var):
                    raise ValueError(f"bad variable name {var!r}")
                if var in self.byte_vars:
                    raise ValueError(f"variable {var!r} defined twice")
                fields["name"] = var
                rest = parts[3:]
            else:
                fields["offset"] = self._number_or_var(name, parts[1], "byte_offset", refs)
                rest = parts[2:]
            for flag in rest:
                word, _, arg = flag.partition(" ")
                if word == "relative":
                    fields["relative"] = True
                elif word in ("big", "little"):
                    fields["big_endian"] = word == "big"
                elif word == "string":
                    fields["base"] = 10
                elif word in ("dec", "hex", "oct"):
                    fields["base"] = {"dec": 10, "hex": 16, "oct": 8}[word]
                elif word == "bitmask":
                    fields["bitmask"] = int(arg.strip(), 0)
                elif word == "multiplier" and kind in ("jump", "extract"):
                    fields["multiplier"] = int(arg.strip(), 0)
                elif word == "align" and kind == "extract":
                    fields["align_to"] = int(arg.strip(), 0)
                    if fields["align_to"] not in (2, 4):
                        raise ValueError("align must be 2 or 4")
                elif word == "post_offset" and kind == "jump":
                    fields["post_offset"] = int(arg.strip(), 0)
                elif word == "from_beginning" and kind == "jump":
                    fields["from_beginning"] = True
                elif word == "align" and kind == "jump":
                    fields["align"] = True
                else:
                    raise ValueError(f"unsupported modifier {flag!r}")
        except ValueError as exc:
            raise self.error(f"{name}: {exc}") from None
        count = fields["count"]
        assert isinstance(count, int)
        if not 1 <= count <= (10 if fields.get("base") else 8) and not (
            count == 0 and kind == "test" and fields.get("base")
        ):  # 0 bytes as text: the number however long (Suricata)
            raise self.error(f"{name}: cannot read {count} bytes")
        byte_op = ByteOp(**fields)  # type: ignore[arg-type]
        if byte_op.relative and not any(c.buffer == self.buffer for c in self.contents):
            byte_op = replace(byte_op, relative=False)
        if kind == "extract":
            self._set_byte_var(byte_op.name)
        self._add_byte_op(byte_op, byte_op.relative, refs)

    def _set_byte_var(self, name: str) -> None:
        """``name`` a rule variable read from the current buffer."""
        self.byte_vars[name] = self.buffer
        if self.buffer != PKT:
            self.buffers_used.add(self.buffer)

    def _add_byte_op(self, byte_op: ByteOp, relative: bool, refs: list[tuple[str, str]]) -> None:
        self.contents.append(
            Content(
                b"",
                buffer=self.buffer,
                byte_op=byte_op,
                distance=0 if relative else None,
                refs=tuple(refs),
            )
        )

    def _opt_asn1(self, name: str, value: str | None) -> None:
        try:
            check, offset, relative = parse_asn1(self._need(name, value))
        except ValueError as exc:
            raise self.error(str(exc)) from None
        relative = relative and any(c.buffer == self.buffer for c in self.contents)
        byte_op = ByteOp("asn1", 0, offset or 0, relative=relative, asn1=check)
        self._add_byte_op(byte_op, relative, [])

    def _opt_byte_test(self, name: str, value: str | None) -> None:
        self._byte_op(name, value, "test")

    def _opt_byte_jump(self, name: str, value: str | None) -> None:
        self._byte_op(name, value, "jump")

    def _opt_byte_extract(self, name: str, value: str | None) -> None:
        self._byte_op(name, value, "extract")

    def _opt_byte_math(self, name: str, value: str | None) -> None:
        """``byte_math:bytes N, offset N, oper OP, rvalue N|VAR, result VAR [, relative]
        [, endian big|little] [, string hex|dec|oct] [, bitmask N]``: the result is a rule
        variable, as byte_extract's are."""
        fields: dict[str, str] = {}
        flags: set[str] = set()
        for part in self._need(name, value).split(","):
            word, _, arg = part.strip().partition(" ")
            arg = arg.strip()
            if not word:
                continue
            if word in fields or word in flags:
                raise self.error(f"byte_math: {word!r} given twice")
            if word in ("relative", "dce"):
                if arg:
                    raise self.error(f"byte_math: {word} takes no value")
                flags.add(word)
            elif word in ("bytes", "offset", "oper", "rvalue", "result", "endian", "string"):
                if not arg:
                    raise self.error(f"byte_math: {word} needs a value")
                fields[word] = arg
            elif word == "bitmask":
                fields[word] = arg
            else:
                raise self.error(f"byte_math: unknown field {word!r}")
        if "dce" in flags:
            raise self.error("byte_math: dce (the DCE/RPC byte order) is not supported")
        missing = [k for k in ("bytes", "offset", "oper", "rvalue", "result") if k not in fields]
        if missing:
            raise self.error(f"byte_math: missing {', '.join(missing)}")
        refs: list[tuple[str, str]] = []
        try:
            count = int(fields["bytes"])
            offset = int(fields["offset"], 0)
            oper = fields["oper"]
            if oper not in ("+", "-", "*", "/", "<<", ">>"):
                raise ValueError(f"unknown oper {oper!r} (+, -, *, /, <<, >>)")
            if oper in ("<<", ">>") and count > 4:
                raise ValueError("bytes must be 1 to 4 with << or >>")
            rvalue = self._number_or_var(name, fields["rvalue"], "byte_value", refs)
            if not 0 <= rvalue < 2**32:
                raise ValueError(f"rvalue {rvalue} is out of range")
            result = fields["result"]
            if not re.fullmatch(r"[A-Za-z_]\w*", result):
                raise ValueError(f"bad variable name {result!r}")
            if result in self.byte_vars:
                raise ValueError(f"variable {result!r} defined twice")
            endian = fields.get("endian", "big")
            if endian not in ("big", "little"):
                raise ValueError(f"endian must be big or little, not {endian!r}")
            base = 0
            if "string" in fields:
                bases = {"dec": 10, "hex": 16, "oct": 8}
                if fields["string"] not in bases:
                    raise ValueError(f"string must be dec, hex or oct, not {fields['string']!r}")
                base = bases[fields["string"]]
            mask = int(fields["bitmask"], 0) if "bitmask" in fields else 0
        except ValueError as exc:
            raise self.error(f"{name}: {exc}") from None
        if not 1 <= count <= 10 or (not base and count > 8):
            raise self.error(f"{name}: cannot read {count} bytes")
        if not -65535 <= offset <= 65535:
            raise self.error(f"{name}: offset {offset} is out of range")
        relative = "relative" in flags and any(c.buffer == self.buffer for c in self.contents)
        byte_op = ByteOp(
            kind="math",
            count=count,
            offset=offset,
            relative=relative,
            big_endian=endian == "big",
            base=base,
            value=rvalue,
            name=result,
            oper=oper,
            math_mask=mask,
        )
        self._set_byte_var(result)
        self._add_byte_op(byte_op, relative, refs)

    def _opt_stream_size(self, name: str, value: str | None) -> None:
        parts = [p.strip() for p in self._need(name, value).split(",")]
        sides = {"server": 1, "client": 2, "both": 3, "either": 4}
        if len(parts) != 3 or parts[0] not in sides or parts[1] not in _STREAM_OPS:
            raise self.error(
                f"stream_size: expected <server|client|both|either>,<op>,<bytes>, got {value!r}"
            )
        size = self._int(name, parts[2], 0)
        self.contents.append(
            Content(b"", buffer=STREAM_SIZE, stream=(sides[parts[0]], parts[1], size))
        )

    # legacy TLS keywords with their value (case-sensitive, no modifiers)
    def _tls_value(self, name: str, value: str | None, buffer: str) -> None:
        try:
            pattern, negated = parse_content(self._need(name, value))
        except ValueError as exc:
            raise self.error(f"{name}: {exc}") from None
        self.buffers_used.add(buffer)
        self.contents.append(Content(pattern, buffer=buffer, negated=negated))

    def _opt_tls_subject(self, name: str, value: str | None) -> None:
        self._tls_value(name, value, "tls.cert_subject")

    def _opt_tls_issuerdn(self, name: str, value: str | None) -> None:
        self._tls_value(name, value, "tls.cert_issuer")

    def _opt_tls_fingerprint(self, name: str, value: str | None) -> None:
        self._tls_value(name, value, "tls.cert_fingerprint")

    def _validity(self, name: str, value: str | None, state: bytes) -> None:
        self._flag_only(name, value)
        self.buffers_used.add("tls.cert_validity")
        self.contents.append(Content(state, buffer="tls.cert_validity", offset=0, depth=len(state)))

    def _date_range(self, name: str, value: str | None, buffer: str) -> None:
        text = self._need(name, value).strip()
        try:
            if "<>" in text:
                low_text, high_text = text.split("<>", 1)
                low, high = parse_date(low_text), parse_date(high_text)
            elif text.startswith("<"):
                low, high = -(1 << 62), parse_date(text[1:]) - 1
            elif text.startswith(">"):
                low, high = parse_date(text[1:]) + 1, 1 << 62
            else:
                low = high = parse_date(text.lstrip("="))
        except ValueError as exc:
            raise self.error(f"{name}: {exc}") from None
        self.buffers_used.add(buffer)
        self.contents.append(Content(b"", buffer=buffer, date=(low, high)))

    def _opt_tls_cert_notbefore(self, name: str, value: str | None) -> None:
        self._date_range(name, value, "tls.cert_notbefore")

    def _opt_tls_cert_notafter(self, name: str, value: str | None) -> None:
        self._date_range(name, value, "tls.cert_notafter")

    def _opt_tls_cert_expired(self, name: str, value: str | None) -> None:
        self._validity(name, value, b"expired")

    def _opt_tls_cert_valid(self, name: str, value: str | None) -> None:
        self._validity(name, value, b"valid")

    def _opt_detection_filter(self, name: str, value: str | None) -> None:
        if self.threshold is not None:
            raise self.error("detection_filter with threshold is not supported")
        self._opt_threshold(name, "type detection_filter, " + self._need(name, value))

    def _icmp_field(self, name: str, value: str | None) -> tuple[int, int]:
        try:
            low, high = parse_size(self._need(name, value))
        except ValueError as exc:
            raise self.error(f"{name}: {exc}") from None
        return low, min(high, 255)

    def _opt_itype(self, name: str, value: str | None) -> None:
        self.itype = self._icmp_field(name, value)

    def _opt_icode(self, name: str, value: str | None) -> None:
        self.icode = self._icmp_field(name, value)

    def _opt_ip_proto(self, name: str, value: str | None) -> None:
        text = self._need(name, value).strip()
        negated = text.startswith("!")
        text = text.lstrip("!").strip()
        compare = text[:1] if text[:1] in "<>" else ""
        text = text[len(compare) :].strip()
        number = IP_PROTO_NAMES.get(text.lower())
        if number is None:
            number = self._int(name, text, 0, 255)
        if compare == "<":  # as Suricata: strictly below, strictly above
            if number == 0:
                raise self.error(f"{name}: no protocol is below 0")
            self.ip_proto = (0, number - 1, negated)
        elif compare == ">":
            if number == 255:
                raise self.error(f"{name}: no protocol is above 255")
            self.ip_proto = (number + 1, 255, negated)
        else:
            self.ip_proto = (number, number, negated)

    def _opt_app_layer_protocol(self, name: str, value: str | None) -> None:
        text = self._need(name, value).strip()
        negated = text.startswith("!")
        text = text.lstrip("!").strip()
        if text not in PROTO_APP:
            raise self.error(f"app-layer-protocol: {text!r} is not detected by the engine")
        self.app_protocol = (PROTO_APP[text], negated)

    def _opt_flowbits(self, name: str, value: str | None) -> None:
        command, _, names = self._need(name, value).partition(",")
        command, names = command.strip(), "".join(names.split())
        if command == "noalert":
            if names:
                raise self.error("flowbits: noalert takes no name")
            self.noalert = True
            return
        if command not in FLOWBIT_COMMANDS:
            raise self.error(f"flowbits: unknown command {command!r}")
        if not names or not all(n for n in re.split(r"[|&]", names)):
            raise self.error(f"flowbits: {command} needs a name")
        if ("|" in names and "&" in names) or (
            command not in ("isset", "isnotset") and ("|" in names or "&" in names)
        ):
            raise self.error(f"flowbits: {names!r}: | and & only in isset and isnotset, not mixed")
        self.flowbits.append((command, names))

    def _opt_xbits(self, name: str, value: str | None) -> None:
        try:
            xbit = parse_xbits(self._need(name, value))
        except ValueError as exc:
            raise self.error(str(exc)) from None
        if xbit is None:
            self.noalert = True
        else:
            self.xbits.append(xbit)

    def _opt_flowint(self, name: str, value: str | None) -> None:
        try:
            self.flowint.append(parse_flowint(self._need(name, value)))
        except ValueError as exc:
            raise self.error(str(exc)) from None

    def _ssh_value(self, name: str, value: str | None, buffer: str, items: list[str]) -> None:
        """The older value forms of the SSH keywords, as items of the banner's buffer (the
        sticky buffer stays as it was)."""
        text = self._need(name, value).strip().strip('"').strip()
        if not text or any(c in text for c in '"|;\\'):
            raise self.error(f"{name}: {text!r} is not a plain version string")
        before = self.buffer
        self.buffer = buffer
        if text == "2_compat" and name == "ssh.protoversion":
            self.option("pcre", '"/^(?:2\\.0|1\\.99)$/"')
        else:
            self.option("content", f'"{text}"')
            for item in items:
                self.option(item, None)
        self.buffer = before

    def _opt_ssh_protoversion(self, name: str, value: str | None) -> None:
        self._ssh_value(name, value, "ssh.proto", ["startswith", "endswith"])

    def _opt_ssh_softwareversion(self, name: str, value: str | None) -> None:
        self._ssh_value(name, value, "ssh.software", ["startswith"])

    def _opt_noalert(self, name: str, value: str | None) -> None:
        self._flag_only(name, value)
        self.noalert = True

    def _transform(self, name: str, value: str | None) -> None:
        """A transformation (dotprefix, to_lowercase, ...): the sticky buffer's items see
        the buffer transformed, in the order the transformations are named."""
        if self.base64_data:
            raise self._refuse("base64_data", f"{name} after base64_data")
        if self.buffer == PKT:
            raise self.error(f"{name} needs a sticky buffer before it")
        if self.buffer in self.transforms and any(
            c.buffer == self.buffer for c in self.contents[self.transform_from[self.buffer] :]
        ):  # Suricata: transformations follow the sticky buffer or its untransformed items
            raise self.error(f"{name} must come before the buffer's transformed items")
        self.transform_from.setdefault(self.buffer, len(self.contents))
        try:
            argument = transforms.parse_argument(name, value)
        except ValueError as exc:
            raise self.error(str(exc)) from None
        self.transforms.setdefault(self.buffer, []).append((name, argument))

    # header fields: tests on the packet from its IP header on (fields.py)
    def _field(self, name: str, value: str | None, field_name: str, maximum: int) -> None:
        text = self._need(name, value).strip()
        try:
            low, high, negated = parse_uint(text, maximum)
        except ValueError as exc:
            raise self.error(f"{name}: {exc}") from None
        test = FieldTest(field_name, low=low, high=high, negated=negated)
        self.contents.append(Content(b"", buffer=IP_PACKET, head=test))

    def _opt_ttl(self, name: str, value: str | None) -> None:
        self._field(name, value, "ttl", 255)

    def _opt_tos(self, name: str, value: str | None) -> None:
        self._field(name, value, "tos", 255)

    def _opt_id(self, name: str, value: str | None) -> None:
        self._field(name, value, "id", 65535)

    def _opt_fragoffset(self, name: str, value: str | None) -> None:
        self._field(name, value, "fragoffset", 8191)

    def _opt_window(self, name: str, value: str | None) -> None:
        self._field(name, value, "window", 65535)

    def _opt_seq(self, name: str, value: str | None) -> None:
        self._field(name, value, "seq", 2**32 - 1)

    def _opt_ack(self, name: str, value: str | None) -> None:
        self._field(name, value, "ack", 2**32 - 1)

    def _opt_tcp_mss(self, name: str, value: str | None) -> None:
        self._field(name, value, "tcp.mss", 65535)

    def _opt_fragbits(self, name: str, value: str | None) -> None:
        text = self._need(name, value).strip()
        main, _, _ignored = text.partition(",")  # a second part: bits to leave out (rare)
        main = main.strip()
        modifier = ""
        if main[:1] in ("+", "*", "!"):
            modifier, main = main[0], main[1:]
        if main[-1:] in ("+", "*"):  # also written after the bits
            if modifier:
                raise self.error("fragbits: only one modifier (+, * or !) at a time")
            modifier, main = main[-1], main[:-1]
        bits = 0
        for c in main:
            if c.upper() not in FRAG_BITS:
                raise self.error(f"fragbits: unknown bit {c!r} (M, D or R)")
            bits |= FRAG_BITS[c.upper()]
        if not bits:
            raise self.error(f"fragbits: no bit named in {text!r}")
        test = FieldTest("fragbits", kind="flags", bits=bits, modifier=modifier)
        self.contents.append(Content(b"", buffer=IP_PACKET, head=test))

    def _opt_ipopts(self, name: str, value: str | None) -> None:
        text = self._need(name, value).strip().lower()
        if text not in IP_OPTIONS:
            raise self.error(f"ipopts: unknown option {text!r} ({', '.join(IP_OPTIONS)})")
        test = FieldTest("ipopts", kind="option", low=IP_OPTIONS[text])
        self.contents.append(Content(b"", buffer=IP_PACKET, head=test))

    # the TLS handshake's facts (tlsinfo.py fills their buffers)
    def _tls_field(self, buffer: str, test: FieldTest) -> None:
        self.buffers_used.add(buffer)
        self.contents.append(Content(b"", buffer=buffer, head=test))

    def _opt_tls_version(self, name: str, value: str | None) -> None:
        """``tls.version:1.2`` (1.0 to 1.3) or a number (``0x0303``): the version the
        direction's hello gave (TLS 1.3 from its supported_versions extension)."""
        text = self._need(name, value).strip()
        named = {"1.0": 0x0301, "1.1": 0x0302, "1.2": 0x0303, "1.3": 0x0304}
        if text in named:
            number = named[text]
        else:
            try:
                number = int(text, 0)
            except ValueError:
                raise self.error(f"{name}: expected 1.0, 1.1, 1.2, 1.3 or a number") from None
            if not 0 <= number <= 0xFFFF:
                raise self.error(f"{name}: {text} is out of range")
        self._tls_field(TLS_VERSION, FieldTest("number", low=number, high=number))

    def _opt_ssl_version(self, name: str, value: str | None) -> None:
        """``ssl_version:tls1.2,tls1.3`` (any of them), ``!`` before a name: not that one."""
        wanted: set[int] = set()
        unwanted: set[int] = set()
        for item in self._need(name, value).split(","):
            word = item.strip().lower()
            negated = word.startswith("!")
            word = word.lstrip("!").strip()
            if word not in SSL_VERSIONS:
                raise self.error(f"ssl_version: unknown version {word!r}")
            (unwanted if negated else wanted).add(SSL_VERSIONS[word])
        test = FieldTest("number", kind="set", values=frozenset(wanted), others=frozenset(unwanted))
        self._tls_field(TLS_VERSION, test)

    def _opt_ssl_state(self, name: str, value: str | None) -> None:
        """``ssl_state:client_hello|server_hello``: this segment completes one of them;
        ``!`` before a name: it completes not that one."""
        bits = 0
        others: set[int] = set()
        for item in self._need(name, value).split("|"):
            word = item.strip().lower()
            negated = word.startswith("!")
            word = word.lstrip("!").strip()
            if word not in SSL_STATES:
                raise self.error(f"ssl_state: unknown state {word!r}")
            if negated:
                others.add(SSL_STATES[word])
            else:
                bits |= SSL_STATES[word]
        self._tls_field(
            TLS_STATE, FieldTest("number", kind="state", bits=bits, others=frozenset(others))
        )

    def _opt_tls_cert_chain_len(self, name: str, value: str | None) -> None:
        text = self._need(name, value).strip()
        try:
            low, high, negated = parse_uint(text, 2**32 - 1)
        except ValueError as exc:
            raise self.error(f"{name}: {exc}") from None
        self._tls_field(TLS_CHAIN, FieldTest("number", low=low, high=high, negated=negated))

    def _opt_pkt_data(self, name: str, value: str | None) -> None:
        self._flag_only(name, value)
        self._leave_base64(PKT)
        self.buffer = PKT

    # base64_decode and base64_data
    def _refuse(self, keyword: str, message: str) -> RuleFileError:
        """A form the engine does not run: skipped with ``keyword`` as the reason (an
        error when loading is strict)."""
        if self.unsupported is not None:
            return _call(self.unsupported, keyword)
        return self.error(message)

    def _leave_base64(self, buffer: str) -> None:
        if self.base64_data and buffer == self.base64:
            # its items would follow the decoded ones in one chain
            raise self._refuse("base64_data", f"{buffer} again after base64_data")
        self.base64_data = False

    def _opt_base64_decode(self, name: str, value: str | None) -> None:
        """``base64_decode[:bytes N][, offset N][, relative]``: the current buffer (from the
        previous item's end when relative), base64_data's bytes once decoded."""
        if self.base64 is not None:
            raise self._refuse("base64_decode", "base64_decode given twice")
        found: dict[str, str] = {}
        for part in (value or "").split(","):
            words = part.split()
            if not words:
                continue
            key = words[0]
            if key not in ("bytes", "offset", "relative") or len(words) != (
                1 if key == "relative" else 2
            ):
                raise self.error(
                    f"base64_decode: expected bytes N, offset N or relative, got {part.strip()!r}"
                )
            if key in found:
                raise self.error(f"base64_decode: {key} given twice")
            found[key] = words[-1]
        nbytes = self._int(name, found.get("bytes", "0"), 0, BASE64_MAX)
        offset = self._int(name, found.get("offset", "0"), 0, BASE64_MAX)
        buffer = self.buffer
        if buffer == PKT and self.contents and self.contents[-1].buffer != PKT:
            buffer = self.contents[-1].buffer  # content:...; http_uri; base64_decode
        relative = "relative" in found
        if relative and not any(c.buffer == buffer for c in self.contents):
            raise self.error("base64_decode: relative needs a content before it")
        self.base64 = buffer
        self.buffer = buffer
        self.buffers_used.add(buffer)
        self.contents.append(
            Content(b"", buffer=buffer, decode=(nbytes, offset), distance=0 if relative else None)
        )

    def _opt_base64_data(self, name: str, value: str | None) -> None:
        self._flag_only(name, value)
        if self.base64 is None:
            raise self.error("base64_data needs a base64_decode before it")
        self.buffer = self.base64
        self.base64_data = True

    # flow and packet
    def _opt_flow(self, name: str, value: str | None) -> None:
        for item in self._need(name, value).split(","):
            word = item.strip()
            if word in ("to_server", "from_client"):
                self._set_direction(True)
            elif word in ("to_client", "from_server"):
                self._set_direction(False)
            elif word == "established":
                self.flow_established = True
            elif word in ("not_established", "stateless"):
                self.flow_established = False if word == "not_established" else None
            elif word in ("no_stream", "only_stream", "no_frag", "only_frag"):
                pass  # the rule sees packets and the stream alike (as tcp-pkt, tcp-stream)
            else:
                raise self.error(f"unknown flow keyword {word!r}")

    def _set_direction(self, to_server: bool) -> None:
        if self.flow_to_server is not None and self.flow_to_server != to_server:
            raise self.error("flow: to_server and to_client exclude each other")
        self.flow_to_server = to_server

    def _opt_flags(self, name: str, value: str | None) -> None:
        text = self._need(name, value).strip()
        main, _, ignored = text.partition(",")
        modifier = ""
        bits = 0
        named = 0
        for c in main.strip():
            if c in "+*!":
                if modifier:
                    raise self.error("flags: only one modifier (+, * or !) at a time")
                modifier = c
            elif c == "0":
                named += 1
            elif c.upper() in _FLAG_BITS:
                bits |= _FLAG_BITS[c.upper()]
                named += 1
            else:
                raise self.error(f"flags: unknown flag {c!r} in {text!r}")
        if not named:
            raise self.error(f"flags: no flag named in {text!r}")
        mask = 0xFF
        if ignored.strip():
            for c in ignored.strip():
                if c.upper() not in _FLAG_BITS:
                    raise self.error(f"flags: unknown flag {c!r} to ignore in {text!r}")
                mask &= ~_FLAG_BITS[c.upper()]
        self.flags = Flags(bits, modifier, mask)

    def _opt_threshold(self, name: str, value: str | None) -> None:
        parts: dict[str, str] = {}
        for item in self._need(name, value).split(","):
            key, _, val = item.strip().partition(" ")
            if key in parts:
                raise self.error(f"threshold: {key!r} given twice")
            parts[key] = val.strip()
        unknown = set(parts) - {"type", "track", "count", "seconds"}
        if unknown:
            raise self.error(f"threshold: unknown field {sorted(unknown)[0]!r}")
        missing = [k for k in ("type", "track", "count", "seconds") if k not in parts]
        if missing:
            raise self.error(f"threshold: missing {', '.join(missing)}")
        if parts["type"] not in get_args(ThresholdType) or (
            parts["type"] == "detection_filter" and name != "detection_filter"
        ):
            raise self.error(
                f"threshold: type must be limit, threshold or both, not {parts['type']!r}"
            )
        if parts["track"] not in get_args(Track):
            raise self.error(f"threshold: track must be by_src or by_dst, not {parts['track']!r}")
        self.threshold = Threshold(
            type=cast(ThresholdType, parts["type"]),
            track=cast(Track, parts["track"]),
            count=self._int("threshold count", parts["count"], 1),
            seconds=self._int("threshold seconds", parts["seconds"], 1),
        )

    def build(self, **header: object) -> Signature:
        if self.sid is None:
            raise self.error("the rule has no sid")
        proto = str(header["proto"])
        apps = {BUFFER_APP[b] for b in self.buffers_used if b in BUFFER_APP}
        not_app = ""
        if self.app_protocol is not None:
            if self.app_protocol[1]:
                not_app = self.app_protocol[0]
            else:
                apps.add(self.app_protocol[0])
        if proto in PROTO_APP:
            apps.add(PROTO_APP[proto])
        if len(apps) > 1:
            raise self.error(f"the rule mixes protocols: {', '.join(sorted(apps))}")
        app = apps.pop() if apps else ""
        if app == "dns" and proto not in ("ip", "udp", "tcp", "dns"):
            raise self.error(f"dns.query needs a dns, udp, tcp or ip rule, not {proto}")
        if app in ("tls", "http") and proto not in ("ip", "tcp", app):
            raise self.error(f"{app} buffers need a {app} or tcp rule, not {proto}")
        category, priority = "", DEFAULT_PRIORITY
        if self.classtype:
            category, priority = self.classtypes[self.classtype]
        if self.priority is not None:
            priority = self.priority
        contents = [
            replace(c, transforms=tuple(self.transforms[c.buffer]))
            if c.buffer in self.transforms and i >= self.transform_from[c.buffer]
            else c
            for i, c in enumerate(self.contents)
        ]
        if self.base64 is not None:  # the items after base64_decode in its buffer: decoded
            at = next(i for i, c in enumerate(contents) if c.decode is not None)
            contents[at + 1 :] = [
                replace(c, decoded=True, transforms=()) if c.buffer == self.base64 else c
                for c in contents[at + 1 :]
            ]
        return Signature(
            sid=self.sid,
            msg=self.msg or "",
            rev=self.rev,
            classtype=self.classtype,
            category=category,
            priority=priority,
            contents=tuple(contents),
            flow_to_server=self.flow_to_server,
            flow_established=self.flow_established,
            flags=self.flags,
            threshold=self.threshold,
            app=app,
            references=tuple(self.references),
            metadata=tuple(self.metadata),
            flowbits=tuple(self.flowbits),
            noalert=self.noalert,
            xbits=tuple(self.xbits),
            flowint=tuple(self.flowint),
            itype=self.itype,
            icode=self.icode,
            ip_proto=self.ip_proto,
            not_app=not_app,
            header=any(c.buffer == IP_PACKET or c.buffer in HEADER_BUFFERS for c in contents),
            **header,  # type: ignore[arg-type]
        )


# ---- addresses and ports ------------------------------------------------------------------


def parse_address(text: str, variables: Variables, depth: int = 0) -> AddrExpr:
    text = text.strip()
    if depth > 16:
        raise ValueError("address lists nested too deep")
    if not text:
        raise ValueError("empty address")
    if text.startswith("!"):
        inner = parse_address(text[1:], variables, depth + 1)
        if inner.is_any:
            raise ValueError("'!any' matches nothing")
        return AddrExpr("not", items=(inner,))
    if text.startswith("["):
        if not text.endswith("]"):
            raise ValueError(f"unbalanced brackets in address {text!r}")
        items = tuple(parse_address(p, variables, depth + 1) for p in _split_list(text[1:-1]))
        if not items:
            raise ValueError("empty address list []")
        if any(i.is_any for i in items):
            return ANY_ADDR
        return AddrExpr("list", items=items)
    if text.lower() == "any":
        return ANY_ADDR
    if text.startswith("$"):
        name = text[1:]
        if name == "HOME_NET" or name in ADDRESS_ALIASES:
            return variables.home()
        if name == "EXTERNAL_NET":
            return AddrExpr("not", items=(variables.home(),))
        raise ValueError(f"unknown address variable ${name}")
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"bad address {text!r}") from None
    return AddrExpr("net", net=net)


def parse_ports(text: str, variables: Variables, depth: int = 0) -> PortExpr:
    text = text.strip()
    if depth > 16:
        raise ValueError("port lists nested too deep")
    if not text:
        raise ValueError("empty port")
    if text.startswith("!"):
        inner = parse_ports(text[1:], variables, depth + 1)
        if inner.is_any:
            raise ValueError("'!any' matches no port")
        return PortExpr("not", items=(inner,))
    if text.startswith("["):
        if not text.endswith("]"):
            raise ValueError(f"unbalanced brackets in ports {text!r}")
        items = tuple(parse_ports(p, variables, depth + 1) for p in _split_list(text[1:-1]))
        if not items:
            raise ValueError("empty port list []")
        if any(i.is_any for i in items):
            return ANY_PORT
        return PortExpr("list", items=items)
    if text.lower() == "any":
        return ANY_PORT
    if text.startswith("$"):
        name = text[1:]
        if name not in variables.ports:
            raise ValueError(f"unknown port variable ${name}")
        return parse_ports(variables.ports[name], variables, depth + 1)
    if ":" in text:
        low_text, _, high_text = text.partition(":")
        low = _port(low_text) if low_text.strip() else 0
        high = _port(high_text) if high_text.strip() else 65535
        if low > high:
            raise ValueError(f"bad port range {text!r}: {low} > {high}")
        return PortExpr("range", low, high)
    port = _port(text)
    return PortExpr("range", port, port)


def _port(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"bad port {text.strip()!r}") from None
    if not 0 <= value <= 65535:
        raise ValueError(f"port {value} is out of range 0..65535")
    return value


def _split_list(text: str) -> list[str]:
    parts: list[str] = []
    current = ""
    depth = 0
    for c in text:
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        if c == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += c
    if current.strip() or parts:
        parts.append(current)
    return [p for p in (p.strip() for p in parts) if p] if parts else []


BASE64_MAX = 65535  # base64_decode's bytes and offset at most (and the bytes decoded)

# ---- pcre, sizes -------------------------------------------------------------------------

# pcre flags: Python re equivalents, and the buffers Suricata's buffer flags select
_PCRE_FLAGS = {"i": re.IGNORECASE, "s": re.DOTALL, "m": re.MULTILINE, "x": re.VERBOSE}
_PCRE_BUFFERS = {
    "U": "http.uri",
    "I": "http.raw_uri",
    "M": "http.method",
    "V": "http.user_agent",
    "W": "http.host",
    "H": "http.header",
    "D": "http.header.raw",
    "C": "http.cookie",
    "P": "http.request_body",
    "Q": "http.response_body",
    "S": "http.stat_code",
    "Y": "http.stat_msg",
}
_PCRE_IGNORED = "OAEG"  # match limits, anchoring and greediness Python expresses otherwise


def parse_pcre(value: str) -> tuple[re.Pattern[bytes], str | None, bool, bool]:
    """``"/regex/flags"`` -> (compiled, buffer or None, relative, negated); ValueError for
    a form Python's ``re`` cannot run the same way."""
    text = value.strip()
    negated = text.startswith("!")
    if negated:
        text = text[1:].strip()
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise ValueError(f'expected a quoted "/regex/flags", got {text!r}')
    text = text[1:-1]
    if not text.startswith("/") or text.rfind("/") == 0:
        raise ValueError(f"expected /regex/flags, got {text!r}")
    end = text.rfind("/")
    pattern, flags_text = text[1:end], text[end + 1 :]
    flags = 0
    buffer: str | None = None
    relative = False
    for c in flags_text:
        if c in _PCRE_FLAGS:
            flags |= _PCRE_FLAGS[c]
        elif c == "R":
            relative = True
        elif c == "B":
            pass  # raw bytes: the engine has no decoded form of the payload besides
        elif c in _PCRE_BUFFERS:
            if buffer is not None:
                raise ValueError("more than one buffer flag")
            buffer = _PCRE_BUFFERS[c]
        elif c in _PCRE_IGNORED:
            pass
        else:
            raise ValueError(f"flag {c!r} is not supported")
    regex = compile_pcre(pattern, flags)
    return regex, buffer, relative, negated


_DATE_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H", "%Y-%m-%d", "%Y-%m", "%Y")


def parse_date(text: str) -> int:
    """A date of tls_cert_notbefore / notafter (``2015``, ``2015-06``, ``2015-06-01``, up
    to ``2015-06-01T12:30:00``, UTC; or seconds since the epoch) -> seconds since the epoch."""
    text = text.strip()
    for form in _DATE_FORMATS:
        try:
            when = datetime.datetime.strptime(text, form)
        except ValueError:
            continue
        return int(when.replace(tzinfo=datetime.UTC).timestamp())
    if text.isdigit() and len(text) > 4:
        return int(text)
    raise ValueError(f"expected a date like 2015-06-01, got {text!r}")


def parse_size(text: str) -> tuple[int, int]:
    """``N``, ``<N``, ``>N``, ``N<>M``, ``N-M`` -> an inclusive (low, high) length range."""
    text = text.strip()
    try:
        if "<>" in text:
            low, high = (int(p) for p in text.split("<>"))
            result = (low + 1, high - 1)
        elif text.startswith("<="):
            result = (0, int(text[2:]))
        elif text.startswith(">="):
            result = (int(text[2:]), 1 << 32)
        elif text.startswith("<"):
            result = (0, int(text[1:]) - 1)
        elif text.startswith(">"):
            result = (int(text[1:]) + 1, 1 << 32)
        elif "-" in text[1:]:
            low, high = (int(p) for p in text.split("-", 1))
            result = (low, high)
        else:
            result = (int(text), int(text))
    except ValueError:
        raise ValueError(f"expected N, <N, >N or N<>M, got {text!r}") from None
    if result[0] > result[1] or result[0] < 0:
        raise ValueError(f"empty range {text!r}")
    return result


# Keywords of Suricata's rule language: an unsupported one counts under its own name (a
# bounded set of metric series); anything else counts as "unknown"
_KEYWORDS = """
    app-layer-event app-layer-protocol asn1 base64_data base64_decode bsize byte_extract
    byte_jump byte_math byte_test cip_attribute cip_class cip_service cipservice classtype
    community-id config content dataset datarep dcerpc.iface dcerpc.opnum dcerpc.stub_data
    dce_iface dce_opnum dce_stub_data decode-event depth detection_filter distance dnp3_data
    dnp3_func dnp3_ind dnp3_obj dns.answer.name dns.opcode dns.query dns.query.name dns.rrtype
    dns_query dsize endswith enip_command engine-event fast_pattern file.data file.magic
    file.name file_data filemagic filemd5 filename filesha1 filesha256 filesize filestore
    flags flow flowbits flowint flowvar fragbits fragoffset frame ftp.command ftp.command_data
    ftp.dynamic_port ftpbounce ftpdata_command geoip gid http.accept http.accept_enc
    http.accept_lang http.connection http.content_len http.content_type http.cookie
    http.header http.header.raw http.header_names http.host http.host.raw http.location
    http.method http.protocol http.referer http.request_body http.request_line
    http.response_body http.response_line http.server http.start http.stat_code
    http.stat_msg http.uri http.uri.raw http.user_agent http_accept http_accept_enc
    http_accept_lang http_client_body http_connection http_content_len http_content_type
    http_cookie http_header http_header_names http_host http_method http_protocol
    http_raw_cookie http_raw_header http_raw_host http_raw_uri http_referer
    http_request_line http_response_line http_server_body http_start http_stat_code
    http_stat_msg http_uri http_user_agent icmp_id icmp_seq icmpv4.hdr icmpv6.hdr icode id
    ike.chosen_sa_attribute ipopts ip_proto ipv4.hdr ipv6.hdr isdataat itype ja3.hash
    ja3.string ja3s.hash ja3s.string ja3_hash ja3_string krb5.cname krb5.sname krb5_cname
    krb5_err_code krb5_msg_type krb5_sname lua luajit metadata modbus msg noalert nocase
    offset pcre pkt_data prefilter priority rawbytes reference rev rpc sameip sid smb.named_pipe
    smb.share snmp.community ssh.proto ssh.protoversion ssh.software ssh.softwareversion
    ssh_proto ssh_software ssl_state ssl_version startswith stream_size tag target
    tcp.hdr tcp.mss threshold tls.cert_chain_len tls.cert_expired tls.cert_fingerprint
    tls.cert_issuer tls.cert_serial tls.cert_subject tls.certs tls.fingerprint tls.issuerdn
    tls.sni tls.store tls.subject tls.version tls_cert_expired tls_cert_fingerprint
    tls_cert_issuer tls_cert_serial tls_cert_subject tls_cert_valid tls_sni tos ttl
    udp.hdr uricontent urilen window within xbits ack seq ipopts dotprefix to_lowercase
    to_uppercase strip_whitespace compress_whitespace to_md5 to_sha1 to_sha256 url_decode
    xor header_lowercase strip_pseudo_headers from_base64 pcrexform tls.cert_notbefore
    tls.cert_notafter
"""
SURICATA_KEYWORDS = frozenset(_KEYWORDS.split())


def flowbits_hold(conditions: Sequence[tuple[str, str]], bits: AbstractSet[str]) -> bool:
    """Whether a rule's isset / isnotset conditions hold (``a|b``: any, ``a&b``: all)."""
    for command, names in conditions:
        if command not in ("isset", "isnotset"):
            continue
        if "|" in names:
            found = any(n in bits for n in names.split("|"))
        else:
            found = all(n in bits for n in names.split("&"))
        if found != (command == "isset"):
            return False
    return True


ACTION_ORDER = {"pass": 0, "drop": 1, "alert": 2}  # as Suricata orders rules by action
_CHECKS = ("isset", "isnotset")


def state_order(sig: Signature) -> tuple[int, ...]:
    """The order in which a packet's matching rules check and set flowbits, flowints and
    xbits, as Suricata orders rules: by action (pass, drop, alert), then how they use
    flowbits, then flowints, then xbits (see ``flowint.uses``: a later rule sees what an earlier one
    set on the same packet), then priority and sid."""
    bits, ints, xbits = sig.flowbits, sig.flowint, sig.xbits
    return (
        ACTION_ORDER[sig.action],
        _uses(any(c in _CHECKS for c, _ in bits), any(c not in _CHECKS for c, _ in bits)),
        flowint_order(ints),
        _uses(any(x[0] in _CHECKS for x in xbits), any(x[0] not in _CHECKS for x in xbits)),
        sig.priority,
        sig.sid,
    )


def flowbits_apply(actions: Sequence[tuple[str, str]], bits: set[str]) -> None:
    for command, name in actions:
        if command == "set":
            bits.add(name)
        elif command == "unset":
            bits.discard(name)
        elif command == "toggle":
            bits.symmetric_difference_update((name,))
