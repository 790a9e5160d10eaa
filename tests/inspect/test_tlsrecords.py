"""Encrypted TLS: a flow's payload is no longer inspected once it carries application data
(Suricata's ``encryption-handling: track-only``), unless ``encryption_handling = "full"``."""

from __future__ import annotations

import random
from typing import Any

import pytest
from scapy.all import TCP, Packet  # type: ignore[attr-defined]

from appliance.inspect import tlsrecords
from appliance.inspect.tlsrecords import TlsRecords
from tests.inspect.test_tlsinfo import C2S, S2C, _handshake, _record, server_hello
from tests.inspect.traffic import client_hello, engine, frames, inspect, sids

HELLO = client_hello("evil.example")


class _Flow:
    def __init__(self, key: bytes = b"k") -> None:
        self.key = key


class _Seg:
    def __init__(self, seq: int, payload: bytes) -> None:
        self.seq = seq
        self.payload = payload


def feed(records: TlsRecords, flow: Any, to_server: bool, seq: int, data: bytes) -> bool:
    return records.segment(flow, to_server, _Seg(seq, data))  # type: ignore[arg-type]


def test_application_data_after_the_servers_handshake_turns_the_flow_encrypted() -> None:
    records, flow = TlsRecords(), _Flow()
    records.begin(flow, 100, HELLO)
    assert not feed(records, flow, True, 100, HELLO)
    assert records.following(flow, True) and records.following(flow, False)
    flight = _record(22, server_hello()) + _record(20, b"\x01")
    assert not feed(records, flow, False, 5000, flight)
    assert not records.encrypted(flow)
    assert feed(records, flow, True, 100 + len(HELLO), _record(23, b"GET / secret"))
    assert records.encrypted(flow)
    assert not records.following(flow, True) and not records.following(flow, False)


def test_headers_are_followed_across_segments_cut_anywhere() -> None:
    """Records cut at every place (a header too) are read as one stream: the application
    data is found where it starts, whatever the cuts."""
    stream = _record(22, server_hello()) + _record(22, bytes(700)) + _record(20, b"\x01")
    stream += _record(23, bytes(50))
    rng = random.Random(5)
    for _ in range(200):
        records, flow = TlsRecords(), _Flow()
        records.begin(flow, 10, HELLO)
        feed(records, flow, True, 10, HELLO)
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randrange(1, 30)))
        found_at = None
        for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            if feed(records, flow, False, 9000 + a, stream[a:b]):
                found_at = b
                break
        assert records.encrypted(flow)
        assert found_at is not None and found_at > len(stream) - 55  # in the last record


def test_a_retransmission_is_ignored_anything_else_out_of_order_ends_the_following() -> None:
    records, flow = TlsRecords(), _Flow()
    records.begin(flow, 0, HELLO)
    feed(records, flow, True, 0, HELLO)
    hello_record = _record(22, server_hello())
    assert not feed(records, flow, False, 500, hello_record)
    assert not feed(records, flow, False, 500, hello_record)  # sent again: nothing
    assert records.following(flow, False)
    assert not feed(records, flow, False, 500 + len(hello_record) + 10, _record(23, b"x"))  # gap
    assert not records.following(flow, False) and not records.encrypted(flow)
    assert records.following(flow, True)  # the client's goes on


@pytest.mark.parametrize("junk", [b"\x00" * 40, b"HTTP/1.1 200 OK\r\n", b"\x17\x02\x00\x00\x01x"])
def test_what_is_not_a_tls_record_ends_the_following_without_effect(junk: bytes) -> None:
    records, flow = TlsRecords(), _Flow()
    records.begin(flow, 0, HELLO)
    feed(records, flow, True, 0, HELLO)
    assert not feed(records, flow, False, 700, junk)
    assert not records.following(flow, False) and not records.encrypted(flow)


def test_early_data_before_the_servers_hello_does_not_count() -> None:
    records, flow = TlsRecords(), _Flow()
    records.begin(flow, 0, HELLO + _record(23, b"0-RTT"))
    assert not records.encrypted(flow)
    assert feed(records, flow, False, 9, _record(23, b"server data"))  # the server's counts
    assert records.encrypted(flow)


def test_following_ends_after_records_max_bytes() -> None:
    records, flow = TlsRecords(), _Flow()
    records.begin(flow, 0, b"")
    handshake = _record(22, _handshake(11, bytes(16000)))
    seq = 0
    while records.following(flow, True) and seq < 10 * len(handshake):
        assert not feed(records, flow, True, seq, handshake)
        seq += len(handshake)
    assert seq >= tlsrecords.RECORDS_MAX
    assert not records.following(flow, True) and not records.encrypted(flow)


def test_a_change_the_fast_path_reads_is_given_again_to_the_full_path() -> None:
    """walk (the fast paths') reads a segment in place; when the following changes there,
    the full path takes the segment and its segment() says so once (the records are not
    read twice)."""
    records, flow = TlsRecords(), _Flow()
    records.begin(flow, 0, HELLO)
    feed(records, flow, True, 0, HELLO)
    feed(records, flow, False, 300, _record(22, server_hello()))
    frame = bytes(14) + bytes(24) + (len(HELLO)).to_bytes(4, "big") + bytes(16)
    data = frame + _record(23, b"secret") + b"trailer"
    assert records.walk(flow, True, data, 14, len(frame), len(data) - 7)
    assert records.encrypted(flow)
    segment = _Seg(len(HELLO), _record(23, b"secret"))
    assert records.segment(flow, True, segment)  # type: ignore[arg-type]
    assert not records.segment(flow, True, segment)  # type: ignore[arg-type]


def test_flows_followed_at_once_are_bounded() -> None:
    records = TlsRecords()
    flows = [_Flow(i.to_bytes(4, "big")) for i in range(tlsrecords.MAX_FLOWS + 10)]
    for flow in flows:
        records.begin(flow, 0, HELLO)
    assert len(records.followed) == tlsrecords.MAX_FLOWS
    assert not records.following(flows[0], True)  # the oldest went first
    assert records.following(flows[-1], True)


# ---- the engine ---------------------------------------------------------------------------

RULES = (
    'alert tls any any -> any any (msg:"sni"; tls.sni; content:"evil.example"; sid:1;)\n'
    'alert tcp any any -> any any (msg:"word"; flow:established; content:"secret"; sid:2;)\n'
    'alert tcp any any -> any any (msg:"dsize"; flow:established,to_server; dsize:85; sid:3;)\n'
)


def tls12(client_data: list[bytes]) -> list[Packet]:
    """A TLS 1.2 connection: hello, the server's flight, the client's key exchange and
    cipher spec, then the client's application data records (one a segment), each answered
    by the server's."""
    flight = _record(22, server_hello()) + _record(22, _handshake(14, b""))
    keyx = _record(22, _handshake(16, bytes(33))) + _record(20, b"\x01") + _record(22, bytes(40))
    cseq, sseq = 1001, 7001
    out = [
        C2S / TCP(sport=40001, dport=443, flags="S", seq=1000),
        S2C / TCP(sport=443, dport=40001, flags="SA", seq=7000, ack=1001),
        C2S / TCP(sport=40001, dport=443, flags="A", seq=1001, ack=7001),
    ]
    for payload, to_server in ((HELLO, True), (flight, False), (keyx, True)):
        if to_server:
            out.append(C2S / TCP(sport=40001, dport=443, flags="PA", seq=cseq) / payload)
            cseq += len(payload)
        else:
            out.append(S2C / TCP(sport=443, dport=40001, flags="PA", seq=sseq) / payload)
            sseq += len(payload)
    for data in client_data:
        record = _record(23, data)
        out.append(C2S / TCP(sport=40001, dport=443, flags="PA", seq=cseq) / record)
        cseq += len(record)
        reply = _record(23, b"reply " + data)
        out.append(S2C / TCP(sport=443, dport=40001, flags="PA", seq=sseq) / reply)
        sseq += len(reply)
    return out


def test_the_payload_after_the_first_application_data_is_not_inspected() -> None:
    """The packet carrying the first application data is inspected (as Suricata flags the
    flow while parsing it); the payload of every packet after it, both ways, is not. The
    handshake's buffers and a rule on the payload's size still apply."""
    packets = tls12([b"hello secret", b"more secret", b"x" * 80])
    assert sorted(sids(inspect(packets, RULES))) == [1, 2, 3]  # 2: the first record only
    events = inspect(packets, RULES)
    assert [e["alert"]["signature_id"] for e in events if e["alert"]["signature_id"] == 2] == [2]
    full = sids(inspect(packets, RULES, encryption_handling="full"))
    assert sorted(full) == [1, 2, 2, 2, 2, 3]  # each record both ways: "secret" four times


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("compiled", [True, False])
def test_the_fast_paths_agree(fast_path: bool, compiled: bool) -> None:
    packets = tls12([b"hello", *(b"secret %d" % i for i in range(6))])
    want = sids(inspect(packets, RULES, fast_path=False))
    assert sids(inspect(packets, RULES, fast_path=fast_path, compiled=compiled)) == want
    assert want.count(2) == 0  # only after the first application data


def test_the_encrypted_records_take_the_fast_path() -> None:
    """Once encrypted, the records of both directions take the fast path: no payload rule
    applies (the dsize rule, checked on every packet, is left out here)."""
    packets = tls12([b"a", *(b"secret %d" % i for i in range(20))])
    eng = engine("".join(RULES.splitlines(keepends=True)[:2]))
    fast = []
    for ts, data, linktype in frames(packets):
        before = eng.stats.fast
        eng.process(ts, data, linktype)
        fast.append(eng.stats.fast > before)
    assert fast[-42:] == [True] * 42  # the first application data and every record after it


def test_no_rule_reads_the_payload_nothing_is_followed() -> None:
    sni_only = 'alert tls any any -> any any (msg:"sni"; tls.sni; content:"evil"; sid:1;)\n'
    assert engine(sni_only)._records is None
    assert engine(RULES, encryption_handling="full")._records is None
    assert engine(RULES)._records is not None


def random_session(rng: random.Random, port: int) -> list[Packet]:
    """A TLS-like connection of random records (handshake, cipher spec, application data,
    now and then junk), cut into segments anywhere, some sent twice or swapped."""
    hello = client_hello("evil.example")
    streams = {True: [hello], False: []}
    for _ in range(rng.randrange(2, 12)):
        to_server = rng.random() < 0.5
        kind = rng.choice((20, 22, 22, 23, 23))
        body = rng.choice((b"secret", b"plain", bytes(rng.randrange(1, 300))))
        piece = _record(kind, body) if rng.random() > 0.05 else b"\x00junk" + body
        streams[to_server].append(piece)
    c2s = C2S / TCP(sport=port, dport=443)
    s2c = S2C / TCP(sport=443, dport=port)
    out = [
        C2S / TCP(sport=port, dport=443, flags="S", seq=1000),
        S2C / TCP(sport=443, dport=port, flags="SA", seq=7000, ack=1001),
        C2S / TCP(sport=port, dport=443, flags="A", seq=1001, ack=7001),
    ]
    segments: list[Packet] = []
    for to_server, base in ((True, 1001), (False, 7001)):
        data = b"".join(streams[to_server])
        if not data:
            continue
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(0, 8))))
        for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
            head = c2s if to_server else s2c
            segments.append(_segment(head, base + a, data[a:b]))
    # the client's hello first, then the rest interleaved, now and then resent or swapped
    first, rest = segments[0], segments[1:]
    if rng.random() < 0.2:
        rng.shuffle(rest)
    for seg in [first, *rest]:
        out.append(seg)
        if rng.random() < 0.1:
            out.append(seg)
    return out


def _segment(head: Packet, seq: int, data: bytes) -> Packet:
    pkt = head.copy()
    pkt[TCP].seq = seq
    pkt[TCP].flags = "PA"
    return pkt / data


@pytest.mark.parametrize("seed", range(6))
def test_random_sessions_alike_on_every_path(seed: int) -> None:
    """The compiled fast path, its twin and the full path give the same alerts and find
    the same flows encrypted, whatever the records and their cuts."""
    rng = random.Random(seed)
    packets = [p for i in range(25) for p in random_session(rng, 40000 + i)]
    ruleset = "".join(RULES.splitlines(keepends=True)[:2])
    results = []
    for config in ({}, {"compiled": False}, {"fast_path": False}):
        eng = engine(ruleset, **config)
        events = [a.sid for f in frames(packets) for a in eng.process(*f)]
        assert eng._records is not None
        encrypted = sorted(f.key for f in eng.flows.records() if eng._records.encrypted(f))
        results.append((events, encrypted))
    assert results[0] == results[1] == results[2]
    assert results[0][1]  # some flows turned encrypted


def test_an_encrypted_flow_keeps_no_stream_and_a_flow_no_longer_followed_no_state() -> None:
    packets = tls12([b"hello", b"more"])
    eng = engine(RULES)
    for f in frames(packets):
        eng.process(*f)
    (flow,) = eng.flows.records()
    assert eng._records is not None and eng._records.encrypted(flow)
    assert flow.streams is None
    assert eng.streams is not None and eng.streams.held == 0
    records, other = TlsRecords(), _Flow()
    records.begin(other, 0, b"\x00not tls")
    feed(records, other, False, 0, b"\x00not tls either")
    assert records.followed == {}
