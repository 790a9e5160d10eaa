"""Packed spans against a reference model: a set of integers (hypothesis)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.model.intervals import (
    Collector,
    Spans,
    delta,
    exact_delta,
    join,
    span_text,
)

# Small universes, so that the reference (every value covered) stays small; the IPv6 one
# sits across the 64-bit boundary of the packed halves.
UNIVERSES = {32: (0, 300), 16: (65_300, 65_535), 128: ((1 << 64) - 150, (1 << 64) + 150)}


def pairs(width: int) -> st.SearchStrategy[list[tuple[int, int]]]:
    low, high = UNIVERSES[width]
    pair = st.tuples(st.integers(low, high), st.integers(0, 40)).map(
        lambda p: (p[0], min(p[0] + p[1], high))
    )
    return st.lists(pair, max_size=25)


def model(items: list[tuple[int, int]]) -> set[int]:
    return {v for first, last in items for v in range(first, last + 1)}


def covered(spans: Spans) -> set[int]:
    return model(list(spans))


def well_formed(spans: Spans) -> bool:
    """Sorted, each span non-empty, neither overlapping nor adjacent to the next."""
    items = list(spans)
    return all(a <= b for a, b in items) and all(
        items[i][1] + 1 < items[i + 1][0] for i in range(len(items) - 1)
    )


widths = st.sampled_from(sorted(UNIVERSES))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_normalized_spans_cover_exactly_the_input_merged(data: st.DataObject) -> None:
    width = data.draw(widths)
    items = data.draw(pairs(width))
    spans = Spans.of(width, items)
    assert well_formed(spans)
    assert covered(spans) == model(items)
    assert spans.count() == len(model(items))
    for value in range(*UNIVERSES[width])[::7]:
        assert spans.contains(value) == (value in model(items))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_union_difference_and_delta_match_the_model(data: st.DataObject) -> None:
    width = data.draw(widths)
    a_items, b_items = data.draw(pairs(width)), data.draw(pairs(width))
    a, b = Spans.of(width, a_items), Spans.of(width, b_items)
    ref_a, ref_b = model(a_items), model(b_items)
    assert covered(a.union(b)) == ref_a | ref_b and well_formed(a.union(b))
    assert covered(a.difference(b)) == ref_a - ref_b and well_formed(a.difference(b))
    added, removed = delta(a, b)
    assert covered(added) == ref_b - ref_a
    assert covered(removed) == ref_a - ref_b
    low, high = UNIVERSES[width]
    first = data.draw(st.integers(low, high))
    last = data.draw(st.integers(first, high))
    window = set(range(first, last + 1))
    assert model(a.overlapping(first, last)) & window == ref_a & window
    assert all(model([s]) & window for s in a.overlapping(first, last))


def test_packed_size_per_span() -> None:
    v4 = Spans.of(32, ((i * 4, i * 4 + 1) for i in range(1000)))
    v6 = Spans.of(128, ((i << 70, (i << 70) + 1) for i in range(1000)))
    assert v4.nbytes() == 8 * 1000
    assert v6.nbytes() == 32 * 1000


def test_bad_spans_are_refused() -> None:
    with pytest.raises(ValueError, match="bad span"):
        Spans.of(32, [(5, 4)])
    with pytest.raises(ValueError, match="bad span"):
        Spans.of(32, [(0, 1 << 32)])
    with pytest.raises(ValueError, match="bits"):
        Spans.of(32, []).union(Spans.of(128, []))


@given(st.integers(0, (1 << 32) - 1), st.integers(0, 5000))
def test_span_text_names_the_same_addresses(first: int, size: int) -> None:
    last = min(first + size, (1 << 32) - 1)
    text = span_text("ipv4_addr", first, last)
    if "-" in text:
        low, high = (int(ipaddress.IPv4Address(t)) for t in text.split("-"))
    else:
        net = ipaddress.IPv4Network(text)
        low, high = int(net.network_address), int(net.broadcast_address)
    assert (low, high) == (first, last)


def test_span_text_of_ports_and_ipv6() -> None:
    assert span_text("inet_service", 22, 22) == "22"
    assert span_text("inet_service", 5000, 5010) == "5000-5010"
    assert span_text("ipv6_addr", 1 << 64, (1 << 64) + 255) == "0:0:0:1::/120"


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_collected_pairs_in_any_order_give_the_same_spans(data: st.DataObject) -> None:
    width = data.draw(widths)
    items = data.draw(pairs(width))
    shuffled = data.draw(st.permutations(items))
    for order in (items, sorted(items), shuffled):
        collector = Collector(width)
        for first, last in order:
            collector.add(first, last)
        spans = collector.finish()
        assert well_formed(spans)
        assert covered(spans) == model(items)


def test_unordered_input_longer_than_a_run_is_sorted_across_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("appliance.model.intervals.RUN", 7)
    values = [(i * 37) % 101 * 3 for i in range(101)]
    spans = Spans.of(32, ((v, v) for v in values))
    assert list(spans) == [(v, v) for v in sorted(values)]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_exact_delta_turns_old_elements_into_new(data: st.DataObject) -> None:
    width = data.draw(widths)
    old = Spans.of(width, data.draw(pairs(width)))
    new = Spans.of(width, data.draw(pairs(width)))
    add, remove = exact_delta(old, new)
    kept = [span for span in old if span not in set(remove)]
    assert set(remove) <= set(old) and not set(add) & set(old)
    assert sorted(kept + list(add)) == list(new)


def test_join_keeps_adjacent_spans_apart_and_refuses_overlaps() -> None:
    a, b = Spans.of(32, [(0, 3), (10, 12)]), Spans.of(32, [(4, 9)])
    assert list(join(a, b)) == [(0, 3), (4, 9), (10, 12)]
    with pytest.raises(ValueError, match="overlap"):
        join(a, Spans.of(32, [(3, 4)]))


def test_digest_follows_the_bounds() -> None:
    a = Spans.of(128, [(1, 2), (1 << 70, (1 << 70) + 5)])
    b = Spans.of(128, [((1 << 70), (1 << 70) + 5), (1, 2)])
    assert a.digest() == b.digest()
    assert a.digest() != Spans.of(128, [(1, 2)]).digest()
    assert Spans.of(32, [(1, 2)]).digest() != Spans.of(16, [(1, 2)]).digest()


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_unordered_input_merged_in_parts_across_many_runs(data: st.DataObject) -> None:
    from unittest import mock

    from appliance.model import intervals

    width = data.draw(widths)
    items = data.draw(pairs(width))
    shuffled = data.draw(st.permutations(items))
    run, part, sample = data.draw(st.sampled_from([(1, 1, 1), (3, 4, 1), (7, 5, 2), (2, 50, 3)]))
    with (
        mock.patch.object(intervals, "RUN", run),
        mock.patch.object(intervals, "PART", part),
        mock.patch.object(intervals, "SAMPLE", sample),
    ):
        collector = Collector(width)
        for first, last in shuffled:
            collector.add(first, last)
        spans = collector.finish()
    assert well_formed(spans)
    assert covered(spans) == model(items)


def singles(width: int) -> st.SearchStrategy[list[tuple[int, int]]]:
    """Mostly single values (a list of hosts), now and then a wider span."""
    low, high = UNIVERSES[width]
    value = st.integers(low, high)
    pair = st.one_of(
        value.map(lambda v: (v, v)),
        value.map(lambda v: (v, v)),
        value.map(lambda v: (v, v)),
        st.tuples(value, st.integers(1, 5)).map(lambda p: (p[0], min(p[0] + p[1], high))),
    )
    return st.lists(pair, max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_single_values_are_held_once_and_read_as_spans(data: st.DataObject) -> None:
    from unittest import mock

    from appliance.model import intervals

    width = data.draw(widths)
    items = data.draw(singles(width))
    order = data.draw(st.sampled_from(["given", "sorted", "shuffled"]))
    if order == "sorted":
        items = sorted(items)
    elif order == "shuffled":
        items = data.draw(st.permutations(items))
    run, part = data.draw(st.sampled_from([(1 << 15, 1 << 16), (3, 4), (1, 1)]))
    with mock.patch.object(intervals, "RUN", run), mock.patch.object(intervals, "PART", part):
        spans = Spans.of(width, items)
    assert well_formed(spans) and covered(spans) == model(items)
    assert spans.points == all(first == last for first, last in spans)
    reference = Spans(width)  # the same spans with both bounds held apart
    for first, last in spans:
        reference.firsts.append(first)
        reference.lasts.append(last)
    assert spans == reference and spans.digest() == reference.digest()
    single = 16 if width == 128 else 4
    assert spans.nbytes() == len(spans) * single * (1 if spans.points else 2)
    assert Spans.from_words(width, [a[:] for a in reference.words()]).points == spans.points
    other = Spans.of(width, data.draw(singles(width)))
    ref_a, ref_b = covered(spans), covered(other)
    assert covered(spans.union(other)) == ref_a | ref_b and well_formed(spans.union(other))
    assert covered(spans.difference(other)) == ref_a - ref_b
    add, remove = exact_delta(other, spans)
    kept = [span for span in other if span not in set(remove)]
    assert sorted(kept + list(add)) == list(spans)
    for result in (spans.union(other), spans.difference(other), add, remove):
        assert result.points == all(first == last for first, last in result)
    assert list(spans) == list(reference)  # nothing above changed the operands
    assert list(other) == list(Spans.of(width, list(other)))


def test_hosts_cost_one_word_array() -> None:
    v4 = Spans.of(32, ((i * 4, i * 4) for i in range(1000)))
    v6 = Spans.of(128, ((i << 70, i << 70) for i in reversed(range(1000))))
    assert v4.points and v4.nbytes() == 4 * 1000
    assert v6.points and v6.nbytes() == 16 * 1000
    grown = Spans.of(32, [*v4, (9000, 9001)])  # a span of two values: both bounds held
    assert not grown.points and grown.nbytes() == 8 * 1001
    adjacent = Spans.of(32, [(4, 4), (5, 5), (9, 9)])  # adjacent values merge into one span
    assert list(adjacent) == [(4, 5), (9, 9)] and not adjacent.points


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_parked_spans_read_in_order_and_unpark_when_indexed(data: st.DataObject) -> None:
    from unittest import mock

    from appliance.model import intervals

    width = data.draw(widths)
    items = data.draw(st.one_of(singles(width), pairs(width)))
    other = Spans.of(width, data.draw(singles(width)))
    stream = data.draw(st.sampled_from([1, 3, 1 << 16]))
    feed = data.draw(st.sampled_from([1, 7, 1 << 16]))  # words cut between the decoder's outputs
    with mock.patch.object(intervals, "STREAM", stream), mock.patch.object(intervals, "FEED", feed):
        spans = Spans.of(width, items)
        expected, points = list(spans), spans.points
        union, difference = list(spans.union(other)), list(spans.difference(other))
        add, remove = exact_delta(spans, other)
        spans.park()
        assert spans.parked and len(spans) == len(expected) and spans.points == points
        assert list(spans) == expected and spans.count() == len(model(items))
        assert list(spans.union(other)) == union and list(spans.difference(other)) == difference
        assert list(other.difference(spans)) == list(other.difference(Spans.of(width, items)))
        assert tuple(map(list, exact_delta(spans, other))) == (list(add), list(remove))
        assert spans.parked  # all of that read the spans in order
        assert spans.contains(expected[0][0]) if expected else not spans.contains(0)
        assert not spans.parked and list(spans) == expected and spans.points == points


def test_a_parked_list_of_hosts_takes_a_few_bytes_a_span() -> None:
    v4 = Spans.of(32, ((i * 7, i * 7) for i in range(100_000)))
    v6 = Spans.of(128, (((0x20010DB8 << 96) | (i << 64) | 1,) * 2 for i in range(100_000)))
    for spans in (v4, v6):
        before = spans.nbytes()
        spans.park()
        assert spans.nbytes() < before / 8
