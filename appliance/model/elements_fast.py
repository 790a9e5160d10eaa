"""A large ``elements_file`` of plain addresses, parsed and diffed at C speed. Pure.

The general parse (:mod:`appliance.model.parse`) takes one Python step per line: a
million lines take seconds. Most feeds are one IPv4 or IPv6 address per line, and most
changes to them keep most lines as they were. For those:

- :func:`parse_hosts`: a file whose every line is one address (nothing else on it: no
  blank, comment, network or range) is split, converted by ``inet_pton`` and sorted by the
  interpreter's C code (``map``, ``sorted``, ``compress``), never a Python step per line;
- :func:`diff_hosts`: against the bytes and spans of the file's last version (kept in the
  record of the last apply, :mod:`appliance.applied`), the lines that stayed are found by
  comparing blocks of the old bytes with the new ones (``startswith``/``find``: memory
  comparisons); only the lines outside those blocks are parsed, and the new spans are the
  old ones with the values those lines took away and brought;
- the result of a diff is :class:`Changed`: it knows the elements it came from and what it
  adds and takes away, so a plan against those very elements (:class:`Recalled`, what the
  last apply left) needs no pass over a million spans.

They serve the one-shot ``appliance apply`` and ``plan`` (inside :func:`remembering`); the
daemon keeps the general parse, which holds a few bytes per element at its peak. Both give
up (None) whenever they cannot prove the result equals the general parse's: any
line that is not one address, a value given twice (then a line's removal need not remove
its value), a set type other than addresses. The caller then parses the whole file the
general way, which also gives the errors with FILE:LINE.
"""

from __future__ import annotations

import contextvars
import socket
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from itertools import chain, compress, filterfalse, islice, repeat
from operator import add, and_, lshift, ne, or_, rshift, sub

from appliance.model.elements import Elements
from appliance.model.intervals import MASK64, NARROW, Spans
from appliance.model.splice import (
    changes,
    compiled,
    spans_of_words,
    spliced,
    unpacked,
    value_changes,
)

FAMILIES = {"ipv4_addr": (socket.AF_INET, 32), "ipv6_addr": (socket.AF_INET6, 128)}
BLOCK = 1 << 13  # bytes of the old file compared at a time (line-aligned)
WINDOW = 1 << 14  # how far past the expected place a moved block is looked for first
CHANGED = 32  # changed blocks (more than half of those compared) that end the comparison
SPREAD = 8  # likewise, where the changes are diffed by values once found spread
SPREAD_SEARCH = 16  # there, the first searches scan a sixteenth of the files at most


@dataclass
class Parsed:
    """A file's elements (every line one address) and what the next diff needs."""

    set_type: str
    interval: bool
    data: bytes  # the file's bytes
    elements: Elements
    lines: int
    unique: bool  # every line a value of its own: a line gone is its value gone


# ---- parsing --------------------------------------------------------------------------


def _lines(data: bytes) -> list[str] | None:
    """The lines of ``data`` (ASCII), without the last line end; None if not ASCII."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not text:
        return []
    pieces = text.split("\n")
    if pieces[-1] == "":
        pieces.pop()
    return pieces


def packed_hosts(set_type: str, lines: list[str]) -> bytes | None:
    """Each line's address packed in network order (``inet_pton``), each line exactly one
    address of ``set_type`` (None: a line is anything else: blank, blanks around it, a
    comment, a network, a range, a typo)."""
    try:
        return b"".join(map(partial(socket.inet_pton, FAMILIES[set_type][0]), lines))
    except (OSError, ValueError):
        return None


def host_values(set_type: str, lines: list[str]) -> list[int] | None:
    """The value of each line, as :func:`packed_hosts` reads it (None: a line that is not
    one address)."""
    width = FAMILIES[set_type][1]
    packed = packed_hosts(set_type, lines)
    if packed is None:
        return None
    return unpacked(width, packed)


def spans_of_values(width: int, values: list[int], steps: list[int] | None = None) -> Spans:
    """Spans of sorted, distinct ``values`` (consecutive ones one span), at C speed;
    ``steps``: the differences between neighbours, if known."""
    if not values:
        return Spans(width)
    if steps is None:
        steps = list(map(sub, islice(values, 1, None), values))
    if 1 not in steps:
        return _spans(width, values, None)
    apart = bytes(map((1).__ne__, steps))  # a span ends between these neighbours
    firsts = list(compress(values, chain((1,), apart)))
    lasts = list(compress(values, chain(apart, (1,))))
    return _spans(width, firsts, lasts)


def _spans(width: int, firsts: list[int], lasts: list[int] | None) -> Spans:
    """Spans of these bounds (``lasts`` None: each span one value). Arrays are made from
    lists, not iterators: an array grows a word at a time from an iterator."""
    words: list[array[int]] = []
    for bounds in (firsts, lasts):
        if bounds is None:
            words += [part[:] for part in words]  # the same words again
        elif width <= 32:
            words.append(array(NARROW, bounds))
        else:
            words.append(array("Q", list(map(rshift, bounds, repeat(64)))))
            words.append(array("Q", list(map(and_, bounds, repeat(MASK64)))))
    return Spans.from_words(width, words)


def _values(spans: Spans) -> list[int]:
    """Every value ``spans`` cover, in order (a list of integers, built at C speed: only
    the spans of more than one value are expanded)."""
    words = spans.words()
    if spans.width <= 32:
        firsts, lasts = words[0].tolist(), words[1].tolist()
    else:
        firsts = list(map(or_, map(lshift, words[0], repeat(64)), words[1]))
        lasts = list(map(or_, map(lshift, words[2], repeat(64)), words[3]))
    if firsts == lasts:
        return firsts
    wide = list(map(ne, firsts, lasts))
    starts = map(add, compress(firsts, wide), repeat(1))
    ends = map(add, compress(lasts, wide), repeat(1))
    firsts += chain.from_iterable(map(range, starts, ends))
    firsts.sort()  # two sorted runs: one merge
    return firsts


def _distinct_sorted(values: list[int]) -> tuple[list[int], list[int], bool]:
    """``values`` sorted (in place) without repeats, the differences between neighbours,
    and whether no value was repeated."""
    values.sort()  # a merge where they are a few sorted runs
    steps = list(map(sub, islice(values, 1, None), values))
    if 0 in steps:
        values = sorted(set(values))
        return values, list(map(sub, islice(values, 1, None), values)), False
    return values, steps, True


def parse_hosts(set_type: str, interval: bool, data: bytes) -> Parsed | None:
    """The elements of a file whose every line is one address (None: any other line, or
    a set type that is not addresses: parse it the general way)."""
    if set_type not in FAMILIES or b"/" in data or b"#" in data:
        return None
    lines = _lines(data)
    if lines is None:
        return None
    values = host_values(set_type, lines)
    if values is None:
        return None
    values, steps, unique = _distinct_sorted(values)
    width = FAMILIES[set_type][1]
    spans = spans_of_values(width, values, steps)
    elements = Counted(set_type, interval, spans, len(values))
    return Parsed(set_type, interval, data, elements, len(lines), unique)


# ---- diffing against the last version -------------------------------------------------


def aligned(old: bytes, new: bytes) -> tuple[bytes, bytes]:
    """The parts of ``old`` and ``new`` outside the blocks they share, each a run of whole
    lines: (old's, new's). Every line of old is in a shared block or in old's part, each
    line of new likewise, and the shared blocks are the same lines in both: so the lines
    of old are those of new with new's part taken out and old's put in.

    Both are walked a block of ``BLOCK`` bytes at a time: a block of old where new goes on
    is shared; else lines were put in new (the block is found further on in new) or taken
    out of old (new's next block is found further on in old), the nearer of the two,
    looked for within ``WINDOW`` bytes of both, then (after a shared block) in windows
    four times wider each time while the searches have scanned less than twice the files;
    else the block changed. Once most blocks changed (``CHANGED`` of the first
    ``CHANGED * 2``: changes spread through the file, a few lines apart), the rest of
    both is one part each: searching for blocks there would find none."""
    found = _aligned(old, new, spread=False)
    assert found is not None  # never given up
    return found


def _aligned(old: bytes, new: bytes, spread: bool) -> tuple[bytes, bytes] | None:
    """As :func:`aligned`; with ``spread``, None where the changes are found spread
    through the files (instead of the rest of both as one part each): once ``SPREAD`` of
    the first ``SPREAD * 2`` blocks changed, the searches for moved blocks bounded by a
    ``SPREAD_SEARCH``-th of the files (a block moved further: a large change, the diff by
    values as fast)."""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    if new and not new.endswith(b"\n"):
        new += b"\n"
    old_parts: list[bytes] = []
    new_parts: list[bytes] = []
    budget = 2 * (len(old) + len(new))  # bytes the searches to the end may scan
    limit = SPREAD if spread else CHANGED
    if spread:  # a moved block further away than that: diffed by values
        budget = (len(old) + len(new)) // SPREAD_SEARCH
    i = j = 0  # the next line of old, of new
    blocks = changed = 0
    shared = True  # the block before was shared (or this is the start)
    while i < len(old):
        if blocks >= 2 * limit and 2 * changed > blocks:
            if spread:
                return None
            old_parts.append(old[i:])
            break
        blocks += 1
        end = _block_end(old, i)
        block = old[i:end]
        if new.startswith(block, j):
            i, j = end, j + len(block)
            shared = True
            continue
        ahead = new[j : _block_end(new, j)]
        # beyond the first window only where lines changed after a shared block: a run of
        # changed blocks would spend the budget on searches that find nothing
        found, back, left = _search(old, new, i, j, block, ahead, budget if shared else 0)
        budget = left if shared else budget
        if found >= 0:  # lines put in new before the block
            new_parts.append(new[j:found])
            i, j = end, found + len(block)
            shared = True
            continue
        if back >= 0:  # lines taken out of old before new's next block
            old_parts.append(old[i:back])
            i, j = back + len(ahead), j + len(ahead)
            shared = True
            continue
        changed += 1
        shared = False
        old_parts.append(block)
        i = end
    new_parts.append(new[j:])
    return b"".join(old_parts), b"".join(new_parts)


def _block_end(data: bytes, start: int) -> int:
    cut = data.find(b"\n", start + BLOCK - 1)
    return len(data) if cut < 0 else cut + 1


def _search(
    old: bytes, new: bytes, i: int, j: int, block: bytes, ahead: bytes, budget: int
) -> tuple[int, int, int]:
    """Where old's ``block`` (at ``i``) starts a line of ``new`` at or after ``j``, or else
    where new's block ``ahead`` (at ``j``) starts a line of ``old`` at or after ``i``: the
    nearer, looked for within ``WINDOW`` bytes of both, then a window four times wider,
    and so on while ``budget`` lasts (-1: not found); and the budget left."""
    window = WINDOW
    while True:
        found = _find_line(new, block, j, j + window + len(block))
        if found >= 0:
            return found, -1, budget
        back = _find_line(old, ahead, i, i + window + len(ahead)) if ahead else -1
        if back >= 0:
            return -1, back, budget
        if budget <= 0 or (j + window >= len(new) and i + window >= len(old)):
            return -1, -1, budget
        budget -= 2 * window
        window *= 4


def _find_line(data: bytes, block: bytes, start: int, stop: int) -> int:
    """Where ``block`` starts a line of ``data`` within ``start:stop`` (-1: nowhere)."""
    found = data.find(block, start, stop)
    while found > 0 and data[found - 1] != 10:  # a block starts a line
        found = data.find(block, found + 1, stop)
    return found


def diff_hosts(last: Parsed, data: bytes) -> Parsed | None:
    """The file's elements now that its bytes are ``data``, from its last version (which
    was all addresses, each line its own value), parsing only the lines that changed, or
    (changes spread through the file) reading the new file's values against the last
    version's spans. None: the fast path cannot prove the result (a changed line that is
    not one address, a value now given twice): parse the whole file instead."""
    if not last.unique or b"/" in data or b"#" in data:
        return None
    if data == last.data:
        return Parsed(last.set_type, last.interval, data, last.elements, last.lines, True)
    # by values only compiled: the Python twin reads a million lines slower than it
    # reads the two parts' lines
    parts = _aligned(last.data, data, spread=compiled() is not None)
    if parts is None or (compiled() is not None and len(parts[0]) + len(parts[1]) > len(data)):
        by_values = diff_values(last, data)
        if by_values is not None:
            return by_values
    return diff_lines(last, data, parts)


def diff_values(last: Parsed, data: bytes) -> Parsed | None:
    """As :func:`diff_hosts`, by values: every line of ``data`` read (one address each, no
    value twice) and merged with the last version's spans; None where that cannot be
    proven (the general diff then decides). One pass over the new file, against
    :func:`diff_lines`'s pass over the lines that went and came: the faster where those
    are more than the new file."""
    base = last.elements
    assert base.spans is not None
    if not last.unique or 2 * last.lines > len(last.data) + 1:  # a line is 2 bytes at least
        return None
    found = value_changes(base.spans, data, last.lines)
    if found is None:
        return None
    spans, removed, added = found
    count = last.lines - len(removed[0]) + len(added[0])  # a value a line, then and now
    elements = _changed(last, spans, count, removed, added)
    return Parsed(last.set_type, last.interval, data, elements, count, True)


def diff_lines(
    last: Parsed, data: bytes, parts: tuple[bytes, bytes] | None = None
) -> Parsed | None:
    """As :func:`diff_hosts`, by the lines outside the blocks the two versions share
    (``parts``: :func:`aligned`'s, if made)."""
    if not last.unique or b"/" in data or b"#" in data:
        return None
    gone_part, new_part = aligned(last.data, data) if parts is None else parts
    set_type, interval = last.set_type, last.interval
    base = last.elements
    assert base.spans is not None
    width = base.spans.width
    # the values that went and came: a line in both parts only moved, and an address
    # written anew another way is neither
    found = changes(width, gone_part, new_part)
    if found is None:
        return None
    removed, added = found
    # a removed value not held: the record does not hold what its bytes say; an added
    # value held: it repeats a line that stayed (no longer one value a line)
    spans = spliced(base.spans, removed, added)
    if spans is None:
        return None
    count = last.lines - len(removed[0]) + len(added[0])  # the last version: a value a line
    lines = last.lines - gone_part.count(b"\n") + new_part.count(b"\n")
    elements = _changed(last, spans, count, removed, added)
    return Parsed(set_type, interval, data, elements, lines, lines == count)


def _changed(
    last: Parsed, spans: Spans, count: int, removed: list[array[int]], added: list[array[int]]
) -> Changed:
    """The elements of the new version: ``spans``, and the values that went and came
    against the last version's."""
    set_type, interval, width = last.set_type, last.interval, spans.width
    return Changed(
        set_type,
        interval,
        spans,
        count,
        base=last.elements,
        added=Counted(set_type, interval, spans_of_words(width, added), len(added[0])),
        removed=Counted(set_type, interval, spans_of_words(width, removed), len(removed[0])),
    )


def count_values(spans: Spans) -> int:
    """How many values ``spans`` cover (sums at C speed)."""
    words = spans.words()
    if spans.width <= 32:
        return int(sum(words[1]) - sum(words[0])) + len(spans)
    firsts: int = sum(map(or_, map(lshift, words[0], repeat(64)), words[1]))
    lasts: int = sum(map(or_, map(lshift, words[2], repeat(64)), words[3]))
    return lasts - firsts + len(spans)


class Counted(Elements):
    """Elements whose count of values is known (a hash set's ``len`` without a pass in
    Python over its spans)."""

    __slots__ = ("_count",)

    def __init__(
        self, set_type: str, interval: bool, spans: Spans, count: int | None = None
    ) -> None:
        super().__init__(set_type, interval, spans)
        self._count = count  # counted when first asked

    def __len__(self) -> int:
        assert self.spans is not None
        if self.interval:
            return len(self.spans)
        if self._count is None:
            self._count = count_values(self.spans)
        return self._count

    def minus(self, other: Elements) -> Elements:
        """As :meth:`Elements.minus`, at C speed (sets of integers, not a merge in Python)."""
        mine, theirs = self.spans, other.spans
        if other is self and mine is not None:  # an unchanged file against its record
            return Counted(self.set_type, self.interval, Spans(mine.width), 0)
        if (
            mine is None
            or theirs is None
            or mine.width != theirs.width
            or other.interval != self.interval
            or other.set_type != self.set_type
        ):
            return super().minus(other)
        if not self.interval:  # values
            gone = set(_values(theirs))
            left = list(filterfalse(gone.__contains__, _values(mine)))
            return Counted(self.set_type, False, spans_of_values(mine.width, left), len(left))
        width = mine.width  # whole elements: a span is kept unless the other has it exactly
        keys = set(_keys(theirs))
        kept = list(filterfalse(keys.__contains__, _keys(mine)))  # in order, as the spans
        firsts = list(map(rshift, kept, repeat(width)))
        lasts = list(map(and_, kept, repeat((1 << width) - 1)))
        return Counted(self.set_type, True, _spans(width, firsts, lasts))


def _keys(spans: Spans) -> Iterator[int]:
    """Each span as one integer, its first above its last (sorted as the spans are)."""
    words = spans.words()
    if spans.width <= 32:
        return map(or_, map(lshift, words[0], repeat(spans.width)), words[1])
    firsts = map(or_, map(lshift, words[0], repeat(64)), words[1])
    lasts = map(or_, map(lshift, words[2], repeat(64)), words[3])
    return map(or_, map(lshift, firsts, repeat(spans.width)), lasts)


class Changed(Counted):
    """Elements made from ``base`` by adding ``added`` and taking away ``removed`` (values of
    a hash set; of an interval set, the spans are whole elements only where no neighbour
    merged, so the shortcut is taken for hash sets only)."""

    __slots__ = ("added", "base", "removed")

    def __init__(
        self,
        set_type: str,
        interval: bool,
        spans: Spans,
        count: int,
        *,
        base: Elements,
        added: Elements,
        removed: Elements,
    ) -> None:
        super().__init__(set_type, interval, spans, count)
        self.base = base
        self.added = added
        self.removed = removed

    def minus(self, other: Elements) -> Elements:
        if other is self.base and not self.interval:
            return self.added
        return super().minus(other)


class Recalled(Counted):
    """Elements read from the record of the last apply: their difference with a
    :class:`Changed` made from them is what that one took away."""

    __slots__ = ()

    def minus(self, other: Elements) -> Elements:
        if isinstance(other, Changed) and other.base is self and not self.interval:
            return other.removed
        return super().minus(other)


# ---- what this process parsed, and what the last apply left --------------------------

_LAST: contextvars.ContextVar[dict[str, Parsed] | None] = contextvars.ContextVar(
    "elements_fast_last", default=None
)
_SEEN: contextvars.ContextVar[dict[str, Parsed] | None] = contextvars.ContextVar(
    "elements_fast_seen", default=None
)


@contextmanager
def remembering(last: dict[str, Parsed]) -> Iterator[dict[str, Parsed]]:
    """While inside: elements files are diffed against ``last`` (file name -> its last
    version), and each file parsed here at C speed lands in the dictionary yielded."""
    seen: dict[str, Parsed] = {}
    last_token = _LAST.set(last)
    seen_token = _SEEN.set(seen)
    try:
        yield seen
    finally:
        _LAST.reset(last_token)
        _SEEN.reset(seen_token)


def active() -> bool:
    """Whether this is inside :func:`remembering` (where :func:`read` is worth calling)."""
    return _SEEN.get() is not None


def read(filename: str, set_type: str, interval: bool, data: bytes) -> Elements | None:
    """The elements of ``filename`` (its bytes ``data``) at C speed, or None (parse it the
    general way). Only inside :func:`remembering` (a one-shot apply or plan): the speed
    costs memory (a Python integer and a string a line while parsing, about 150 bytes per
    element at the peak), which the daemon's line-by-line parse does not spend."""
    remembered = _LAST.get()
    if set_type not in FAMILIES or remembered is None:
        return None
    last = remembered.get(filename)
    parsed = None
    if last is not None and last.set_type == set_type and last.interval == interval:
        parsed = diff_hosts(last, data)
    if parsed is None:
        parsed = parse_hosts(set_type, interval, data)
    if parsed is None:
        return None
    seen = _SEEN.get()
    if seen is not None:
        seen[filename] = parsed
    return parsed.elements
