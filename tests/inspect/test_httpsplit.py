"""HTTP messages split across TCP segments: the URI, headers and bodies are matched as one
buffer, a rule alerts once per message, and the bound and gaps are counted."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest
from scapy.all import IP, TCP, Ether, Packet  # type: ignore[attr-defined]

from appliance.inspect import httpsplit
from appliance.inspect.httpsplit import HTTP_MAX_BYTES, HTTP_MAX_FLOWS
from tests.inspect.traffic import engine, frames

C2S = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.0.0.1", dst="192.0.2.80")
S2C = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01") / IP(src="192.0.2.80", dst="10.0.0.1")


def session(
    request: Sequence[bytes], response: Sequence[bytes] = (), skip: int = -1
) -> list[Packet]:
    """A handshake, the request in the given segments, then the response's (``skip``: the
    index of a request segment that is lost)."""
    out = [
        C2S / TCP(sport=40000, dport=80, flags="S", seq=1000),
        S2C / TCP(sport=80, dport=40000, flags="SA", seq=5000, ack=1001),
        C2S / TCP(sport=40000, dport=80, flags="A", seq=1001, ack=5001),
    ]
    seq = 1001
    for i, part in enumerate(request):
        if i != skip:
            out.append(C2S / TCP(sport=40000, dport=80, flags="PA", seq=seq) / part)
        seq += len(part)
    seq = 5001
    for part in response:
        out.append(S2C / TCP(sport=80, dport=40000, flags="PA", seq=seq) / part)
        seq += len(part)
    return out


def run(packets: list[Packet], rules: str) -> tuple[list[int], dict[str, int]]:
    eng = engine(rules)
    found = []
    for ts, data, link in frames(packets):
        found.extend(a.sid for a in eng.process(ts, data, link))
    return found, eng.stats.errors


def cut(data: bytes, *at: int) -> list[bytes]:
    bounds = [0, *at, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


RULES = (
    'alert http any any -> any any (msg:"uri"; flow:to_server; http.uri; '
    'content:"/admin/secret"; sid:1;)\n'
    'alert http any any -> any any (msg:"header"; http.header; content:"X-Evil: yes|0d 0a|"; '
    "sid:2;)\n"
    'alert http any any -> any any (msg:"ua"; content:"EvilAgent/1"; http_user_agent; sid:3;)\n'
    'alert http any any -> any any (msg:"body"; http.request_body; content:"payload=DROP"; '
    "sid:4;)\n"
    'alert http any any -> any any (msg:"file"; flow:to_client; file_data; '
    'content:"MZ-SPLIT-EXE"; sid:5;)\n'
    'alert http any any -> any any (msg:"method"; http.method; content:"POST"; sid:6;)\n'
    'alert http any any -> any any (msg:"absent"; http.uri; content:"/nowhere"; sid:7;)\n'
)
BODY = b"a=1&payload=DROP&z=2"
REQUEST = (
    b"POST /admin/secret?q=1 HTTP/1.1\r\nHost: app.example\r\nUser-Agent: EvilAgent/1.0\r\n"
    b"X-Evil: yes\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY
)
RESPONSE_BODY = b"....MZ-SPLIT-EXE...."
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Length: %d\r\n\r\n" % len(RESPONSE_BODY) + RESPONSE_BODY
)


def test_whole_message_in_one_segment() -> None:
    found, _ = run(session([REQUEST], [RESPONSE]), RULES)
    assert sorted(found) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    "cuts",
    [
        (10,),  # in the URI
        (45, 80),  # in the headers
        (len(REQUEST) - 10,),  # in the body
        tuple(range(7, len(REQUEST), 7)),  # everywhere
    ],
)
def test_split_request_matches_as_one_buffer_and_alerts_once(cuts: tuple[int, ...]) -> None:
    response = cut(RESPONSE, len(RESPONSE) - 12)  # the file's content split in two
    found, errors = run(session(cut(REQUEST, *cuts), response), RULES)
    assert sorted(found) == [1, 2, 3, 4, 5, 6]
    assert not errors.get("http.truncated") and not errors.get("http.gap")


def test_rules_on_headers_only_do_not_wait_for_the_body() -> None:
    rules = 'alert http any any -> any any (msg:"uri"; http.uri; content:"/admin/secret"; sid:1;)\n'
    # the body never comes in full: the head was enough
    found, _ = run(session(cut(REQUEST[:-5], 12)), rules)
    assert found == [1]


def test_a_lost_segment_ends_the_message() -> None:
    found, errors = run(session(cut(REQUEST, 20, 40, 60), skip=1), RULES)
    assert errors.get("http.gap") == 1
    assert 7 not in found


def test_the_bound_is_counted_and_holds() -> None:
    """Past HTTP_MAX_BYTES the message is inspected as gathered: a body content past it is
    not seen, one before it is."""
    body = b"payload=DROP" + bytes(HTTP_MAX_BYTES) + b"LATE-MARKER"
    head = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body)
    message = head + body
    rules = RULES + (
        'alert http any any -> any any (msg:"late"; http.request_body; content:"LATE-MARKER"; '
        "sid:8;)\n"
    )
    found, errors = run(session(cut(message, *range(1400, len(message), 1400))), rules)
    assert errors.get("http.truncated") == 1
    assert 4 in found and 8 not in found


@pytest.mark.parametrize("seed", range(4))
def test_seeded_fuzz_of_split_messages(seed: int) -> None:
    """Random cuts of the same request match the same rules as the whole request; random
    corruption never raises and no more than HTTP_MAX_FLOWS messages are held."""
    rng = random.Random(seed)
    whole, _ = run(session([REQUEST], [RESPONSE]), RULES)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(REQUEST)), rng.randrange(1, 12)))
        found, _ = run(session(cut(REQUEST, *cuts), [RESPONSE]), RULES)
        assert sorted(found) == sorted(whole)
    eng = engine(RULES)
    for i in range(50):
        data = bytearray(REQUEST)
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        packets = session(cut(bytes(data), *sorted(rng.sample(range(1, len(data)), 3))))
        for pkt in packets:
            pkt[TCP].sport = 30000 + i
        for ts, raw_frame, link in frames(packets):
            eng.process(ts, raw_frame, link)
    assert eng._follow is not None and eng._follow.http is not None
    assert len(eng._follow.http.pending) <= HTTP_MAX_FLOWS


def test_the_bytes_gathered_in_all_flows_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many large requests whose bodies never end: at most HTTP_MAX_HELD bytes are held
    (lowered here, so that a few flows reach it), the oldest messages go first, counted."""
    bound = 200_000
    monkeypatch.setattr(httpsplit, "HTTP_MAX_HELD", bound)
    eng = engine(RULES)
    head = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 60000\r\n\r\n"
    chunk = head + bytes(1400 - len(head))
    flows = 2 * bound // 1400 // 40 + 2
    for port in range(flows):
        c2s = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(
            src="10.0.0.1", dst="192.0.2.80"
        )
        s2c = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01") / IP(
            src="192.0.2.80", dst="10.0.0.1"
        )
        packets = [
            c2s / TCP(sport=10000 + port, dport=80, flags="S", seq=1000),
            s2c / TCP(sport=80, dport=10000 + port, flags="SA", seq=5000, ack=1001),
            c2s / TCP(sport=10000 + port, dport=80, flags="A", seq=1001, ack=5001),
        ]
        seq = 1001
        for i in range(40):
            packets.append(
                c2s
                / TCP(sport=10000 + port, dport=80, flags="PA", seq=seq)
                / (chunk if i == 0 else bytes(1400))
            )
            seq += 1400
        for ts, data, link in frames(packets):
            eng.process(ts, data, link)
        split = eng._follow.http if eng._follow is not None else None
        assert split is not None and split.held <= bound
        assert split.held == sum(len(m.data) for m in split.pending.values())
    assert eng.stats.errors.get("http.evicted", 0) > 0
