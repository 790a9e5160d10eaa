"""Spans spliced at C speed are the spans the merge algebra gives."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.model.intervals import Spans
from appliance.model.splice import splice

WIDTHS = st.sampled_from([(32, 0), (32, (1 << 32) - 64), (128, 1 << 100), (128, (1 << 128) - 64)])


def spans_of(width: int, values: set[int]) -> Spans:
    return Spans.of(width, ((v, v) for v in values))


@settings(max_examples=400, deadline=None)
@given(
    WIDTHS,
    st.sets(st.integers(0, 63), max_size=50),
    st.sets(st.integers(0, 63), max_size=30),
    st.sets(st.integers(0, 63), max_size=30),
)
def test_a_splice_is_the_difference_then_the_union(
    place: tuple[int, int], held: set[int], taken: set[int], brought: set[int]
) -> None:
    """Neighbours, runs, the first and last span, both ends of the range: a removed value
    splits a span, an added one joins spans, values go below and above all spans."""
    width, base = place
    old = {base + v for v in held}
    removed = sorted(base + v for v in taken & held)
    added = sorted(base + v for v in brought - held)
    result = splice(spans_of(width, old), removed, added)
    assert result is not None
    expected = spans_of(width, (old - set(removed)) | set(added))
    assert list(result) == list(expected)
    assert result.points == expected.points


@settings(max_examples=200, deadline=None)
@given(
    WIDTHS,
    st.sets(st.integers(0, 63), min_size=1, max_size=50),
    st.integers(0, 63),
    st.booleans(),
)
def test_a_value_not_held_cannot_be_removed_nor_a_held_one_added(
    place: tuple[int, int], held: set[int], value: int, remove: bool
) -> None:
    width, base = place
    old = spans_of(width, {base + v for v in held})
    if remove and value not in held:
        assert splice(old, [base + value], []) is None
    if not remove and value in held:
        assert splice(old, [], [base + value]) is None


def test_a_large_splice_keeps_the_old_words_between_the_changes() -> None:
    """100,000 spans, a tenth of them changed: the result equals the algebra's."""
    rng = random.Random(7)
    held = set(rng.sample(range(1 << 21), 100_000))
    removed = sorted(rng.sample(sorted(held), 5000))
    added = sorted(set(rng.sample(range(1 << 21), 6000)) - held)[:5000]
    old = spans_of(32, held)
    result = splice(old, removed, added)
    assert result is not None
    expected = spans_of(32, (held - set(removed)) | set(added))
    assert result.words() == expected.words()
