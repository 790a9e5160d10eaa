"""Data segments the fast path scans: in a TCP direction whose rules read the payload on any
port (so that it is never quiet), a data segment of an established flow is scanned by the
payload's prefilters, over the packet and over the stream's bytes around its start, and
appended to the stream, without the full path; the full path takes it whenever a pattern is
there, the segment is out of order, overlaps, leaves a gap or passes the depth, or a rule
waits for the stream to grow. The same traffic gives the same alerts, flows, streams and
counters with and without the fast paths; G-PDUs carrying such segments too."""

from __future__ import annotations

import random
import sys
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.inspect.engine import InspectionEngine
from appliance.inspect.eve import to_eve
from appliance.inspect.flow import Flow
from appliance.inspect.rules import Variables, parse_rules
from appliance.inspect.stream import StreamDirection
from appliance.lab.mix import client_hello, eth, gtpu, ipv4, make_engine, tcp, udp
from appliance.model.values import parse_network

Frames = list[tuple[float, bytes, int]]

# Payload rules on any TCP port (as ET Open has them): no TCP direction is quiet
SCANNED = """
alert tcp any any -> any any (msg:"marker"; content:"MARKER-42"; sid:9101;)
alert tcp any any -> any any (msg:"to client"; flow:established,to_client; content:"abcxyz"; \
sid:9102;)
alert tcp any any -> any any (msg:"waits"; content:"abcq"; content:"qqq"; distance:0; sid:9103;)
alert tcp any any -> any any (msg:"anchored far"; content:"|00 00|"; depth:2; content:"MARK"; \
sid:9104;)
alert tcp any any -> any any (msg:"anchored near"; content:"ZZ"; offset:4; depth:6; sid:9105;)
alert udp any any -> any 2152 (msg:"outer"; content:"OUTERMARK"; sid:9106;)
alert tcp any any -> any any (msg:"nocase"; content:"HiddeN"; nocase; sid:9107;)
alert http any any -> any any (msg:"body"; http.response_body; content:"abcxyz"; sid:9108;)
alert http any any -> any any (msg:"header"; http.header; content:"Server|3a|"; sid:9109;)
"""
# the pieces a stream is made of: patterns whole and cut, and filler
PIECES = (
    b"\x00" * 40,
    b"\x00" * 700,
    b"MARKER-42",
    b"MARK",
    b"ER-42",
    b"abcxyz",
    b"abcq",
    b"qqq",
    b"ZZ",
    b"hidden",
    b"OUTERMARK",
    b"HTTP/1.1 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 900\r\n\r\nabcxyz",
    b"\x16\x03\x01\x00\x05",
    b"plain text, nothing to see ",
)


def scanned_engines(
    depth: int = 2048, extra: str = "", **config: Any
) -> tuple[InspectionEngine, InspectionEngine]:
    """The benchmark's engine with SCANNED (and ``extra``): with the fast paths, and
    without."""
    base = make_engine()
    variables = Variables.from_networks([parse_network("10.0.0.0/8")])
    text = (SCANNED + extra).replace("\\\n", "")
    more = list(parse_rules(text, "scanned.rules", variables))
    cfg = replace(
        base.config, signatures=[*base.config.signatures, *more], stream_depth=depth, **config
    )
    return InspectionEngine(cfg), InspectionEngine(replace(cfg, fast_path=False))


FILLER = (b"\x00" * 40, b"\x00" * 700, b"plain text, nothing to see ")
GNB, UPF = b"\x0a\x00\x09\x01", b"\x0a\x00\x09\x64"


class _Flow:
    """One TCP flow's packets, plain or in a GTP-U tunnel (a UE of the GTP-U detector's
    pools, uplink from the gNB to the UPF, as in the benchmark's mix)."""

    def __init__(self, rng: random.Random, n: int, out: Frames, ts: float) -> None:
        self.tunnel = rng.random() < 0.3
        net = 45 if self.tunnel else 0
        self.client = bytes([10, net, 7, 1 + n % 250])
        self.server = bytes([10, 0, 8, 1 + rng.randrange(250)])
        self.port = rng.choice((5201, 80, 443, 8443))
        self.cport = rng.randrange(1024, 65535)
        self.cseq, self.sseq = rng.randrange(2**32), rng.randrange(2**32)
        self.teid = rng.randrange(1, 2**32)
        self.out, self.ts = out, ts

    def emit(self, packet: bytes) -> None:
        self.ts += 0.001
        if self.tunnel:
            up = packet[12:16] == self.client
            src, dst = (GNB, UPF) if up else (UPF, GNB)
            packet = ipv4(src, dst, 17, udp(2152, 2152, gtpu(self.teid, packet)))
        self.out.append((self.ts, eth(packet), 1))

    def c2s(self, flags: int, payload: bytes = b"") -> None:
        segment = tcp(self.cport, self.port, flags, self.cseq, self.sseq, payload)
        self.emit(ipv4(self.client, self.server, 6, segment))

    def s2c(self, seq: int, payload: bytes, flags: int = 0x10) -> None:
        segment = tcp(self.port, self.cport, flags, seq, self.cseq, payload)
        self.emit(ipv4(self.server, self.client, 6, segment))


def scanned_frames(
    seed: int,
    flows: int = 12,
    disorder: float = 0.1,
    pieces: tuple[bytes, ...] = PIECES,
    client_data: bool = False,
    close: bool = True,
) -> Frames:
    """Flows (bulk on a high port, web, TLS; some in a GTP-U tunnel) whose server sends a
    stream of ``pieces`` cut into segments of random sizes; a share ``disorder`` of the
    segments swapped with the next, sent twice, resent overlapping, or lost. With
    ``client_data``, the client then sends a few segments of ``pieces`` too, in order. With
    ``close``, each flow ends with a FIN each way."""
    rng = random.Random(seed)
    out: Frames = []
    ts = 1_700_000_000.0
    for n in range(flows):
        f = _Flow(rng, n, out, ts)
        f.c2s(0x02)
        f.s2c(f.sseq, b"", 0x12)
        f.cseq += 1
        f.sseq += 1
        f.c2s(0x10)
        request = {80: b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 443: client_hello("s.example")}
        first = request.get(f.port, b"hello")
        f.c2s(0x18, first)
        f.cseq += len(first)
        stream = b"".join(rng.choice(pieces) for _ in range(rng.randrange(4, 60)))
        cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randrange(1, 40))))
        bounds = zip([0, *cuts], [*cuts, len(stream)], strict=True)
        segments = [(f.sseq + a, stream[a:b]) for a, b in bounds]
        i = 0
        while i < len(segments):
            seq, payload = segments[i]
            roll = rng.random()
            if roll < disorder / 4 and i + 1 < len(segments):
                f.s2c(*segments[i + 1])
                f.s2c(seq, payload)
                i += 1
            elif roll < disorder / 2:
                f.s2c(seq, payload)
                f.s2c(seq, payload)  # a retransmission
            elif roll < disorder * 3 / 4 and len(payload) > 2:
                f.s2c(seq, payload)
                f.s2c(seq + 1, payload[1:] + b"!")  # overlapping, one byte more
            elif roll >= disorder:
                f.s2c(seq, payload)
            # (else: lost)
            if rng.random() < 0.3:
                f.c2s(0x10)
            i += 1
        if client_data:
            f.sseq += len(stream)
            for _ in range(rng.randrange(1, 6)):
                piece = rng.choice(pieces)
                f.c2s(0x18, piece)
                f.cseq += len(piece)
            f.sseq -= len(stream)
        if close:
            f.c2s(0x11)
            f.s2c(f.sseq + len(stream), b"", 0x11)
        ts = f.ts
    return out


def state(eng: InspectionEngine, frames: Frames) -> tuple[list[dict[str, Any]], Any]:
    events = [to_eve(a) for ts, data, lt in frames for a in eng.process(ts, data, lt)]
    flows = sorted(
        (
            f.key,
            f.packets_to_server,
            f.packets_to_client,
            f.last_ts,
            f.app,
            f.tcp_state,
            f.established,
            streams_of(f),
        )
        for f in eng.flows.records()
    )
    stats = eng.stats
    return events, (flows, stats.packets, stats.decoded, stats.alerts, dict(stats.errors))


def streams_of(flow: Flow) -> Any:
    """What each direction's stream holds, and how far it was scanned."""
    if flow.streams is None:
        return None
    return [
        s
        if not isinstance(s, StreamDirection)
        else (s.base, bytes(s.data), s.full, s.scanned, sorted(s.reported))
        for s in flow.streams
    ]


def alike(frames: Frames, **config: Any) -> tuple[InspectionEngine, list[dict[str, Any]]]:
    fast, slow = scanned_engines(**config)
    got = state(fast, frames)
    want = state(slow, frames)
    assert got[0] == want[0]
    assert got[1] == want[1]
    return fast, got[0]


def test_scanned_segments_as_the_full_path_takes_them() -> None:
    frames = scanned_frames(1, flows=30)
    fast, events = alike(frames)
    sids = {e["alert"]["signature_id"] for e in events}
    assert {9101, 9102, 9104, 9107} <= sids
    assert fast.stats.fast > len(frames) // 3


def test_past_the_depth_only_the_packet_is_scanned() -> None:
    frames = scanned_frames(2, flows=20, disorder=0.0)
    fast, _ = alike(frames, depth=256)
    assert fast.stats.errors.get("stream.depth_reached", 0) > 5
    assert fast.stats.fast > len(frames) // 3


# rules reading the packet's headers (ip:packet): a SYN's TTL, a header buffer's bytes on a
# port the flows do not use, a window on the server's established segments
HEADER_RULES = """
alert tcp any any -> any any (msg:"syn ttl"; flags:S; ttl:<255; sid:9120;)
alert tcp any any -> any 9 (msg:"tcp hdr"; tcp.hdr; content:"|00|"; sid:9121;)
alert tcp any 443 -> any any (msg:"window"; flow:established,to_client; window:!1; \\
sid:9122;)
"""


@pytest.mark.parametrize("compiled", [True, False])
def test_rules_on_the_headers_leave_the_other_directions_scanned(compiled: bool) -> None:
    """With rules reading the packet's headers loaded, a direction none of them can match
    on is still scanned by the fast path, the segments taken as the full path takes them;
    a direction where one can (the TLS servers' data: a window rule) is not taken."""
    frames = scanned_frames(11, flows=30)
    fast, events = alike(frames, extra=HEADER_RULES, compiled=compiled)
    assert fast._packet
    sids = {e["alert"]["signature_id"] for e in events}
    assert {9101, 9120, 9122} <= sids and 9121 not in sids
    # the same engine with no direction scanned takes only the quiet directions' packets
    unscanned, _ = scanned_engines(extra=HEADER_RULES, compiled=compiled)
    unscanned._scan_apps = frozenset()
    state(unscanned, frames)
    assert fast.stats.fast > unscanned.stats.fast + 30


def test_without_reassembly() -> None:
    alike(scanned_frames(3, flows=10), depth=0)


def test_filler_in_order_takes_the_fast_path() -> None:
    """Streams of filler, in order: the fast path takes most packets (in a tunnel too), and
    appends the data segments to the streams as the full path does."""
    frames = scanned_frames(4, flows=20, disorder=0.0, pieces=FILLER)
    fast, _ = alike(frames, depth=1 << 20)
    assert fast.stats.fast > len(frames) // 2
    assert fast.stats.errors.get("stream.depth_reached") is None


def test_a_directions_first_payload_opens_its_stream_on_the_fast_path() -> None:
    """The server's first data segment of a flow whose rules read the payload (after its
    SYN/ACK gave the stream's start) takes the fast path: the stream is opened there, holds
    the segment as the full path's would, and the next segments follow it."""
    out: Frames = []
    f = _Flow(random.Random(6), 0, out, 1_700_000_000.0)
    f.tunnel, f.port = False, 5201
    f.c2s(0x02)
    f.s2c(f.sseq, b"", 0x12)
    f.cseq += 1
    f.sseq += 1
    f.c2s(0x10)
    f.c2s(0x18, b"hello")
    f.cseq += 5
    f.s2c(f.sseq, b"\x00" * 700)
    f.s2c(f.sseq + 700, b"MARKER-42")
    fast, slow = scanned_engines()
    for ts, data, lt in out[:-2]:
        fast.process(ts, data, lt)
    before = fast.stats.fast
    fast.process(*out[-2])
    assert fast.stats.fast == before + 1  # the first payload: on the fast path
    (flow,) = [f for f in fast.flows.records()]
    stream = flow.streams[False]
    assert isinstance(stream, StreamDirection)
    assert (stream.base, bytes(stream.data)) == (f.sseq, b"\x00" * 700)
    events = fast.process(*out[-1])
    # 9104: the stream's first two bytes (of the first payload) and MARK (of this one)
    assert sorted(a.sid for a in events) == [9101, 9104]
    assert state(fast, [])[1] == state(slow, out)[1]


def test_a_stream_size_or_tls_version_rule_elsewhere_leaves_other_directions_scanned() -> None:
    """Rules reading the stream sizes or a TLS version kept keep the fast path from scanning
    only the directions whose group holds them, not every direction of every flow."""
    extra = (
        'alert tcp any any -> any 5201 (msg:"sizes"; flow:established,to_server; '
        'stream_size:client,<,10; content:"ZZSIZE"; sid:9201;)\n'
        'alert tls any any -> any any (msg:"version"; flow:to_client; tls.version:1.2; '
        'content:"ZZVERSION"; sid:9202;)\n'
    )
    frames = scanned_frames(7, flows=20, disorder=0.0, pieces=FILLER)
    plain = scanned_engines(depth=1 << 20)[0]
    for f in frames:
        plain.process(*f)
    variables = Variables.from_networks([parse_network("10.0.0.0/8")])
    more = list(parse_rules(extra, "extra.rules", variables))
    fast, slow = scanned_engines(depth=1 << 20)
    for eng in (fast, slow):
        eng.__init__(replace(eng.config, signatures=[*eng.config.signatures, *more]))
    got, want = state(fast, frames), state(slow, frames)
    assert got == want
    assert fast._sizes and fast._tls_known is not None
    # most segments still taken: those of the directions without the new rules
    assert fast.stats.fast > plain.stats.fast // 2
    assert fast.stats.fast < plain.stats.fast  # (the port 5201 clients' and TLS servers' not)


SIZES = """
alert tcp any any -> any any (msg:"server sent 200"; flow:established,to_server; \
stream_size:server,>,200; sid:9301;)
alert tcp any any -> any any (msg:"server sent 3000"; flow:established,to_server; \
stream_size:server,>=,3000; sid:9302;)
alert tcp any any -> any any (msg:"both sides"; flow:established,to_server; \
stream_size:both,>,100; content:"hello"; sid:9303;)
"""


@pytest.mark.parametrize("compiled", [True, False])
def test_stream_sizes_count_the_segments_the_fast_path_takes(compiled: bool) -> None:
    """A rule of one direction reading the other side's stream size: that side's segments,
    taken by the fast path (its direction is scanned), are counted all the same."""
    frames = scanned_frames(5, flows=30, disorder=0.1)
    variables = Variables.from_networks([parse_network("10.0.0.0/8")])
    more = list(parse_rules(SIZES.replace("\\\n", ""), "sizes.rules", variables))
    fast, slow = scanned_engines(depth=1 << 20, compiled=compiled)
    for eng in (fast, slow):
        eng.__init__(replace(eng.config, signatures=[*eng.config.signatures, *more]))
    got, want = state(fast, frames), state(slow, frames)
    assert got == want
    sizes = sorted((f.key, f.sizes) for f in fast.flows.records())
    assert sizes == sorted((f.key, f.sizes) for f in slow.flows.records())
    fired = [e["alert"]["signature_id"] for e in got[0]]
    assert fired.count(9301) > 10 and 9302 in fired
    assert fast.stats.fast > 100  # servers' segments: the fast path's


KEPT = """
alert tcp any any -> any any (msg:"small server"; flow:established,to_client; \
stream_size:server,<,900; content:"abcxyz"; sid:9311;)
alert tcp any any -> any any (msg:"big server"; flow:established,to_client; \
stream_size:server,>,900; content:"MARK"; sid:9312;)
alert tcp any any -> any any (msg:"client, either"; stream_size:either,>=,60; \
content:"ZZ"; sid:9313;)
alert tcp any any -> any any (msg:"waits for size"; flow:established,to_client; \
stream_size:server,>,2000; content:"hidden"; nocase; sid:9314;)
alert tls any any -> any any (msg:"version 1.3"; flow:to_server; tls.version:1.3; \
content:"ZZ"; sid:9315;)
alert tls any any -> any any (msg:"version 1.2 reply"; tls.version:1.2; content:"abcxyz"; \
sid:9316;)
"""


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.0, 0.4), st.booleans())
def test_stream_size_and_tls_version_rules_alike_on_every_path(
    seed: int, disorder: float, compiled: bool
) -> None:
    """Rules reading the stream sizes or a TLS version kept, with payload patterns, in
    directions the fast path scans: the alerts, flows and sizes the full path alone gives."""
    frames = scanned_frames(seed, flows=10, disorder=disorder, client_data=True)
    variables = Variables.from_networks([parse_network("10.0.0.0/8")])
    more = list(parse_rules(KEPT.replace("\\\n", ""), "kept.rules", variables))
    fast, slow = scanned_engines(depth=1 << 20, compiled=compiled)
    for eng in (fast, slow):
        eng.__init__(replace(eng.config, signatures=[*eng.config.signatures, *more]))
    assert state(fast, frames) == state(slow, frames)
    sizes = sorted((f.key, f.sizes) for f in fast.flows.records())
    assert sizes == sorted((f.key, f.sizes) for f in slow.flows.records())


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.0, 0.6), st.sampled_from([0, 64, 700, 65536]))
def test_random_streams(seed: int, disorder: float, depth: int) -> None:
    alike(scanned_frames(seed, flows=4, disorder=disorder), depth=depth)


def test_the_memory_bound_ends_streams_alike() -> None:
    """Past the bound on all streams' bytes, the directions that grew least recently are
    ended the same way whether their segments were appended by the fast path or not."""
    frames = scanned_frames(5, flows=20, disorder=0.05, pieces=FILLER, close=False)
    fast, slow = scanned_engines(depth=4096)
    for eng in (fast, slow):
        assert eng.streams is not None
        eng.streams.max_bytes = 5000
    got, want = state(fast, frames), state(slow, frames)
    assert got == want
    assert fast.stats.errors.get("stream.memory", 0) > 5
    assert fast.stats.fast > len(frames) // 3


@pytest.mark.parametrize("close", [True, False])
def test_a_fin_ends_its_direction_alike(close: bool) -> None:
    """A FIN that follows all its direction's bytes ends its stream (its bytes freed, and
    no longer counted in what all hold) whether the fast path took the FIN or the full path
    did; a direction with a gap before its FIN (a segment lost) keeps what it holds, and
    without FINs every direction does."""
    frames = scanned_frames(
        11, flows=16, disorder=0.2, pieces=FILLER, client_data=True, close=close
    )
    fast, slow = scanned_engines(depth=4096)
    got, want = state(fast, frames), state(slow, frames)
    assert got == want
    for eng in (fast, slow):
        assert eng.streams is not None
        streams = [
            s
            for flow in eng.flows.records()
            for s in flow.streams or ()
            if isinstance(s, StreamDirection)
        ]
        ended = [s for s in streams if s.base < 0]
        assert all(not s.data for s in ended)
        assert eng.streams.held == sum(len(s.data) for s in streams)
        if close:
            assert len(ended) > 12 and len(ended) < len(streams)
        else:
            assert not ended
    assert fast.stats.fast > len(frames) // 3


def test_a_stream_grown_on_the_fast_path_allocates_at_most_half_again() -> None:
    """The fast path grows a stream's allocation ahead of its bytes (so that it is not copied
    at every segment), by at most half again what it holds."""
    frames = scanned_frames(3, flows=12, disorder=0.0, pieces=FILLER, close=False)
    fast, _ = scanned_engines(depth=65536)
    for ts, data, linktype in frames:
        fast.process(ts, data, linktype)
    empty = sys.getsizeof(bytearray())
    grown = [
        s.data
        for flow in fast.flows.records()
        for s in flow.streams or ()
        if isinstance(s, StreamDirection) and len(s.data) > 1000
    ]
    assert len(grown) >= 6
    assert fast.stats.fast > len(frames) // 3
    allocated = [sys.getsizeof(data) - empty for data in grown]
    assert all(a <= len(d) + (len(d) >> 1) + 1 for a, d in zip(allocated, grown, strict=True))
    if fast._core is not None:  # (the Python twin appends with ``+=``)
        # ahead: more than ``+=`` allocates (an eighth more), for a third of them at least
        ahead = [a > len(d) + (len(d) >> 3) + 8 for a, d in zip(allocated, grown, strict=True)]
        assert sum(ahead) * 3 >= len(grown)
