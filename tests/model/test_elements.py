"""Packed elements read and compare as the sets of element texts they stand for
(hypothesis, against Python sets of texts)."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.model.elements import Elements

HOSTS = st.lists(st.integers(0, 300), max_size=30)


def texts(values: list[int]) -> list[str]:
    return [str(ipaddress.IPv4Address(0x0A000000 + v)) for v in values]


@settings(max_examples=200, deadline=None)
@given(HOSTS, HOSTS)
def test_hash_set_elements_behave_as_sets_of_texts(a: list[int], b: list[int]) -> None:
    x, y = Elements.of("ipv4_addr", False, texts(a)), Elements.of("ipv4_addr", False, texts(b))
    sx, sy = set(texts(a)), set(texts(b))
    assert sorted(x) == sorted(sx) and len(x) == len(sx) and bool(x) == bool(sx)
    assert set(x.minus(y)) == sx - sy
    assert set(x.common(y)) == sx & sy
    assert set(x.join(y)) == sx | sy
    assert all(t in x for t in sx) and not any(t in x for t in sy - sx)
    assert (x == Elements.of("ipv4_addr", False, sorted(sx))) and hash(x) == hash(
        Elements.of("ipv4_addr", False, sorted(sx))
    )
    assert x.first(3) == sorted(sx, key=lambda t: int(ipaddress.IPv4Address(t)))[:3]


SPANS = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 12)), max_size=15)


def range_texts(spans: list[tuple[int, int]]) -> list[str]:
    base = 0x0A000000
    return [
        f"{ipaddress.IPv4Address(base + s)}-{ipaddress.IPv4Address(base + s + n)}"
        if n
        else str(ipaddress.IPv4Address(base + s))
        for s, n in spans
    ]


@settings(max_examples=200, deadline=None)
@given(SPANS, SPANS)
def test_interval_elements_are_whole_normalized_ranges(
    a: list[tuple[int, int]], b: list[tuple[int, int]]
) -> None:
    x = Elements.of("ipv4_addr", True, range_texts(a))
    y = Elements.of("ipv4_addr", True, range_texts(b))
    covered = {v for s, n in a for v in range(s, s + n + 1)}
    values = {v - 0x0A000000 for first, last in x.bounds() for v in range(first, last + 1)}
    assert values == covered  # overlapping and adjacent ranges merged, nothing lost
    bounds_x, bounds_y = set(x.bounds()), set(y.bounds())
    assert set(x.minus(y).bounds()) == bounds_x - bounds_y  # whole elements, as the kernel
    assert set(x.common(y).bounds()) == bounds_x & bounds_y
    for text in x:
        assert text in x and Elements.of("ipv4_addr", True, [text]).spans is not None
