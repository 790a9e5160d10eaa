"""A bounded, bidirectional flow table.

Flows are keyed by the 5-tuple as the first packet saw it; a packet of the other direction
finds the same flow through the reversed key. The table keeps flows in least-recently-used
order: it drops flows idle for longer than ``idle_timeout`` and, past ``max_flows``, the
least recently used one. The initiator of a flow is the sender of its first packet (for TCP,
of its SYN), which gives ``to_server`` / ``to_client``; ``established`` is a completed TCP
handshake, or for other protocols a packet seen in each direction.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

from appliance.inspect.decode import PROTO_TCP, TCP_ACK, TCP_RST, TCP_SYN, Layer

FlowKey = tuple[bytes, bytes, int, int, int]

_TCP_NEW, _TCP_SYN_SENT, _TCP_SYN_RECV, _TCP_ESTABLISHED = 0, 1, 2, 3


class Flow:
    __slots__ = (
        "app",
        "app_tries",
        "cache",
        "established",
        "first_ts",
        "key",
        "last_ts",
        "packets_to_client",
        "packets_to_server",
        "tcp_state",
    )

    def __init__(self, key: FlowKey, ts: float) -> None:
        self.key = key  # (client, server, client port, server port, proto)
        self.first_ts = ts
        self.last_ts = ts
        self.packets_to_server = 0
        self.packets_to_client = 0
        self.established = False
        self.tcp_state = _TCP_NEW
        self.app = ""  # "", "http", "tls", "dns", "gtp", or "none" once detection gave up
        self.app_tries = 0
        self.cache: dict[Any, Any] = {}  # the rule groups picked for this flow, by direction

    @property
    def flow_id(self) -> int:
        """A stable 51-bit id, as EVE writes it."""
        src, dst, sport, dport, proto = self.key
        digest = hashlib.blake2b(
            b"%b|%b|%d|%d|%d|%.6f" % (src, dst, sport, dport, proto, self.first_ts),
            digest_size=8,
        ).digest()
        return int.from_bytes(digest, "big") & ((1 << 51) - 1)


class FlowTable:
    def __init__(self, max_flows: int = 65536, idle_timeout: float = 300.0) -> None:
        self.max_flows = max_flows
        self.idle_timeout = idle_timeout
        self.flows: OrderedDict[FlowKey, Flow] = OrderedDict()
        self.evicted = 0
        self.expired = 0
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self.flows)

    def lookup(self, layer: Layer, ts: float) -> tuple[Flow, bool]:
        """The flow of a packet (created if new) and whether the packet goes to the server."""
        flows = self.flows
        key = (layer.src, layer.dst, layer.sport, layer.dport, layer.proto)
        flow = flows.get(key)
        if flow is not None:
            to_server = True
        else:
            rkey = (layer.dst, layer.src, layer.dport, layer.sport, layer.proto)
            flow = flows.get(rkey)
            if flow is not None:
                key = rkey
                to_server = False
            else:
                if ts >= self._next_sweep:
                    self._sweep(ts)
                if layer.proto == PROTO_TCP and layer.flags & (TCP_SYN | TCP_ACK) == (
                    TCP_SYN | TCP_ACK
                ):
                    # a SYN/ACK opens what we see of the flow: its receiver is the client
                    key = (layer.dst, layer.src, layer.dport, layer.sport, layer.proto)
                    to_server = False
                else:
                    to_server = True
                flow = Flow(key, ts)
                flows[key] = flow
                if len(flows) > self.max_flows:
                    flows.popitem(last=False)
                    self.evicted += 1
        if ts - flow.last_ts > self.idle_timeout:
            # the same 5-tuple after a long silence is a new flow (a reused source port)
            flow = Flow(key, ts)
            flows[key] = flow
            to_server = True
        flows.move_to_end(key)
        flow.last_ts = ts
        if to_server:
            flow.packets_to_server += 1
        else:
            flow.packets_to_client += 1
        if layer.proto == PROTO_TCP:
            _tcp_track(flow, layer.flags, to_server)
        elif not flow.established and flow.packets_to_client and flow.packets_to_server:
            flow.established = True
        return flow, to_server

    def _sweep(self, now: float) -> None:
        """Drop flows idle longer than the timeout (the oldest sit at the front)."""
        limit = now - self.idle_timeout
        flows = self.flows
        while flows:
            flow = next(iter(flows.values()))
            if flow.last_ts >= limit:
                break
            flows.popitem(last=False)
            self.expired += 1
        self._next_sweep = now + 1.0


def _tcp_track(flow: Flow, flags: int, to_server: bool) -> None:
    state = flow.tcp_state
    if state == _TCP_ESTABLISHED:
        if flags & TCP_RST:
            flow.established = False
            flow.tcp_state = _TCP_NEW
        return
    syn_ack = flags & (TCP_SYN | TCP_ACK)
    if syn_ack == TCP_SYN and to_server:
        flow.tcp_state = _TCP_SYN_SENT
    elif syn_ack == TCP_SYN | TCP_ACK and not to_server and state == _TCP_SYN_SENT:
        flow.tcp_state = _TCP_SYN_RECV
    elif syn_ack == TCP_ACK and to_server and state == _TCP_SYN_RECV:
        flow.tcp_state = _TCP_ESTABLISHED
        flow.established = True
