"""TCP stream reassembly: content split across segments matches on the reassembled stream of
an established flow (in order and out of order, across a sequence wrap); a retransmission
with different bytes is counted and changes nothing; the bounds hold."""

from __future__ import annotations

import itertools
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import IP, TCP, Ether, Packet  # type: ignore[attr-defined]

from appliance.errors import ProfileError
from appliance.inspect.decode import Errors
from appliance.inspect.engine import InspectionConfig
from appliance.inspect.match import Matcher
from appliance.inspect.pcap import read_capture
from appliance.inspect.stream import MAX_PENDING_SEGMENTS, Reassembler
from appliance.model.parse import load_profile
from tests.inspect.traffic import engine, frames, inspect, sids

CORPUS = Path(__file__).parent / "corpus"
RULE = (
    'alert tcp any any -> any 80 (msg:"split"; flow:established,to_server; '
    'content:"EVIL-SPLIT-MARKER"; sid:1;)\n'
    'alert tcp any any -> any 80 (msg:"anchored"; flow:established,to_server; '
    'content:"GET /adm"; depth:8; content:"secret"; distance:0; sid:2;)\n'
    'alert tcp any any -> any 80 (msg:"forged"; flow:established,to_server; '
    'content:"FORGED"; sid:3;)\n'
)
BODY = b"GET /admin/secret HTTP/1.1\r\nX: EVIL-SPLIT-MARKER\r\n\r\n"
CLIENT_MAC, SERVER_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
C2S = Ether(src=CLIENT_MAC, dst=SERVER_MAC) / IP(src="10.0.0.1", dst="192.0.2.80")
S2C = Ether(src=SERVER_MAC, dst=CLIENT_MAC) / IP(src="192.0.2.80", dst="10.0.0.1")


def handshake(isn: int = 1000) -> list[Packet]:
    return [
        C2S / TCP(sport=40000, dport=80, flags="S", seq=isn),
        S2C / TCP(sport=80, dport=40000, flags="SA", seq=7000, ack=(isn + 1) % 2**32),
        C2S / TCP(sport=40000, dport=80, flags="A", seq=(isn + 1) % 2**32, ack=7001),
    ]


def segments(body: bytes, parts: int, isn: int = 1000) -> list[Packet]:
    """The body cut into ``parts`` segments of the client direction, in order."""
    size = -(-len(body) // parts)
    return [
        C2S
        / TCP(sport=40000, dport=80, flags="PA", seq=(isn + 1 + i) % 2**32, ack=7001)
        / body[i : i + size]
        for i in range(0, len(body), size)
    ]


def other_copy(segment: Packet, payload: bytes) -> Packet:
    """A segment of the client direction at ``segment``'s sequence number, holding
    ``payload``."""
    return C2S / TCP(sport=40000, dport=80, flags="PA", seq=segment[TCP].seq, ack=7001) / payload


def run(packets: list[Packet], **config: object) -> tuple[list[int], Errors]:
    eng = engine(RULE, **config)
    found = []
    for ts, data, linktype in frames(packets):
        found += [a.sid for a in eng.process(ts, data, linktype)]
    return found, eng.stats.errors


@pytest.mark.parametrize("parts", [2, 3, 5, 17])
def test_split_content_matches_in_order(parts: int) -> None:
    found, _ = run(handshake() + segments(BODY, parts))
    assert sorted(found) == [1, 2]


@pytest.mark.parametrize("parts", [2, 3, 6])
def test_split_content_matches_out_of_order(parts: int) -> None:
    found, errors = run(handshake() + segments(BODY, parts)[::-1])
    assert sorted(found) == [1, 2]
    assert "stream.ooo_dropped" not in errors


def test_unsplit_content_alerts_once_per_stream() -> None:
    found, _ = run(handshake() + segments(BODY, 1) + segments(b"more", 1, isn=1000 + len(BODY)))
    assert sorted(found) == [1, 2]


def test_not_established_flow_is_not_reassembled_for_the_rules() -> None:
    found, _ = run(segments(BODY, 3))  # no handshake: the flow never becomes established
    assert found == []


def test_retransmission_with_different_bytes_is_counted_and_changes_nothing() -> None:
    parts = segments(BODY, 3)
    first = bytes(parts[1][TCP].payload)
    forged = other_copy(parts[1], b"FORGED" + b"x" * (len(first) - 6))
    found, errors = run([*handshake(), parts[0], parts[1], forged, parts[2]])
    # the stream keeps the bytes seen first (1 and 2 match it once); the forged packet
    # alone matches 3 on its own payload
    assert sorted(found) == [1, 2, 3]
    assert errors.get("stream.retransmit_conflict") == 1


def test_forged_bytes_never_enter_the_stream() -> None:
    # the forged copy of segment 2 arrives first: it is what the stream keeps
    parts = segments(BODY.replace(b"EVIL", b"GOOD"), 3)
    genuine = bytes(parts[1][TCP].payload)
    forged = other_copy(parts[1], genuine.replace(b"GOOD", b"EVIL"))
    found, errors = run([*handshake(), parts[0], forged, parts[1], parts[2]])
    assert errors.get("stream.retransmit_conflict") == 1
    assert found.count(1) <= 1


def test_out_of_order_conflicting_copies_keep_the_first() -> None:
    parts = segments(BODY, 3)
    held = bytes(parts[2][TCP].payload)
    other = other_copy(parts[2], b"Z" * len(held))
    found, errors = run([*handshake(), parts[2], other, parts[0], parts[1]])
    assert sorted(found) == [1, 2]
    assert errors.get("stream.retransmit_conflict") == 1


@pytest.mark.parametrize("isn", [2**32 - 20, 2**32 - 1, 2**32 - 2])
def test_sequence_wraparound(isn: int) -> None:
    found, _ = run(handshake(isn) + segments(BODY, 4, isn))
    assert sorted(found) == [1, 2]
    found, _ = run(handshake(isn) + segments(BODY, 4, isn)[::-1])
    assert sorted(found) == [1, 2]


def test_content_past_the_depth_is_not_reassembled() -> None:
    body = b"A" * 100 + BODY
    found, errors = run(handshake() + segments(body, 10), stream_depth=64)
    assert found == []  # each segment alone holds no rule's content
    assert errors.get("stream.depth_reached") == 1


def test_depth_zero_turns_reassembly_off() -> None:
    found, _ = run(handshake() + segments(BODY, 10), stream_depth=0)
    assert found == []


def test_fast_path_and_full_path_agree() -> None:
    packets = handshake() + segments(BODY, 5)
    assert run(packets, fast_path=True)[0] == run(packets, fast_path=False)[0]


def test_reassembler_per_direction_bound() -> None:
    errors: Errors = {}
    asm = Reassembler(depth=1000, max_pending=1 << 20)
    stream = asm.open(0, syn=False)
    # out of order, far ahead: at most the depth is held, and a bounded number of segments
    for i in range(2 * MAX_PENDING_SEGMENTS):
        asm.add(stream, 10 + i * 3, b"abc", errors)
    assert stream.pending_bytes <= 1000
    assert len(stream.pending) <= MAX_PENDING_SEGMENTS
    assert errors.get("stream.depth_reached") == 1
    asm.add(stream, 0, b"x" * 10, errors)
    assert len(stream.data) <= 1000 and not stream.pending and asm.pending_bytes == 0


def test_reassembler_global_bound_evicts_the_oldest() -> None:
    errors: Errors = {}
    asm = Reassembler(depth=4096, max_pending=10_000)
    streams = [asm.open(0, syn=False) for _ in range(50)]
    for stream in streams:
        asm.add(stream, 100, b"y" * 1000, errors)  # a gap at 0..100: held
        assert asm.pending_bytes <= 10_000
    assert errors.get("stream.ooo_evicted") == 40
    assert not streams[0].pending and streams[-1].pending
    # the evicted direction's gap filled: only the bytes before it are in the stream
    asm.add(streams[0], 0, b"x" * 100, errors)
    assert bytes(streams[0].data) == b"x" * 100
    asm.add(streams[-1], 0, b"x" * 100, errors)
    assert len(streams[-1].data) == 1100
    assert asm.pending_bytes == sum(s.pending_bytes for s in streams) == 9000


def test_memory_bound_holds_across_many_flows() -> None:
    """Thousands of flows each sending a gap and then a full window of out-of-order data:
    what the reassembly holds stays within depth per direction plus the global cap."""
    errors: Errors = {}
    depth, cap = 8192, 256 * 1024
    asm = Reassembler(depth=depth, max_pending=cap)
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        streams = []
        for _ in range(2000):
            stream = asm.open(12345, syn=False)
            asm.add(stream, 12345, b"h" * 100, errors)
            for i in range(8):
                asm.add(stream, 12345 + 200 + i * 1000, b"p" * 1000, errors)
            streams.append(stream)
            assert asm.pending_bytes <= cap
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    in_order = sum(len(s.data) for s in streams)
    assert in_order == 2000 * 100
    assert asm.pending_bytes <= cap
    # the streams' own bytes plus the cap, and bookkeeping of a few hundred bytes per flow
    assert used - base < in_order + cap + 2000 * 1024


def corpus_cases() -> dict[str, list[Packet]]:
    parts = segments(BODY, 3)
    first = bytes(parts[1][TCP].payload)
    forged = other_copy(parts[1], b"FORGED" + b"x" * (len(first) - 6))
    return {
        "stream-split-in-order": handshake() + segments(BODY, 5),
        "stream-split-out-of-order": handshake() + segments(BODY, 4)[::-1],
        "stream-retransmit-conflict": [*handshake(), parts[0], parts[1], forged, parts[2]],
        "stream-seq-wraparound": handshake(2**32 - 20) + segments(BODY, 4, 2**32 - 20),
    }


EXPECTED = {
    "stream-split-in-order": [1, 2],
    "stream-split-out-of-order": [1, 2],
    "stream-retransmit-conflict": [1, 2, 3],
    "stream-seq-wraparound": [1, 2],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus(name: str) -> None:
    """The committed captures (one per case) give the same alerts as the packets built here."""
    with open(CORPUS / f"{name}.pcap", "rb") as handle:
        records = list(read_capture(handle, name))
    eng = engine(RULE)
    found = []
    for ts, data, linktype in records:
        found += [a.sid for a in eng.process(ts, data, linktype)]
    assert sorted(found) == EXPECTED[name]
    assert sorted(sids(inspect(corpus_cases()[name], RULE))) == EXPECTED[name]


def test_anchored_rule_alone_agrees_on_both_paths() -> None:
    rule = (
        'alert tcp any any -> any 80 (msg:"anchored"; flow:established,to_server; '
        'content:"GET /adm"; depth:8; sid:2;)'
    )
    packets = handshake() + segments(BODY, 10)  # "GET /adm" cut after 6 bytes
    for fast_path in (True, False):
        eng = engine(rule, fast_path=fast_path)
        found = [a.sid for ts, d, lt in frames(packets) for a in eng.process(ts, d, lt)]
        assert found == [2]


def test_stream_depth_from_the_profile(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('version = 1\nname = "t"\n[inspect]\nstream_depth = 4096\n')
    profile = load_profile(path)
    assert profile.inspect.stream_depth == 4096
    assert InspectionConfig.from_profile(profile).stream_depth == 4096
    path.write_text('version = 1\nname = "t"\n[inspect]\nstream_depth = -1\n')
    with pytest.raises(ProfileError, match=r"inspect\.stream_depth"):
        load_profile(path)


def test_rule_completed_by_a_later_segment() -> None:
    """The prefilter pattern arrives first, the rest of the rule segments later; and a
    pattern cut across segments far into the stream (each scan resumes where the last
    ended)."""
    rule = (
        'alert tcp any any -> any 80 (msg:"two parts"; flow:established,to_server; '
        'content:"EVIL-SPLIT-MARKER"; fast_pattern; content:"TAIL"; distance:0; sid:7;)\n'
        'alert tcp any any -> any 80 (msg:"far"; flow:established,to_server; '
        'content:"FAR-AWAY-PATTERN"; sid:8;)'
    )
    body = BODY + b"." * 3000 + b"TAIL" + b"," * 2000 + b"FAR-AWAY-PATTERN" + b"!" * 100
    for parts in (40, 400):
        eng = engine(rule)
        packets = handshake() + segments(body, parts)
        found = [a.sid for ts, d, lt in frames(packets) for a in eng.process(ts, d, lt)]
        assert found == [7, 8]


def test_reassembler_global_in_order_bound() -> None:
    errors: Errors = {}
    asm = Reassembler(depth=4096, max_bytes=100_000)
    streams = [asm.open(0, syn=False) for _ in range(300)]
    for stream in streams:
        for i in range(4):
            asm.add(stream, i * 1000, b"z" * 1000, errors)
        assert asm.held <= 100_000
    assert asm.held == sum(len(s.data) for s in streams)
    assert errors.get("stream.memory", 0) >= 200
    assert not streams[0].data and streams[0].full and len(streams[-1].data) == 4000
    assert not asm.add(streams[0], 4000, b"late", errors)  # an ended direction takes no more
    assert not streams[0].pending and asm.pending_bytes == 0


def test_a_fin_ends_its_direction_once_nothing_of_it_can_come() -> None:
    """A FIN right after a direction's bytes ends it (its bytes freed and no longer counted
    in what all hold), as does any FIN once the depth is reached; a gap before the FIN, or
    bytes held out of order, keep it. A sequence number that wraps ends it alike."""
    errors: Errors = {}
    asm = Reassembler(depth=4096)
    closed, gap, ahead, deep = (asm.open(1000, syn=False) for _ in range(4))
    wrapped = asm.open(2**32 - 10, syn=False)
    asm.add(closed, 1000, b"a" * 300, errors)
    asm.add(gap, 1000, b"b" * 300, errors)
    asm.add(ahead, 1000, b"c" * 100, errors)
    asm.add(ahead, 1200, b"d" * 100, errors)
    asm.add(deep, 1000, b"e" * 5000, errors)
    asm.add(wrapped, 2**32 - 10, b"f" * 30, errors)
    assert asm.held == 300 + 300 + 100 + 4096 + 30
    asm.finished(closed, 1300)
    asm.finished(gap, 1400)  # 100 bytes not seen
    asm.finished(ahead, 1300)
    asm.finished(deep, 1000)  # (past the depth: whatever its number)
    asm.finished(wrapped, 20)
    for stream in (closed, deep, wrapped):
        assert (stream.base, bytes(stream.data), stream.full) == (-1, b"", True)
    assert (gap.base, bytes(gap.data)) == (1000, b"b" * 300)
    assert ahead.pending and bytes(ahead.data) == b"c" * 100
    assert asm.held == 300 + 100
    assert not asm.add(closed, 1300, b"late", errors)  # an ended direction takes no more
    assert not asm.add(closed, 1000, b"z" * 300, errors)
    assert "stream.retransmit_conflict" not in errors and asm.held == 400
    asm.finished(1000, 1300)  # a direction without payload yet, or none: nothing to end
    asm.finished(None, 1300)


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_closed_connection_holds_no_stream_bytes(fast_path: bool) -> None:
    """Once both directions sent their FIN after their bytes, the flow's streams hold
    nothing; without the FINs, they hold what was sent."""
    body = b"nothing to see in this request " * 40
    sent = handshake() + segments(body, 6)
    fins = [
        C2S / TCP(sport=40000, dport=80, flags="FA", seq=1001 + len(body), ack=7001),
        S2C / TCP(sport=80, dport=40000, flags="FA", seq=7001, ack=1002 + len(body)),
        C2S / TCP(sport=40000, dport=80, flags="A", seq=1002 + len(body), ack=7002),
    ]
    for packets, held in ((sent, len(body)), (sent + fins, 0)):
        eng = engine(RULE, fast_path=fast_path)
        for ts, data, linktype in frames(packets):
            eng.process(ts, data, linktype)
        assert eng.streams is not None
        assert eng.streams.held == held
        (flow,) = eng.flows.records()
        assert flow.streams is not None
        assert sum(len(s.data) for s in flow.streams if not isinstance(s, int | None)) == held


def test_a_new_connection_on_the_same_ports_starts_a_new_stream() -> None:
    first = handshake(1000) + segments(b"first connection, nothing to see", 2, 1000)
    reset = C2S / TCP(sport=40000, dport=80, flags="R", seq=2000)
    second = handshake(900_000) + segments(BODY, 5, 900_000)
    found, errors = run([*first, reset, *second])
    assert sorted(found) == [1, 2]
    assert "stream.ooo_dropped" not in errors


@pytest.mark.parametrize("seed", range(20))
def test_seeded_fuzz_reassembles_the_truth_within_bounds(seed: int) -> None:
    """Segments of a known stream cut at random, duplicated, reordered and partly forged
    (forged copies always after the genuine ones): the stream is a prefix of the truth,
    whole when nothing was lost, and what is held stays within the bounds."""
    import random

    rng = random.Random(seed)
    truth = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6000)))
    depth = rng.choice([512, 4096, 65536])
    isn = rng.choice([0, 2**32 - 1, 2**32 - rng.randrange(1, 3000), rng.randrange(2**32)])
    cuts = sorted({0, len(truth), *(rng.randrange(len(truth)) for _ in range(rng.randrange(40)))})
    parts = [(a, truth[a:b]) for a, b in itertools.pairwise(cuts)]
    order = parts[:]
    rng.shuffle(order)
    forged = [(a, bytes(255 - x for x in p)) for a, p in rng.sample(parts, len(parts) // 4)]
    errors: Errors = {}
    asm = Reassembler(depth=depth, max_pending=1 << 20)
    stream = asm.open(isn, syn=True)
    for offset, payload in [*order, *forged]:
        asm.add(stream, (isn + 1 + offset) % 2**32, payload, errors)
        assert len(stream.data) <= depth and stream.pending_bytes <= depth
        assert len(stream.pending) <= MAX_PENDING_SEGMENTS
        assert truth.startswith(bytes(stream.data))
    assert bytes(stream.data) == truth[:depth]
    assert asm.pending_bytes == stream.pending_bytes


PATTERN_RULES = "".join(
    f'alert tcp any any -> any 80 (msg:"p{i}"; flow:established,to_server; '
    f'content:"{p}"; sid:{100 + i};)\n'
    for i, p in enumerate(["spans", "SPLIT-HERE", "xyzzy", "ab", "a-very-long-marker-text"])
)


@settings(max_examples=40, deadline=None)
@given(
    body=st.lists(
        st.sampled_from([b"spans", b"split-here", b"xyzzy", b"ab", b"a-very-long-", b"marker-text"])
        | st.binary(max_size=12),
        max_size=12,
    ).map(b"".join),
    cuts=st.lists(st.integers(1, 200), max_size=8),
)
def test_a_pattern_across_segments_is_found_as_a_scan_of_the_whole_stream_finds_it(
    body: bytes, cuts: list[int]
) -> None:
    """Where a segment alone holds no pattern, only the bytes around its start are scanned
    again (the segment was scanned as a packet): the alerts are those of an engine whose
    prefilters scan everything (the reference matcher)."""
    bounds = sorted({0, len(body), *(c for c in cuts if c < len(body))})
    packets = [
        *handshake(),
        *(
            C2S / TCP(sport=40000, dport=80, flags="PA", seq=1001 + a, ack=7001) / body[a:b]
            for a, b in itertools.pairwise(bounds)
        ),
    ]
    scanned = engine(PATTERN_RULES)
    reference = engine(PATTERN_RULES)
    reference.matcher = Matcher(reference.config.signatures, exhaustive=True)
    for ts, data, linktype in frames(packets):
        got = sorted(a.sid for a in scanned.process(ts, data, linktype))
        assert got == sorted(a.sid for a in reference.process(ts, data, linktype))


@pytest.mark.parametrize("pattern", [b"spans", b"a-very-long-marker-text", b"ab"])
def test_a_pattern_cut_anywhere_is_found_in_the_stream(pattern: bytes) -> None:
    """The pattern cut at each of its bytes, after segments that hold none: the stream's
    rule alerts whatever part of it the earlier segment holds."""
    sid = {b"spans": 100, b"ab": 103, b"a-very-long-marker-text": 104}[pattern]
    for cut in range(1, len(pattern)):
        body = b"0123456789" * 3 + pattern + b"9876543210"
        at = 30 + cut
        packets = [
            *handshake(),
            C2S / TCP(sport=40000, dport=80, flags="PA", seq=1001, ack=7001) / body[:10],
            C2S / TCP(sport=40000, dport=80, flags="PA", seq=1011, ack=7001) / body[10:at],
            C2S / TCP(sport=40000, dport=80, flags="PA", seq=1001 + at, ack=7001) / body[at:],
        ]
        eng = engine(PATTERN_RULES)
        found = [a.sid for ts, data, lt in frames(packets) for a in eng.process(ts, data, lt)]
        assert found == [sid], cut


ANCHORED = (
    'alert tcp any any -> any 80 (msg:"anchored"; flow:established,to_server; '
    'content:"get /admin"; depth:10; nocase; content:"MK-7"; sid:200;)\n'
)


@pytest.mark.parametrize(
    ("start", "alerts"), [(b"GET /ADMIN/x HTTP/1.1\r\n", [200]), (b"POST /admin/x\r\n", [])]
)
def test_an_anchored_rule_is_completed_by_a_later_segment(start: bytes, alerts: list[int]) -> None:
    """A rule whose fast pattern is at the stream's start (case folded) and whose other
    content comes in a later segment alerts on the stream; with the start elsewhere, never."""
    packets = [
        *handshake(),
        C2S / TCP(sport=40000, dport=80, flags="PA", seq=1001, ack=7001) / start,
        C2S
        / TCP(sport=40000, dport=80, flags="PA", seq=1001 + len(start), ack=7001)
        / b"X: MK-7\r\n\r\n",
    ]
    eng = engine(ANCHORED)
    assert [a.sid for ts, d, lt in frames(packets) for a in eng.process(ts, d, lt)] == alerts
