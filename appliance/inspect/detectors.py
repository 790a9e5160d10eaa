"""Behaviour detectors: port scan, SYN flood, DNS tunnel and GTP-U anomalies.

Each keeps bounded state per address and reports ``Detection``s; the engine turns them into
alerts with the detector's fixed signature id (9000001..9000004).
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from appliance.inspect.appproto import DnsQuery
from appliance.inspect.decode import TCP_ACK, TCP_SYN, GtpInfo, Layer
from appliance.model.profile import (
    DnsTunnelDetector,
    GtpDetector,
    PortScanDetector,
    SynFloodDetector,
)

SID_PORT_SCAN = 9000001
SID_SYN_FLOOD = 9000002
SID_DNS_TUNNEL = 9000003
SID_GTP = 9000004

MAX_TRACKED = 65536
DNS_ALERT_INTERVAL = 60.0
GTP_ALERT_INTERVAL = 60.0
MIN_ENTROPY_LABEL = 16


@dataclass(frozen=True)
class DetectorRule:
    sid: int
    msg: str
    classtype: str


RULES = {
    SID_PORT_SCAN: DetectorRule(SID_PORT_SCAN, "APPLIANCE port scan", "attempted-recon"),
    SID_SYN_FLOOD: DetectorRule(SID_SYN_FLOOD, "APPLIANCE SYN flood", "attempted-dos"),
    SID_DNS_TUNNEL: DetectorRule(SID_DNS_TUNNEL, "APPLIANCE DNS tunnel", "bad-unknown"),
    SID_GTP: DetectorRule(SID_GTP, "APPLIANCE GTP-U spoofed inner source", "misc-attack"),
}


@dataclass(frozen=True)
class Detection:
    sid: int
    detail: str  # the reason, appended to the signature text


class _Bounded(OrderedDict[Any, Any]):
    """An LRU map that forgets its oldest entries past a size.

    Its values are numbers or tuples of numbers where they can be (tuples of numbers are left
    alone by the garbage collector once it has seen them, lists never are): a flood of new
    addresses then costs the collector nothing per address."""

    def __init__(self, limit: int = MAX_TRACKED) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: object, value: object) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.limit:
            self.popitem(last=False)


class PortScan:
    """More than ``ports`` distinct destination ports in SYNs (no ACK) from one source within
    ``window`` seconds; one alert per source per window."""

    def __init__(self, config: PortScanDetector) -> None:
        self.ports = config.ports
        self.window = config.window
        self._seen: _Bounded = _Bounded()

    def on_syn(self, ts: float, layer: Layer) -> Detection | None:
        return self.syn(ts, layer.src, layer.dport)

    def syn(self, ts: float, src: bytes, dport: int) -> Detection | None:
        """A SYN (no ACK) from ``src`` to port ``dport``."""
        seen = self._seen
        state = seen.get(src)
        if state is None:
            if self.ports >= 1:
                # a source's first SYN: its port and time, until a second port comes
                seen[src] = (dport, ts)
                if len(seen) > seen.limit:
                    seen.popitem(last=False)
                return None
            state = [{}, -math.inf]
            seen.put(src, state)
        elif type(state) is tuple:
            first_port, first_ts = state
            state = [{first_port: first_ts}, -math.inf]
            seen[src] = state  # in place: the order of the sources stays
        if ts - state[1] < self.window:
            return None  # reported in this window already: nothing to count until it ends
        ports: dict[int, float] = state[0]
        ports[dport] = ts
        if len(ports) <= self.ports:
            return None
        # past the limit: forget ports last seen before the window (so the map never holds
        # more than ports + 1 entries, whatever the scan rate)
        horizon = ts - self.window
        for port in [p for p, seen in ports.items() if seen < horizon]:
            del ports[port]
        if len(ports) <= self.ports:
            return None
        state[1] = ts
        count = len(ports)
        ports.clear()  # the next window counts afresh
        return self.detection(count)

    def detection(self, count: int) -> Detection:
        """The detection of a scan of ``count`` ports (its compiled ``syn`` makes it here)."""
        return Detection(SID_PORT_SCAN, f"{count} ports in {self.window:g}s")


class SynFlood:
    """SYNs (no ACK) from one source, or to one destination, above a rate; each counted in a
    window of one rate unit, one alert per address per window."""

    def __init__(self, config: SynFloodDetector) -> None:
        self.limit = config.rate.count
        self.period = config.rate.count / config.rate.per_second
        self._by_src: _Bounded = _Bounded()
        self._by_dst: _Bounded = _Bounded()
        self._tracked = MAX_TRACKED

    def on_syn(self, ts: float, layer: Layer) -> Detection | None:
        return self.syn(ts, layer.src, layer.dst)

    def syn(self, ts: float, src: bytes, dst: bytes) -> Detection | None:
        """A SYN (no ACK) from ``src`` to ``dst``."""
        # (window start, SYNs in it, alerted in it) of each address, counting this SYN: a
        # new window once the last has ended (then the address moves to the end of its
        # table), else the count goes up in place (the window's start keeps its order)
        period = self.period
        limit = self.limit
        first = (ts, 1, False)
        table = self._by_src
        by_src = table.setdefault(src, first)
        if by_src is first:
            if len(table) > self._tracked:
                table.popitem(last=False)
        elif ts - by_src[0] >= period or ts < by_src[0]:
            by_src = (ts, 1, False)
            table.put(src, by_src)
        else:
            by_src = table[src] = (by_src[0], by_src[1] + 1, by_src[2])
        table = self._by_dst
        by_dst = table.setdefault(dst, first)
        if by_dst is first:
            if len(table) > self._tracked:
                table.popitem(last=False)
        elif ts - by_dst[0] >= period or ts < by_dst[0]:
            by_dst = (ts, 1, False)
            table.put(dst, by_dst)
        else:
            by_dst = table[dst] = (by_dst[0], by_dst[1] + 1, by_dst[2])
        if by_src[1] > limit:
            # a flood from this source: its destination's flood is the same event
            if by_dst[1] > limit and not by_dst[2]:
                self._by_dst[dst] = (by_dst[0], by_dst[1], True)
            if not by_src[2]:
                self._by_src[src] = (by_src[0], by_src[1], True)
                return self.detection(True)
            return None
        if by_dst[1] > limit and not by_dst[2]:
            self._by_dst[dst] = (by_dst[0], by_dst[1], True)
            return self.detection(False)
        return None

    def detection(self, from_source: bool) -> Detection:
        """The detection of a flood from one source, or to one destination (its compiled
        ``syn`` makes it here)."""
        if from_source:
            return Detection(SID_SYN_FLOOD, f"from one source above {self.limit} per window")
        return Detection(SID_SYN_FLOOD, f"to one destination above {self.limit} per window")


def shannon_entropy(text: bytes) -> float:
    if not text:
        return 0.0
    size = len(text)
    return -sum((n / size) * math.log2(n / size) for n in Counter(text).values())


class DnsTunnel:
    """A query whose longest label is longer than ``max_label``, or whose longest label (of at
    least 16 characters) has a Shannon entropy above ``max_entropy``; optionally more queries
    from one source than ``rate``. One alert per source per minute."""

    def __init__(self, config: DnsTunnelDetector) -> None:
        self.max_label = config.max_label
        self.max_entropy = config.max_entropy
        self.rate = config.rate
        self._last_alert: _Bounded = _Bounded()
        self._rate: _Bounded = _Bounded()

    def on_query(self, ts: float, layer: Layer, query: DnsQuery) -> Detection | None:
        reason = self._reason(ts, layer.src, query)
        if reason is None:
            return None
        last = self._last_alert.get(layer.src)
        if isinstance(last, float) and 0 <= ts - last < DNS_ALERT_INTERVAL:
            return None
        self._last_alert.put(layer.src, ts)
        return Detection(SID_DNS_TUNNEL, reason)

    def _reason(self, ts: float, src: bytes, query: DnsQuery) -> str | None:
        if query.labels:
            longest = max(query.labels, key=len)
            if len(longest) > self.max_label:
                return f"label of {len(longest)} characters"
            if len(longest) >= MIN_ENTROPY_LABEL:
                entropy = shannon_entropy(longest)
                if entropy > self.max_entropy:
                    return f"label entropy {entropy:.2f} bits"
        if self.rate is not None:
            period = self.rate.count / self.rate.per_second
            state = self._rate.get(src)
            if state is None or ts - state[0] >= period or ts < state[0]:
                state = (ts, 1)
                self._rate.put(src, state)
            else:
                state = (state[0], state[1] + 1)
                self._rate[src] = state
            if state[1] > self.rate.count:
                return f"more than {self.rate} queries"
        return None


class GtpAnomaly:
    """GTP-U: a G-PDU whose inner source is outside the UE pools (and whose inner destination
    is not a UE either: downlink traffic comes from anywhere), TEID 0, a malformed header, or
    GTP-U inside GTP-U. One alert per outer source, reason and inner source per minute."""

    def __init__(self, config: GtpDetector) -> None:
        self.pools = config.ue_pools
        # (first, last) as integers, by address size: a membership test without ipaddress
        # objects (the compiled core's new-flow path reads those of IPv4)
        self.ranges: dict[int, tuple[tuple[int, int], ...]] = {
            size: tuple(
                (int(n.network_address), int(n.broadcast_address))
                for n in config.ue_pools
                if (4 if n.version == 4 else 16) == size
            )
            for size in (4, 16)
        }
        self._last_alert: _Bounded = _Bounded()

    def on_gtp(self, ts: float, outer: Layer, info: GtpInfo) -> tuple[Detection | None, bool]:
        """The detection of a G-PDU (None: nothing to report, or reported within the
        minute), and whether it is clean: nothing to report at all (the fast path may take
        its inner flow's next packets)."""
        reason = self._reason(info)
        if reason is None:
            return None, True
        inner_src = info.inner.src if info.inner is not None else b""
        key = (outer.src, reason, inner_src)
        last = self._last_alert.get(key)
        if isinstance(last, float) and 0 <= ts - last < GTP_ALERT_INTERVAL:
            return None, False
        self._last_alert.put(key, ts)
        return Detection(SID_GTP, reason), False

    def _reason(self, info: GtpInfo) -> str | None:
        if info.error is not None:
            return f"malformed header ({info.error})"
        if info.msg_type != 255:
            return None
        if info.teid == 0:
            return "TEID 0"
        inner = info.inner
        if inner is None:
            return None
        if info.nested:
            return "GTP-U inside GTP-U"
        if not self.addresses_pass(inner.src, inner.dst):
            return "inner source outside the UE pools"
        return None

    def addresses_pass(self, src: bytes, dst: bytes) -> bool:
        """Whether a G-PDU's inner addresses pass: its source or its destination in the UE
        pools (any, without pools)."""
        return not self.pools or self._in_pools(src) or self._in_pools(dst)

    def _in_pools(self, addr: bytes) -> bool:
        number = int.from_bytes(addr, "big")
        for first, last in self.ranges.get(len(addr), ()):  # noqa: SIM110 - no generator a packet
            if first <= number <= last:
                return True
        return False


def is_syn(layer: Layer) -> bool:
    return layer.flags & (TCP_SYN | TCP_ACK) == TCP_SYN
