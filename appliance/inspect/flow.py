"""A bounded, bidirectional flow table.

A flow is indexed under its key as each direction sees it: source address, destination
address, source port, destination port (2 bytes each, network order), and for protocols other
than TCP one more byte, the protocol number. For an IPv4 TCP packet that key is the bytes of
the packet from the source address to the destination port, so the engine's fast path looks a
flow up with a single slice; the key of the other direction finds the same flow.

The table keeps flows in least-recently-used order (refreshed at most once a second per flow):
it drops flows idle for longer than ``idle_timeout`` and, past ``max_flows``, the least
recently used one. The initiator of a flow is the sender of its first packet (for TCP, of its
SYN), which gives ``to_server`` / ``to_client``; ``established`` is a completed TCP handshake,
or for other protocols a packet seen in each direction.

A TCP flow opened by a bare SYN may first be held as an embryo: a tuple ``(ts, seq, plan)``
under its key in ``flows`` (not in ``index``), in the place and with the bounds a flow has.
Half-open floods never answer, so their flows never cost more; the first other packet of
either direction hatches the embryo (``hatch``, given by the engine) into the ``Flow`` the SYN
would have left.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from appliance.inspect.decode import PROTO_TCP, TCP_ACK, TCP_RST, TCP_SYN, Layer

TCP_NEW, TCP_SYN_SENT, TCP_SYN_RECV, TCP_ESTABLISHED = 0, 1, 2, 3

_ports = struct.Struct("!HH").pack


# An embryo: (time of its SYN, the SYN's sequence number, the engine's plan for the flow)
Embryo = tuple[float, int, int]


def flow_key(src: bytes, dst: bytes, sport: int, dport: int, proto: int) -> bytes:
    key = src + dst + _ports(sport, dport)
    return key if proto == PROTO_TCP else key + bytes((proto,))


def reverse_tcp_key(key: bytes) -> bytes:
    """The key of the other direction of an IPv4 or IPv6 TCP flow key."""
    size = (len(key) - 4) // 2
    return key[size : 2 * size] + key[:size] + key[-2:] + key[-4:-2]


class Flow:
    __slots__ = (
        "app",
        "app_tries",
        "bits",
        "established",
        "fast_c",
        "fast_s",
        "first_ts",
        "fwd_key",
        "gtp_ok",
        "key",
        "last_ts",
        "packets_to_client",
        "packets_to_server",
        "proto",
        "reverse_key",
        "sel_c",
        "sel_s",
        "sizes",
        "streams",
        "tcp_state",
        "touched",
    )

    def __init__(self, key: bytes, reverse_key: bytes, proto: int, ts: float) -> None:
        self.key = key  # as the client sends: client, server, client port, server port
        self.reverse_key = reverse_key
        # the key a packet to the server is indexed under (none when both directions have
        # the same key: then every packet after the first counts as to the client)
        self.fwd_key = key if key != reverse_key else None
        self.proto = proto
        self.first_ts = ts
        self.last_ts = ts
        self.touched = ts
        self.packets_to_server = 0
        self.packets_to_client = 0
        self.established = False
        self.tcp_state = TCP_NEW
        self.app = ""  # "", "http", "tls", "dns", "gtp", or "none" once detection gave up
        self.app_tries = 0
        # per direction (_s: to the server, _c: to the client), the engine's rule group for
        # the flow's application protocol (sel) and its fast-path state (fast), or None:
        # tuples the engine shares between flows, so that a new flow allocates no container
        self.sel_s: Any = None
        self.sel_c: Any = None
        self.fast_s: Any = None
        self.fast_c: Any = None
        self.gtp_ok = False  # an inner flow whose tunnel's checks passed
        self.bits: set[str] | None = None  # flowbits set by rules (created on the first)
        # per direction (index: to_server), the reassembled TCP stream once a rule reads it
        # (before its first payload: the sequence number it starts at)
        self.streams: list[Any] | None = None
        # stream_size: client isn, client next, server isn, server next (-1: not seen yet),
        # once a rule reads them
        self.sizes: list[int] | None = None

    @property
    def flow_id(self) -> int:
        """A stable 51-bit id, as EVE writes it."""
        digest = hashlib.blake2b(
            self.key + b"|%d|%.6f" % (self.proto, self.first_ts), digest_size=8
        ).digest()
        return int.from_bytes(digest, "big") & ((1 << 51) - 1)

    @property
    def client(self) -> tuple[bytes, int]:
        size = (len(self.key) - 4 - (self.proto != PROTO_TCP)) // 2
        return self.key[:size], int.from_bytes(self.key[2 * size : 2 * size + 2], "big")


class FlowTable:
    def __init__(self, max_flows: int = 65536, idle_timeout: float = 300.0) -> None:
        self.max_flows = max_flows
        self.idle_timeout = idle_timeout
        # by client key, LRU first: flows and embryos
        self.flows: OrderedDict[bytes, Flow | Embryo] = OrderedDict()
        self.index: dict[bytes, Flow] = {}  # both directions' keys (see Flow.fwd_key)
        self.evicted = 0
        self.expired = 0
        self.embryos = 0  # embryos in ``flows``
        # makes the flow of an embryo (its key, the embryo): set by whoever adds embryos
        # (its key, the other direction's key, the embryo)
        self.hatch: Callable[[bytes, bytes, Embryo], Flow] | None = None
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self.flows)

    def records(self) -> Iterator[Flow]:
        """Every flow, least recently used first; an embryo as the flow it would hatch into
        (made for the caller, the table keeps the embryo)."""
        hatch = self.hatch
        for key, flow in self.flows.items():
            if type(flow) is tuple:
                assert hatch is not None
                yield hatch(key, reverse_tcp_key(key), flow)
            else:
                assert isinstance(flow, Flow)
                yield flow

    def add_embryo(self, key: bytes, ts: float, seq: int, plan: int) -> None:
        """Hold the flow a bare SYN opens (its key not in the table) as an embryo. (The
        engine does the same inline.)"""
        if ts >= self._next_sweep:
            self._sweep(ts)
        flows = self.flows
        flows[key] = (ts, seq, plan)
        self.embryos += 1
        if len(flows) > self.max_flows:
            self.evict()

    def evict(self) -> None:
        """Drop the least recently used flow or embryo (the table is over its bound)."""
        _, oldest = self.flows.popitem(last=False)
        self.drop_index(oldest)
        self.evicted += 1

    def hatched(self, key: bytes, ts: float) -> Flow | None:
        """The flow of a TCP packet whose key is not in the index, if an embryo under its key
        or the reverse one hatches into it; an embryo idle past the timeout is dropped."""
        flows = self.flows
        client, reverse = key, None
        embryo = flows.get(key)
        if embryo is None:
            client, reverse = reverse_tcp_key(key), key
            embryo = flows.get(client)
            if embryo is None:
                return None
        if type(embryo) is not tuple or self.hatch is None:
            return None  # a flow (found by the caller in the index already)
        if ts - embryo[0] > self.idle_timeout:
            del flows[client]
            self.embryos -= 1
            self.expired += 1
            return None
        self.embryos -= 1
        if reverse is None:
            reverse = reverse_tcp_key(client)
        flow = self.hatch(client, reverse, embryo)
        flows[client] = flow  # in the embryo's place
        self.index[client] = flow
        self.index[reverse] = flow
        return flow

    def lookup(self, layer: Layer, ts: float) -> tuple[Flow, bool]:
        """The flow of a packet (created if new) and whether the packet goes to the server."""
        proto = layer.proto
        key = layer.src + layer.dst + _ports(layer.sport, layer.dport)
        if proto != PROTO_TCP:
            key += bytes((proto,))
        found = self.index.get(key)
        if found is None and self.embryos and proto == PROTO_TCP:
            found = self.hatched(key, ts)
        if found is None or ts - found.last_ts > self.idle_timeout:
            if found is not None:
                self._remove(found)  # the same 5-tuple after a long silence: a new flow
            reverse = flow_key(layer.dst, layer.src, layer.dport, layer.sport, proto)
            if proto == PROTO_TCP and layer.flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK:
                # a SYN/ACK opens what we see of the flow: its receiver is the client
                flow = self._create(reverse, key, proto, ts)
                to_server = False
            else:
                flow = self._create(key, reverse, proto, ts)
                to_server = True
        else:
            flow = found
            to_server = key == flow.fwd_key
            if ts - flow.touched >= 1.0:
                self.flows.move_to_end(flow.key)
                flow.touched = ts
        flow.last_ts = ts
        if to_server:
            flow.packets_to_server += 1
        else:
            flow.packets_to_client += 1
        if proto == PROTO_TCP:
            if flow.tcp_state != TCP_ESTABLISHED or layer.flags & TCP_RST:
                tcp_track(flow, layer.flags, to_server)
        elif not flow.established and flow.packets_to_client and flow.packets_to_server:
            flow.established = True
        return flow, to_server

    def _create(self, key: bytes, reverse: bytes, proto: int, ts: float) -> Flow:
        if ts >= self._next_sweep:
            self._sweep(ts)
        flow = Flow(key, reverse, proto, ts)
        self.flows[key] = flow
        self.index[key] = flow
        self.index[reverse] = flow
        if len(self.flows) > self.max_flows:
            self.evict()
        return flow

    def _remove(self, flow: Flow) -> None:
        if self.flows.pop(flow.key, None) is not None:
            self.drop_index(flow)
            self.expired += 1

    def drop_index(self, flow: Flow | Embryo) -> None:
        """Forget a flow's index entries (it has left ``flows``); an embryo has none."""
        if type(flow) is tuple:
            self.embryos -= 1  # an embryo: not in the index
            return
        assert isinstance(flow, Flow)
        index = self.index
        if index.get(flow.key) is flow:
            del index[flow.key]
        if index.get(flow.reverse_key) is flow:
            del index[flow.reverse_key]

    def _sweep(self, now: float) -> None:
        """Drop flows idle longer than the timeout (the least recently used sit in front)."""
        limit = now - self.idle_timeout
        flows = self.flows
        while flows:
            flow = next(iter(flows.values()))
            if type(flow) is tuple:  # an embryo: its SYN is its only packet
                if flow[0] >= limit:
                    break
                flows.popitem(last=False)
                self.embryos -= 1
                self.expired += 1
                continue
            assert isinstance(flow, Flow)
            if flow.touched >= limit:
                break
            if flow.last_ts >= limit:  # used since its last refresh: keep, refreshed
                flows.move_to_end(flow.key)
                flow.touched = flow.last_ts
                continue
            flows.popitem(last=False)
            self.drop_index(flow)
            self.expired += 1
        self._next_sweep = now + 1.0


def tcp_track(flow: Flow, flags: int, to_server: bool) -> None:
    state = flow.tcp_state
    if state == TCP_ESTABLISHED:
        if flags & TCP_RST:
            flow.established = False
            flow.tcp_state = TCP_NEW
        return
    syn_ack = flags & (TCP_SYN | TCP_ACK)
    if syn_ack == TCP_SYN and to_server:
        flow.tcp_state = TCP_SYN_SENT
    elif syn_ack == TCP_SYN | TCP_ACK and not to_server and state == TCP_SYN_SENT:
        flow.tcp_state = TCP_SYN_RECV
    elif syn_ack == TCP_ACK and to_server and state == TCP_SYN_RECV:
        flow.tcp_state = TCP_ESTABLISHED
        flow.established = True
