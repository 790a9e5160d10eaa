"""Following the kernel's element events instead of dumping a set (pure): a small change
worked out on the spans it touches equals the whole operation (hypothesis), events in the
kernel's form and packed as the table watch keeps them carried into a read-back, the
journal's gaps, what it drops once a read-back stands."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.adapters.nfelements import Encoder
from appliance.adapters.nftevents import (
    NFPROTO_INET,
    NFT_MSG_DELSETELEM,
    NFT_MSG_NEWSETELEM,
    Change,
    ElementList,
    ElementPacker,
    PackedElements,
    Transaction,
)
from appliance.model.elements import Elements
from appliance.model.intervals import Spans, join
from appliance.reconcile.readback import (
    EventJournal,
    SetShape,
    follow,
    joined,
    patched,
    shapes,
    without,
)
from appliance.reconcile.state import HUB_TAG, PROFILE_TAG, Element

V4 = SetShape("ipv4_addr", True, 32)
HASH = SetShape("ipv4_addr", False, 32)


def spans(pairs: list[tuple[int, int]], width: int = 32) -> Spans:
    out = Spans(width)
    for first, last in sorted(pairs):
        out.firsts.append(first)
        out.lasts.append(last)
    return out


def disjoint(draw: st.DrawFn, size: int, apart: bool) -> list[tuple[int, int]]:
    """Sorted spans of small values, disjoint (and not adjacent when ``apart``)."""
    cuts = sorted(draw(st.sets(st.integers(0, 4000), max_size=size)))
    pairs = []
    for a, b in zip(cuts[::2], cuts[1::2], strict=False):
        if not pairs or a > pairs[-1][1] + (1 if apart else 0):
            pairs.append((a, b))
    return pairs


@st.composite
def big_and_small(draw: st.DrawFn) -> tuple[Spans, Spans]:
    big = spans(disjoint(draw, 600, apart=True))
    small = spans(disjoint(draw, 6, apart=True))
    return big, small


@settings(max_examples=200, deadline=None)
@given(big_and_small())
def test_a_patch_equals_the_whole_operation(pair: tuple[Spans, Spans]) -> None:
    big, small = pair
    assert list(patched(big, small, Spans.union)) == list(big.union(small))
    assert list(patched(big, small, Spans.difference)) == list(big.difference(small))
    try:
        whole = list(join(big, small))
    except ValueError:
        with pytest.raises(ValueError):
            patched(big, small, join)
    else:
        assert list(patched(big, small, join)) == whole
    assert len(big) == len(list(big))  # not changed


@settings(max_examples=100, deadline=None)
@given(big_and_small(), st.booleans())
def test_joined_and_without_equal_the_elements_own(
    pair: tuple[Spans, Spans], interval: bool
) -> None:
    big, small = pair
    held = Elements("ipv4_addr", interval, big)
    other = Elements("ipv4_addr", interval, small)
    assert without(held, other) == held.minus(other)
    try:
        whole = held.join(other)
    except ValueError:
        with pytest.raises(ValueError):
            joined(held, other)
    else:
        assert joined(held, other) == whole


def _lists(kind: int, name: str, items: Spans, tag: str | None, interval: bool = True) -> list:
    """The element messages the kernel announces for ``items``: one element each (an
    interval's start and end apart), as they come."""
    encoder = Encoder(32, interval, tag)
    out = []
    for i in range(len(items)):
        out += [ElementList(kind, name, b) for b in encoder.element_lists(items, i, i + 1)]
    return out


def _transaction(generation: int, *lists: list[ElementList]) -> Transaction:
    return Transaction(200, generation, [], [e for part in lists for e in part])


def test_events_carry_deletes_and_additions_into_the_read_back() -> None:
    profile = spans(
        [(10 << 24 | 8 * i, 10 << 24 | 8 * i + (3 if i % 4 == 0 else 0)) for i in range(5000)]
    )
    gone = spans(
        [(profile.firsts[7], profile.lasts[7]), (profile.firsts[4000], profile.lasts[4000])]
    )
    stale = spans([(11 << 24, 11 << 24 | 3)])
    runtime = spans([(192 << 24 | 1, 192 << 24 | 1)])
    tagged = {"blocklist": {PROFILE_TAG: Elements("ipv4_addr", True, profile)}}
    elements: dict[str, dict[str, Element]] = {"blocklist": {}}
    events = [
        _transaction(
            8,
            _lists(NFT_MSG_DELSETELEM, "blocklist", gone, PROFILE_TAG),
            _lists(NFT_MSG_NEWSETELEM, "blocklist", stale, PROFILE_TAG),
        ),
        _transaction(9, _lists(NFT_MSG_NEWSETELEM, "blocklist", runtime, None)),
        _transaction(10, _lists(NFT_MSG_NEWSETELEM, "other", runtime, None)),
    ]
    shape = {"blocklist": V4}
    assert follow(events, ["blocklist"], shape, tagged, elements) == set()
    now = tagged["blocklist"][PROFILE_TAG].spans
    assert now is not None
    assert list(now) == list(join(profile.difference(gone), stale))
    assert list(elements["blocklist"]) == ["192.0.0.1"]
    assert elements["blocklist"]["192.0.0.1"] == Element("192.0.0.1", None)


def test_a_hash_sets_events_and_the_hubs_tag() -> None:
    held = spans([(5, 9), (20, 20)])
    tagged = {"s": {HUB_TAG: Elements("ipv4_addr", False, held)}}
    events = [
        _transaction(3, _lists(NFT_MSG_DELSETELEM, "s", spans([(7, 7)]), HUB_TAG, False)),
        _transaction(4, _lists(NFT_MSG_NEWSETELEM, "s", spans([(10, 11)]), HUB_TAG, False)),
    ]
    assert follow(events, ["s"], {"s": HASH}, tagged, {}) == set()
    assert list(tagged["s"][HUB_TAG].spans or []) == [(5, 6), (8, 11), (20, 20)]


@pytest.mark.parametrize(
    "lists",
    [
        _lists(NFT_MSG_DELSETELEM, "blocklist", spans([(100, 100)]), PROFILE_TAG),  # not there
        _lists(NFT_MSG_DELSETELEM, "blocklist", spans([(200, 200)]), None),  # not there
        _lists(NFT_MSG_NEWSETELEM, "blocklist", spans([(9, 12)]), PROFILE_TAG),  # overlaps
    ],
)
def test_events_that_do_not_fit_the_read_back_leave_the_set_to_a_dump(lists: list) -> None:
    tagged = {"blocklist": {PROFILE_TAG: Elements("ipv4_addr", True, spans([(10, 20)]))}}
    before = tagged["blocklist"][PROFILE_TAG]
    failed = follow([_transaction(2, lists)], ["blocklist"], {"blocklist": V4}, tagged, {})
    assert failed == {"blocklist"}
    assert before.spans is not None and list(before.spans) == [(10, 20)]


def test_only_address_and_port_sets_without_timeouts_are_followed() -> None:
    objects = [
        {"set": {"name": "a", "type": "ipv4_addr", "flags": ["interval"]}},
        {"set": {"name": "b", "type": "ipv6_addr"}},
        {"set": {"name": "c", "type": "ipv4_addr", "flags": ["timeout"]}},
        {"set": {"name": "d", "type": "ifname"}},
        {"chain": {"name": "input"}},
    ]
    assert shapes(objects) == {
        "a": SetShape("ipv4_addr", True, 32),
        "b": SetShape("ipv6_addr", False, 128),
    }
    timed = Encoder(32, False)
    listed = bytearray(next(timed.element_lists(spans([(1, 1)]), 0, 1)))
    # an element with a timeout (NFTA_SET_ELEM_TIMEOUT, 8 bytes) inside its nest
    listed[0:2] = (int.from_bytes(listed[0:2], "little") + 12).to_bytes(2, "little")
    listed += (12).to_bytes(2, "little") + (4).to_bytes(2, "little") + (1000).to_bytes(8, "big")
    event = Transaction(1, 5, [], [ElementList(NFT_MSG_NEWSETELEM, "a", bytes(listed))])
    assert follow([event], ["a"], {"a": HASH}, {}, {}) == {"a"}


def _recorded(journal: EventJournal, generation: int, known: bool = True) -> None:
    journal.record(Transaction(1, generation, [], [] if known else None))


def test_the_journal_gives_every_generation_or_nothing() -> None:
    journal = EventJournal(capacity=4)
    for generation in (5, 6, 7):
        _recorded(journal, generation)
    assert [t.generation for t in journal.between(4, 7) or []] == [5, 6, 7]
    assert journal.between(4, 8, wait=0) is None  # not announced
    assert journal.between(3, 7) is None  # before the first recorded
    _recorded(journal, 8, known=False)  # more elements than were kept
    assert journal.between(7, 8) is None
    journal.record(Transaction(1, 9, [Change(-1, NFPROTO_INET, "?")], []))  # after a loss
    assert journal.between(8, 9) is None
    for generation in (10, 11, 12, 13, 14):
        _recorded(journal, generation)
    assert journal.between(9, 14) is None  # the oldest dropped: 4 kept
    assert journal.between(10, 14) is not None
    journal.lost()
    assert journal.between(13, 14) is None


def test_a_read_back_waits_for_the_events_of_a_generation_it_has_read() -> None:
    journal = EventJournal()
    journal.set_live(True)
    done = threading.Event()

    def watch() -> None:  # the table watch's thread
        _recorded(journal, 1)
        done.wait(5)
        _recorded(journal, 2)

    writer = threading.Thread(target=watch)
    writer.start()
    done.set()
    try:
        assert [t.generation for t in journal.between(0, 2, wait=10) or []] == [1, 2]
    finally:
        writer.join()
    journal.set_live(False)
    assert journal.between(1, 3, wait=10) is None  # not live: no wait


def test_journal_budget_drops_the_oldest() -> None:
    journal = EventJournal(budget=100)
    for generation in (1, 2, 3):
        journal.record(
            Transaction(1, generation, [], [ElementList(NFT_MSG_NEWSETELEM, "s", b"x" * 40)])
        )
    assert journal.between(0, 3) is None
    assert journal.between(1, 3) is not None


def _packed(lists: list[ElementList]) -> list[PackedElements]:
    """``lists`` as the table watch keeps them: each run of one kind and set packed."""
    runs: list[PackedElements] = []
    packer, key = ElementPacker(), None
    for item in [*lists, None]:
        if item is None or (item.kind, item.set) != key:
            if key is not None:
                runs.append(packer.packed(*key))
            if item is None:
                break
            packer, key = ElementPacker(), (item.kind, item.set)
        assert packer.add(item.elements, 0, len(item.elements))
    return runs


@pytest.mark.parametrize("interval", [True, False])
def test_packed_events_are_followed_as_the_kernels_own_bytes(interval: bool) -> None:
    shape = V4 if interval else HASH
    wide = 3 if interval else 0
    held = spans([(10 << 24 | 8 * i, 10 << 24 | 8 * i + wide) for i in range(300)])
    gone = spans([(held.firsts[7], held.lasts[7]), (held.firsts[200], held.lasts[200])])
    fresh = spans([(11 << 24, 11 << 24 | wide)])
    runtime = spans([(192 << 24 | 1, 192 << 24 | 1)])
    lists = [
        *_lists(NFT_MSG_DELSETELEM, "blocklist", gone, PROFILE_TAG, interval),
        *_lists(NFT_MSG_NEWSETELEM, "blocklist", fresh, PROFILE_TAG, interval),
        *_lists(NFT_MSG_NEWSETELEM, "blocklist", runtime, "blocked", interval),
    ]
    results = []
    for events in (lists, _packed(lists)):
        tagged = {"blocklist": {PROFILE_TAG: Elements("ipv4_addr", interval, held)}}
        elements: dict[str, dict[str, Element]] = {}
        transaction = Transaction(200, 3, [], list(events))
        assert follow([transaction], ["blocklist"], {"blocklist": shape}, tagged, elements) == set()
        now = tagged["blocklist"][PROFILE_TAG].spans
        assert now is not None
        results.append((list(now), elements))
    assert results[0] == results[1]
    assert results[1][1]["blocklist"] == {"192.0.0.1": Element("192.0.0.1", "blocked")}
    packed = _packed(lists)  # the deletes, then the additions whatever their tag
    assert [e.kind for e in packed] == [NFT_MSG_DELSETELEM, NFT_MSG_NEWSETELEM]
    assert sum(e.nbytes() for e in packed) * 5 < sum(e.nbytes() for e in lists)


def test_packed_events_with_a_timeout_or_other_keys_leave_the_set_to_a_dump() -> None:
    timed = bytearray(next(Encoder(32, False).element_lists(spans([(1, 1)]), 0, 1)))
    timed[0:2] = (int.from_bytes(timed[0:2], "little") + 12).to_bytes(2, "little")
    timed += (12).to_bytes(2, "little") + (4).to_bytes(2, "little") + (1000).to_bytes(8, "big")
    v6 = Encoder(128, False).element_lists(spans([(1, 1)], 128), 0, 1)
    wide = [ElementList(NFT_MSG_NEWSETELEM, "a", b) for b in v6]  # 16-byte keys
    for lists in ([ElementList(NFT_MSG_NEWSETELEM, "a", bytes(timed))], wide):
        event = Transaction(1, 5, [], list(_packed(lists)))
        assert follow([event], ["a"], {"a": HASH}, {}, {}) == {"a"}


def test_a_settled_generation_keeps_no_elements() -> None:
    journal = EventJournal()
    listed = [ElementList(NFT_MSG_NEWSETELEM, "s", b"x" * 40)]
    for generation in (1, 2, 3):
        journal.record(Transaction(1, generation, [], list(listed)))
    assert journal.kept == 120 and journal.wanted(2)
    journal.settle(2)  # a read-back stands at 2: the next ones start there or later
    assert journal.kept == 40 and not journal.wanted(2) and journal.wanted(3)
    assert journal.between(1, 3) is None  # 2's elements are gone
    assert [t.generation for t in journal.between(2, 3) or []] == [3]
    journal.settle(1)  # never back
    assert journal.floor == 2
    journal.record(Transaction(1, 2, [], list(listed)))  # announced late: not kept
    assert journal.kept == 40 and journal.records[2].elements is None
    journal.record(Transaction(1, 4, [], list(listed)))
    assert [t.generation for t in journal.between(2, 4) or []] == [3, 4]
