"""A large group's anchored rules found by one scan (match.AnchorIndex): the same rules, in
the same order, as looking for each rule's fast pattern in its place; and the same alerts
from the compiled core, its twin and the full path alone."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from appliance.inspect.engine import InspectionEngine
from appliance.inspect.eve import to_eve
from appliance.inspect.match import ANCHOR_INDEX_MIN, Group, Matcher
from appliance.inspect.prefilter import Prefilter, TwinPrefilter
from appliance.inspect.rules import Signature, Variables, parse_rules
from appliance.inspect.stream import placed
from tests.inspect.traffic import engine, frames, tcp_exchange

ALPHABET = b"abAB\x00\xff"


def anchored_rules(rng: random.Random, count: int) -> list[Signature]:
    """``count`` rules whose fast pattern must lie within the payload's first bytes: short
    patterns of a small alphabet (so that texts hold many), at offsets and depths of every
    kind, some case-insensitive, some sharing a pattern, and a sid shared by two."""
    lines = []
    patterns: list[bytes] = []
    for i in range(count):
        if patterns and rng.random() < 0.15:
            pattern = rng.choice(patterns)
        else:
            pattern = bytes(rng.choice(ALPHABET) for _ in range(rng.randint(1, 5)))
            patterns.append(pattern)
        offset = rng.choice((0, 0, 0, 1, 2, 5))
        depth = len(pattern) + rng.choice((0, 0, 1, 3, 10))
        nocase = " nocase;" if rng.random() < 0.3 else ""
        hexed = " ".join(f"{b:02x}" for b in pattern)
        sid = 100 + (i if i != count - 1 else 0)  # the last rule shares the first's sid
        lines.append(
            f'alert tcp any any -> any any (msg:"r{i}"; content:"|{hexed}|";{nocase} '
            f"offset:{offset}; depth:{depth}; sid:{sid};)"
        )
    sigs = list(parse_rules("\n".join(lines), "anchored.rules", Variables.from_networks(None)))
    assert len(sigs) == count
    return sigs


def text_with(rng: random.Random, sigs: list[Signature]) -> bytes:
    """Random bytes of the alphabet, some rules' patterns planted in (or near) their place."""
    text = bytearray(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))
    for sig in rng.sample(sigs, k=min(len(sigs), rng.randint(0, 6))):
        content = sig.contents[0]
        at = content.offset + rng.randint(-1, 3)
        pattern = content.pattern.upper() if rng.random() < 0.3 else content.pattern
        if at >= 0:
            text[at : at + len(pattern)] = pattern
    return bytes(text)


@pytest.mark.parametrize("prefilter", [Prefilter, TwinPrefilter])
def test_the_index_finds_the_rules_each_rule_s_own_look_finds(
    prefilter: type[Prefilter],
) -> None:
    rng = random.Random(5)
    for round_ in range(40):
        sigs = anchored_rules(rng, rng.randint(ANCHOR_INDEX_MIN, ANCHOR_INDEX_MIN + 60))
        matcher = Matcher(sigs)
        matcher._prefilter = prefilter
        indexed = matcher._group_of(tuple(range(len(sigs))))
        looked = Group(anchored=sigs)
        assert indexed.anchor_index is not None and indexed.anchored_probe is None
        assert looked.anchor_index is None
        found_any = 0
        for _ in range(60):
            text = text_with(rng, sigs)
            skip = {rng.choice(sigs).sid} if rng.random() < 0.3 else set()
            want = list(placed(looked, text, skip))
            got = list(placed(indexed, text, skip))
            assert got == want, (round_, text)
            start = rng.randint(0, 3)
            end = rng.randint(start, max(start, len(text) + 2))
            assert indexed.anchor_index.placed_in(text, start, end) == list(
                placed(looked, text[start:end])
            )
            found_any += bool(want)
        assert found_any > 10  # the texts do hold placed patterns


def test_groups_of_one_rule_set_share_one_scan_and_find_only_their_own() -> None:
    """A matcher's large groups hold only which of the rule set's anchored rules are
    theirs: each finds what looking for its own rules in turn finds, none of another's."""
    rng = random.Random(8)
    sigs = anchored_rules(rng, 3 * ANCHOR_INDEX_MIN)
    matcher = Matcher(sigs)
    everyone = tuple(range(len(sigs)))
    subsets = [everyone, everyone[::2], everyone[1::2] + everyone[:5], everyone[10:60]]
    groups = [matcher._group_of(tuple(sorted(set(members)))) for members in subsets]
    scans = {id(g.anchor_index._scan) for g in groups if g.anchor_index is not None}
    assert len(scans) == 1 and all(g.anchor_index is not None for g in groups)
    for group in groups:
        looked = Group(anchored=list(group.anchored))
        for _ in range(200):
            text = text_with(rng, sigs)
            assert list(placed(group, text)) == list(placed(looked, text)), text


def test_small_groups_and_the_exhaustive_reference_have_no_index() -> None:
    sigs = anchored_rules(random.Random(2), ANCHOR_INDEX_MIN + 5)
    few = sigs[: ANCHOR_INDEX_MIN - 1]
    assert Matcher(few)._group_of(tuple(range(len(few)))).anchor_index is None
    exhaustive = Matcher(sigs, exhaustive=True)
    layer_free = exhaustive._group_of(tuple(range(len(sigs))))
    assert layer_free.anchor_index is None
    matcher = Matcher(sigs)
    assert matcher._group_of(tuple(range(len(sigs)))).anchor_index is not None


# -- the engine: a group of many anchored rules ----------------------------------------------

MAGICS = [bytes([0xDE, 0xAD, i, 0x01]) for i in range(ANCHOR_INDEX_MIN + 8)]


def engine_rules() -> str:
    """One rule per magic (a beacon's first four bytes), some with a second content after
    it, and case-insensitive words a few bytes in: a group of more than ANCHOR_INDEX_MIN
    anchored rules for the clients' direction."""
    lines = []
    for i, magic in enumerate(MAGICS):
        hexed = " ".join(f"{b:02x}" for b in magic)
        more = f' content:"id={i}|3b|"; distance:0;' if i % 3 == 0 else ""
        lines.append(
            f'alert tcp $HOME_NET any -> any 7000 (msg:"beacon {i}"; flow:established,to_server; '
            f'content:"|{hexed}|"; depth:4;{more} sid:{5000 + i};)'
        )
    for i in range(6):
        lines.append(
            f'alert tcp $HOME_NET any -> any 7000 (msg:"word {i}"; flow:established,to_server; '
            f'content:"HELO{i}"; nocase; offset:2; depth:12; sid:{5100 + i};)'
        )
    return "\n".join(lines)


def session(client: str, cport: int, payloads: list[bytes]) -> list[Any]:
    """A TCP session to 192.0.2.1:7000, the client's payloads in order, each answered by an
    ACK."""
    return tcp_exchange(client, "192.0.2.1", cport, 7000, payloads)


def traffic(rng: random.Random) -> list[Any]:
    """Sessions whose first bytes are a magic (whole, split across segments, or one byte
    off its place), a word in its window or out of it, or nothing of the rules'."""
    packets: list[Any] = []
    for n in range(60):
        i = rng.randrange(len(MAGICS))
        magic = MAGICS[i]
        tail = f"id={i};".encode() if rng.random() < 0.5 else b"id=x;"
        kind = rng.choice(("whole", "split", "shifted", "word", "late word", "none"))
        if kind == "whole":
            payloads = [magic + tail + b"rest"]
        elif kind == "split":
            cut = rng.randint(1, 3)
            payloads = [magic[:cut], magic[cut:] + tail]
        elif kind == "shifted":
            payloads = [b"\x00" + magic + tail]
        elif kind == "word":
            payloads = [b"xx" + b"helo" + str(rng.randrange(6)).encode() + b" more"]
        elif kind == "late word":
            payloads = [b"x" * 20 + b"HELO1"]
        else:
            payloads = [b"nothing here", b"at all"]
        packets += session(f"10.1.{n // 200}.{n % 200 + 1}", 30000 + n, payloads)
    return packets


def run(eng: InspectionEngine, packets: list[Any]) -> list[dict[str, Any]]:
    return [to_eve(a) for ts, data, lt in frames(packets) for a in eng.process(ts, data, lt)]


def test_a_large_anchored_group_alerts_alike_on_every_path() -> None:
    packets = traffic(random.Random(3))
    compiled = engine(engine_rules())
    config = compiled.config
    twin = InspectionEngine(replace(config, compiled=False))
    twin.matcher._prefilter = TwinPrefilter
    full = InspectionEngine(replace(config, fast_path=False, compiled=False))
    reference = InspectionEngine(replace(config, fast_path=False, compiled=False))
    reference.matcher = Matcher(config.signatures, exhaustive=True)
    events = run(compiled, packets)
    assert run(twin, packets) == events
    assert run(full, packets) == events
    assert run(reference, packets) == events
    fired = {e["alert"]["signature_id"] for e in events}
    # whole and split magics alert, words in their window alert, the rest does not
    assert len(fired & {5000 + i for i in range(len(MAGICS))}) >= 10
    assert fired & {5100 + i for i in range(6)}
    groups = [g for g in compiled.matcher._shared.values() if g.anchor_index is not None]
    assert groups, "the clients' group is indexed"


def test_a_magic_one_byte_off_its_place_does_not_alert() -> None:
    rules = engine_rules()
    payload = b"\x00" + MAGICS[4] + b"id=x;"
    assert run(engine(rules), session("10.1.0.1", 30000, [payload])) == []
    events = run(engine(rules), session("10.1.0.1", 30000, [MAGICS[4] + b"id=x;"]))
    assert [e["alert"]["signature_id"] for e in events] == [5004]
