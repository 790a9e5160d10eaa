"""The compiled splice (``_splice.c``) gives the bytes its Python twin (splice.py) gives, and
refuses malformed input with an exception, never a crash."""

from __future__ import annotations

import os
import random
import socket
from array import array
from functools import partial
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.model import elements_fast, splice
from appliance.model.intervals import MASK64, NARROW, Spans
from tests.compiled_build import build_with_gcc

SOURCE = Path(splice.__file__).with_name("_splice.c")


def core() -> ModuleType:
    found = splice.compiled()
    if found is None:
        pytest.skip("the compiled splice is not built (setup.py) or is switched off")
    return found


# where a test's values sit: both ends of 32 and 128 bits, and the middle of 128
PLACES = st.sampled_from([(32, 0), (32, (1 << 32) - 256), (128, 1 << 100), (128, (1 << 128) - 256)])


def spans_of(width: int, pairs: list[tuple[int, int]]) -> Spans:
    return Spans.of(width, pairs)


def words_of(width: int, values: list[int]) -> list[array[int]]:
    if width <= 32:
        return [array(NARROW, values)]
    return [array("Q", [v >> 64 for v in values]), array("Q", [v & MASK64 for v in values])]


def both(width: int, bounds: list[array[int]], removed: list[int], added: list[int]) -> None:
    """The compiled result and the twin's: equal bytes, the same words shared or not."""
    gone, came = words_of(width, removed), words_of(width, added)
    compiled = core().splice_words(width, bounds, gone, came)
    twin = splice.splice_words(width, bounds, gone, came)
    if twin is None:
        assert compiled is None
        return
    assert compiled is not None
    assert list(compiled) == list(twin)
    half = len(twin) // 2
    assert [a is b for a, b in zip(compiled[:half], compiled[half:], strict=True)] == [
        a is b for a, b in zip(twin[:half], twin[half:], strict=True)
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    PLACES,
    st.lists(st.tuples(st.integers(0, 255), st.integers(0, 6)), max_size=30),
    st.sets(st.integers(0, 255), max_size=30),
    st.sets(st.integers(0, 255), max_size=30),
    st.booleans(),
)
def test_splice_words_as_the_twin(
    place: tuple[int, int],
    ranges: list[tuple[int, int]],
    taken: set[int],
    brought: set[int],
    honest: bool,
) -> None:
    """Hash sets' single values and interval sets' ranges; values removed and added empty,
    overlapping, adjacent, at both ends; and (not ``honest``) values not held removed or
    held ones added, where both give None."""
    width, base = place
    pairs = [(base + start, base + min(start + length, 255)) for start, length in ranges]
    old = spans_of(width, pairs)
    held = {v for first, last in pairs for v in range(first, last + 1)}
    removed = sorted(base + v for v in taken)
    added = sorted(base + v for v in brought)
    if honest:
        removed = [v for v in removed if v in held]
        added = [v for v in added if v not in held and v not in removed]
    else:
        added = [v for v in added if v not in removed]
    both(width, old.words(), removed, added)


@settings(max_examples=100, deadline=None)
@given(PLACES, st.sets(st.integers(0, 255), max_size=60))
def test_spans_of_values_alone_as_the_twin(place: tuple[int, int], values: set[int]) -> None:
    width, base = place
    both(width, Spans(width, points=True).words(), [], sorted(base + v for v in values))


def test_a_large_splice_as_the_twin() -> None:
    """300,000 IPv4 values and a tenth changed; 50,000 IPv6 values likewise."""
    rng = random.Random(3)
    for width, count, space in ((32, 300_000, 1 << 22), (128, 50_000, 1 << 40)):
        base = 1 << 100 if width == 128 else 0
        values = rng.sample(range(space), count + count // 20)
        held = sorted(base + v for v in values[:count])
        removed = sorted(rng.sample(held, count // 20))
        added = sorted(base + v for v in values[count:])
        old = elements_fast.spans_of_values(width, held)
        both(width, old.words(), removed, added)


def text(width: int, value: int) -> str:
    family = socket.AF_INET if width == 32 else socket.AF_INET6
    return socket.inet_ntop(family, value.to_bytes(width // 8, "big"))


def lines_of(width: int, values: list[int], odd: list[str]) -> bytes:
    return "".join(f"{line}\n" for line in [*map(partial(text, width), values), *odd]).encode()


ODD = st.lists(
    st.sampled_from(["", " 10.0.0.1", "10.0.0.256", "::1", "10.0.0.1\r", "x", "10.0.0.1/8"]),
    max_size=2,
)


@settings(max_examples=300, deadline=None)
@given(
    PLACES,
    st.lists(st.integers(0, 63), max_size=40),
    st.lists(st.integers(0, 63), max_size=40),
    ODD,
    ODD,
    st.booleans(),
)
def test_differ_lines_as_the_twin(
    place: tuple[int, int],
    gone: list[int],
    came: list[int],
    gone_odd: list[str],
    came_odd: list[str],
    moved: bool,
) -> None:
    """Repeats, values in both parts, either part empty, lines that are not one address
    (in one part: None; in both, moved: not read): the same words or None."""
    width, base = place
    if moved:
        came_odd = [*came_odd, *gone_odd]
    before = lines_of(width, [base + v for v in gone], gone_odd)
    after = lines_of(width, [base + v for v in came], came_odd)
    assert core().differ_lines(width, before, after) == splice.differ_lines(width, before, after)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text("0123456789.", max_size=17), max_size=8))
def test_dotted_quads_are_read_as_inet_pton_reads_them(lines: list[str]) -> None:
    """Leading zeros, octets above 255, too few or too many dots, empty octets: the
    compiled reader's own IPv4 form and inet_pton agree."""
    data = "".join(f"{line}\n" for line in lines).encode()
    assert core().differ_lines(32, b"", data) == splice.differ_lines(32, b"", data)


QUADS = ["1.2.3.4", "0.0.0.0", "255.255.255.255"]
NOT_QUADS = ["01.2.3.4", "1.2.3.04", "00.0.0.0", "256.1.1.1", "1.2.3", "1.2.3.4.5", "1..2.3"]
NOT_QUADS += [".1.2.3", "1.2.3.", "1.2.3.4 "]


@pytest.mark.parametrize("line", [*QUADS, *NOT_QUADS, "1.2.3.1000", "9" * 40])
def test_a_dotted_quad_is_read_as_inet_pton_reads_it(line: str) -> None:
    data = f"{line}\n".encode()
    assert core().differ_lines(32, b"", data) == splice.differ_lines(32, b"", data)


def test_many_lines_as_the_twin() -> None:
    """Parts of 30,000 lines (sorted by the radix sort, not qsort), repeats and values in
    both parts among them, IPv4 and IPv6."""
    rng = random.Random(11)
    for width, space in ((32, 1 << 32), (128, 1 << 128)):
        values = [rng.randrange(space) for _ in range(40_000)]
        gone = lines_of(width, values[:30_000], [])
        came = lines_of(width, values[20_000:] + values[25_000:26_000], [])
        assert core().differ_lines(width, gone, came) == splice.differ_lines(width, gone, came)


def test_differ_lines_reads_addresses_as_inet_pton_does() -> None:
    removed, added = core().differ_lines(32, b"10.0.0.2\n10.0.0.1\n192.168.1.1", b"10.0.0.1\n")
    assert array(NARROW, removed[0]).tolist() == [0x0A000002, 0xC0A80101]
    assert added == (b"",)
    removed, added = core().differ_lines(128, b"", b"2001:db8::1\n2001:DB8:0::1\n")
    assert (array("Q", added[0]).tolist(), array("Q", added[1]).tolist()) == (
        [0x20010DB800000000],
        [1],
    )
    assert core().differ_lines(32, b"", b"10.0.0.1\n10.0.0\n") is None
    assert core().differ_lines(32, b"10.0.0.1\x00\n", b"") is None
    assert core().differ_lines(32, b"1" * 200 + b"\n", b"1" * 200 + b"\n") == ((b"",), (b"",))


def test_a_diff_with_the_compiled_splice_is_the_twin_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """The file's diff (elements_fast.diff_hosts) gives the same elements either way."""
    core()
    rng = random.Random(5)
    picked = rng.sample(range(1 << 20), 21_000)
    lines = [f"10.{v >> 16}.{(v >> 8) & 255}.{v & 255}" for v in picked]
    first = "".join(f"{line}\n" for line in lines[:20_000]).encode()
    changed = "".join(f"{line}\n" for line in lines[1000:]).encode()
    base = elements_fast.parse_hosts("ipv4_addr", False, first)
    assert base is not None
    compiled = elements_fast.diff_hosts(base, changed)
    monkeypatch.setenv(splice.ENV, "python")
    assert splice.compiled() is None
    twin = elements_fast.diff_hosts(base, changed)
    assert compiled is not None and twin is not None
    assert compiled.elements.spans is not None and twin.elements.spans is not None
    assert compiled.elements.spans.words() == twin.elements.spans.words()
    assert len(compiled.elements) == len(twin.elements) == 20_000


def values_both(width: int, bounds: list[array[int]], data: bytes, count: int) -> None:
    """The compiled ``differ_values`` and the twin: the same bytes (the spans' lasts the
    same objects as their firsts where every span is one value), or both None."""
    compiled = core().differ_values(width, bounds, data, count)
    twin = splice.differ_values(width, bounds, data, count)
    assert compiled == twin
    if twin is not None and compiled is not None:
        half = len(twin[0]) // 2
        assert [a is b for a, b in zip(compiled[0][:half], compiled[0][half:], strict=True)] == [
            a is b for a, b in zip(twin[0][:half], twin[0][half:], strict=True)
        ]


@settings(max_examples=300, deadline=None)
@given(
    PLACES,
    st.lists(st.tuples(st.integers(0, 255), st.integers(0, 6)), max_size=30),
    st.lists(st.integers(0, 255), max_size=40),
    ODD,
    st.integers(-2, 2),
    st.booleans(),
)
def test_differ_values_as_the_twin(
    place: tuple[int, int],
    ranges: list[tuple[int, int]],
    came: list[int],
    odd: list[str],
    off: int,
    spread: bool,
) -> None:
    """Old spans of single values and ranges, at both ends of 32 and 128 bits; new lines
    in any order, repeated, at the ends or spread, lines that are not one address, and a
    count of held values true or not: the same words or None."""
    width, base = place
    pairs = [(base + start, base + min(start + length, 255)) for start, length in ranges]
    old = spans_of(width, pairs)
    held = {v for first, last in pairs for v in range(first, last + 1)}
    values = [base + v for v in came]
    if not spread:
        values.sort()
    data = lines_of(width, values, odd)
    values_both(width, old.words(), data, max(len(held) + off, 0) if off else len(held))


def test_a_large_value_diff_as_the_twin() -> None:
    """A million-line file's worth scaled down: 200,000 IPv4 values with a tenth changed
    throughout, 30,000 IPv6 values likewise (the radix sort, spans of several values)."""
    rng = random.Random(7)
    for width, count, space in ((32, 200_000, 1 << 21), (128, 30_000, 1 << 40)):
        base = 1 << 100 if width == 128 else 0
        picked = rng.sample(range(space), count + count // 20)
        held = sorted(base + v for v in picked[:count])
        kept = [v for i, v in enumerate(held) if i % 20]
        new = kept + [base + v for v in picked[count:]]
        rng.shuffle(new)
        old = elements_fast.spans_of_values(width, held)
        values_both(width, old.words(), lines_of(width, new, []), count)


@pytest.mark.parametrize(
    "data",
    [b"", b"10.0.0.1", b"10.0.0.1\n10.0.0.1\n", b"10.0.0.1\n\n", b"10.0.0.1\r\n", b"\xff\n"],
)
def test_differ_values_reads_what_differ_lines_reads(data: bytes) -> None:
    """No last line end, a repeat, a blank line, a carriage return, not ASCII."""
    bounds = Spans.of(32, [(0x0A000001, 0x0A000002)]).words()
    values_both(32, bounds, data, 2)


# ---- malformed input: an exception, never a crash ------------------------------------

WORD = st.binary(min_size=0, max_size=40)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([0, 8, 16, 32, 64, 128, 129]),
    st.lists(WORD, max_size=5),
    st.lists(WORD, max_size=3),
    st.lists(WORD, max_size=3),
)
def test_splice_words_refuses_malformed_input(
    width: int, bounds: list[bytes], removed: list[bytes], added: list[bytes]
) -> None:
    """Random bytes as word arrays (wrong counts, lengths, partial words, values out of
    order, spans overlapping or touching, values too wide): ValueError, or a result only
    where the input was well formed, which the twin then gives too."""
    try:
        result = core().splice_words(width, bounds, removed, added)
    except ValueError:
        return
    code = NARROW if width <= 32 else "Q"
    arrays = [array(code, part) for part in bounds]
    gone, came = [array(code, p) for p in removed], [array(code, p) for p in added]
    assert result == splice.splice_words(width, arrays, gone, came)


@pytest.mark.parametrize(
    ("width", "bounds", "removed", "added"),
    [
        (32, [array(NARROW, [5, 1]), array(NARROW, [6, 1])], [array(NARROW)], [array(NARROW)]),
        (32, [array(NARROW, [1, 3]), array(NARROW, [2, 4])], [array(NARROW)], [array(NARROW)]),
        (32, [array(NARROW, [4]), array(NARROW, [2])], [array(NARROW)], [array(NARROW)]),
        (32, [array(NARROW, [1]), array(NARROW, [1])], [array(NARROW, [1, 1])], [array(NARROW)]),
        (32, [array(NARROW, [1]), array(NARROW, [1])], [array(NARROW)], [array(NARROW, [9, 3])]),
        (32, [array(NARROW, [1]), array(NARROW, [1, 2])], [array(NARROW)], [array(NARROW)]),
        (32, [array(NARROW, [1])], [array(NARROW)], [array(NARROW)]),
        (32, [b"\0\0\0", b"\0\0\0"], [b""], [b""]),
        (16, [array(NARROW), array(NARROW)], [array(NARROW)], [array(NARROW, [1 << 16])]),
        (64, [array("Q"), array("Q")], [array("Q")], [array("Q")]),
        (128, [array("Q")] * 4, [array("Q", [1]), array("Q")], [array("Q")] * 2),
        (128, [array("Q")] * 4, [array("Q")] * 2, [array("Q", [0, 0])] * 2),
    ],
)
def test_splice_words_names_what_is_malformed(
    width: int, bounds: list[object], removed: list[object], added: list[object]
) -> None:
    with pytest.raises(ValueError):
        core().splice_words(width, bounds, removed, added)


def test_splice_words_refuses_what_is_not_words() -> None:
    with pytest.raises(TypeError):
        core().splice_words(32, [1, 2], [array(NARROW)], [array(NARROW)])
    with pytest.raises(TypeError):
        core().splice_words(32, None, [array(NARROW)], [array(NARROW)])
    with pytest.raises(TypeError):
        core().splice_words("32", [], [], [])


LINES = st.lists(
    st.one_of(
        st.binary(max_size=12),
        st.sampled_from([b"10.0.0.1", b"10.0.0.2", b"::1", b"::2", b"1.2.3.4", b"", b"\xff"]),
    ),
    max_size=6,
).map(b"\n".join)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([0, 16, 32, 64, 128]), LINES, LINES)
def test_differ_lines_on_any_bytes_as_the_twin(width: int, gone: bytes, came: bytes) -> None:
    """Any bytes (NUL, non-ASCII, no last line end, blank lines) and other widths: the
    twin's result, or ValueError where the twin raises it too."""
    try:
        result = core().differ_lines(width, gone, came)
    except ValueError:
        with pytest.raises(ValueError):
            splice.differ_lines(width, gone, came)
        return
    assert result == splice.differ_lines(width, gone, came)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([0, 16, 32, 64, 128]),
    st.lists(WORD, max_size=5),
    LINES,
    st.integers(-3, 1 << 70),
)
def test_differ_values_refuses_malformed_input(
    width: int, bounds: list[bytes], data: bytes, count: int
) -> None:
    """Random bytes as the spans' words, any lines, any count: ValueError, OverflowError
    (a count too large for the machine), or the twin's result."""
    try:
        result = core().differ_values(width, bounds, data, count)
    except (ValueError, OverflowError):
        return
    code = NARROW if width <= 32 else "Q"
    assert result == splice.differ_values(width, [array(code, p) for p in bounds], data, count)


def test_differ_values_names_what_is_malformed() -> None:
    with pytest.raises(ValueError, match="width"):
        core().differ_values(16, [array(NARROW)] * 2, b"", 0)
    with pytest.raises(ValueError, match="out of order"):
        core().differ_values(32, [array(NARROW, [5, 1]), array(NARROW, [6, 1])], b"", 4)
    with pytest.raises(ValueError, match="count"):
        core().differ_values(32, [array(NARROW)] * 2, b"", -1)
    with pytest.raises(ValueError, match="partial"):
        core().differ_values(32, [b"\0\0\0"] * 2, b"", 1)
    with pytest.raises(ValueError, match="number"):
        core().differ_values(128, [array("Q")] * 2, b"", 0)
    with pytest.raises(TypeError):
        core().differ_values(32, None, b"", 0)


# ---- built where CI runs, and warning-free -------------------------------------------


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="checked where CI runs setup.sh")
def test_built_where_ci_runs() -> None:
    assert splice.compiled() is not None


def test_the_source_builds_without_a_warning(tmp_path: Path) -> None:
    """gcc -Wall -Wextra -Werror, as the guests build the compiled parts."""
    built = build_with_gcc(SOURCE, "appliance.model._splice", tmp_path)
    assert built.differ_lines(32, b"10.0.0.1\x00\n", b"") is None
    assert built.differ_lines(32, b"10.0.0.1\n", b"10.0.0.2\n") is not None
