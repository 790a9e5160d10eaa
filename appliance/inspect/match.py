"""Fast signature matching.

Rules are compiled once into groups. A group is chosen per flow direction from the packet's
protocol, application protocol, direction, and which of the rules' address and port
expressions its addresses and ports fall in (the answers are cached per address and per
port), so the header of a rule is checked once per flow, not once per packet.

Inside a group, each buffer (the packet payload, ``dns.query``, ``tls.sni``, ``http.host``,
``http.uri``) has one prefilter: a compiled alternation of every rule's longest content.
A buffer with no hit costs one regular-expression scan; on a hit, only the rules whose
pattern occurs are checked in full. Rules without a positive content are checked on every
packet of the group (they are cheap: flags, flow).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from appliance.inspect.appproto import SSH_BUFFERS, ssh_buffers
from appliance.inspect.decode import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_SCTP,
    PROTO_TCP,
    PROTO_UDP,
    Layer,
)
from appliance.inspect.fields import (
    HEADER_BUFFERS,
    IP_PACKET,
    PACKET_BYTES,
    SEGMENT_FIELDS,
    FieldTest,
    SegmentTest,
    header_buffers,
    read_field,
    segment_test,
    segment_tests_hold,
)
from appliance.inspect.prefilter import Exhaustive, Prefilter
from appliance.inspect.rules import (
    BUFFER_APP,
    MULTI_BUFFERS,
    PKT,
    AddrExpr,
    Content,
    MultiBuffer,
    PortExpr,
    Signature,
    chain_matches,
    independent,
    item_check,
    items_hold,
)
from appliance.inspect.transforms import Transform, apply

_MAX_CACHE = 65536  # rule groups kept

_PROTO_NUMBERS: dict[str, tuple[int, ...]] = {
    "tcp": (PROTO_TCP,),
    "http": (PROTO_TCP,),
    "tls": (PROTO_TCP,),
    "udp": (PROTO_UDP,),
    "gtp": (PROTO_UDP,),
    "dns": (PROTO_UDP, PROTO_TCP),
    "icmp": (PROTO_ICMP, PROTO_ICMPV6),
    "icmpv6": (PROTO_ICMPV6,),
    "sctp": (PROTO_SCTP,),
}
_PORT_PROTOS = (PROTO_TCP, PROTO_UDP, PROTO_SCTP)


ADDR_BITS_CACHE = 4096  # addresses whose expressions a Matcher keeps (see _header_bits)
ANCHOR_LIMIT = 64  # a fast pattern that must lie this close to its buffer's start
# A group with at least this many anchored rules finds those whose fast pattern is in its
# place with one multi-pattern scan of the payload's first bytes (AnchorIndex), not by
# looking for each rule's pattern in turn (2,000 anchored rules: 113 us a stream head)
ANCHOR_INDEX_MIN = 32

# An anchored rule with its fast pattern's place: (rule, pattern (lower case if nocase),
# from, to, nocase)
AnchoredEntry = tuple[Signature, bytes, int, int, bool]


def anchored_entry(sig: Signature) -> tuple[AnchoredEntry, Content]:
    """An anchored rule's entry, and its fast pattern."""
    fast = fast_pattern(sig)
    assert fast is not None and fast.depth is not None
    needle = fast.pattern.lower() if fast.nocase else fast.pattern
    return (sig, needle, fast.offset, fast.offset + fast.depth, fast.nocase), fast


def in_place(
    entries: Iterable[AnchoredEntry], text: bytes, skip: AbstractSet[int] = frozenset()
) -> list[Signature]:
    """The rules of ``entries`` (but those of a sid in ``skip``) whose fast pattern is in its
    place in ``text``, in their order."""
    folded = None
    placed: list[Signature] = []
    for sig, needle, low, high, nocase in entries:
        if sig.sid in skip:
            continue
        if nocase:
            if folded is None:
                folded = text.lower()
            if folded.find(needle, low, high) < 0:
                continue
        elif text.find(needle, low, high) < 0:
            continue
        placed.append(sig)
    return placed


class _Place:
    """An anchored rule's place in an ``AnchorScan``, standing for the rule in its prefilter
    (a prefilter joins what it finds by ``sid``: here the place)."""

    __slots__ = ("sid",)

    def __init__(self, place: int) -> None:
        self.sid = place


class AnchorScan:
    """The anchored rules of a rule set (in load order) and one prefilter over all their fast
    patterns, made once and shared by the ``AnchorIndex`` of every large group."""

    __slots__ = ("entries", "prefilter")

    def __init__(
        self, entries: list[AnchoredEntry], contents: list[Content], prefilter: type[Prefilter]
    ) -> None:
        self.entries = entries
        places = [(content, _Place(i)) for i, content in enumerate(contents)]
        self.prefilter = prefilter(PKT, places)  # type: ignore[arg-type]


class AnchorIndex:
    """The anchored rules of a large group whose fast pattern is in its place in a payload
    (or a stream's first bytes), found with one scan of its first ``reach`` bytes for every
    anchored rule's fast pattern (the rule set's ``AnchorScan``), each found one of the group
    then checked in its place: the rules ``stream.placed`` gives, in the same order, at a
    cost that does not grow with their number. A group holds only which of the scan's rules
    are its own (a byte each)."""

    __slots__ = ("_mine", "_scan", "reach")

    def __init__(self, scan: AnchorScan, mine: bytes, reach: int) -> None:
        self._scan = scan
        self._mine = mine
        self.reach = reach

    def placed(self, text: bytes, skip: AbstractSet[int] = frozenset()) -> list[Signature]:
        """The group's rules (but those of a sid in ``skip``) whose fast pattern is in its
        place in ``text``, in the group's order (load order, as the scan's)."""
        scan = self._scan
        found = scan.prefilter.candidates(text if len(text) <= self.reach else text[: self.reach])
        if not found:
            return []
        mine = self._mine
        places = [p.sid for p in found if mine[p.sid]]  # (most often none: another group's)
        if not places:
            return []
        if len(places) > 1:
            places.sort()
        entries = scan.entries
        return in_place([entries[place] for place in places], text, skip)

    def placed_in(self, data: bytes, start: int, end: int) -> list[Signature]:
        """``placed`` of ``data[start:end]``."""
        return self.placed(data[start : min(end, start + self.reach)])


# A header test compiled: (key of its number in a packet's cache, buffer, field, whether it
# is a range test, low, high, negated, the test)
HeadTest = tuple[str, str, str, bool, int, int, bool, FieldTest]
# A plain rule to check: (rule, its header tests compiled or None, its size gate or None, its
# rule gate or None)
PlainCheck = tuple[
    Signature, "tuple[HeadTest, ...] | None", "tuple[int, int] | None", "bytes | None"
]


def size_gate(sig: Signature) -> tuple[int, int] | None:
    """The payload sizes (``dsize``: low, high, inclusive) a rule can match at all, where its
    items on the payload make that plain: each test of the payload's size that reads the
    payload as it is (not negated, not relative, no transformation of the payload in the
    rule) narrows it. None: no such test. A plain rule outside its gate is not checked
    further (a flood of bare SYNs then costs nothing per ``dsize`` rule)."""
    on_payload = [c for c in sig.contents if c.buffer == PKT]
    if any(c.transforms or c.decoded or c.decode is not None for c in on_payload):
        return None
    gate: tuple[int, int] | None = None
    for c in on_payload:
        if (
            c.size is None
            or c.negated
            or c.relative
            or c.refs
            or c.head is not None
            or c.byte_op is not None
            or c.stream is not None
            or c.date is not None
        ):
            continue
        low, high = c.size
        gate = (low, high) if gate is None else (max(gate[0], low), min(gate[1], high))
    return gate


# A plain rule's gate on the fast paths: header tests and payload sizes (low, high,
# inclusive) that every packet the rule matches passes (see fast_gate)
FastGate = tuple[tuple[SegmentTest, ...], int, int]
_ANY_SIZE = 1 << 20
# (the codes of SEGMENT_FIELDS' TCP header fields: seq, ack, window)
TCP_SEGMENT_FIELDS = frozenset(SEGMENT_FIELDS[name] for name in ("seq", "ack", "window"))


def fast_gate(sig: Signature, tcp: bool) -> FastGate | None:
    """What a packet must pass for ``sig`` to match it that the fast paths can test on the
    packet's own bytes: its header tests of the fields an IPv4 packet without options gives
    and (``tcp``) those of its TCP header (``segment_test``), and its size gate. A packet
    outside the gate cannot match the rule, whatever the rule's other items. None: the rule
    has neither."""
    tests: list[SegmentTest] = []
    for content in sig.contents:
        head = content.head
        if content.buffer == IP_PACKET and head is not None and content.plain:
            compiled = segment_test(head)
            if compiled is not None and (tcp or compiled[0] not in TCP_SEGMENT_FIELDS):
                tests.append(compiled)
    size = size_gate(sig)
    if not tests and size is None:
        return None
    low, high = size if size is not None else (0, _ANY_SIZE)
    return tuple(tests), max(low, 0), min(high, _ANY_SIZE)


def gates_clear(gates: tuple[FastGate, ...], data: bytes, ip: int, size: int) -> bool:
    """Whether the IPv4 packet at ``data[ip:]`` (``size`` bytes of payload) is outside
    every gate: no rule of theirs can match it."""
    for tests, low, high in gates:
        if low <= size <= high and segment_tests_hold(tests, data, ip):
            return False
    return True


def pack_gates(gates: tuple[FastGate, ...]) -> bytes:
    """Gates as 64-bit words in the machine's order: per gate its tests' count, its sizes'
    low and high, then its tests' (``_test_words``)."""
    words: list[int] = []
    for tests, low, high in gates:
        words += (len(tests), low, high)
        words += _test_words(tests)
    return array("q", words).tobytes()


def _test_words(tests: tuple[SegmentTest, ...]) -> list[int]:
    """Header tests as words: the five of each (a range's bounds brought within -1 and
    2**32: a field's number lies between, on the same side of each)."""
    words: list[int] = []
    for code, kind, first, second, negated in tests:
        if kind == 0:
            first, second = max(first, -1), min(second, 1 << 32)
        words += (code, kind, first, second, int(negated))
    return words


# byte_test's operators, by their code in a rule gate
_BYTE_OPS = {"=": 0, "<": 1, ">": 2, "<=": 3, ">=": 4, "&": 5, "^": 6}


def rule_gate(sig: Signature) -> bytes | None:
    """What the compiled rule driver tests of a packet itself before checking a plain rule,
    each a condition of the rule matching at all, as 64-bit words in the machine's order:
    the rule's tests of the fields of an IPv4 header without options and of TCP's
    (``fast_gate``'s: their count, then the five words of each ``SegmentTest``), then its
    ``byte_test``s of the payload at a fixed place, in binary, of 1 to 4 bytes (their count,
    then for each its offset, byte count, little-endian, bitmask, operator's code in
    ``_BYTE_OPS``, value, negated). A packet failing one cannot match the rule. None: the
    rule has none of either."""
    gate = fast_gate(sig, True)
    tests = gate[0] if gate is not None else ()
    reads: list[tuple[int, int, int, int, int, int, int]] = []
    for content in sig.contents:
        op = content.byte_op
        if (
            op is None
            or op.kind != "test"
            or content.buffer != PKT
            or content.negated
            or content.relative
            or content.refs
            or content.transforms
            or content.decoded
            or content.decode is not None
            or op.relative
            or op.base
            or not 1 <= op.count <= 4
            or op.op not in _BYTE_OPS
            or not 0 <= op.value < 1 << 62
            or not 0 <= op.bitmask < 1 << 32
            or op.offset < 0
        ):
            continue
        little, code = int(not op.big_endian), _BYTE_OPS[op.op]
        reads.append((op.offset, op.count, little, op.bitmask, code, op.value, int(op.negated)))
    if not tests and not reads:
        return None
    words = [len(tests), *_test_words(tests), len(reads)]
    for read in reads:
        words += read
    return array("q", words).tobytes()


@dataclass
class Group:
    """The rules that can match one kind of packet of one flow direction.

    ``plain``: rules without a positive content, decided by flags, flow state and negated
    contents; ``anchored``: rules whose fast pattern sits within the first bytes of its
    buffer (checked directly: cheaper than a scan); ``prefilters``: one per buffer.
    """

    plain: list[Signature] = field(default_factory=list)
    anchored: list[Signature] = field(default_factory=list)
    prefilters: list[Prefilter | Exhaustive] = field(default_factory=list)
    # plain_for(flags, established) by flags
    established: dict[int, tuple[Signature, ...]] = field(default_factory=dict)
    not_established: dict[int, tuple[Signature, ...]] = field(default_factory=dict)
    # the indexes (in load order) of its rules, and the group of those of them that do not
    # read the payload (Matcher.without_payload), once made
    members: tuple[int, ...] = field(default=(), repr=False, compare=False)
    payload_free: Group | None = field(default=None, repr=False, compare=False)
    # the index over the anchored rules, when there are at least ANCHOR_INDEX_MIN (given by
    # the Matcher, use_index; with it, anchored_probe is None: the rules found placed are
    # checked in full, as without a probe; the exhaustive reference checks each rule)
    anchor_index: AnchorIndex | None = field(init=False, default=None, repr=False, compare=False)

    # how far into the payload the anchored rules look (-1: a content of theirs may be
    # anywhere)
    anchored_reach: int = field(init=False, default=0)
    payload_prefilter: bool = field(init=False, default=False)
    # the anchored rules as (flow_established, ((offset, limit, pattern, negated), ...)):
    # checked in place with bytes.find; None when one needs the general check
    anchored_probe: list[tuple[bool | None, tuple[tuple[int, int, bytes, bool], ...]]] | None = (
        field(init=False, default=None)
    )
    # the anchored rules with their fast pattern's place: (rule, pattern, from, to, nocase);
    # a rule whose pattern is not there does not match (its full check is skipped)
    anchored_fast: list[tuple[Signature, bytes, int, int, bool]] = field(
        init=False, default_factory=list
    )
    # plain_checks(flags, established) by established, then flags
    checks: tuple[dict[int, tuple[PlainCheck, ...]], dict[int, tuple[PlainCheck, ...]]] = field(
        init=False, default_factory=lambda: ({}, {}), repr=False, compare=False
    )
    # fast_gates(flags, established) by established, then flags; packed_gates' alike
    gates: tuple[dict[int, tuple[FastGate, ...] | None], dict[int, tuple[FastGate, ...] | None]] = (
        field(init=False, default_factory=lambda: ({}, {}), repr=False, compare=False)
    )
    packed: tuple[dict[int, bytes | None], dict[int, bytes | None]] = field(
        init=False, default_factory=lambda: ({}, {}), repr=False, compare=False
    )
    # whether a rule of the group looks at the packet payload itself
    reads_payload: bool = field(init=False, default=False)
    # the prefilters of the payload, each with its longest pattern (a stream's scan resumes
    # that much less one before where the last one ended)
    payload_scans: list[tuple[Prefilter | Exhaustive, int]] = field(
        init=False, default_factory=list, repr=False, compare=False
    )
    # whether a prefilter of the payload scans it transformed
    payload_transformed: bool = field(init=False, default=False, repr=False, compare=False)
    # (quiet, group, app) by (quiet, app): what a flow direction holds of its group, one
    # tuple shared by all flows (see InspectionEngine._group)
    picks: dict[tuple[bool, str], tuple[bool, Group, str]] = field(
        init=False, default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        reach = 0
        for sig in self.anchored:
            for content in sig.contents:
                if content.buffer != PKT:
                    continue
                if content.depth is None:
                    reach = -1
                    break
                reach = max(reach, content.offset + content.depth)
            if reach < 0:
                break
        self.anchored_reach = reach
        self.payload_prefilter = any(p.buffer == PKT for p in self.prefilters)
        self.payload_scans = [
            (p, max((len(pattern) for pattern, _ in p.entries), default=1))
            for p in self.prefilters
            if p.buffer == PKT
        ]
        self.payload_transformed = any(p.transforms for p, _ in self.payload_scans)
        self.reads_payload = bool(self.anchored) or self.payload_prefilter
        probe: list[tuple[bool | None, tuple[tuple[int, int, bytes, bool], ...]]] | None = []
        for sig in self.anchored:
            contents = sig.contents
            if sig.flags is not None or any(
                c.buffer != PKT or c.nocase or c.depth is None for c in contents
            ):
                probe = None
                break
            assert probe is not None
            probe.append(
                (
                    sig.flow_established,
                    tuple(
                        (c.offset, c.offset + (c.depth or 0), c.pattern, c.negated)
                        for c in contents
                    ),
                )
            )
        self.anchored_probe = probe
        self.anchored_fast.extend(anchored_entry(sig)[0] for sig in self.anchored)

    def anchor_reach(self) -> int:
        """How far into the payload the anchored rules' fast patterns may lie."""
        return max((high for _, _, _, high, _ in self.anchored_fast), default=0)

    def use_index(self, index: AnchorIndex) -> None:
        """Find the anchored rules placed through ``index`` (their probe is then unused)."""
        self.anchor_index = index
        self.anchored_probe = None

    @property
    def empty(self) -> bool:
        return not self.plain and not self.anchored and not self.prefilters

    def pick(self, quiet: bool, app: str) -> tuple[bool, Group, str]:
        """The shared ``(quiet, self, app)``."""
        found = self.picks.get((quiet, app))
        if found is None:
            found = self.picks[(quiet, app)] = (quiet, self, app)
        return found

    def plain_for(self, flags: int, established: bool) -> tuple[Signature, ...]:
        """Plain rules that pass the TCP flags (``-1``: not TCP) and the flow state; what is
        left to check of them is negated contents."""
        cache = self.established if established else self.not_established
        found = cache.get(flags)
        if found is None:
            found = tuple(
                sig
                for sig in self.plain
                if (sig.flow_established is None or sig.flow_established == established)
                and (sig.flags is None or (flags >= 0 and sig.flags.matches(flags)))
            )
            cache[flags] = found
        return found

    def plain_checks(self, flags: int, established: bool) -> tuple[PlainCheck, ...]:
        """``plain_for``'s rules, each with its header tests compiled (``head_tests``) or
        None (its contents are checked in full), its ``size_gate`` and its
        ``rule_gate``."""
        cache = self.checks[established]
        found = cache.get(flags)
        if found is None:
            found = cache[flags] = tuple(
                (sig, head_tests(sig), size_gate(sig), rule_gate(sig))
                for sig in self.plain_for(flags, established)
            )
        return found

    def fast_gates(self, flags: int, established: bool) -> tuple[FastGate, ...] | None:
        """``plain_for``'s rules' gates (``fast_gate``; ``flags`` -1: not TCP, the TCP
        header's fields untested): a fast path may take a packet outside all of them
        (``gates_clear``). None: a rule has no gate (a packet with these flags is the full
        path's)."""
        cache = self.gates[established]
        if flags in cache:
            return cache[flags]
        tcp = flags >= 0
        gates = [fast_gate(sig, tcp) for sig in self.plain_for(flags, established)]
        found = None if None in gates else tuple(g for g in gates if g is not None)
        cache[flags] = found
        return found

    def packed_gates(self, flags: int, established: bool) -> bytes | None:
        """``fast_gates`` as the compiled core reads them (``pack_gates``; b"": no plain
        rule applies)."""
        cache = self.packed[established]
        if flags in cache:
            return cache[flags]
        gates = self.fast_gates(flags, established)
        found = cache[flags] = None if gates is None else pack_gates(gates)
        return found


def fast_pattern(sig: Signature) -> Content | None:
    """The content marked ``fast_pattern``, else the longest positive content of a rule (its
    prefilter pattern), if it has one. A header buffer's (``tcp.hdr``, ...) is none: the fast
    paths skip packets by their payload, so its rules are checked on every packet. A rule
    whose only positive contents are in a transformed buffer (``dns.query; dotprefix;``)
    takes the longest of those: it is looked for in the buffer once transformed."""
    positive = [
        c
        for c in sig.contents
        if c.literal and c.buffer not in HEADER_BUFFERS and c.buffer not in SSH_BUFFERS
    ]
    if not positive:
        positive = [
            c for c in sig.contents if transformed_literal(c) and c.buffer not in SSH_BUFFERS
        ]
        if not positive:
            return None
    for content in positive:
        if content.fast:
            return content
    return max(positive, key=lambda c: len(c.pattern))


def transformed_literal(content: Content) -> bool:
    """A positive ``content`` of a transformed application buffer: it occurs in the buffer
    once transformed whenever its rule matches (every item of a buffer sees the buffer
    transformed alike). Not for the packet payload (its stream is scanned in pieces) nor a
    buffer of several values (each is transformed on its own)."""
    return (
        bool(content.transforms)
        and bool(content.pattern)
        and not content.negated
        and content.regex is None
        and content.data_at is None
        and content.size is None
        and content.byte_op is None
        and content.stream is None
        and content.date is None
        and content.head is None
        and content.decode is None
        and not content.decoded
        and content.buffer != PKT
        and content.buffer in BUFFER_APP
        and content.buffer not in MULTI_BUFFERS
    )


class Matcher:
    def __init__(self, signatures: Sequence[Signature], exhaustive: bool = False) -> None:
        """``exhaustive``: every rule with a fast pattern is checked in full on every
        buffer (the prefilters' reference, for differential tests)."""
        self.signatures = list(signatures)
        self._prefilter: type[Prefilter | Exhaustive] = Exhaustive if exhaustive else Prefilter
        self._addr_exprs: list[AddrExpr] = []
        self._port_exprs: list[PortExpr] = []
        # Rules sorted out once at load: those of one header (protocols, application,
        # direction, address and port expressions) form a class, whose header a group's
        # packet is tested against once; each rule's place in a group (plain, anchored, or
        # the prefilter of a buffer and its transformations) and its fast pattern.
        classes: dict[tuple[object, ...], list[int]] = {}
        self._routes: list[tuple[int, tuple[str, tuple[Transform, ...]], Content | None]] = []
        for index, sig in enumerate(self.signatures):
            header = (
                _PROTO_NUMBERS.get(sig.proto),
                sig.app,
                sig.not_app,
                sig.ip_proto,
                sig.flow_to_server,
                sig.bidirectional,
                self._addr_index(sig.src),
                self._addr_index(sig.dst),
                self._port_index(sig.sport),
                self._port_index(sig.dport),
            )
            classes.setdefault(header, []).append(index)
            self._routes.append(_route(sig))
        self._classes = list(classes.items())
        # every anchored rule's fast pattern in one scan, made by the first group of at least
        # ANCHOR_INDEX_MIN of them (_anchor_index); a rule's place in it by its index
        self._anchor_scan: AnchorScan | None = None
        self._anchored_at: dict[int, int] = {}
        # by index: whether the rule looks into the packet payload (see without_payload)
        self._reads_payload = [
            any(c.buffer == PKT and c.size is None for c in sig.contents) for sig in self.signatures
        ]
        # by (protocol, application, direction, outer GTP-U): the classes whose header
        # passes them, each as its address and port expressions, bidirectional, its rules
        self._passing: dict[tuple[object, ...], list[tuple[int, int, int, int, bool, list[int]]]]
        self._passing = {}
        # Which expressions an address or port falls in is constant between the boundaries
        # the expressions name: one table of segments per family, looked up by bisection.
        self._addr_segments = {size: addr_segments(self._addr_exprs, size) for size in (4, 16)}
        self._port_segments = _segments(
            [e.match for e in self._port_exprs], _port_bounds(self._port_exprs), int
        )
        self._groups: dict[tuple[object, ...], Group] = {}
        # groups and prefilters by the rules they hold: packets of different headers that
        # the same rules apply to share one group
        self._shared: dict[tuple[int, ...], Group] = {}
        self._prefilters: dict[tuple[object, ...], Prefilter | Exhaustive] = {}
        self._last_layer: Layer | None = None
        # the address expressions an address falls in, by address (the last ADDR_BITS_CACHE
        # addresses looked up: a flow's addresses come back with its next groups)
        self._addr_bits: dict[bytes, int] = {}
        self._last_bits = (0, 0, -1, -1)
        # the compiled _header_bits of an IPv4 packet (the compiled fast path's, over the
        # same tables: FastPath.header_bits(src, dst, sport, dport, ports)), once the engine
        # has loaded it; None: the bisections here
        self.compiled_bits: (
            Callable[[bytes, bytes, int, int, bool], tuple[int, int, int, int]] | None
        ) = None
        self.groups_built = 0

    def _addr_index(self, expr: AddrExpr) -> int:
        if expr.is_any:
            return -1
        if expr not in self._addr_exprs:
            self._addr_exprs.append(expr)
        return self._addr_exprs.index(expr)

    def _port_index(self, expr: PortExpr) -> int:
        if expr.is_any:
            return -1
        if expr not in self._port_exprs:
            self._port_exprs.append(expr)
        return self._port_exprs.index(expr)

    def group_for(
        self, layer: Layer, app: str, to_server: bool, outer_gtp: bool, reverse: bool = False
    ) -> Group:
        """The group of a packet (callers cache it per flow direction and app); ``reverse``:
        of a packet of the other direction (the addresses and ports swapped)."""
        if layer is self._last_layer:  # the other direction of the packet just seen
            src, dst, sport, dport = self._last_bits
        else:
            src, dst, sport, dport = self._header_bits(layer)
        if reverse:
            src, dst, sport, dport = dst, src, dport, sport
        key = (layer.proto, app, to_server, outer_gtp, src, dst, sport, dport)
        group = self._groups.get(key)
        if group is None:
            group = self._add(key)
        return group

    def pair_for(self, layer: Layer, app: str, to_server: bool) -> tuple[Group, Group]:
        """The groups of a packet's direction and of the other one (as ``group_for``, with no
        outer GTP-U): one lookup of the header for both, as a new TCP flow needs them."""
        src, dst, sport, dport = self._header_bits(layer)
        proto = layer.proto
        groups = self._groups
        key = (proto, app, to_server, False, src, dst, sport, dport)
        group = groups.get(key)
        if group is None:
            group = self._add(key)
        key = (proto, app, not to_server, False, dst, src, dport, sport)
        other = groups.get(key)
        if other is None:
            other = self._add(key)
        return group, other

    def _header_bits(self, layer: Layer) -> tuple[int, int, int, int]:
        """Which address and port expressions a packet's addresses and ports fall in."""
        src_addr = layer.src
        if self.compiled_bits is not None and len(src_addr) == 4:
            found = self.compiled_bits(
                src_addr, layer.dst, layer.sport, layer.dport, layer.proto in _PORT_PROTOS
            )
            self._last_layer = layer
            self._last_bits = found
            return found
        known = self._addr_bits
        dst_addr = layer.dst
        src = known.get(src_addr)
        if src is None:
            src = self._addr_bits_of(src_addr)
        dst = known.get(dst_addr)
        if dst is None:
            dst = self._addr_bits_of(dst_addr)
        if layer.proto in _PORT_PROTOS:
            starts, bits = self._port_segments
            sport = bits[bisect_right(starts, layer.sport) - 1]
            dport = bits[bisect_right(starts, layer.dport) - 1]
        else:
            sport = dport = -1  # no ports: only rules with `any` ports apply
        self._last_layer = layer
        self._last_bits = found = (src, dst, sport, dport)
        return found

    def _addr_bits_of(self, addr: bytes) -> int:
        """Which address expressions ``addr`` falls in, found and kept."""
        starts, bits = self._addr_segments[len(addr)]
        found: int = bits[bisect_right(starts, int.from_bytes(addr, "big")) - 1]
        known = self._addr_bits
        if len(known) >= ADDR_BITS_CACHE:
            known.clear()
        known[bytes(addr)] = found
        return found

    def _add(self, key: tuple[object, ...]) -> Group:
        group = self._build(key)
        if len(self._groups) >= _MAX_CACHE:
            self._groups.clear()
        self._groups[key] = group
        return group

    def members(self, key: tuple[object, ...]) -> tuple[int, ...]:
        """The indexes (in load order) of the rules whose header a packet of this group key
        passes: each class of rules of one header tested once (its protocol, application
        and direction once per kind of packet, its addresses and ports here)."""
        proto, app, to_server, outer_gtp, src, dst, sport, dport = key
        assert isinstance(src, int) and isinstance(dst, int)
        assert isinstance(sport, int) and isinstance(dport, int)
        passing = self._passing.get((proto, app, to_server, outer_gtp))
        if passing is None:
            passing = self._passing[(proto, app, to_server, outer_gtp)] = self._pass(
                proto, app, to_server, outer_gtp
            )
        found: list[int] = []
        for si, di, spi, dpi, bidir, indexes in passing:
            if (
                (si < 0 or src >> si & 1)
                and (di < 0 or dst >> di & 1)
                and (spi < 0 or (sport >= 0 and sport >> spi & 1))
                and (dpi < 0 or (dport >= 0 and dport >> dpi & 1))
            ) or (bidir and _header(si, di, spi, dpi, dst, src, dport, sport)):
                found.extend(indexes)
        found.sort()
        return tuple(found)

    def _pass(
        self, proto: object, app: object, to_server: object, outer_gtp: object
    ) -> list[tuple[int, int, int, int, bool, list[int]]]:
        """The classes whose protocol, application and direction a packet passes."""
        out = []
        for header, indexes in self._classes:
            protos, sig_app, not_app, ip_proto, flow_to_server, bidir, si, di, spi, dpi = header
            if protos is not None and proto not in protos:  # type: ignore[operator]
                continue
            if sig_app and (sig_app != app or (sig_app == "gtp" and not outer_gtp)):
                continue
            if not_app and not_app == app:
                continue
            if ip_proto is not None and (ip_proto[0] <= proto <= ip_proto[1]) == ip_proto[2]:  # type: ignore[index,operator]
                continue
            if flow_to_server is not None and flow_to_server != to_server:
                continue
            assert isinstance(si, int) and isinstance(di, int)
            assert isinstance(spi, int) and isinstance(dpi, int)
            out.append((si, di, spi, dpi, bool(bidir), indexes))
        return out

    def without_payload(self, group: Group) -> Group:
        """The group of ``group``'s rules that do not look into the packet payload or its
        stream (no content, pcre, byte test or isdataat of it; ``dsize`` only reads its
        length): what applies to a flow whose payload is no longer inspected (an encrypted
        TLS flow, see tlsrecords.py)."""
        found = group.payload_free
        if found is None:
            reads = self._reads_payload
            kept = tuple(i for i in group.members if not reads[i])
            found = group.payload_free = self._group_of(kept) if kept != group.members else group
        return found

    def _build(self, key: tuple[object, ...]) -> Group:
        return self._group_of(self.members(key))

    def _group_of(self, members: tuple[int, ...]) -> Group:
        group = self._shared.get(members)
        if group is not None:
            return group
        self.groups_built += 1
        plain: list[Signature] = []
        anchored: list[Signature] = []
        by_buffer: dict[tuple[str, tuple[Transform, ...]], list[int]] = {}
        signatures, routes = self.signatures, self._routes
        for index in members:
            kind, where, _ = routes[index]
            if kind == _PLAIN:
                plain.append(signatures[index])
            elif kind == _ANCHORED:
                anchored.append(signatures[index])
            else:
                by_buffer.setdefault(where, []).append(index)
        prefilters = [self._prefilter_of(where, by_buffer[where]) for where in sorted(by_buffer)]
        group = Group(
            plain=plain,
            anchored=anchored,
            prefilters=prefilters,
            members=members,
        )
        if len(anchored) >= ANCHOR_INDEX_MIN and issubclass(self._prefilter, Prefilter):
            group.use_index(self._anchor_index(members, group, self._prefilter))
        if len(self._shared) >= _MAX_CACHE:
            self._shared.clear()
            self._prefilters.clear()
        self._shared[members] = group
        return group

    def _anchor_index(
        self, members: tuple[int, ...], group: Group, prefilter: type[Prefilter]
    ) -> AnchorIndex:
        """A large group's index over the rule set's anchored rules (their scan made by the
        first such group): which of them are the group's, how far they reach."""
        scan = self._anchor_scan
        if scan is None:
            entries: list[AnchoredEntry] = []
            contents: list[Content] = []
            for index, (kind, _, _) in enumerate(self._routes):
                if kind == _ANCHORED:
                    self._anchored_at[index] = len(entries)
                    entry, fast = anchored_entry(self.signatures[index])
                    entries.append(entry)
                    contents.append(fast)
            scan = self._anchor_scan = AnchorScan(entries, contents, prefilter)
        mine = bytearray(len(scan.entries))
        at = self._anchored_at
        for index in members:
            place = at.get(index)
            if place is not None:
                mine[place] = 1
        return AnchorIndex(scan, bytes(mine), group.anchor_reach())

    def _prefilter_of(
        self, where: tuple[str, tuple[Transform, ...]], indexes: list[int]
    ) -> Prefilter | Exhaustive:
        """The prefilter of a buffer (and its transformations) over these rules, made once."""
        key = (where, tuple(indexes))
        found = self._prefilters.get(key)
        if found is None:
            entries = []
            for index in indexes:
                fast = self._routes[index][2]
                assert fast is not None
                entries.append((fast, self.signatures[index]))
            found = self._prefilters[key] = self._prefilter(where[0], entries, where[1])
        return found


_PLAIN, _ANCHORED, _PREFILTERED = 0, 1, 2
_NO_WHERE: tuple[str, tuple[Transform, ...]] = ("", ())


def _route(sig: Signature) -> tuple[int, tuple[str, tuple[Transform, ...]], Content | None]:
    """Where a rule goes in a group: plain (no fast pattern), anchored (its fast pattern in
    the payload's first bytes, every content a plain one of the payload), or the prefilter
    of its fast pattern's buffer and transformations; and that fast pattern."""
    fast = fast_pattern(sig)
    if fast is None:
        return _PLAIN, _NO_WHERE, None
    if (
        fast.depth is not None
        and fast.offset + fast.depth <= ANCHOR_LIMIT
        and all(c.plain and c.buffer == PKT for c in sig.contents)
    ):
        return _ANCHORED, _NO_WHERE, fast
    return _PREFILTERED, (fast.buffer, fast.transforms), fast


def addr_segments(exprs: Sequence[AddrExpr], size: int) -> tuple[list[int], list[int]]:
    """The segments of one family's addresses (``size`` bytes) between the boundaries the
    expressions name, and for each the bit set of the expressions its addresses fall in:
    each expression's addresses worked out as intervals once, and its bit set on the
    segments they cover (not every expression tested at every boundary: rule sets name
    thousands of addresses in hundreds of lists)."""
    starts = _addr_bounds(exprs, size)
    table = [0] * len(starts)
    top = 1 << (8 * size)
    for i, expr in enumerate(exprs):
        bit = 1 << i
        for low, high in _intervals(expr, 4 if size == 4 else 6, top):
            first = bisect_right(starts, low) - 1
            last = bisect_right(starts, high - 1)  # the segments up to the one holding high-1
            for at in range(first, last):
                table[at] |= bit
    return starts, table


def _intervals(expr: AddrExpr, version: int, top: int) -> list[tuple[int, int]]:
    """The addresses of one family an expression matches (``AddrExpr.match``), as sorted,
    disjoint half-open intervals."""
    kind = expr.kind
    if kind == "any":
        return [(0, top)]
    if kind == "net":
        net = expr.net
        if net is None or net.version != version:
            return []
        return [(int(net.network_address), int(net.broadcast_address) + 1)]
    if kind == "not":
        return _complement(_intervals(expr.items[0], version, top), top)
    positives = [i for i in expr.items if i.kind != "not"]
    found = (
        _union([r for i in positives for r in _intervals(i, version, top)])
        if positives
        else [(0, top)]
    )
    negated = _union(
        [r for i in expr.items if i.kind == "not" for r in _intervals(i.items[0], version, top)]
    )
    return _subtract(found, negated, top)


def _union(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1]:
            if high > merged[-1][1]:
                merged[-1] = (merged[-1][0], high)
        else:
            merged.append((low, high))
    return merged


def _complement(ranges: list[tuple[int, int]], top: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    at = 0
    for low, high in ranges:
        if low > at:
            out.append((at, low))
        at = max(at, high)
    if at < top:
        out.append((at, top))
    return out


def _subtract(
    ranges: list[tuple[int, int]], taken: list[tuple[int, int]], top: int
) -> list[tuple[int, int]]:
    """``ranges`` less ``taken`` (both sorted and disjoint): ``ranges`` intersected with
    the complement of ``taken``, walked side by side."""
    if not taken:
        return ranges
    kept = _complement(taken, top)
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(ranges) and j < len(kept):
        low = max(ranges[i][0], kept[j][0])
        high = min(ranges[i][1], kept[j][1])
        if low < high:
            out.append((low, high))
        if ranges[i][1] < kept[j][1]:
            i += 1
        else:
            j += 1
    return out


def _addr_bounds(exprs: Sequence[AddrExpr], size: int) -> list[int]:
    bounds = {0}
    version = 4 if size == 4 else 6

    def walk(expr: AddrExpr) -> None:
        if expr.net is not None and expr.net.version == version:
            bounds.add(int(expr.net.network_address))
            bounds.add(int(expr.net.broadcast_address) + 1)
        for item in expr.items:
            walk(item)

    for expr in exprs:
        walk(expr)
    return sorted(b for b in bounds if b < 1 << (8 * size))


def _port_bounds(exprs: Sequence[PortExpr]) -> list[int]:
    bounds = {0}

    def walk(expr: PortExpr) -> None:
        if expr.kind == "range":
            bounds.add(expr.low)
            bounds.add(expr.high + 1)
        for item in expr.items:
            walk(item)

    for expr in exprs:
        walk(expr)
    return sorted(b for b in bounds if b <= 65535)


def _segments(
    tests: Sequence[Callable[[Any], bool]], starts: list[int], value_of: Callable[[int], Any]
) -> tuple[list[int], list[int]]:
    """For each segment start, the bit set of the expressions its values fall in."""
    table: list[int] = []
    for start in starts:
        value = value_of(start)
        bits = 0
        for i, test in enumerate(tests):
            if test(value):
                bits |= 1 << i
        table.append(bits)
    return starts, table


def _header(si: int, di: int, spi: int, dpi: int, src: int, dst: int, sp: int, dp: int) -> bool:
    if si >= 0 and not src >> si & 1:
        return False
    if di >= 0 and not dst >> di & 1:
        return False
    if spi >= 0 and (sp < 0 or not sp >> spi & 1):
        return False
    return not (dpi >= 0 and (dp < 0 or not dp >> dpi & 1))


def rule_matches(
    sig: Signature, layer: Layer, established: bool, buffers: dict[str, bytes]
) -> bool:
    """The per-packet part of a rule: flow state, TCP flags and every content."""
    if sig.flow_established is not None and sig.flow_established != established:
        return False
    flags = sig.flags
    if flags is not None and (layer.proto != PROTO_TCP or not flags.matches(layer.flags)):
        return False
    if (sig.itype is not None or sig.icode is not None) and not icmp_matches(sig, layer):
        return False
    if sig.header and IP_PACKET not in buffers:
        add_packet(layer, buffers)
    return contents_match(sig, buffers)


def head_tests(sig: Signature) -> tuple[HeadTest, ...] | None:
    """A rule whose contents are all header tests (``ttl``, ``window``, ``tls.version``,
    ...) each on its own: its tests, compiled so that a packet's field is read once for all
    the rules that test it (``head_holds``). None for any other rule."""
    tests: list[HeadTest] = []
    for content in sig.contents:
        head = content.head
        if head is None or not content.plain:
            return None
        key = f"{content.buffer}\0{head.field}"
        ranged = head.kind == "range"
        tests.append(
            (key, content.buffer, head.field, ranged, head.low, head.high, head.negated, head)
        )
    return tuple(tests) if tests else None


_UNREAD = -1


def head_holds(
    tests: tuple[HeadTest, ...], buffers: dict[str, bytes], numbers: dict[str, int | None]
) -> bool:
    """Whether a rule's header tests all hold (what ``contents_match`` answers for it);
    ``numbers``: the fields read from this packet so far."""
    for key, buffer, name, ranged, low, high, negated, test in tests:
        data = buffers.get(buffer)
        if data is None:
            return False
        if ranged:
            number = numbers.get(key, _UNREAD)
            if number == _UNREAD:
                number = numbers[key] = read_field(name, data)
            if number is None or (low <= number <= high) == negated:
                return False
        elif not test.holds(data):
            return False
    return True


def reads_packet(signatures: Sequence[Signature]) -> bool:
    """Whether a rule tests a header field (ttl, window, ...): then each packet's
    ``ip:packet`` buffer is wanted (``add_packet``)."""
    return any(sig.header for sig in signatures)


def add_packet(layer: Layer, buffers: dict[str, bytes], headers: bool = True) -> None:
    """The ``ip:packet`` buffer of a packet: its bytes from the IP header on (up to
    PACKET_BYTES), which the header keywords read, and (``headers``) the header buffers
    (``tcp.hdr``, ...) cut from it (a datagram reassembled from fragments: its first
    fragment's header, as ``defrag`` rebuilds it)."""
    raw = getattr(layer, "raw", None)
    if raw is not None:
        at = layer.ip_at
        packet = buffers[IP_PACKET] = raw[at : at + PACKET_BYTES]
        if headers:
            buffers.update(header_buffers(packet))


def reads_headers(signatures: Sequence[Signature]) -> bool:
    """Whether a rule reads a header buffer (``tcp.hdr``, ...): then ``add_packet`` cuts
    them from each packet."""
    return any(c.buffer in HEADER_BUFFERS for sig in signatures for c in sig.contents)


def icmp_matches(sig: Signature, layer: Layer) -> bool:
    """``itype`` / ``icode``: the packet is ICMP and its type and code fall in the ranges."""
    if layer.icmp_type < 0:
        return False
    itype, icode = sig.itype, sig.icode
    if itype is not None and not itype[0] <= layer.icmp_type <= itype[1]:
        return False
    return icode is None or icode[0] <= layer.icmp_code <= icode[1]


def contents_match(sig: Signature, buffers: dict[str, bytes]) -> bool:
    """Every item of the rule holds: plain contents each on their own, each buffer's chain
    of relative items in order."""
    plan = _PLANS.get(id(sig))
    if plan is None or plan[0] is not sig:
        plan = _plan(sig)
    _, needed, plain, chains = plan
    for buffer in needed:
        if buffers.get(buffer) is None:
            # the SSH banner's buffers: read from the payload by the rules that want them
            if buffer not in SSH_BUFFERS or PKT not in buffers:
                return False
            found = ssh_buffers(buffers[PKT])
            if not found:
                return False
            buffers.update(found)
    for buffer, check in plain:
        if not check(buffers[buffer]):
            return False
    for buffer, items, checks, shared in chains:
        data = buffers[buffer]
        if checks is None:
            if not chain_matches(items, data):
                return False
        elif isinstance(data, MultiBuffer):
            if not items_hold(items, data):
                return False
        else:
            if shared:  # the items of a buffer share its transformations
                data = apply(data, shared)
            for check in checks:
                if not check(data):
                    return False
    return True


# A rule's contents sorted out once (by the id of the rule, which the entry keeps alive):
# the buffers it reads, its plain contents each with its check (``item_check``), and by
# buffer the items of each buffer that has an item other than a plain one, in rule order,
# with, when they are ``independent``, each item's check and the buffer's transformations
# (``items_hold``, made once).
_Check = Callable[[bytes], bool]
_Plan = tuple[
    Signature,
    tuple[str, ...],
    tuple[tuple[str, _Check], ...],
    tuple[tuple[str, tuple[Content, ...], tuple[_Check, ...] | None, tuple[Transform, ...]], ...],
]
_PLANS: dict[int, _Plan] = {}
_MAX_PLANS = 1 << 17


def _plan(sig: Signature) -> _Plan:
    contents = sig.contents
    needed = tuple(dict.fromkeys(c.buffer for c in contents))
    # a chain: the items of one view of a buffer (its name and transformations)
    chained = tuple(dict.fromkeys((c.buffer, c.transforms) for c in contents if not c.plain))
    chains = [
        (b, tuple(c for c in contents if c.buffer == b and c.transforms == t)) for b, t in chained
    ]
    plan: _Plan = (
        sig,
        needed,
        tuple((c.buffer, item_check(c)) for c in contents if c.plain),
        tuple(
            (
                b,
                items,
                tuple(map(item_check, items)) if independent(items) else None,
                items[0].transforms if items else (),
            )
            for b, items in chains
        ),
    )
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()
    _PLANS[id(sig)] = plan
    return plan
