"""Spans with a few values taken out and others put in, without a pass in Python. Pure.

A feed of a million addresses changes by a tenth at a time. Its new spans are the old ones
less the values gone and with the values come. Values travel as word arrays, as
:meth:`Spans.words` holds bounds: one 32-bit word a value of 32 bits or less, two 64-bit
words (high, low) of 128 bits, each part in an array of its own.

Two functions do the work, each with a compiled twin (``_splice.c``, built by ``setup.py``
where gcc and Python's headers are there, loaded on first use, never by the daemon) that
gives the same bytes:

- :func:`differ_lines`: from the lines that went and those that came (one address a line,
  read by ``inet_pton``), the values taken away and those brought, sorted and distinct;
- :func:`differ_values`: a whole file's lines (read as :func:`differ_lines` reads them)
  against the old spans: the spans of its values, and the values gone and come (a file
  changed throughout: one pass over it and a merge with the old spans, where reading the
  lines that went and came would read both files);
- :func:`splice_words`: the old spans' words with those values taken out and put in. In
  Python it finds where each changed value goes among the old spans (``bisect`` at C
  speed) and copies the word arrays between those places whole (slices of their bytes,
  joined once), never making an integer per span; only the spans that a change splits or
  joins are made again from their values (few: a removed value inside a span of several, a
  new value next to a span or to another new value). Compiled, it is one merge pass.

:func:`spliced`, :func:`changes` and :func:`value_changes` take the compiled one where it is
built and not switched off (``APPLIANCE_SPLICE_CORE=python``), else this module's.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from functools import partial
from itertools import chain, compress, filterfalse, islice, repeat
from operator import add, and_, eq, gt, le, lshift, mul, ne, or_, rshift, sub
from types import ModuleType

from appliance.model.intervals import MASK64, NARROW, Spans

_FLIP = bytes.maketrans(b"\0\1", b"\1\0")
ENV = "APPLIANCE_SPLICE_CORE"
_OFF = ("0", "off", "python", "no", "false")
Words = tuple[bytes, ...]  # the bytes of word arrays, in their machine's order


def compiled() -> ModuleType | None:
    """The compiled twin (``appliance.model._splice``), or None: not built, or switched off
    by ``ENV``."""
    if os.environ.get(ENV, "").strip().lower() in _OFF:
        return None
    try:
        return importlib.import_module("appliance.model._splice")
    except ImportError:
        return None


def _code(width: int) -> str:
    return NARROW if width <= 32 else "Q"


def _arrays(width: int, words: Sequence[bytes]) -> list[array[int]]:
    """Word arrays of these bytes (one array for bytes given twice as the same object)."""
    made: dict[int, array[int]] = {}
    out = []
    for part in words:
        found = made.get(id(part))
        if found is None:
            found = made[id(part)] = array(_code(width))
            found.frombytes(part)
        out.append(found)
    return out


def spliced(
    spans: Spans, removed: Sequence[array[int]], added: Sequence[array[int]]
) -> Spans | None:
    """``spans`` without the values whose words are ``removed`` and with those ``added``
    (each sorted, without repeats, none in both): None if a removed value is not held or
    an added one is already. Compiled where it is built."""
    core = compiled()
    run = splice_words if core is None else core.splice_words
    words = run(spans.width, spans.words(), removed, added)
    if words is None:
        return None
    return Spans.from_words(spans.width, _arrays(spans.width, words))


def spans_of_words(width: int, values: Sequence[array[int]]) -> Spans:
    """The spans of sorted, distinct values given as word arrays."""
    empty = Spans(width, points=True)
    made = spliced(empty, [array(_code(width)) for _ in values], values)
    assert made is not None  # nothing held, nothing removed
    return made


def changes(
    width: int, gone: bytes, came: bytes
) -> tuple[list[array[int]], list[array[int]]] | None:
    """The word arrays of the values of the lines of ``gone`` not in ``came``, and of
    ``came`` not in ``gone``, sorted and distinct (None: a line that changed is not one
    address; see :func:`differ_lines`). Compiled where it is built."""
    core = compiled()
    found = (differ_lines if core is None else core.differ_lines)(width, gone, came)
    if found is None:
        return None
    return _arrays(width, found[0]), _arrays(width, found[1])


def value_changes(
    spans: Spans, data: bytes, count: int
) -> tuple[Spans, list[array[int]], list[array[int]]] | None:
    """The spans of the values of the lines of ``data``, and the word arrays of the values
    of ``spans`` not among them and of those not in ``spans`` (None: a line is not one
    address, a value is given twice, or ``spans`` do not hold ``count`` values; see
    :func:`differ_values`). Compiled where it is built."""
    core = compiled()
    width = spans.width
    found = (differ_values if core is None else core.differ_values)(
        width, spans.words(), data, count
    )
    if found is None:
        return None
    made, removed, added = found
    new = Spans.from_words(width, _arrays(width, made))
    return new, _arrays(width, removed), _arrays(width, added)


def splice(spans: Spans, removed: list[int], added: list[int]) -> Spans | None:
    """As :func:`spliced`, the values given as sorted lists of integers."""
    if not removed and not added:
        return spans
    return spliced(spans, _value_words(spans.width, removed), _value_words(spans.width, added))


def _value_words(width: int, values: list[int]) -> list[array[int]]:
    if width <= 32:
        return [array(NARROW, values)]
    return [
        array("Q", list(map(rshift, values, repeat(64)))),
        array("Q", list(map(and_, values, repeat(MASK64)))),
    ]


# ---- the twins ------------------------------------------------------------------------


def differ_lines(width: int, gone: bytes, came: bytes) -> tuple[Words, Words] | None:
    """The words of the addresses of the lines of ``gone`` (one address a line, as
    ``inet_pton`` reads it; the lines split at line ends, an empty last one left out) not
    in ``came``, and of those of ``came`` not in ``gone``, sorted and distinct; None where
    a line in one part only is not one address (a line in both only moved: it is not
    read). The compiled ``differ_lines``'s twin."""
    if width not in (32, 128):
        raise ValueError(f"unsupported width {width}")
    gone_lines, came_lines = _byte_lines(gone), _byte_lines(came)
    gone_texts = set(gone_lines)
    came_only = list(filterfalse(gone_texts.__contains__, came_lines))  # one set, not two
    gone_texts.difference_update(came_lines)
    family = socket.AF_INET if width == 32 else socket.AF_INET6
    read = partial(socket.inet_pton, family)
    try:  # only the lines that differ are read (a file changed throughout: a tenth)
        before = b"".join(map(read, map(_ascii, gone_texts)))
        after = b"".join(map(read, map(_ascii, came_only)))
    except (UnicodeDecodeError, OSError, ValueError):
        return None
    removed = set(unpacked(width, before))
    added = set(unpacked(width, after))
    return _bytes_of(width, sorted(removed - added)), _bytes_of(width, sorted(added - removed))


_ascii = partial(bytes.decode, encoding="ascii")
COUNT_LIMIT = sys.maxsize // 32  # of values held: a larger count is malformed


def differ_values(
    width: int, bounds: Sequence[array[int]], data: bytes, count: int
) -> tuple[Words, Words, Words] | None:
    """The words of the spans of the addresses of the lines of ``data`` (each line one
    address, as :func:`differ_lines` reads it), then those of the values the spans
    ``bounds`` (as :meth:`Spans.words`) hold and ``data`` does not, then those of ``data``
    not in ``bounds``, sorted; None where a line is not one address, a value is given
    twice, or ``bounds`` do not hold ``count`` values. The compiled ``differ_values``'s
    twin."""
    if width not in (32, 128):
        raise ValueError(f"unsupported width {width}")
    if not 0 <= count <= COUNT_LIMIT:
        raise ValueError("a count of values out of range")
    half = len(bounds) // 2
    firsts, lasts = _listed(bounds[:half]), _listed(bounds[half:])
    if sum(lasts) - sum(firsts) + len(firsts) != count:
        return None
    family = socket.AF_INET if width == 32 else socket.AF_INET6
    try:
        packed = b"".join(map(partial(socket.inet_pton, family), map(_ascii, _byte_lines(data))))
    except (UnicodeDecodeError, OSError, ValueError):
        return None
    values = unpacked(width, packed)
    came = set(values)
    if len(came) != len(values):
        return None
    values.sort()
    held = firsts
    if firsts != lasts:
        wide = list(map(ne, firsts, lasts))
        starts = map(add, compress(firsts, wide), repeat(1))
        ends = map(add, compress(lasts, wide), repeat(1))
        held = [*firsts, *chain.from_iterable(map(range, starts, ends))]
    had = set(held)
    none = _value_words(width, [])
    made = splice_words(width, Spans(width, points=True).words(), none, _value_words(width, values))
    assert made is not None  # nothing held, nothing removed
    removed = sorted(filterfalse(came.__contains__, had))
    added = sorted(filterfalse(had.__contains__, values))
    return made, _bytes_of(width, removed), _bytes_of(width, added)


def _byte_lines(data: bytes) -> list[bytes]:
    """The lines of ``data``, without the last line end."""
    if not data:
        return []
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()
    return pieces


def unpacked(width: int, data: bytes) -> list[int]:
    """The values of big-endian words of ``width`` bits (32 or 128) packed in ``data``."""
    if width == 32:
        words = array(NARROW, data)
        if sys.byteorder == "little":
            words.byteswap()
        return words.tolist()
    halves = array("Q", data)
    if sys.byteorder == "little":
        halves.byteswap()
    return list(map(or_, map(lshift, halves[0::2], repeat(64)), halves[1::2]))


def _bytes_of(width: int, values: list[int]) -> Words:
    return tuple(part.tobytes() for part in _value_words(width, values))


def splice_words(
    width: int,
    bounds: Sequence[array[int]],
    removed: Sequence[array[int]],
    added: Sequence[array[int]],
) -> Words | None:
    """The bytes of the word arrays of ``bounds`` (as :meth:`Spans.words`) with the sorted
    values ``removed`` taken out and ``added`` put in, firsts then lasts (the same objects
    twice where every span is one value); None if a removed value is not held or an added
    one is (the compiled ``splice_words``'s twin)."""
    half = len(bounds) // 2
    points = all(
        first is last or first == last
        for first, last in zip(bounds[:half], bounds[half:], strict=True)
    )
    first_words = list(bounds[:half])
    last_words = first_words if points else list(bounds[half:])
    gone, came = _listed(removed), _listed(added)
    if not gone and not came:
        new = [part.tobytes() for part in bounds]
    elif not len(bounds[0]) and not gone:  # the spans of values alone, at C speed
        steps = bytes(map(eq, islice(came, 1, None), map(add, came, repeat(1))))
        ends = list(compress(came, chain(steps.translate(_FLIP), (1,))))
        starts = list(compress(came, chain((1,), steps.translate(_FLIP))))
        new = [*_bytes_of(width, starts), *_bytes_of(width, ends)]
    else:
        made = _splice(width, points, first_words, last_words, gone, came)
        if made is None:
            return None
        new = [part.tobytes() for part in made]
    if new[:half] == new[half:]:
        return (*new[:half], *new[:half])
    return tuple(new)


def _listed(words: Sequence[array[int]]) -> list[int]:
    if len(words) == 1:
        return words[0].tolist()
    return list(map(or_, map(lshift, words[0], repeat(64)), words[1]))


def _splice(
    width: int,
    points: bool,
    first_words: list[array[int]],
    last_words: list[array[int]],
    removed: list[int],
    added: list[int],
) -> list[array[int]] | None:
    """The new word arrays (firsts, then lasts), or None (see :func:`splice_words`)."""
    firsts = _ints(first_words)
    lasts = firsts if points else _ints(last_words)
    n = len(firsts)
    touched: set[int] = set()  # old spans made again from their values
    drops = _removed(firsts, lasts, points, removed, touched)
    if drops is None:
        return None
    placed = _placed(firsts, lasts, (1 << width) - 1, added, touched)
    if placed is None:
        return None
    simple, where, joining = placed
    region: list[tuple[int, int]] = []
    if touched or joining:
        region = _remade(firsts, lasts, sorted(touched), removed, joining)
        drops = sorted(touched.union(drops))
    values_first, values_last, places = _inserts(firsts, simple, where, region)
    events = _events(drops, places)
    new_firsts = [_rebuilt(words, events, values_first, n) for words in _split(first_words)]
    if points and values_last is values_first:
        return [*new_firsts, *new_firsts]
    new_lasts = [_rebuilt(words, events, values_last, n) for words in _split(last_words)]
    return [*new_firsts, *new_lasts]


def _ints(words: Sequence[array[int]]) -> Sequence[int]:
    """One bound's integers, indexable for ``bisect``: its word array itself (32 bits and
    less), else its high and low words joined (a list)."""
    if len(words) == 1:
        return words[0]
    return list(map(or_, map(lshift, words[0], repeat(64)), words[1]))


def _split(words: Sequence[array[int]]) -> list[tuple[array[int], int, int]]:
    """Each word array of a bound with the shift and mask of its part of a value."""
    if len(words) == 1:
        return [(words[0], 0, -1)]  # the values themselves
    return [(words[0], 64, MASK64), (words[1], 0, MASK64)]


def _removed(
    firsts: Sequence[int],
    lasts: Sequence[int],
    points: bool,
    removed: list[int],
    touched: set[int],
) -> list[int] | None:
    """The old spans that ``removed`` takes away whole (spans of one value, sorted); the
    wider spans a removed value is in go to ``touched``. None: a value is not held."""
    if not removed:
        return []
    at = list(map(sub, map(bisect_right, repeat(firsts), removed), repeat(1)))
    if at[0] < 0:
        return None  # below the first span
    ends = list(map(lasts.__getitem__, at))
    if any(map(gt, removed, ends)):
        return None  # after the end of the span it follows: not held
    if points:
        return at
    one = bytes(map(eq, map(firsts.__getitem__, at), ends))
    touched.update(compress(at, one.translate(_FLIP)))
    return list(compress(at, one))


def _placed(
    firsts: Sequence[int], lasts: Sequence[int], top: int, added: list[int], touched: set[int]
) -> tuple[list[int], list[int], list[int]] | None:
    """The added values that join nothing (no neighbouring value held or added), with the
    old span each goes before; and those that join something, whose old neighbours go to
    ``touched``. None: an added value is held already."""
    if not added:
        return [], [], []
    n = len(firsts)
    at = list(map(bisect_right, repeat(firsts), added))  # the old span above; below: at - 1
    low = bisect_right(at, 0)  # below every span
    high = len(at) - bisect_left(at, n)  # above every span's first value
    below = [-2] * low
    below += map(lasts.__getitem__, map(sub, islice(at, low, None), repeat(1)))
    if any(map(le, added, below)):
        return None  # in the span below it
    above = list(map(firsts.__getitem__, islice(at, 0, len(at) - high)))
    above += repeat(top + 2, high)
    up = list(map(add, added, repeat(1)))
    joins_below = bytes(map(eq, below, map(sub, added, repeat(1))))
    joins_above = bytes(map(eq, above, up))
    pairs = bytes(map(eq, islice(added, 1, None), up))  # a value and the next one added
    flags = _ored(joins_below, joins_above, pairs + b"\0", b"\0" + pairs)
    if 1 not in flags:
        return added, at, []
    touched.update(map(sub, compress(at, joins_below), repeat(1)))
    touched.update(compress(at, joins_above))
    alone = flags.translate(_FLIP)
    return list(compress(added, alone)), list(compress(at, alone)), list(compress(added, flags))


def _ored(*parts: bytes) -> bytes:
    """The bytewise OR of flag bytes (each 0 or 1) of one length, at C speed."""
    total = 0
    for part in parts:
        total |= int.from_bytes(part, "big")
    return total.to_bytes(len(parts[0]), "big")


def _remade(
    firsts: Sequence[int],
    lasts: Sequence[int],
    touched: list[int],
    removed: list[int],
    joining: list[int],
) -> list[tuple[int, int]]:
    """The spans of the ``touched`` old spans' values less ``removed``, with the added
    values ``joining`` them or each other (none of these reaches an old span left as it
    was: its neighbours are touched too)."""
    gone = set(removed)
    starts = map(firsts.__getitem__, touched)
    stops = map(add, map(lasts.__getitem__, touched), repeat(1))
    values = list(filterfalse(gone.__contains__, chain.from_iterable(map(range, starts, stops))))
    values += joining
    values.sort()
    spans: list[tuple[int, int]] = []
    for value in values:
        if spans and spans[-1][1] + 1 == value:
            spans[-1] = (spans[-1][0], value)
        else:
            spans.append((value, value))
    return spans


def _inserts(
    firsts: Sequence[int], simple: list[int], where: list[int], region: list[tuple[int, int]]
) -> tuple[list[int], list[int], list[int]]:
    """The new spans' first and last values (the same list where all are single values)
    and the old span each goes before, in order: the few remade spans put among the
    values added alone by slices of those lists."""
    if not region:
        return simple, simple, where
    region_firsts = [first for first, _ in region]
    cuts = [0, *map(bisect_right, repeat(simple), region_firsts), len(simple)]
    places = [bisect_right(firsts, first) for first in region_firsts]

    def merged(alone: list[int], remade: list[int]) -> list[int]:
        runs = map(alone.__getitem__, map(slice, cuts, islice(cuts, 1, None)))
        parts = zip(runs, map(_one, chain(remade, (None,))), strict=True)
        return list(chain.from_iterable(chain.from_iterable(parts)))

    return (
        merged(simple, region_firsts),
        merged(simple, [last for _, last in region]),
        merged(where, places),
    )


def _one(value: int | None) -> tuple[int, ...]:
    return () if value is None else (value,)


class _Events:
    """Drops of old spans and inserts of new ones, in the order of the old spans: where
    each cuts the old arrays and which insert (or none) it puts there."""

    __slots__ = ("_cuts", "inserted", "starts", "stops")

    def __init__(self, starts: list[int], stops: list[int], inserted: list[int]) -> None:
        self.starts = starts  # old index where each piece of old words starts
        self.stops = stops  # and where it stops (the last piece runs to the end)
        self.inserted = inserted  # after each piece: the insert's index (a drop: past them)
        self._cuts: dict[int, tuple[list[slice], list[slice]]] = {}

    def cuts(self, size: int, n: int) -> tuple[list[slice], list[slice]]:
        """For words of ``size`` bytes (``n`` old ones): the slices of the old bytes
        between the events, and after each the slice of the inserts' bytes that goes
        there (past their end for a drop: nothing). The same for every array of a size."""
        found = self._cuts.get(size)
        if found is None:
            stops = [*self.stops, n]
            pieces = list(
                map(slice, map(mul, self.starts, repeat(size)), map(mul, stops, repeat(size)))
            )
            at = list(map(mul, self.inserted, repeat(size)))
            words = list(map(slice, at, map(add, at, repeat(size))))
            words.append(slice(0, 0))  # after the last piece
            found = self._cuts[size] = (pieces, words)
        return found


def _events(drops: list[int], places: list[int]) -> _Events:
    """Sorted at C speed: an insert before old span ``p`` sorts at ``2p``, a drop of old
    span ``i`` at ``2i + 1`` (an insert before a dropped span comes first); below, the
    insert's index (a drop's is one past the inserts)."""
    none = len(places)
    shift = (none + 1).bit_length()
    keys = list(map(or_, map(lshift, map(mul, places, repeat(2)), repeat(shift)), range(none)))
    kinds = map(add, map(mul, drops, repeat(2)), repeat(1))
    keys += map(or_, map(lshift, kinds, repeat(shift)), repeat(none))
    keys.sort()  # two sorted runs: one merge
    cuts = list(map(rshift, keys, repeat(shift)))
    stops = list(map(rshift, cuts, repeat(1)))
    starts = [0, *map(add, stops, map(and_, cuts, repeat(1)))]
    inserted = list(map(and_, keys, repeat((1 << shift) - 1)))
    return _Events(starts, stops, inserted)


def _rebuilt(
    words: tuple[array[int], int, int], events: _Events, values: list[int], n: int
) -> array[int]:
    """A word array of the old bounds with the events carried out: the old words between
    two events copied as one slice of bytes, an insert's word packed between them."""
    source, shift, mask = words
    pieces, between = events.cuts(source.itemsize, n)
    data = source.tobytes()
    part = values if mask < 0 else list(map(and_, map(rshift, values, repeat(shift)), repeat(mask)))
    inserted = array(source.typecode, part).tobytes()
    out = array(source.typecode)
    out.frombytes(
        b"".join(
            chain.from_iterable(
                zip(map(data.__getitem__, pieces), map(inserted.__getitem__, between), strict=True)
            )
        )
    )
    return out
