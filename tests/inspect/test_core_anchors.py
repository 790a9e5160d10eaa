"""The compiled core's look at a large group's anchored rules (``anchor_placed``) and at a
stream's head (``head_clear``) against their twins ``AnchorIndex.placed`` and
``stream.head_clear``: the same rules in the same order, the same answer, the same mark
left on the stream."""

from __future__ import annotations

import random
from typing import Any

import pytest

from appliance.inspect import core, match, stream
from appliance.inspect.match import ANCHOR_INDEX_MIN, Group, Matcher
from appliance.inspect.rules import Signature, Variables, parse_rules
from appliance.inspect.stream import StreamDirection
from tests.inspect.test_match_anchors import anchored_rules, text_with

pytestmark = pytest.mark.skipif(
    not core.available() or core.switched_off(),
    reason="the compiled fast path is not built (setup.py) or is switched off",
)


def compiled() -> Any:
    from appliance.inspect import _fastpath

    return _fastpath


def unbounded_rules(count: int) -> list[Signature]:
    """Anchored rules with a second content anywhere in the payload: their group's reach
    over a stream is unbounded (``anchored_reach`` -1)."""
    lines = [
        f'alert tcp any any -> any any (msg:"u{i}"; content:"|61 {i % 4:02x}|"; '
        f'depth:{2 + i % 3}; content:"z"; sid:{900 + i};)'
        for i in range(count)
    ]
    return list(parse_rules("\n".join(lines), "unbounded.rules", Variables.from_networks(None)))


def test_the_limit_is_the_twin_s() -> None:
    assert compiled().ANCHOR_LIMIT == match.ANCHOR_LIMIT


def test_placed_as_the_index_places() -> None:
    fast = compiled()
    rng = random.Random(11)
    found_any = 0
    for round_ in range(30):
        sigs = anchored_rules(rng, rng.randint(ANCHOR_INDEX_MIN, ANCHOR_INDEX_MIN + 60))
        matcher = Matcher(sigs)
        everyone = tuple(range(len(sigs)))
        members = everyone if round_ % 2 else tuple(sorted(rng.sample(everyone, k=len(sigs) // 2)))
        # a group of all, or of half (whose scan also finds the others' patterns)
        group = matcher._group_of(members if len(members) >= ANCHOR_INDEX_MIN else everyone)
        index = group.anchor_index
        assert index is not None
        if index._scan.prefilter.patterns is None:
            # the scanner is made by the first scan: until then, the twin answers
            assert fast.anchor_placed(index, b"ab", None) is None
            index.placed(b"")
        for _ in range(80):
            text = text_with(rng, sigs)
            if rng.random() < 0.2:
                text += bytes(rng.choice(b"abAB") for _ in range(rng.randint(0, 80)))
            skip = set(rng.sample([s.sid for s in sigs], k=rng.randint(1, 4)))
            skip = skip if rng.random() < 0.4 else set()
            want = index.placed(text, skip)
            got = fast.anchor_placed(index, text, skip or None)
            assert got == want, (round_, text, skip)
            assert [id(s) for s in got] == [id(s) for s in want]
            found_any += bool(want)
    assert found_any > 300  # the texts do place rules


def streams_alike(rng: random.Random, sigs: list[Signature]) -> tuple[Any, Any]:
    """Two streams in the same state: bytes held (1 to 100), how far they were scanned,
    the sids reported, and whether their head was found clear of another group."""
    data = text_with(rng, sigs) or b"a"
    data = (data + bytes(rng.choice(b"abAB\x00") for _ in range(rng.randint(0, 60))))[:100]
    scanned = rng.choice((0, 1, len(data), rng.randint(0, 120)))
    reported = set(rng.sample([s.sid for s in sigs], k=rng.randint(0, 5)))
    twins = []
    for _ in range(2):
        one = StreamDirection(1000)
        one.data += data
        one.scanned = scanned
        one.reported = set(reported)
        twins.append(one)
    return twins[0], twins[1]


@pytest.mark.parametrize("kind", ["indexed", "small", "unbounded"])
def test_a_stream_s_head_is_clear_as_the_twin_finds(kind: str) -> None:
    fast = compiled()
    rng = random.Random({"indexed": 3, "small": 4, "unbounded": 5}[kind])
    answers = {True: 0, False: 0}
    for round_ in range(20):
        if kind == "unbounded":
            sigs = unbounded_rules(ANCHOR_INDEX_MIN + 4)
        else:
            count = ANCHOR_INDEX_MIN + 20 if kind == "indexed" else ANCHOR_INDEX_MIN // 2
            sigs = anchored_rules(rng, count)
        matcher = Matcher(sigs)
        group = matcher._group_of(tuple(range(len(sigs))))
        assert (group.anchor_index is not None) == (kind != "small")
        assert (group.anchored_reach < 0) == (kind == "unbounded")
        if group.anchor_index is not None:
            group.anchor_index.placed(b"")  # (its scanner made, as by the first packet)
        other = Group(anchored=sigs[:3])
        for _ in range(60):
            mine, theirs = streams_alike(rng, sigs)
            cleared = rng.choice((None, group, other))
            mine.clear = theirs.clear = cleared
            payload = text_with(rng, sigs)[: rng.randint(0, 70)]
            want = stream.head_clear(group, theirs, payload)
            got = fast.head_clear(group, mine, payload)
            assert got is want, (round_, bytes(mine.data), payload, mine.reported)
            assert mine.clear is theirs.clear
            answers[want] += 1
    assert answers[True] > 50 and answers[False] > 50


def test_a_stream_without_bytes_or_a_group_not_of_its_shape_is_the_twin_s() -> None:
    fast = compiled()
    sigs = anchored_rules(random.Random(9), ANCHOR_INDEX_MIN // 2)
    group = Matcher(sigs)._group_of(tuple(range(len(sigs))))
    assert fast.head_clear(group, StreamDirection(0), b"abc") is None
    held = StreamDirection(0)
    held.data += b"ab"
    held.reported = frozenset()  # type: ignore[assignment]
    assert fast.head_clear(group, held, b"abc") is None
    with pytest.raises(TypeError):
        fast.anchor_placed(None, "text", None)
