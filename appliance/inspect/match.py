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

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from appliance.inspect.decode import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_SCTP,
    PROTO_TCP,
    PROTO_UDP,
    Layer,
)
from appliance.inspect.rules import PKT, AddrExpr, Content, PortExpr, Signature

_MAX_CACHE = 65536

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


class Prefilter:
    """One buffer's multi-pattern prefilter over the fast patterns of a group's rules."""

    __slots__ = ("_by_hit", "_look", "_scan", "buffer", "entries")

    def __init__(self, buffer: str, entries: list[tuple[Content, Signature]]) -> None:
        self.buffer = buffer
        self.entries = entries
        ordered = sorted({(c.pattern, c.nocase) for c, _ in entries}, key=lambda p: -len(p[0]))
        alternatives = b"|".join(
            (b"(?i:" + re.escape(p) + b")") if nocase else re.escape(p) for p, nocase in ordered
        )
        self._scan = re.compile(alternatives, re.DOTALL)
        self._look = re.compile(b"(?=(" + alternatives + b"))", re.DOTALL)
        self._by_hit: dict[bytes, list[Signature]] = {}

    def candidates(self, data: bytes) -> list[Signature] | None:
        """The rules whose fast pattern occurs in ``data`` (None: no pattern occurs)."""
        first = self._scan.search(data)
        if first is None:
            return None
        hits = set(self._look.findall(data, first.start()))
        if len(hits) == 1:
            return self._for_hit(hits.pop())
        found: dict[int, Signature] = {}
        for hit in hits:
            for sig in self._for_hit(hit):
                found[sig.sid] = sig
        return list(found.values())

    def _for_hit(self, hit: bytes) -> list[Signature]:
        """Rules whose pattern is in the matched text (a longer alternative may hide one)."""
        sigs = self._by_hit.get(hit)
        if sigs is None:
            lower = hit.lower()
            sigs = [
                sig
                for content, sig in self.entries
                if (content.pattern.lower() in lower if content.nocase else content.pattern in hit)
            ]
            if len(self._by_hit) < 4096:
                self._by_hit[hit] = sigs
        return sigs


@dataclass
class Group:
    """The rules that can match one kind of packet of one flow direction."""

    plain: list[Signature] = field(default_factory=list)
    prefilters: list[Prefilter] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.plain and not self.prefilters


EMPTY_GROUP = Group()


def fast_pattern(sig: Signature) -> Content | None:
    """The longest positive content of a rule (its prefilter pattern), if it has one."""
    positive = [c for c in sig.contents if not c.negated]
    if not positive:
        return None
    return max(positive, key=lambda c: len(c.pattern))


class Matcher:
    def __init__(self, signatures: Sequence[Signature]) -> None:
        self.signatures = list(signatures)
        self._addr_exprs: list[AddrExpr] = []
        self._port_exprs: list[PortExpr] = []
        self._compiled: list[tuple[Signature, int, int, int, int, tuple[int, ...] | None]] = []
        for sig in self.signatures:
            protos = _PROTO_NUMBERS.get(sig.proto)
            self._compiled.append(
                (
                    sig,
                    self._addr_index(sig.src),
                    self._addr_index(sig.dst),
                    self._port_index(sig.sport),
                    self._port_index(sig.dport),
                    protos,
                )
            )
        self._addr_cache: dict[bytes, int] = {}
        self._port_cache: dict[int, int] = {}
        self._groups: dict[tuple[object, ...], Group] = {}
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

    def _addr_bits(self, addr: bytes) -> int:
        bits = self._addr_cache.get(addr)
        if bits is None:
            ip = ipaddress.ip_address(addr)
            bits = 0
            for i, expr in enumerate(self._addr_exprs):
                if expr.match(ip):
                    bits |= 1 << i
            if len(self._addr_cache) >= _MAX_CACHE:
                self._addr_cache.clear()
            self._addr_cache[addr] = bits
        return bits

    def _port_bits(self, port: int) -> int:
        bits = self._port_cache.get(port)
        if bits is None:
            bits = 0
            for i, expr in enumerate(self._port_exprs):
                if expr.match(port):
                    bits |= 1 << i
            self._port_cache[port] = bits
        return bits

    def group_for(self, layer: Layer, app: str, to_server: bool, outer_gtp: bool) -> Group:
        """The group of a packet (callers cache it per flow direction and app)."""
        proto = layer.proto
        src = self._addr_bits(layer.src)
        dst = self._addr_bits(layer.dst)
        if proto in _PORT_PROTOS:
            sport = self._port_bits(layer.sport)
            dport = self._port_bits(layer.dport)
        else:
            sport = dport = -1  # no ports: only rules with `any` ports apply
        key = (proto, app, to_server, outer_gtp, src, dst, sport, dport)
        group = self._groups.get(key)
        if group is None:
            group = self._build(key)
            if len(self._groups) >= _MAX_CACHE:
                self._groups.clear()
            self._groups[key] = group
        return group

    def _build(self, key: tuple[object, ...]) -> Group:
        proto, app, to_server, outer_gtp, src, dst, sport, dport = key
        assert isinstance(src, int) and isinstance(dst, int)
        assert isinstance(sport, int) and isinstance(dport, int)
        self.groups_built += 1
        plain: list[Signature] = []
        by_buffer: dict[str, list[tuple[Content, Signature]]] = {}
        for sig, si, di, spi, dpi, protos in self._compiled:
            if protos is not None and proto not in protos:
                continue
            if sig.app and (sig.app != app or (sig.app == "gtp" and not outer_gtp)):
                continue
            if sig.flow_to_server is not None and sig.flow_to_server != to_server:
                continue
            if not _header(si, di, spi, dpi, src, dst, sport, dport) and not (
                sig.bidirectional and _header(si, di, spi, dpi, dst, src, dport, sport)
            ):
                continue
            fast = fast_pattern(sig)
            if fast is None:
                plain.append(sig)
            else:
                by_buffer.setdefault(fast.buffer, []).append((fast, sig))
        prefilters = [Prefilter(buf, entries) for buf, entries in sorted(by_buffer.items())]
        if not plain and not prefilters:
            return EMPTY_GROUP
        return Group(plain=plain, prefilters=prefilters)


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
    for content in sig.contents:
        data = buffers.get(content.buffer)
        if data is None:
            return False
        if not content.matches(data):
            return False
    return True


__all__ = ["EMPTY_GROUP", "PKT", "Group", "Matcher", "Prefilter", "fast_pattern", "rule_matches"]
