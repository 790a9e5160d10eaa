"""The compiled walk over a TLS flow's records (``tls_walk``, what the compiled fast path reads
of the segments it takes) against its twin ``TlsRecords.walk``: the same answer and the same
state after every segment, whatever the records, their cuts, resends, gaps and junk."""

from __future__ import annotations

import random
from typing import Any

import pytest

from appliance.inspect import core, tlsrecords
from appliance.inspect.tlsrecords import WALK_SHAPE, TlsRecords

from .test_tlsinfo import _record
from .traffic import client_hello

pytestmark = pytest.mark.skipif(
    not core.available() or core.switched_off(),
    reason="the compiled fast path is not built (setup.py) or is switched off",
)

HELLO = client_hello("walk.example")
IP = 14  # where a frame's IPv4 header starts; its TCP header follows at IP + 20


class _Flow:
    def __init__(self, key: bytes) -> None:
        self.key = key


def frame(seq: int, payload: bytes) -> bytes:
    """A frame whose TCP sequence number is ``seq``, its payload after 54 bytes."""
    return bytes(IP + 24) + seq.to_bytes(4, "big") + bytes(12) + payload


def view(records: TlsRecords) -> list[Any]:
    """Everything a walk may change: each flow followed, in order, and its state."""
    out = []
    for key, state in records.followed.items():
        directions = [
            None if d is None else (d.start, d.next, d.until, d.carry) for d in state.directions
        ]
        out.append((key, state.encrypted, state.changed, state.server_handshake, directions))
    return out


def records_stream(rng: random.Random, to_server: bool) -> bytes:
    """One side's records: handshakes, cipher specs, alerts, application data, now and then
    a long record, junk, or a header whose version is not TLS's."""
    out = HELLO if to_server else b""
    for _ in range(rng.randrange(0, 9)):
        kind = rng.choice((20, 21, 22, 22, 23, 24))
        body = bytes(rng.randrange(0, 40)) if rng.random() < 0.8 else bytes(rng.randrange(1500))
        piece = _record(kind, body)
        odd = rng.random()
        if odd < 0.04:
            piece = b"\x00junk" + piece
        elif odd < 0.07:
            piece = bytes((kind, 2)) + piece[2:]  # SSL 2's version byte
        out += piece
    return out


def segments(rng: random.Random, base: int, data: bytes) -> list[tuple[int, bytes]]:
    """``data`` cut anywhere (headers too), from sequence number ``base`` (wrapping past
    2^32 now and then); now and then a segment resent, swapped with the next, overlapping,
    or lost."""
    if not data:
        return []
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(0, 12))))
    out = [
        ((base + a) % 2**32, data[a:b]) for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)
    ]
    changed: list[tuple[int, bytes]] = []
    for i, seg in enumerate(out):
        fate = rng.random()
        if fate < 0.05 and i:
            continue  # lost
        changed.append(seg)
        if fate < 0.12:
            changed.append(seg)  # resent
        elif fate < 0.15 and len(seg[1]) > 2:
            changed.append(((seg[0] + 1) % 2**32, seg[1][1:]))  # overlapping
    if rng.random() < 0.1 and len(changed) > 2:
        i = rng.randrange(1, len(changed) - 1)
        changed[i], changed[i + 1] = changed[i + 1], changed[i]
    return changed


def walk_alike(rng: random.Random, shape: tuple[type, type, int], flows: int) -> int:
    """Sessions on ``flows`` flows, their segments interleaved, each walked by the twin and
    by the compiled walk on two tables of their own; how many flows turned encrypted."""
    compiled = core.tls_walk_function()
    assert compiled is not None
    twin, mine = TlsRecords(), TlsRecords()
    keys = [bytes([i]) * 12 for i in range(flows)]
    twin_flows = {key: _Flow(key) for key in keys}
    my_flows = {key: _Flow(key) for key in keys}
    queues: list[list[tuple[bytes, bool, int, bytes]]] = []
    for key in keys:
        client_base = rng.randrange(2**32)
        server_base = rng.randrange(2**32) if rng.random() < 0.9 else 2**32 - 3
        twin.begin(twin_flows[key], client_base, HELLO)
        mine.begin(my_flows[key], client_base, HELLO)
        client = records_stream(rng, True)[len(HELLO) :]
        server = records_stream(rng, False)
        queues.append(
            [(key, True, s, d) for s, d in segments(rng, client_base + len(HELLO), client)]
        )
        queues.append([(key, False, s, d) for s, d in segments(rng, server_base, server)])
    assert view(twin) == view(mine)
    steps = []  # every direction's segments in its order, the directions interleaved
    queues = [q for q in queues if q]
    while queues:
        queue = rng.choice(queues)
        steps.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    encrypted = 0
    for key, to_server, seq, payload in steps:
        data = frame(seq, payload)
        want = twin.walk(twin_flows[key], to_server, data, IP, 54, len(data))
        got = compiled(shape, mine.followed, my_flows[key], to_server, data, IP, 54, len(data))
        assert got is want, (key, to_server, seq, payload[:12])
        assert view(mine) == view(twin)
        encrypted += want
    return encrypted


@pytest.mark.parametrize("seed", range(8))
def test_random_records_walked_alike(seed: int) -> None:
    rng = random.Random(seed)
    encrypted = sum(walk_alike(rng, WALK_SHAPE, 6) for _ in range(40))
    assert encrypted > 20


def test_the_bound_on_the_bytes_followed_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a small RECORDS_MAX, most directions end on the bound, in both walks."""
    monkeypatch.setattr(tlsrecords, "RECORDS_MAX", 300)
    shape = (WALK_SHAPE[0], WALK_SHAPE[1], 300)
    rng = random.Random(11)
    for _ in range(60):
        walk_alike(rng, shape, 4)
    # a client's bytes followed reaching the bound by one byte short, exactly, one past
    compiled = core.tls_walk_function()
    assert compiled is not None
    for extra in (-1, 0, 1):
        twin, mine = TlsRecords(), TlsRecords()
        flows = (_Flow(b"x" * 12), _Flow(b"x" * 12))
        twin.begin(flows[0], 7, HELLO)
        mine.begin(flows[1], 7, HELLO)
        data = frame(7 + len(HELLO), _record(22, bytes(300 - len(HELLO) - 5 + extra)))
        want = twin.walk(flows[0], True, data, IP, 54, len(data))
        got = compiled(shape, mine.followed, flows[1], True, data, IP, 54, len(data))
        assert got is want is False and view(mine) == view(twin)
        assert (twin.followed[b"x" * 12].directions[1] is None) == (extra >= 0)


def test_a_state_of_another_shape_is_left_to_the_twin() -> None:
    compiled = core.tls_walk_function()
    assert compiled is not None
    flow, other = _Flow(b"k" * 12), _Flow(b"k" * 12)
    records = TlsRecords()
    records.begin(flow, 100, HELLO)
    data = frame(100 + len(HELLO), _record(23, b"data"))
    before = view(records)
    # another flow's state under the same key, an encrypted one: nothing to read
    assert compiled(WALK_SHAPE, records.followed, other, True, data, IP, 54, len(data)) is False
    records.followed[flow.key].encrypted = True
    assert compiled(WALK_SHAPE, records.followed, flow, True, data, IP, 54, len(data)) is False
    records.followed[flow.key].encrypted = False
    assert view(records) == before
    # a state, or a direction, of another class; a direction's field of another type
    records.followed[flow.key].directions[1].carry = bytearray()  # type: ignore[assignment]
    assert compiled(WALK_SHAPE, records.followed, flow, True, data, IP, 54, len(data)) is None
    records.followed[flow.key].directions[1].carry = b""
    records.followed[flow.key].directions[1] = object()  # type: ignore[call-overload]
    assert compiled(WALK_SHAPE, records.followed, flow, True, data, IP, 54, len(data)) is None
    records.followed[flow.key] = object()  # type: ignore[assignment]
    assert compiled(WALK_SHAPE, records.followed, flow, True, data, IP, 54, len(data)) is None
    with pytest.raises((TypeError, AttributeError)):  # classes without those slots
        compiled((object, object, 1), {}, flow, True, data, IP, 54, len(data))
    with pytest.raises(TypeError):
        compiled(WALK_SHAPE[:2], {}, flow, True, data, IP, 54, len(data))
    with pytest.raises(ValueError):
        compiled(WALK_SHAPE, {}, flow, True, data, IP, 54, len(data) + 1)
