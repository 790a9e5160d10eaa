"""The inspection engine: packets in, alerts out.

``InspectionEngine.process(ts, data, linktype)`` decodes one captured frame, tracks its
flow, runs the signatures and detectors over it (and over the packet a GTP-U tunnel
carries) and returns the alerts it raises. It never opens a socket or a file: capture
(a pcap file, NFLOG, AF_PACKET, NFQUEUE) and output (EVE lines, set deltas) belong to the caller.
"""

from __future__ import annotations

import ipaddress
import struct
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

from appliance.inspect import appproto, core, detectors, flowint
from appliance.inspect.appproto import DnsQuery, HttpRequest
from appliance.inspect.classification import CLASSTYPES, read_classification, read_references
from appliance.inspect.decode import (
    PROTO_TCP,
    PROTO_UDP,
    TCP_FIN,
    TCP_SYN,
    Errors,
    GtpInfo,
    Layer,
    count,
    decode_packet,
)
from appliance.inspect.defrag import Defragmenter
from appliance.inspect.eve import Alert
from appliance.inspect.fields import (
    HEADER_BUFFERS,
    IP_PACKET,
    TLS_VERSION,
    SegmentTest,
    segment_test,
    segment_tests_hold,
)
from appliance.inspect.flow import (
    TCP_ESTABLISHED,
    TCP_NEW,
    TCP_SYN_RECV,
    TCP_SYN_SENT,
    Embryo,
    Flow,
    FlowTable,
)
from appliance.inspect.follow import Follow
from appliance.inspect.match import (
    Group,
    Matcher,
    add_packet,
    contents_match,
    gates_clear,
    head_holds,
    icmp_matches,
    reads_headers,
    reads_packet,
    rule_matches,
)
from appliance.inspect.rules import (
    ACTION_ORDER,
    PKT,
    STREAM_SIZE,
    Signature,
    Skipped,
    Variables,
    flowbits_apply,
    flowbits_hold,
    load_rules,
    state_order,
)
from appliance.inspect.stream import (
    DEFAULT_DEPTH,
    Reassembler,
    StreamDirection,
    count_segment,
    head_clear,
    placed,
    stream_hits,
)
from appliance.inspect.threshold import ThresholdState
from appliance.inspect.tlsrecords import WALK_SHAPE, TlsRecords
from appliance.inspect.xbits import XbitState
from appliance.model.profile import Detectors, Profile
from appliance.model.values import AddrRange, IPNetwork, SetRef, parse_addr_item

APP_DETECT_TRIES = 4  # payload packets of a TCP flow looked at before giving up on its protocol
HELLO_MAX_BYTES = 8192  # a ClientHello is reassembled up to this size (SNI beyond it: missed)
HELLO_MAX_FLOWS = 1024  # flows whose ClientHello is being reassembled at once (LRU beyond)
_APPS = ("http", "tls", "dns", "gtp")
_NO_ALERTS: tuple[Alert, ...] = ()
_NO_SIDS: frozenset[int] = frozenset()
_HEADER_AND_BODY = appproto.HEADER_BUFFER_NAMES | {"http.request_body", "http.response_body"}
_SYN_HEAD = struct.Struct("!IIHHI").unpack_from  # addresses, ports, sequence number
_TCP_KEY = struct.Struct("!IIHH").pack  # an IPv4 TCP flow key from its numbers
_NO_PLAN = -1  # a new flow's first segment of this kind takes the full path
# stream_size after a new flow's first segment (a SYN, or one without SYN or payload, whose
# sender's count starts one before it): server 0, client 1
_NEW_FLOW_SIZES = bytes(7) + b"\x01"
_NEW_FLOW_BUFFERS = (STREAM_SIZE, IP_PACKET)  # buffers it may have besides its payload
_SEQ = struct.Struct("!I").unpack_from  # a TCP sequence number
_MOD = 1 << 32
_MAX_SCAN_PICKS = 65536  # selections of directions whose data segments the fast path scans


@dataclass
class InspectionConfig:
    signatures: Sequence[Signature] = ()
    detectors: Detectors = field(default_factory=Detectors)
    block: bool = True
    never_block: tuple[IPNetwork | AddrRange, ...] = ()
    max_flows: int = 65536
    idle_timeout: float = 300.0
    fast_path: bool = True  # off: every packet takes the full path (tests compare the two)
    compiled: bool = True  # the compiled fast path when built (off: its Python twin)
    skipped: Sequence[Skipped] = ()  # rules left out, each with its warning line and reason
    stream_depth: int = DEFAULT_DEPTH  # bytes of each TCP direction reassembled (0: none)
    # "track-only": a TLS flow's payload is no longer inspected once it carries application
    # data (tlsrecords.py); "full": all of it is
    encryption_handling: str = "track-only"

    @classmethod
    def from_profile(
        cls, profile: Profile | None, extra_rules: Sequence[str] = (), strict: bool = False
    ) -> InspectionConfig:
        """Signatures of the profile's ``[inspect].rules`` plus ``extra_rules``, its detectors,
        ``$HOME_NET`` (``home_net``, else every zone's networks) and ``never_block``. Rules
        the engine cannot run are left out (``skipped``) unless ``strict`` (or
        ``[inspect].strict``): then the first refuses them all (``RuleFileError``)."""
        if profile is None:
            variables = Variables.from_networks(None)
            rules = load_rules(list(extra_rules), variables, strict)
            return cls(signatures=rules.signatures, skipped=rules.skipped)
        inspect = profile.inspect
        home = inspect.home_net
        if home is None:
            home = tuple(n for zone in profile.zones for n in zone.networks)
        variables = Variables.from_networks(home)
        if inspect.classification:
            variables.classtypes = read_classification(inspect.classification)
        if inspect.reference:
            read_references(inspect.reference)  # checked: a bad file is refused like a rule
        paths = [*inspect.rules, *extra_rules]
        rules = load_rules(paths, variables, strict or inspect.strict)
        return cls(
            signatures=rules.signatures,
            skipped=rules.skipped,
            detectors=inspect.detectors,
            block=inspect.block,
            never_block=_never_block(profile),
            stream_depth=inspect.stream_depth,
            encryption_handling=inspect.encryption_handling,
        )


def _anchored_hit(group: Group, data: bytes, start: int, end: int, established: bool) -> bool:
    """Whether an anchored rule of the group may match the payload ``data[start:end]`` (a
    rule with ``flags`` is left to the full path)."""
    probe = group.anchored_probe
    if probe is not None:
        for flow_established, checks in probe:
            if flow_established is not None and flow_established != established:
                continue
            for offset, limit, pattern, negated in checks:
                stop = start + limit
                if (data.find(pattern, start + offset, stop if stop < end else end) >= 0) is (
                    negated
                ):
                    break
            else:
                return True
        return False
    reach = group.anchored_reach
    buffers: dict[str, bytes] | None = None
    # a rule whose fast pattern is not in its place does not match (as in _rule_hits)
    for sig in placed(group, data[start:end]):
        if sig.flow_established is not None and sig.flow_established != established:
            continue
        if sig.flags is not None:
            return True
        if buffers is None:
            buffers = {"pkt": data[start : end if reach < 0 else min(end, start + reach)]}
        if contents_match(sig, buffers):
            return True
    return False


def _rule_hits(
    layer: Layer,
    group: Group,
    established: bool,
    flags: int,
    payload: bytes,
    buffers: dict[str, bytes],
) -> list[Signature]:
    """The rules of a group that match a packet (``flags``: its TCP flags, -1 if not TCP)
    whose buffers are ``buffers``, the reassembled stream aside."""
    hits: list[Signature] = []
    plain = group.checks[established].get(flags)
    if plain is None:
        plain = group.plain_checks(flags, established)
    numbers: dict[str, int | None] = {}  # header fields read, for all the rules testing them
    packet = buffers.get(PKT)
    size = -1 if packet is None else len(packet)  # (-1: no payload buffer, no dsize holds)
    for sig, head, gate, _ in plain:  # (the compiled driver's own gate: see rule_gate)
        if gate is not None and not gate[0] <= size <= gate[1]:
            continue  # its dsize does not hold
        if (sig.itype is not None or sig.icode is not None) and not icmp_matches(sig, layer):
            continue
        if head is not None:
            if head_holds(head, buffers, numbers):
                hits.append(sig)
        elif not sig.contents or contents_match(sig, buffers):
            hits.append(sig)
    if payload:  # an anchored rule has a content in the payload
        for sig in placed(group, payload):
            if rule_matches(sig, layer, established, buffers):
                hits.append(sig)
    if payload or len(buffers) > 1:  # a buffer to scan
        for prefilter in group.prefilters:
            data = buffers.get(prefilter.buffer)
            if not data and (data is None or not prefilter.transforms):
                continue  # (an empty buffer transformed may hold a pattern: dotprefix's ".")
            candidates = prefilter.candidates(data)
            if candidates:
                for sig in candidates:
                    if rule_matches(sig, layer, established, buffers):
                        hits.append(sig)
    return hits


def _flowbits(
    flow: Flow,
    hits: list[Signature],
    checks: dict[int, int],
    xbits: XbitState | None = None,
    ts: float = 0.0,
    layer: Layer | None = None,
    errors: Errors | None = None,
) -> list[Signature]:
    """The rules that alert, once flowbits, xbits and flowints are checked and set, in the
    order Suricata gives them (``state_order``: rules that only set go first, so a later rule
    on the same packet sees what they set). ``checks``: by ``id`` of each rule with flowbits,
    xbits, flowint or ``noalert``, its place in that order."""
    for sig in hits:
        if id(sig) in checks:
            break
    else:
        return hits
    bits = flow.bits
    if not isinstance(bits, flowint.FlowVars):
        bits = flowint.FlowVars(bits or ())
    ordered = sorted(hits, key=lambda s: checks.get(id(s), -1))
    alerting = []
    for sig in ordered:
        if not flowbits_hold(sig.flowbits, bits):
            continue
        if sig.flowint and not flowint.hold(sig.flowint, bits.ints):
            continue
        if sig.xbits and xbits is not None and layer is not None:
            if not xbits.hold(sig.xbits, layer.src, layer.dst, ts):
                continue
            xbits.apply(sig.xbits, layer.src, layer.dst, ts)
        flowbits_apply(sig.flowbits, bits)
        if sig.flowint:
            flowint.apply(sig.flowint, bits.ints, errors)
        if sig.action == "pass":
            # a pass rule ends the packet's inspection: no later rule sets anything, and
            # kept in the list (``noalert`` or not) it keeps every other rule from alerting
            alerting.append(sig)
            break
        if not sig.noalert:
            alerting.append(sig)
    if bits or bits.ints:
        flow.bits = bits
    return alerting


# A rule a new flow's first segment alerts on: always, or where its header tests hold
Alerting = Signature | tuple[Signature, tuple[SegmentTest, ...]]


def _segment_tests(sig: Signature, buffers: dict[str, bytes]) -> tuple[SegmentTest, ...] | None:
    """A rule reading header fields, as the new-flow path tests it on each segment of a kind
    (``buffers``: the kind's, without the packet's headers): its header tests compiled, if
    the rest of it holds of every such segment (its other items checked here; () when they
    do not: it never matches one). None: it reads more of the packet than those tests."""
    tests: list[SegmentTest] = []
    rest = []
    for content in sig.contents:
        if content.buffer == IP_PACKET:
            head = content.head
            compiled = segment_test(head) if head is not None and content.plain else None
            if compiled is None:
                return None
            tests.append(compiled)
        elif content.buffer in HEADER_BUFFERS:
            return None
        else:
            rest.append(content)
    if not tests:
        return None
    if rest and not contents_match(replace(sig, contents=tuple(rest)), buffers):
        return ()
    return tuple(tests)


def _with_tested(
    alerting: list[Alerting],
    tested: list[tuple[Signature, tuple[SegmentTest, ...]]],
    rank: dict[int, int],
) -> tuple[list[Alerting], bool]:
    """A plan's rules that alert always, with those that alert where their header tests
    hold, in the full path's order (by rank); not planned (False) where a sid would alert
    twice (the full path keeps its first alert only)."""
    sids = [entry.sid for entry in alerting if not isinstance(entry, tuple)]
    sids += [sig.sid for sig, _ in tested]
    if len(set(sids)) != len(sids):
        return alerting, False
    merged: list[Alerting] = [*alerting, *tested]
    merged.sort(key=lambda e: rank[id(e[0] if isinstance(e, tuple) else e)])
    return merged, True


def _never_block(profile: Profile) -> tuple[IPNetwork | AddrRange, ...]:
    items: list[IPNetwork | AddrRange] = []
    sets = {s.name: s for s in profile.sets}
    for item in profile.protect.never_block:
        if isinstance(item, SetRef):
            spec = sets.get(item.name)
            for element in spec.elements if spec is not None else ():
                try:
                    parsed = parse_addr_item(element)
                except ValueError:
                    continue
                if not isinstance(parsed, SetRef):
                    items.append(parsed)
        else:
            items.append(item)
    return tuple(items)


@dataclass(slots=True)  # read and written on every packet: slots are the fastest
class Stats:
    packets: int = 0
    full: int = 0  # packets decoded by the full path
    fast: int = 0  # packets a fast path took
    alerts: int = 0
    errors: Errors = field(default_factory=dict)

    @property
    def decoded(self) -> int:
        return self.full + self.fast


class _Hello:
    """A ClientHello that continues in the next segments of its flow's client direction."""

    __slots__ = ("data", "flow", "next_seq", "size")

    def __init__(self, flow: Flow, payload: bytes, next_seq: int, size: int) -> None:
        self.flow = flow
        self.data = bytearray(payload)
        self.next_seq = next_seq
        self.size = min(size, HELLO_MAX_BYTES)


class InspectionEngine:
    def __init__(self, config: InspectionConfig) -> None:
        self.config = config
        self.matcher = Matcher(config.signatures)
        # computed once: which rules use flowbits, xbits or flowints (by id, their place among
        # a packet's matches), the order of alerts (action, priority, sid)
        stateful = (s for s in config.signatures if s.flowbits or s.noalert or s.xbits or s.flowint)
        self._flowbit_checks = {
            id(sig): place for place, sig in enumerate(sorted(stateful, key=state_order))
        }
        self.xbits = XbitState()
        order = sorted({(ACTION_ORDER[s.action], s.priority, s.sid) for s in config.signatures})
        ranks = {key: rank for rank, key in enumerate(order)}
        self._rank = {
            id(s): ranks[(ACTION_ORDER[s.action], s.priority, s.sid)] for s in config.signatures
        }
        # the header and body buffers some rule reads (only these of HTTP's many are built;
        # none: the headers are not walked)
        read = frozenset(c.buffer for sig in config.signatures for c in sig.contents)
        self._wanted = read & _HEADER_AND_BODY
        self._flowbits = bool(self._flowbit_checks)
        # the TLS handshake, HTTP messages across segments, stream sizes: when rules read them
        self._follow = Follow.of(config.signatures)
        tls = self._follow.tls if self._follow is not None else None
        # the version a TLS flow's hello gave, for its later packets: with a rule reading it
        self._tls_known = tls if tls is not None and TLS_VERSION in tls.wanted else None
        # where TLS flows turn encrypted: followed when a rule reads the payload at all
        self._records = (
            TlsRecords()
            if config.encryption_handling == "track-only" and any(self.matcher._reads_payload)
            else None
        )
        self.flows = FlowTable(config.max_flows, config.idle_timeout)
        self.flows.hatch = self._hatch
        self.thresholds = ThresholdState()
        self.defrag = Defragmenter()
        depth = config.stream_depth
        self.streams = Reassembler(depth) if depth > 0 else None
        self._stats = Stats()
        # the compiled fast path's flush_stats(), once loaded: it counts packets in C
        self._flush_stats: Callable[[], None] | None = None
        d = config.detectors
        self.port_scan = detectors.PortScan(d.port_scan) if d.port_scan else None
        self.syn_flood = detectors.SynFlood(d.syn_flood) if d.syn_flood else None
        self.dns_tunnel = detectors.DnsTunnel(d.dns_tunnel) if d.dns_tunnel else None
        self.gtp = detectors.GtpAnomaly(d.gtp) if d.gtp else None
        self._syn_detectors = bool(self.port_scan or self.syn_flood)
        # bound once for the new-flow path
        self._allow = self.thresholds.allow
        self._scan_syn = self.port_scan.syn if self.port_scan is not None else None
        self._flood_syn = self.syn_flood.syn if self.syn_flood is not None else None
        self._index = self.flows.index
        self._idle_timeout = config.idle_timeout
        self._fast = config.fast_path
        # the compiled fast path (core.py): take(ts, data) -> False (the full path takes
        # the packet) or the packet's alerts (_NO_ALERTS for a packet it took; those of a
        # bare SYN that opens a flow, the new-flow path compiled); it counts the packet in
        # stats. Loaded by the first packet, so that an idle engine maps none of it
        self._core: Callable[[float, bytes], Literal[False] | Sequence[Alert]] | None = None
        self._decode: Callable[[bytes, int, Errors], Layer | None] = decode_packet
        self._lookup: Callable[[Layer, float], tuple[Flow, bool]] = self.flows.lookup
        self._rule_hits: Callable[..., list[Signature]] = _rule_hits
        self._parse_dns: Callable[[bytes, Errors], DnsQuery | None] = appproto.parse_dns
        self._parse_sni: Callable[[bytes, Errors], bytes | None] = appproto.parse_tls_sni
        self._parse_http: Callable[[bytes, Errors], HttpRequest | None] = (
            appproto.parse_http_request
        )
        if self._fast and config.compiled and core.enabled():
            self._core = self._load_core
        self._never_block_cache: dict[bytes, bool] = {}
        self._hellos: OrderedDict[bytes, _Hello] = OrderedDict()  # by flow key
        # A bare SYN, or a segment without SYN and payload, opening an IPv4/TCP flow (see
        # _new_flow): what the full path would do with it depends on its flags and on which
        # rule expressions its addresses and ports fall in; the answer, a plan, is worked
        # out once per such kind of segment.
        self._flow_path = self._fast
        self._packet = reads_packet(config.signatures)  # a header keyword: ip:packet wanted
        self._headers = reads_headers(config.signatures)  # and the header buffers
        self._sizes = self._follow is not None and self._follow.sizes is not None
        # The applications whose data segments of an established flow the fast path may take
        # when a direction's only payload work is its payload prefilters and its stream (see
        # _scan_segment). A segment may have more buffers than its payload, but none a
        # prefilter reads: the stream sizes and a TLS version kept (stream_size and
        # tls.version are never a rule's fast pattern), the packet's headers when a rule
        # reads ip:packet (a header keyword or a header buffer's content never is either).
        # A rule reading them is a plain rule (its direction's packets not taken) or has a
        # pattern the scan finds; the fast paths count the sizes of the segments they take
        # (count_segment).
        self._scan_apps = frozenset(("none", "http", "tls"))
        # HTTP messages followed across segments: a segment of a direction gathering one
        # takes the full path
        self._http = self._follow.http if self._follow is not None else None
        # (quiet False, group, app, scan True) by (id of the group, app): one tuple shared
        # by the flows whose direction the fast path scans
        self._scan_picks: dict[tuple[int, str], tuple[bool, Group, str, bool]] = {}
        self._flow_plans: dict[tuple[int, ...], int] = {}  # kind of segment -> in _plans
        # (direction to the server's selection, the other's, whether the stream is
        # followed, the rules that alert on it in order, the TCP state it leaves the flow in,
        # whether it is the inner flow of a G-PDU that passed the GTP-U checks); a rule that
        # alerts only where its header tests hold of the segment is (rule, tests)
        self._plans: list[tuple[Any, Any, bool, tuple[Alerting, ...], int, bool]] = []
        self._alerting: list[tuple[Alerting, ...]] = []  # the rules of each plan
        self._addr4 = self.matcher._addr_segments[4]
        self._port_bits = self.matcher._port_segments

    @property
    def stats(self) -> Stats:
        """The engine's counters, with the packets the compiled fast path counted added."""
        if self._flush_stats is not None:
            self._flush_stats()
        return self._stats

    # -- the per-packet path ---------------------------------------------------------------

    def process(self, ts: float, data: bytes, linktype: int) -> Sequence[Alert]:
        core = self._core
        if core is not None and linktype == 1:
            # the compiled fast path counts the packet (stats.packets, and stats.fast when
            # it takes it), takes a packet no flow holds as the twin's _unheld does, and
            # gives False (the full path is to take the packet) or the packet's alerts
            taken = core(ts, data)
            if taken is not False:
                return taken
            if self._core is not None:
                return self._full(ts, data, linktype)
            stats = self._stats  # (the compiled fast path could not be loaded)
        else:
            stats = self._stats
            stats.packets += 1
        # Fast paths, for Ethernet / IPv4 without options, not a fragment: a TCP packet, or
        # a GTP-U G-PDU carrying one, of an established flow whose direction needs nothing
        # of this packet but its flags (see _fast_tcp). They read the fields the decoders
        # would, straight from the frame; anything unusual takes the full path below.
        if (
            self._core is None
            and linktype == 1
            and self._fast
            and len(data) >= 54
            and data[12:15] == b"\x08\x00\x45"
            and not data[20] & 0x3F
            and not data[21]
        ):
            proto = data[23]
            if proto == 6:
                # _fast_tcp's common case, inline: the hottest lines of the engine
                key = data[26:38]
                flow = self._index.get(key)
                if flow is None:
                    got = self._unheld(ts, data, key)
                    if got is not None and not isinstance(got, Flow):
                        return got
                    flow = got
                if flow is not None:
                    to_server = key == flow.fwd_key
                    fast = flow.fast_s if to_server else flow.fast_c
                    flags = data[47]
                    if (
                        fast is not None
                        and not flags & 0x07  # (a FIN may end its stream: _fast_tcp)
                        and not self._sizes  # (_fast_tcp counts the stream sizes)
                        and flow.tcp_state == TCP_ESTABLISHED
                        and fast[2] == flow.app
                        and ts - flow.last_ts <= self._idle_timeout
                    ):
                        group = fast[1]
                        plain = group.established.get(flags)
                        if plain is None:
                            plain = group.plain_for(flags, True)
                        end = 14 + (data[16] << 8 | data[17])
                        start = 34 + ((data[46] >> 4) << 2)
                        if (
                            data[46] >= 0x50
                            and start <= end <= len(data)
                            and (not plain or self._gated(group, flags, True, data, 14, start, end))
                            and (
                                start == end
                                or (
                                    fast[0]
                                    and not (
                                        group.anchored
                                        and _anchored_hit(group, data, start, end, True)
                                    )
                                )
                            )
                        ):
                            flow.last_ts = ts
                            if to_server:
                                flow.packets_to_server += 1
                            else:
                                flow.packets_to_client += 1
                            if ts - flow.touched >= 1.0:
                                self.flows.flows.move_to_end(flow.key)
                                flow.touched = ts
                            stats.fast += 1
                            return _NO_ALERTS
                    end = 14 + (data[16] << 8 | data[17])
                    if end <= len(data) and self._fast_tcp(ts, data, 14, end):
                        stats.fast += 1
                        return _NO_ALERTS
            elif proto == 17 and data[36] == 0x08 and data[37] == 0x68:
                through = self._fast_gtp(ts, data)
                if through is True:
                    stats.fast += 1
                    return _NO_ALERTS
                if through is not False:
                    return through  # the alerts of an inner flow's first segment
        return self._full(ts, data, linktype)

    def _full(self, ts: float, data: bytes, linktype: int) -> Sequence[Alert]:
        """The full path of a frame counted in ``stats.packets``: decoded (an IP fragment
        held until its datagram is whole) and inspected; its alerts."""
        stats = self._stats
        layer = self._decode(data, linktype, stats.errors)
        if layer is None:
            return _NO_ALERTS
        if layer.frag is not None:  # inspected once its datagram is whole
            layer = self.defrag.add(ts, layer, stats.errors)
            if layer is None:
                return _NO_ALERTS
        stats.full += 1
        alerts: list[Alert] = []
        self._inspect(ts, layer, alerts)
        if alerts:
            stats.alerts += len(alerts)
            return alerts
        return _NO_ALERTS

    def _load_core(self, ts: float, data: bytes) -> Literal[False] | Sequence[Alert]:
        """The first packet's call: the compiled fast path is loaded and takes it."""
        compiled = core.fast_path_class()
        if compiled is None:  # found but not loadable: the full path takes this packet
            self._core = None
            self._stats.packets += 1  # (as the compiled take would have)
            return False
        addr_starts, addr_bits = self._addr4
        port_starts, port_bits = self._port_bits
        try:
            fast = compiled(
                self._index,
                self.flows.flows,
                self._idle_timeout,
                Flow,
                _anchored_hit,
                Layer,
                self.flows.lookup,
            )
            fast.new_flow_path(  # a packet no flow holds: _unheld, _new_flow, the hatching
                self.flows,
                self._stats,
                self._hellos,
                self._flow_plans,
                self._flow_plan,
                (addr_starts, addr_bits),
                (port_starts, port_bits),
                self._alerting,
                self._scan_syn,
                self._flood_syn,
                self._flow_fire,
                self._flow_alerts,
                _NO_ALERTS,
                self._flow_path,
                self._plans,  # what an embryo hatches into (_hatch, compiled)
                self._sizes,
                # what _flow_fire counts, counted in C (ThresholdState.allow, PortScan.syn,
                # SynFlood.syn compiled, on these objects' own tables)
                (self.thresholds, self.port_scan, self.syn_flood),
                # a G-PDU's inner flow opens on the new-flow path if its addresses pass the
                # GTP-U checks (GtpAnomaly.addresses_pass): any (None), or in these pools
                None if self.gtp is None or not self.gtp.pools else self.gtp.ranges[4],
            )
            fast.scan_path(  # data segments of directions _scans, G-PDUs carrying them
                self._scan_segment,
                None if self._packet else self._scan_outer,  # (None: no outer scan holds)
                self.streams,
                StreamDirection,
                head_clear,
                self._records.walk if self._records is not None else None,
                self._tls_taken,
                self._records.followed if self._records is not None else {},
                WALK_SHAPE,
                self._http,  # an HTTP data segment continuing a message is the engine's
            )
        except (AttributeError, TypeError, ValueError):
            # a module built from other sources than these: the twin takes over
            self._core = None
            self._stats.packets += 1  # (as the compiled take would have)
            return False
        # (handed the tables above, take gives False or the packet's alerts)
        self._core = cast(Callable[[float, bytes], Literal[False] | Sequence[Alert]], fast.take)
        # process() itself from here: the fast path's, the full path called from it (a
        # packet the fast path takes costs no Python call)
        fast.full_path(self._full)
        self._flush_stats = fast.flush_stats
        self.process = fast.process  # type: ignore[method-assign]
        self.matcher.compiled_bits = fast.header_bits  # (over the tables new_flow_path has)
        self._lookup = fast.lookup
        driver = core.rule_hits_class()
        if driver is not None:
            self._rule_hits = driver(
                icmp_matches, head_holds, contents_match, rule_matches, _rule_hits
            ).hits
        http = core.http_parser_class()
        if http is not None:
            self._parse_http = http(
                HttpRequest,
                appproto.normalize_host,
                appproto.HTTP_METHODS,
                appproto.MAX_HTTP_HEADERS,
                appproto.parse_http_request,
            ).parse
        sni = core.sni_parser_class()
        if sni is not None:
            self._parse_sni = sni(appproto.parse_tls_sni).parse
        dns = core.dns_parser_class()
        if dns is not None:
            self._parse_dns = dns(DnsQuery, appproto.parse_dns, appproto.MAX_DNS_NAME).parse
        decoder = core.decoder_class()
        if decoder is not None:
            self._decode = decoder(Layer, decode_packet, GtpInfo).decode
        hello = core.hello_fields_function()
        if hello is not None and self._follow is not None and self._follow.tls is not None:
            self._follow.tls.hello_fields = hello
        return self._core(ts, data)

    def _unheld(self, ts: float, data: bytes, key: bytes) -> Flow | Sequence[Alert] | None:
        """An IPv4/TCP packet no flow holds under ``key``: an embryo under this key or the
        other direction's hatches (the flow returned); a bare SYN, or a segment without SYN
        (such as a flood's ACKs, RSTs or FINs), takes the new-flow path (its alerts
        returned, or None where the full path is to take it)."""
        table = self.flows
        if table.embryos and key in table.flows:
            return table.hatched(key, ts)
        flags = data[47]
        if (flags & 0x17 == 0x02 or not flags & 0x02) and self._flow_path:
            found = self._new_flow(ts, data, key)
            if found is not None:
                return found
        if table.embryos:
            return table.hatched(key, ts)
        return None

    def _new_flow(self, ts: float, data: bytes, key: bytes, ip: int = 14) -> Sequence[Alert] | None:
        """The first segment of an IPv4/TCP flow whose key (``data[ip + 12:ip + 24]``) no
        flow or embryo holds, without payload: a bare SYN (no ACK, RST or FIN), or a segment
        without SYN (the full path would hold it as a flow picked up in mid-stream), in a few
        steps: its kind's plan gives the rules that match it, their thresholds and the SYN
        detectors (a SYN's) count it, and its flow is held as an embryo until it answers or
        sends again. Only when something alerts is the packet decoded and the flow hatched,
        for the alerts. None: the full path takes the packet. ``ip`` 50: the inner packet
        of a G-PDU ``_fast_gtp`` found clean, whose outer flow it accounts for."""
        total = data[ip + 2] << 8 | data[ip + 3]
        flags = data[ip + 33]
        doff = data[ip + 32] >> 4
        if doff < 5 or total != 20 + (doff << 2) or ip + total > len(data):
            return None  # a payload, or a malformed or truncated header
        if self._hellos and key in self._hellos:
            return None
        src_n, dst_n, sport, dport, seq = _SYN_HEAD(data, ip + 12)
        table = self.flows
        flows = table.flows
        if table.embryos and _TCP_KEY(dst_n, src_n, dport, sport) in flows:
            return None  # the other end opened the flow: it hatches
        if not flags & 0x02:
            seq = (seq - 1) & 0xFFFFFFFF  # its sender's count starts one before it
        starts, bits = self._addr4
        port_starts, port_bits = self._port_bits
        kind = (
            flags,
            bits[bisect_right(starts, src_n) - 1],
            bits[bisect_right(starts, dst_n) - 1],
            port_bits[bisect_right(port_starts, sport) - 1],
            port_bits[bisect_right(port_starts, dport) - 1],
            sport == 53 or dport == 53,
            ip != 14,
        )
        plan = self._flow_plans.get(kind)
        if plan is None:
            plan = self._flow_plan(kind, data)
        if plan < 0:
            return None
        self._stats.full += 1
        # the embryo (FlowTable.add_embryo, inline)
        if ts >= table._next_sweep:
            table._sweep(ts)
        flows[key] = (ts, seq, plan)
        table.embryos += 1
        if len(flows) > table.max_flows:
            _, oldest = flows.popitem(last=False)
            if type(oldest) is tuple:
                table.embryos -= 1
            else:
                table.drop_index(oldest)
            table.evicted += 1
        if not self._alerting[plan] and not (self._syn_detectors and flags & 0x02):
            return _NO_ALERTS
        return self._flow_fire(ts, data, key, plan)

    def _flow_fire(self, ts: float, data: bytes, key: bytes, plan: int) -> Sequence[Alert]:
        """A new flow's first segment, held as an embryo: its rules' thresholds and (a
        SYN) the SYN detectors count it; its alerts, if any."""
        alerting = self._alerting[plan]
        ip = 14 if data[23] == 6 else 50  # (a G-PDU's inner packet)
        dport = data[ip + 22] << 8 | data[ip + 23]
        src = data[ip + 12 : ip + 16]
        dst = data[ip + 16 : ip + 20]
        fired: list[Signature] | None = None
        for entry in alerting:
            if isinstance(entry, tuple):  # a rule on header fields: where its tests hold
                sig, tests = entry
                if not segment_tests_hold(tests, data, ip):
                    continue
            else:
                sig = entry
            if sig.threshold is None or self._allow(sig.sid, sig.threshold, src, dst, ts):
                if fired is None:
                    fired = [sig]
                else:
                    fired.append(sig)
        scan = flood = None
        if data[ip + 33] & 0x02:
            scan = self._scan_syn(ts, src, dport) if self._scan_syn is not None else None
            flood = self._flood_syn(ts, src, dst) if self._flood_syn is not None else None
        if fired is None and scan is None and flood is None:
            return _NO_ALERTS
        return self._flow_alerts(ts, data, key, fired, scan, flood)

    def _flow_alerts(
        self,
        ts: float,
        data: bytes,
        key: bytes,
        fired: list[Signature] | None,
        scan: detectors.Detection | None,
        flood: detectors.Detection | None,
    ) -> Sequence[Alert]:
        """The alerts of a new flow's first segment held as an embryo: its flow hatched,
        the packet decoded, for them (a G-PDU's: its inner packet's, as the full path's)."""
        flow = self.flows.hatched(key, ts)
        layer = decode_packet(data, 1, self._stats.errors)
        if layer is not None and layer.gtp is not None:
            layer = layer.gtp.inner
        assert flow is not None and layer is not None
        alerts: list[Alert] = []
        for sig in fired or ():
            alerts.append(self._signature_alert(ts, sig, layer, flow, True, None, None, None))
        if scan is not None:
            alerts.append(self._detector_alert(ts, scan, layer, flow, True))
        if flood is not None:
            alerts.append(self._detector_alert(ts, flood, layer, flow, True))
        self._stats.alerts += len(alerts)
        return alerts

    def _flow_plan(self, kind: tuple[int, ...], data: bytes) -> int:
        """Work out, from a new flow's first segment of this kind (a bare SYN, or a segment
        without SYN and payload), what the full path does with every such segment of the
        kind: the rule groups and fast-path state of its flow, whether the stream is
        followed, the rules that alert on it (before thresholds) in their order, the TCP
        state it leaves the flow in."""
        plan = _NO_PLAN
        layer = decode_packet(data, 1, {})
        if layer is not None and kind[6]:  # a G-PDU's inner packet
            layer = layer.gtp.inner if layer.gtp is not None else None
        if layer is not None and not layer.payload:
            group, other = self.matcher.pair_for(layer, "", True)
            port53 = bool(kind[5])
            sel_s = group.pick(self._quiet(group, None, True, "", port53), "")
            quiet = self._quiet(other, None, False, "", port53)
            sel_c: tuple[bool, Group, str] | tuple[bool, Group, str, bool] = other.pick(quiet, "")
            if not quiet and self._scans(other, None, False, "", port53):
                sel_c = self._scan_pick(other, "")
            # The segment's buffers: its empty payload, and the stream sizes every new
            # flow's first segment gives. A plan holds only if nothing else of the packet
            # decides a match: no rule that could match has flowbits or reads a header field
            # but those the new-flow path tests on each segment (such a rule alerts where its
            # tests hold), no prefilter scans a buffer the segment may have besides its
            # payload.
            buffers = {PKT: b""}
            if self._sizes:
                buffers[STREAM_SIZE] = _NEW_FLOW_SIZES
            plain = group.plain_for(layer.flags, False)
            planned = not any(p.buffer in _NEW_FLOW_BUFFERS for p in group.prefilters)
            tested: list[tuple[Signature, tuple[SegmentTest, ...]]] = []
            for sig in plain:
                if not planned:
                    break
                if id(sig) in self._flowbit_checks:
                    planned = False
                elif sig.header:
                    tests = _segment_tests(sig, buffers)
                    planned = tests is not None and sig.action != "pass"
                    if tests:
                        tested.append((sig, tests))
            if planned:
                # (a rule reading header fields never hits here: the packet's are not read)
                hits = _rule_hits(layer, group, False, layer.flags, b"", buffers)
                alerting: list[Signature | tuple[Signature, tuple[SegmentTest, ...]]] = []
                if not any(sig.action == "pass" for sig in hits):
                    seen: set[int] = set()
                    for sig in sorted(hits, key=lambda s: self._rank[id(s)]):
                        if sig.sid not in seen:
                            seen.add(sig.sid)
                            alerting.append(sig)
                    if tested:
                        alerting, planned = _with_tested(alerting, tested, self._rank)
            if planned:
                reads = self.streams is not None and group.reads_payload
                state = TCP_SYN_SENT if layer.flags & TCP_SYN else TCP_NEW
                self._plans.append((sel_s, sel_c, reads, tuple(alerting), state, bool(kind[6])))
                self._alerting.append(tuple(alerting))
                plan = len(self._plans) - 1
        self._flow_plans[kind] = plan
        return plan

    def _hatch(self, key: bytes, reverse: bytes, embryo: Embryo) -> Flow:
        """The flow an embryo stands for: as the full path leaves it after its first
        segment (``seq``: one before the sequence number its sender's count starts at)."""
        ts, seq, plan = embryo
        sel_s, sel_c, reads, _, state, gtp_ok = self._plans[plan]
        flow = Flow(key, reverse, PROTO_TCP, ts)
        flow.packets_to_server = 1
        flow.tcp_state = state
        flow.gtp_ok = gtp_ok
        flow.sel_s = flow.fast_s = sel_s
        flow.sel_c = flow.fast_c = sel_c
        if reads:
            flow.streams = [None, (seq + 1) & 0xFFFFFFFF]  # opened on the first payload
        if self._sizes:
            flow.sizes = [seq, (seq + 1) & 0xFFFFFFFF, -1, -1]
        return flow

    def _fast_tcp(self, ts: float, data: bytes, ip: int, end: int, tunnel: bool = False) -> bool:
        """Account for the IPv4/TCP packet at ``data[ip:end]`` without decoding it further, if
        nothing could come of it: its flow is established (or this is the SYN/ACK or the ACK
        of its handshake), its direction has settled its application protocol, no payload
        rule applies to it (or it carries no payload), it is no SYN or RST (new flows,
        detectors) and no plain rule can match it (its flags, the flow state, and the
        rules' gates: ``_gated``)."""
        key = data[ip + 12 : ip + 24]
        flow = self._index.get(key)
        if flow is None:
            return False
        to_server = key == flow.fwd_key
        fast = flow.fast_s if to_server else flow.fast_c
        flags = data[ip + 33]
        if (
            fast is None
            or flags & 0x04  # RST
            or ts - flow.last_ts > self._idle_timeout
            or (tunnel and not flow.gtp_ok)
            or (self._sizes and flow.sizes is None)  # (the full path starts the count)
        ):
            return False
        state = flow.tcp_state
        established = True
        if state == TCP_ESTABLISHED:
            if flags & 0x02:
                return False
        elif state == TCP_SYN_SENT and not to_server and flags & 0x12 == 0x12:
            state = TCP_SYN_RECV  # the server's SYN/ACK
            established = False
        elif state == TCP_SYN_RECV and to_server and flags & 0x12 == 0x10:
            state = TCP_ESTABLISHED  # the ACK that completes the handshake
        else:
            return False
        quiet = fast[0]
        group = fast[1]
        if fast[2] != flow.app:
            return False
        plain = group.established.get(flags) if established else None
        if plain is None:
            plain = group.plain_for(flags, established)
        offset = data[ip + 32] >> 4
        start = ip + 20 + (offset << 2)
        if offset < 5 or start > end:
            return False
        if plain and not self._gated(group, flags, established, data, ip, start, end):
            return False
        if start == end:
            # the SYN/ACK: its direction's stream starts
            if (
                flags & 0x02
                and not quiet
                and not self._scan_segment(flow, to_server, group, data, ip, start, end)
            ):
                return False
        else:
            if not quiet and (len(fast) < 4 or state != flow.tcp_state):
                return False
            if group.anchored and _anchored_hit(group, data, start, end, established):
                return False
            if not quiet and not self._scan_segment(flow, to_server, group, data, ip, start, end):
                return False
        if self._sizes:  # the stream sizes count the segment, as the full path's would
            assert flow.sizes is not None
            count_segment(flow.sizes, to_server, _SEQ(data, ip + 24)[0], end - start, flags & 0x02)
        if flags & 0x01 and flow.streams is not None and self.streams is not None:
            # its FIN: the direction's stream may end (as the full path ends it)
            seq = _SEQ(data, ip + 24)[0]
            self.streams.finished(flow.streams[to_server], (seq + end - start) % _MOD)
        if state != flow.tcp_state:
            flow.tcp_state = state
            flow.established = established
        flow.last_ts = ts
        if to_server:
            flow.packets_to_server += 1
        else:
            flow.packets_to_client += 1
        if ts - flow.touched >= 1.0:
            self.flows.flows.move_to_end(flow.key)
            flow.touched = ts
        return True

    @staticmethod
    def _gated(
        group: Group, flags: int, established: bool, data: bytes, ip: int, start: int, end: int
    ) -> bool:
        """Whether the group's plain rules for these flags (-1: not TCP) can match the IPv4
        packet at ``data[ip:]`` (payload ``data[start:end]``) only where a header test or size
        gate of theirs holds, and none holds (a fast path may take the packet)."""
        gates = group.fast_gates(flags, established)
        return gates is not None and gates_clear(gates, data, ip, end - start)

    def _fast_gtp(self, ts: float, data: bytes) -> bool | Sequence[Alert]:
        """A plain G-PDU (no optional header, TEID not 0) carrying IPv4/TCP that _fast_tcp
        can take, or the first segment of a flow that takes the new-flow path (its alerts
        returned: see _gtp_unheld), on a GTP-U flow where no outer rule applies to it."""
        total = data[16] << 8 | data[17]
        end = 14 + total
        if (
            end > len(data)
            or total < 76
            or data[38] << 8 | data[39] != total - 20  # UDP length
            or data[42] != 0x30  # GTPv1, PT=1, no E/S/PN
            or data[43] != 255
            or data[44] << 8 | data[45] != total - 36  # GTP length
            or data[46:50] == b"\x00\x00\x00\x00"
            or data[50] != 0x45
            or data[59] != 6
            or data[56] & 0x3F
            or data[57]
            or data[52] << 8 | data[53] != total - 36  # inner total length
        ):
            return False
        key = data[26:38] + b"\x11"
        outer = self._index.get(key)
        if outer is None:
            return False
        to_server = key == outer.fwd_key
        fast = outer.fast_s if to_server else outer.fast_c
        if fast is None or outer.app != "gtp" or ts - outer.last_ts > self._idle_timeout:
            return False
        established = outer.established
        if not established and (outer.packets_to_client if to_server else outer.packets_to_server):
            return False  # this packet establishes the flow: let the full path see it
        group = fast[1]
        if group.plain_for(-1, established) and not self._gated(
            group, -1, established, data, 14, 42, end
        ):
            return False
        if group.anchored and _anchored_hit(group, data, 42, end, established):
            return False
        if group.prefilters and not self._scan_outer(group, data, end):
            return False
        taken: bool | Sequence[Alert] = self._fast_tcp(ts, data, 50, end, tunnel=True)
        if not taken:
            taken = self._gtp_unheld(ts, data, end, outer)
            if taken is False:
                return False
        outer.last_ts = ts
        if to_server:
            outer.packets_to_server += 1
        else:
            outer.packets_to_client += 1
        if ts - outer.touched >= 1.0:
            self.flows.flows.move_to_end(outer.key)
            outer.touched = ts
        return taken

    def _gtp_unheld(self, ts: float, data: bytes, end: int, outer: Flow) -> bool | Sequence[Alert]:
        """The inner IPv4/TCP packet of a G-PDU ``_fast_gtp`` checked, where no flow holds
        its key, as ``_unheld`` takes a packet: an embryo under its key or the other
        direction's hatches (the packet then taken if ``_fast_tcp`` takes it), or a flow's
        first segment takes the new-flow path (its alerts returned), if the GTP-U checks
        find nothing to report of the G-PDU. False: the full path takes the G-PDU."""
        key = data[62:74]
        if key in self._index:
            return False  # a flow holds it, and _fast_tcp left the packet to the full path
        table = self.flows
        flow: Flow | None = None
        if table.embryos and key in table.flows:
            flow = table.hatched(key, ts)
        else:
            flags = data[83]
            if (
                (flags & 0x17 == 0x02 or not flags & 0x02)
                and self._flow_path
                and (self.gtp is None or self.gtp.addresses_pass(data[62:66], data[66:70]))
            ):
                flows = table.flows
                if len(flows) >= table.max_flows and next(iter(flows)) == outer.key:
                    return False  # its embryo would push the tunnel's flow out
                found = self._new_flow(ts, data, key, 50)
                if found is not None:
                    return found
            if table.embryos:
                flow = table.hatched(key, ts)
        if flow is None:
            return False
        return self._fast_tcp(ts, data, 50, end, tunnel=True)

    def _inspect(self, ts: float, layer: Layer, alerts: list[Alert]) -> Flow:
        gtp = layer.gtp
        exclude: AbstractSet[int] = _NO_SIDS
        inner_flow: Flow | None = None
        if gtp is not None and gtp.inner is not None:
            start = len(alerts)
            inner_flow = self._inspect(ts, gtp.inner, alerts)
            exclude = {a.sid for a in alerts[start:]}
        flow, to_server = self._lookup(layer, ts)
        proto = layer.proto
        payload = layer.payload
        dns: DnsQuery | None = None
        sni: bytes | None = None
        http: HttpRequest | None = None
        buffers = {"pkt": payload}
        if self._packet:
            add_packet(layer, buffers, self._headers)
        if proto == PROTO_UDP:
            if gtp is not None:
                flow.app = "gtp"
            elif layer.dport == 53 or layer.sport == 53:
                if payload:
                    dns = self._parse_dns(payload, self._stats.errors)
                    if dns is not None:
                        flow.app = "dns"
                        buffers["dns.query"] = dns.name
            elif not flow.app:
                flow.app = "none"
        hello = False  # a ClientHello of this flow was being reassembled
        if proto == PROTO_TCP and payload and to_server and self._hellos:
            pending = self._hellos.get(flow.key)
            if pending is not None and pending.flow is flow:
                hello = True
                sni = self._hello_continues(pending, layer, payload, buffers)
        app_was = flow.app
        if not hello and proto == PROTO_TCP and payload and flow.app != "none":
            dns, sni, http = self._tcp_app(flow, layer, payload, to_server, buffers)
        if (
            self._follow is not None
            and proto == PROTO_TCP
            and self._follow.segment(ts, flow, to_server, layer, buffers, self._stats.errors)
        ):
            self._group(flow, layer, to_server, gtp is not None)  # the fast path may resume
        tls = self._tls_known
        if tls is not None and flow.app == "tls":
            tls.known(flow, to_server, buffers)  # the version its hello gave, kept

        app = flow.app
        sel = flow.sel_s if to_server else flow.sel_c
        if sel is not None and sel[2] == app:
            group = sel[1]
        elif gtp is None:
            # prepare the other direction too (one look-up of the header for both): a TCP
            # flow's next packet may take the fast path, a DNS answer finds its group
            pair = self.matcher.pair_for(layer, app if app in _APPS else "", to_server)
            group = self._group(flow, layer, to_server, False, pair[0])
            self._group(flow, layer, not to_server, False, pair[1])
        else:
            group = self._group(flow, layer, to_server, gtp is not None)
        if to_server and proto == PROTO_TCP and (hello or self._hellos):
            if flow.key in self._hellos:
                flow.fast_s = None  # the next segments continue the ClientHello
            elif hello:
                self._group(flow, layer, True, False)  # done: the fast path may take over
        records = self._records
        if records is not None and flow.app == "tls" and app_was != "tls":
            # a TLS flow's first hello: its records followed from here, if a rule of its
            # directions looks into the payload (else its turning encrypted changes nothing)
            other = flow.sel_c if to_server else flow.sel_s
            free = self.matcher.without_payload
            if free(group) is not group or (other is not None and free(other[1]) is not other[1]):
                records.begin(flow, layer.seq, payload)
        established = flow.established
        flags = layer.flags if proto == PROTO_TCP else -1
        hits = self._rule_hits(layer, group, established, flags, payload, buffers)
        if proto == PROTO_TCP and self.streams is not None:
            if group.reads_payload:
                stream_hits(
                    self.streams, flow, to_server, layer, group, buffers, hits, self._stats.errors
                )
            if flags & TCP_FIN and flow.streams is not None:
                self.streams.finished(flow.streams[to_server], (layer.seq + len(payload)) % _MOD)
        if hits and self._follow is not None:
            hits = self._follow.once(flow, to_server, hits)
        if hits and tls is not None and flow.app == "tls":
            hits = tls.once(flow, to_server, hits)  # a rule on the version: once a direction
        if hits and self._flowbits:
            hits = _flowbits(
                flow, hits, self._flowbit_checks, self.xbits, ts, layer, self._stats.errors
            )
        if hits:
            if http is None and self._follow is not None and self._follow.http is not None:
                http = self._follow.http.completed(flow, to_server)  # a request split up
            self._signature_alerts(
                ts, layer, flow, to_server, hits, exclude, alerts, dns, sni, http
            )

        if (
            records is not None
            and payload
            and flow.app == "tls"
            and app_was == "tls"  # (the hello that made it TLS was read by begin)
            and proto == PROTO_TCP
            and records.segment(flow, to_server, layer)
        ):
            # its TLS records were read after this packet was inspected (as Suricata flags a
            # flow while parsing a packet and skips the payload of the packets after it):
            # encrypted, its payload is no longer inspected, nor its streams kept
            self._regroup(flow, layer, to_server)
            self._let_streams_go(flow)

        if self._syn_detectors and flags >= 0 and flags & 0x12 == 0x02:  # SYN without ACK
            if self.port_scan is not None:
                found = self.port_scan.on_syn(ts, layer)
                if found is not None:
                    alerts.append(self._detector_alert(ts, found, layer, flow, to_server))
            if self.syn_flood is not None:
                found = self.syn_flood.on_syn(ts, layer)
                if found is not None:
                    alerts.append(self._detector_alert(ts, found, layer, flow, to_server))
        if dns is not None and self.dns_tunnel is not None and not dns.response:
            found = self.dns_tunnel.on_query(ts, layer, dns)
            if found is not None:
                alert = self._detector_alert(ts, found, layer, flow, to_server)
                alert.dns = dns
                alerts.append(alert)
        clean = True
        if gtp is not None and self.gtp is not None:
            found, clean = self.gtp.on_gtp(ts, layer, gtp)
            if found is not None:
                alert = self._detector_alert(ts, found, layer, flow, to_server)
                alert.gtp_layer = layer
                alerts.append(alert)
        if inner_flow is not None and gtp is not None:
            # the fast path takes this inner flow's packets only once its addresses passed
            inner_flow.gtp_ok = clean
        return flow

    def _regroup(self, flow: Flow, layer: Layer, to_server: bool) -> None:
        """Both directions' groups (once encrypted, without the payload's rules) and what
        the fast paths may do in them, worked out anew."""
        app = flow.app
        other = flow.sel_c if to_server else flow.sel_s
        if other is None or other[2] != app:
            pair = self.matcher.pair_for(layer, app if app in _APPS else "", to_server)
            self._group(flow, layer, to_server, False, pair[0])
            self._group(flow, layer, not to_server, False, pair[1])
        else:
            self._group(flow, layer, to_server, False)
            self._group(flow, layer, not to_server, False)

    def _tls_taken(self, flow: Flow) -> None:
        """A TLS flow's data segment the fast path took (inspected with the groups it had):
        if the flow turned encrypted while its records were read, its directions are
        regrouped here, as the full path regroups after the segment it takes. Both
        directions' groups are known (a TLS flow's first hello picked them); were one not,
        the full path would regroup on the flow's next packet."""
        sel_s, sel_c = flow.sel_s, flow.sel_c
        if sel_s is None or sel_c is None or sel_s[2] != flow.app or sel_c[2] != flow.app:
            return  # (the full path's segment() then says the flow changed)
        records = self._records
        if records is None or not records.changed(flow):
            return
        self._group(flow, None, True, False)
        self._group(flow, None, False, False)
        self._let_streams_go(flow)

    def _let_streams_go(self, flow: Flow) -> None:
        """An encrypted flow's streams: nothing reads them any more."""
        if flow.streams is not None and self.streams is not None:
            for stream in flow.streams:
                if isinstance(stream, StreamDirection):
                    self.streams.close(stream)
            flow.streams = None

    def _group(
        self,
        flow: Flow,
        layer: Layer | None,
        to_server: bool,
        outer_gtp: bool,
        found: Group | None = None,
    ) -> Group:
        """The rule group of a flow direction (of this packet's, or the other one) for the
        flow's current application protocol, cached on the flow, and what the fast paths may
        skip in that direction; ``found``: the group, when the caller has looked it up.
        ``layer`` None: a TCP flow's direction whose group is known (``_tls_taken``)."""
        app = flow.app
        sel = flow.sel_s if to_server else flow.sel_c
        if sel is not None and sel[2] == app:
            group: Group = sel[1]
        elif found is not None:
            group = found
        else:
            assert layer is not None
            group = self.matcher.group_for(layer, app if app in _APPS else "", to_server, outer_gtp)
        records = self._records
        if records is not None and app == "tls" and records.encrypted(flow):
            group = self.matcher.without_payload(group)
        fast = True
        quiet = False
        picked: tuple[bool, Group, str] | tuple[bool, Group, str, bool] | None = None
        if layer is None or layer.proto == PROTO_TCP:
            port53 = layer is not None and (layer.sport == 53 or layer.dport == 53)
            quiet = self._quiet(group, flow, to_server, app, port53)
            if not quiet and self._scans(group, flow, to_server, app, port53):
                picked = self._scan_pick(group, app)
        elif app != "gtp":
            fast = False
        sel = picked if picked is not None else group.pick(quiet, app)
        if to_server:
            flow.sel_s = sel
            if fast:
                flow.fast_s = sel
        else:
            flow.sel_c = sel
            if fast:
                flow.fast_c = sel
        return group

    def _scans(
        self, group: Group, flow: Flow | None, to_server: bool, app: str, port53: bool
    ) -> bool:
        """Whether the fast path may take a data segment of an established flow in a TCP
        direction that is not quiet, by scanning it (``_scan_segment``): its application
        parses no segment but those ``_scan_segment`` leaves to the full path (a reply
        before the protocol is known: unless DNS), no handshake is being read, the
        payload's prefilters scan it untransformed."""
        if app == "":
            if to_server or port53 or "none" not in self._scan_apps:
                return False
        elif app not in self._scan_apps:
            return False
        if self._follow is not None and not self._follow.quiet(flow, to_server, app):
            return False
        return not group.payload_transformed

    def _scan_pick(self, group: Group, app: str) -> tuple[bool, Group, str, bool]:
        """The shared ``(False, group, app, True)`` of a direction ``_scans``."""
        key = (id(group), app)
        found = self._scan_picks.get(key)
        if found is None or found[1] is not group:
            if len(self._scan_picks) >= _MAX_SCAN_PICKS:
                self._scan_picks.clear()
            found = self._scan_picks[key] = (False, group, app, True)
        return found

    def _scan_segment(
        self, flow: Flow, to_server: bool, group: Group, data: bytes, ip: int, start: int, end: int
    ) -> bool:
        """``_scan_data``, and for a TLS flow found encrypted while the segment's records were
        read (``TlsRecords.walk``), the regrouping the full path would do after it."""
        taken = self._scan_data(flow, to_server, group, data, ip, start, end)
        if taken and self._records is not None and flow.app == "tls":
            self._tls_taken(flow)
        return taken

    def _scan_data(
        self, flow: Flow, to_server: bool, group: Group, data: bytes, ip: int, start: int, end: int
    ) -> bool:
        """Take the data segment ``data[start:end]`` (its IPv4 header at ``ip``) of an
        established flow whose direction ``_scans``, if the full path would find nothing in
        it: no application parser wants it, the payload's prefilters find no pattern in it
        nor across its start in the stream, no rule is waiting for the stream to grow. Then
        it is appended to the stream (in order, within the depth) as the full path would, and
        True is returned. False: nothing changed, the full path is to take it. A SYN/ACK
        (``start == end``) opens its direction's stream after its sequence number."""
        if start == end:
            return self._stream_opens(flow, to_server, group, data, ip)
        payload = data[start:end]
        app = flow.app
        if app == "tls":
            if to_server and payload[0] == 0x16:
                return False  # a handshake record: a ClientHello's SNI
            records = self._records
            if records is not None and flow.key in records.followed:
                # where it turns encrypted (regrouped once taken)
                records.walk(flow, to_server, data, ip, start, end)
        elif app == "http":
            if 0x41 <= payload[0] <= 0x5A:
                return False  # may start a request or a response (an upper-case letter)
            http = self._http
            if http is not None:
                if (flow.key, to_server) in http.pending:
                    return False  # continues a message being gathered
                http._current = http._request = None  # as its segment() starts
        scans = group.payload_scans
        streams = self.streams
        pair = flow.streams
        stream = pair[to_server] if pair is not None else None
        if (
            streams is None
            or not group.reads_payload
            or (type(stream) is StreamDirection and stream.full and not stream.pending)
        ):  # no stream, or past its depth: the packet alone is scanned
            return not any(prefilter.candidates(payload) for prefilter, _ in scans)
        if type(stream) is int:
            # the direction's first payload: its stream opened here, as stream_hits opens it
            stream = pair[to_server] = StreamDirection(stream)  # type: ignore[index]
        elif type(stream) is not StreamDirection:
            return False  # no stream yet (no SYN seen): the full path opens it
        held = stream.data
        have = len(held)
        if (
            stream.pending
            or stream.waiting
            or stream.base < 0
            or (_SEQ(data, ip + 24)[0] - stream.base) % _MOD != have
            or have + len(payload) > streams.depth
        ):
            return False  # out of order, overlapping, past the depth, a rule waiting
        if have:
            # One scan a prefilter covers the packet's and the stream's: from where the last
            # scan of the stream ended, less a pattern's length, to the segment's end (a
            # pattern wholly in the bytes scanned before sends the segment to the full path)
            scanned = stream.scanned
            if group.anchored and not head_clear(group, stream, payload):
                return False
            for prefilter, width in scans:
                lo = scanned - width + 1
                if prefilter.candidates(bytes(held[lo if lo > 0 else 0 :]) + payload):
                    return False
        elif any(prefilter.candidates(payload) for prefilter, _ in scans):
            return False
        held += payload
        streams.grew(stream, have, self._stats.errors)
        if have and stream.data:
            stream.scanned = len(stream.data)
        return True

    def _stream_opens(
        self, flow: Flow, to_server: bool, group: Group, data: bytes, ip: int
    ) -> bool:
        """A SYN/ACK of a direction that is not quiet: its stream, if its rules read the
        payload, starts after its sequence number (as ``stream_hits`` opens it). False:
        the direction has a stream already, the full path is to close it."""
        if self.streams is None or not group.reads_payload:
            return True
        pair = flow.streams
        if pair is None:
            pair = flow.streams = [None, None]
        if isinstance(pair[to_server], StreamDirection):
            return False
        pair[to_server] = (_SEQ(data, ip + 24)[0] + 1) % _MOD
        return True

    def _scan_outer(self, group: Group, data: bytes, end: int) -> bool:
        """Whether the prefilters of a G-PDU's outer flow find nothing in its UDP payload
        ``data[42:end]``, the only buffer the full path gives them (unless a rule reads
        ``ip:packet``): the fast path may then take the G-PDU."""
        if self._packet:
            return False
        payload = data[42:end]
        for prefilter in group.prefilters:
            if prefilter.buffer == PKT and prefilter.candidates(payload):
                return False
        return True

    def _quiet(
        self, group: Group, flow: Flow | None, to_server: bool, app: str, port53: bool
    ) -> bool:
        """Whether the fast path may skip a TCP direction's payload (``flow``: None for a
        flow whose application protocol is not known yet)."""
        quiet = not group.payload_prefilter and (
            app in ("none", "tls")
            # responses: unless a rule reads a response buffer
            or (app == "http" and not to_server and not group.prefilters)
            # replies before the protocol is known: only DNS is detected on them
            or (app == "" and not to_server and not port53)
        )
        if quiet and self._follow is not None:
            quiet = self._follow.quiet(flow, to_server, app)
        return quiet

    def _tcp_app(
        self,
        flow: Flow,
        layer: Layer,
        payload: bytes,
        to_server: bool,
        buffers: dict[str, bytes],
    ) -> tuple[DnsQuery | None, bytes | None, HttpRequest | None]:
        """Application protocol of a TCP payload and its buffers (first packets only, unless
        the flow is HTTP, whose later requests are parsed too)."""
        errors = self._stats.errors
        app = flow.app
        dns: DnsQuery | None = None
        sni: bytes | None = None
        http: HttpRequest | None = None
        if to_server and app in ("", "http") and appproto.looks_like_http_request(payload):
            http = self._parse_http(payload, errors)
            if http is not None:
                flow.app = "http"
                buffers["http.uri"] = http.uri
                buffers["http.raw_uri"] = http.raw_uri
                buffers["http.method"] = http.method
                if http.host is not None:
                    buffers["http.host"] = http.host
                if http.user_agent is not None:
                    buffers["http.user_agent"] = http.user_agent
                wanted = self._wanted
                if wanted:
                    buffers.update(
                        appproto.header_buffers(http.headers, http.body, wanted, http.header_text)
                    )
                    if http.body:
                        buffers["http.request_body"] = http.body
        elif not to_server and app == "http" and payload.startswith(b"HTTP/1."):
            response = appproto.parse_http_response(payload)
            if response is not None:
                buffers["http.stat_code"] = response.stat_code
                buffers["http.stat_msg"] = response.stat_msg
                wanted = self._wanted
                if wanted:
                    buffers.update(appproto.header_buffers(response.headers, response.body, wanted))
                    if response.body:
                        buffers["http.response_body"] = response.body
        elif to_server and app in ("", "tls") and appproto.looks_like_tls(payload):
            flow.app = "tls"
            size = appproto.tls_record_size(payload)
            if size > len(payload) and not layer.truncated:
                # The hello continues in the next segments: its SNI may be there.
                sni = self._parse_sni(payload, {})
                if sni is None:
                    self._hello_starts(flow, layer, payload, size)
                    return dns, sni, http
            else:
                sni = self._parse_sni(payload, errors)
            if sni is not None:
                buffers["tls.sni"] = sni
        elif app in ("", "dns") and (layer.dport == 53 or layer.sport == 53):
            dns = appproto.parse_dns(payload, errors, tcp=True)
            if dns is not None:
                flow.app = "dns"
                buffers["dns.query"] = dns.name
        if flow.app == "" and to_server:
            flow.app_tries += 1
            if flow.app_tries >= APP_DETECT_TRIES:
                flow.app = "none"
        return dns, sni, http

    def _hello_starts(self, flow: Flow, layer: Layer, payload: bytes, size: int) -> None:
        hellos = self._hellos
        hellos.pop(flow.key, None)
        if len(hellos) >= HELLO_MAX_FLOWS:
            hellos.popitem(last=False)
            count(self._stats.errors, "tls.hello_evicted")
        next_seq = (layer.seq + len(payload)) & 0xFFFFFFFF
        hellos[flow.key] = _Hello(flow, payload[:HELLO_MAX_BYTES], next_seq, size)

    def _hello_continues(
        self, pending: _Hello, layer: Layer, payload: bytes, buffers: dict[str, bytes]
    ) -> bytes | None:
        """Add a client segment to a pending ClientHello (in order; a retransmission adds
        only what is new); parse the SNI once the record is whole, or at a gap."""
        data = pending.data
        behind = (pending.next_seq - layer.seq) & 0xFFFFFFFF
        if behind >= 0x80000000:  # a segment is missing: parse what is there
            count(self._stats.errors, "tls.hello_gap")
        elif behind < len(payload):
            new = payload[behind:]
            data += new[: pending.size - len(data)]
            pending.next_seq = (pending.next_seq + len(new)) & 0xFFFFFFFF
            if len(data) < pending.size and not layer.truncated:
                return None
        else:
            return None  # all of it seen before
        del self._hellos[pending.flow.key]
        sni = self._parse_sni(bytes(data), self._stats.errors)
        if sni is not None:
            buffers["tls.sni"] = sni
        return sni

    # -- alerts ----------------------------------------------------------------------------

    def _signature_alerts(
        self,
        ts: float,
        layer: Layer,
        flow: Flow,
        to_server: bool,
        hits: list[Signature],
        exclude: AbstractSet[int],
        alerts: list[Alert],
        dns: DnsQuery | None,
        sni: bytes | None,
        http: HttpRequest | None,
    ) -> None:
        for sig in hits:
            if sig.action == "pass":
                return
        if len(hits) > 1:
            rank = self._rank
            hits.sort(key=lambda s: rank[id(s)])
        seen: set[int] = set()
        for sig in hits:
            if sig.sid in exclude or sig.sid in seen:
                continue
            seen.add(sig.sid)
            if sig.threshold is not None and not self.thresholds.allow(
                sig.sid, sig.threshold, layer.src, layer.dst, ts
            ):
                continue
            alerts.append(self._signature_alert(ts, sig, layer, flow, to_server, dns, sni, http))

    def _signature_alert(
        self,
        ts: float,
        sig: Signature,
        layer: Layer,
        flow: Flow,
        to_server: bool,
        dns: DnsQuery | None,
        sni: bytes | None,
        http: HttpRequest | None,
    ) -> Alert:
        blocked = sig.action == "drop" and self._would_block(layer)
        alert = Alert(
            ts,
            sig.sid,
            sig.rev,
            sig.msg,
            sig.category,
            sig.priority,
            "blocked" if blocked else "allowed",
            layer,
            flow,
            to_server,
        )
        alert.metadata = sig.metadata
        alert.dns = dns
        alert.tls_sni = sni
        alert.http = http
        if layer.gtp is not None:
            alert.gtp_layer = layer
        elif layer.tunnel is not None:
            alert.gtp_layer = layer.tunnel
        return alert

    def _detector_alert(
        self, ts: float, found: detectors.Detection, layer: Layer, flow: Flow, to_server: bool
    ) -> Alert:
        rule = detectors.RULES[found.sid]
        category, priority = CLASSTYPES[rule.classtype]
        alert = Alert(
            ts,
            rule.sid,
            1,
            rule.msg,
            category,
            priority,
            "blocked" if self._would_block(layer) else "allowed",
            layer,
            flow,
            to_server,
        )
        alert.detail = found.detail
        if layer.tunnel is not None:
            alert.gtp_layer = layer.tunnel
        return alert

    def _would_block(self, layer: Layer) -> bool:
        """A drop rule or a detector blocks its source, unless blocking is off or the source
        is in ``never_block``."""
        if not self.config.block:
            return False
        if not self.config.never_block:
            return True
        protected = self._never_block_cache.get(layer.src)
        if protected is None:
            protected = _covered(layer.src, self.config.never_block)
            if len(self._never_block_cache) < 65536:
                self._never_block_cache[layer.src] = protected
        return not protected


def _covered(addr: bytes, items: Iterable[IPNetwork | AddrRange]) -> bool:
    ip = ipaddress.ip_address(addr)
    for item in items:
        if isinstance(item, AddrRange):
            first, last = int(item.first), int(item.last)
            if item.first.version == ip.version and first <= int(ip) <= last:
                return True
        elif item.version == ip.version and ip in item:
            return True
    return False
