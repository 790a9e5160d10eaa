"""Address and port ranges in packed form: sorted spans, overlapping and adjacent ones
merged. Pure.

A :class:`Spans` holds its bounds in machine-word arrays, never an object per element: an
IPv4 address or port span costs 8 bytes (two 32-bit words), an IPv6 span 32 bytes (the high
and low halves of both bounds). Spans that are all single values (a list of hosts) hold one
array of values for both bounds: 4 bytes an IPv4 host, 16 an IPv6 host. Union, difference
and the delta between two sets of spans run on that form, in one merge pass over sorted
bounds. :class:`Collector` builds spans from values in any order without a list of them:
sorted input is merged in place.
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate, chain, islice, repeat
from operator import and_, sub

MASK64 = (1 << 64) - 1
MASK128 = (1 << 128) - 1
NARROW = "I" if array("I").itemsize == 4 else "L"  # a 32-bit word: bounds of 32 bits or less
WIDTHS = {"ipv4_addr": 32, "inet_service": 16, "ipv6_addr": 128}


class _Bounds:
    """A read-only sequence of integers over one or two word arrays (for ``bisect``)."""

    __slots__ = ("hi", "lo")

    def __init__(self, lo: array[int], hi: array[int] | None) -> None:
        self.lo = lo
        self.hi = hi

    def __len__(self) -> int:
        return len(self.lo)

    def __getitem__(self, i: int) -> int:
        if self.hi is None:
            return self.lo[i]
        return (self.hi[i] << 64) | self.lo[i]

    def append(self, value: int) -> None:
        if self.hi is None:
            self.lo.append(value)
        else:
            self.hi.append(value >> 64)
            self.lo.append(value & MASK64)

    def nbytes(self) -> int:
        size = self.lo.itemsize * len(self.lo)
        return size + (self.hi.itemsize * len(self.hi) if self.hi is not None else 0)

    def set(self, i: int, value: int) -> None:
        if self.hi is None:
            self.lo[i] = value
        else:
            self.hi[i] = value >> 64
            self.lo[i] = value & MASK64

    def truncate(self, n: int) -> None:
        del self.lo[n:]
        if self.hi is not None:
            del self.hi[n:]

    def drop(self, n: int) -> None:
        """Take away the first ``n`` bounds."""
        del self.lo[:n]
        if self.hi is not None:
            del self.hi[:n]

    def first_at_least(self, value: int) -> int:
        """Where ``value`` would go in these sorted bounds (before any equal one)."""
        return bisect_left(self.lo if self.hi is None else self, value)

    def arrays(self) -> tuple[array[int], ...]:
        return (self.lo,) if self.hi is None else (self.hi, self.lo)


STREAM = 1 << 16  # words of a parked array compressed or decoded at a time
FEED = 1 << 16  # deflated bytes given to the decoder at a time


@dataclass(frozen=True)
class _Parked:
    """Spans held deflated while they are not used."""

    count: int
    points: bool
    blobs: list[tuple[str, bytes]]  # (typecode, deflated differences) per word array


def _inflated(code: str, blob: bytes) -> Iterator[array[int]]:
    """The words of a parked array, at most ``STREAM`` at a time (the deflated bytes fed a
    part at a time: the decoder's unread rest is never a copy of the whole)."""
    size = array(code).itemsize
    mask = (1 << (8 * size)) - 1
    unpacker = zlib.decompressobj()
    view = memoryview(blob)
    at = 0
    pending: bytes | memoryview = b""
    carry = b""  # the bytes of a word cut between two outputs
    flushed = False
    previous = 0
    while True:
        if pending:
            data = unpacker.decompress(pending, STREAM * size)
            pending = unpacker.unconsumed_tail
        elif at < len(view):
            pending = view[at : at + FEED]
            at += FEED
            continue
        elif not flushed:
            data, flushed = unpacker.flush(), True
        else:
            if carry:
                raise ValueError("parked spans: a word cut short")
            return
        if carry:
            data, carry = carry + data, b""
        cut = len(data) - len(data) % size
        if cut < len(data):
            data, carry = data[:cut], data[cut:]
        if not data:
            continue
        steps = array(code)
        steps.frombytes(data)
        words = array(code, map(and_, accumulate(steps, initial=previous), repeat(mask)))
        del words[0]
        previous = words[-1]
        yield words


def _joined(high: int, low: int, shift: int) -> int:
    return (high << shift) | low


def _pack_bounds(arrays: list[array[int]]) -> _Bounds:
    return _Bounds(arrays[-1], arrays[0] if len(arrays) == 2 else None)


def _bounds(width: int) -> _Bounds:
    if width > 64:
        return _Bounds(array("Q"), array("Q"))
    return _Bounds(array(NARROW if width <= 32 else "Q"), None)


class Spans:
    """Disjoint, non-adjacent, sorted spans ``[first, last]`` of ``width``-bit integers."""

    __slots__ = ("_firsts", "_lasts", "_parked", "width")

    def __init__(self, width: int, points: bool = False) -> None:
        """Empty spans; with ``points``, ``lasts`` is ``firsts`` (one array of single
        values) until a span of more than one value is added through :meth:`_push` or
        :meth:`_append` (never through the bounds' own ``append``)."""
        if width not in (16, 32, 128):
            raise ValueError(f"unsupported width {width}")
        self.width = width
        self._parked: _Parked | None = None
        self._firsts = _bounds(width)
        self._lasts = self._firsts if points else _bounds(width)

    @property
    def firsts(self) -> _Bounds:
        if self._parked is not None:
            self._unpark()
        return self._firsts

    @firsts.setter
    def firsts(self, bounds: _Bounds) -> None:
        self._firsts = bounds

    @property
    def lasts(self) -> _Bounds:
        if self._parked is not None:
            self._unpark()
        return self._lasts

    @lasts.setter
    def lasts(self, bounds: _Bounds) -> None:
        self._lasts = bounds

    @property
    def points(self) -> bool:
        """Whether every span is a single value, held once (``lasts`` is ``firsts``)."""
        if self._parked is not None:
            return self._parked.points
        return self._lasts is self._firsts

    # ---- parked: compressed while only read in order ----------------------------------

    @property
    def parked(self) -> bool:
        return self._parked is not None

    def park(self) -> None:
        """Hold the bounds compressed (each word array as the differences from one word to
        the next, deflated) until a bound is read by its index: reading the spans in order
        (iteration, ``len``, ``difference``, ``union``) decodes them a part at a time. A
        list of addresses takes a few bytes a span parked."""
        if self._parked is not None:
            return
        words = [*self._firsts.arrays(), *([] if self.points else self._lasts.arrays())]
        blobs: list[tuple[str, bytes]] = []
        for part in words:
            mask = (1 << (8 * part.itemsize)) - 1
            packer = zlib.compressobj(1)
            out: list[bytes] = []
            previous = 0
            for k in range(0, len(part), STREAM):
                piece = part[k : k + STREAM]
                steps = array(
                    part.typecode,
                    map(and_, map(sub, piece, chain((previous,), piece)), repeat(mask)),
                )
                previous = piece[-1]
                out.append(packer.compress(steps))
            out.append(packer.flush())
            blobs.append((part.typecode, b"".join(out)))
        self._parked = _Parked(len(self), self.points, blobs)
        self._firsts = self._lasts = _bounds(self.width)

    def _parked_spans(self) -> Iterator[tuple[int, int]]:
        """The spans of parked bounds, in order, decoded a part at a time."""
        assert self._parked is not None
        words = [chain.from_iterable(_inflated(code, blob)) for code, blob in self._parked.blobs]
        if len(words) == 1:
            return ((value, value) for value in words[0])
        if len(words) == 2 and self.width <= 64:
            return zip(words[0], words[1], strict=True)
        values = [map(_joined, words[k], words[k + 1], repeat(64)) for k in range(0, len(words), 2)]
        if len(values) == 1:
            return ((value, value) for value in values[0])
        return zip(values[0], values[1], strict=True)

    def _unpark(self) -> None:
        parked = self._parked
        assert parked is not None
        arrays = []
        for code, blob in parked.blobs:
            whole = array(code)
            for part in _inflated(code, blob):
                whole.extend(part)
            arrays.append(whole)
        half = len(arrays) if parked.points else len(arrays) // 2
        self._firsts = _pack_bounds(arrays[:half])
        self._lasts = self._firsts if parked.points else _pack_bounds(arrays[half:])
        self._parked = None

    def _spread(self) -> None:
        """Hold the last bounds apart from the first ones (a wider span comes)."""
        if self.lasts is self.firsts:
            firsts = self.firsts
            self.lasts = _Bounds(
                array(firsts.lo.typecode, firsts.lo),
                array(firsts.hi.typecode, firsts.hi) if firsts.hi is not None else None,
            )

    def compact(self) -> Spans:
        """Hold the bounds once where every span is a single value (``self``)."""
        if self.lasts is not self.firsts and all(
            mine == theirs
            for mine, theirs in zip(self.firsts.arrays(), self.lasts.arrays(), strict=True)
        ):
            self.lasts = self.firsts
        return self

    def _truncate(self, n: int) -> None:
        self.firsts.truncate(n)
        if self.lasts is not self.firsts:
            self.lasts.truncate(n)

    def _drop(self, n: int) -> None:
        self.firsts.drop(n)
        if self.lasts is not self.firsts:
            self.lasts.drop(n)

    # ---- building ---------------------------------------------------------------------

    @classmethod
    def of(cls, width: int, pairs: Iterable[tuple[int, int]]) -> Spans:
        """Spans covering every ``(first, last)`` pair given (in any order, overlapping or
        not); ValueError for a pair outside ``width`` bits or with ``first > last``."""
        collector = Collector(width)
        for first, last in pairs:
            collector.add(first, last)
        return collector.finish()

    def _push(self, first: int, last: int) -> None:
        """Append a span that starts at or after the last one's start (merging)."""
        n = len(self.lasts)
        if n and first <= self.lasts[n - 1] + 1:
            if last > self.lasts[n - 1]:
                self._set_last(n - 1, last)
            return
        self._append(first, last)

    def _append(self, first: int, last: int) -> None:
        """Append a span as it is (no merging)."""
        if self.lasts is self.firsts:
            if first == last:
                self.firsts.append(first)
                return
            self._spread()
        self.firsts.append(first)
        self.lasts.append(last)

    def _set_last(self, i: int, value: int) -> None:
        self._spread()
        self.lasts.set(i, value)

    # ---- reading ----------------------------------------------------------------------

    def __len__(self) -> int:
        if self._parked is not None:
            return self._parked.count
        return len(self._firsts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self._parked is not None:
            yield from self._parked_spans()
            return
        firsts, lasts = self._firsts, self._lasts
        for i in range(len(firsts)):
            yield firsts[i], lasts[i]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Spans) and self.width == other.width and list(self) == list(other)

    def __hash__(self) -> int:  # pragma: no cover - mutable while built; not hashed
        raise TypeError("Spans is not hashable")

    def nbytes(self) -> int:
        """Bytes held by the bounds (without the arrays' headers)."""
        if self._parked is not None:
            return sum(len(blob) for _code, blob in self._parked.blobs)
        if self.lasts is self.firsts:
            return self.firsts.nbytes()
        return self.firsts.nbytes() + self.lasts.nbytes()

    def count(self) -> int:
        """How many values the spans cover."""
        return sum(last - first + 1 for first, last in self)

    def values(self) -> Iterator[int]:
        """Every value covered, in order (the elements of a hash set)."""
        for first, last in self:
            yield from range(first, last + 1)

    def take(self, n: int) -> list[tuple[int, int]]:
        """The first ``n`` spans."""
        return [(self.firsts[i], self.lasts[i]) for i in range(min(n, len(self)))]

    def words(self) -> list[array[int]]:
        """The word arrays that hold the bounds (firsts, then lasts; high words first; the
        same arrays twice where the spans are single values)."""
        return [*self.firsts.arrays(), *self.lasts.arrays()]

    @classmethod
    def from_words(cls, width: int, words: list[array[int]]) -> Spans:
        """Spans over ``words`` as :meth:`words` gives them (taken, not copied; held once
        where the first and last bounds are equal); ValueError if they do not fit
        ``width``."""
        spans = cls(width)
        mine = spans.words()
        if len(words) != len(mine) or len({len(w) for w in words}) > 1:
            raise ValueError("packed spans: word arrays do not match")
        for target, given in zip(mine, words, strict=True):
            if given.typecode != target.typecode:
                raise ValueError("packed spans: word arrays do not match")
        bounds = (spans.firsts, spans.lasts)
        half = len(words) // 2
        for bound, part in zip(bounds, (words[:half], words[half:]), strict=True):
            if bound.hi is None:
                bound.lo = part[0]
            else:
                bound.hi, bound.lo = part
        return spans.compact()

    def digest(self) -> str:
        """A hash of the width and the bounds' bytes: equal spans, equal digests."""
        sha = hashlib.sha256(str(self.width).encode())
        for bounds in (self.firsts, self.lasts):
            for words in bounds.arrays():
                sha.update(memoryview(words))
        return sha.hexdigest()

    def contains(self, value: int) -> bool:
        i = bisect_right(self.firsts, value) - 1
        return i >= 0 and value <= self.lasts[i]

    def overlapping(self, first: int, last: int) -> list[tuple[int, int]]:
        """The spans that share at least one value with ``[first, last]``."""
        i = max(bisect_right(self.firsts, first) - 1, 0)
        found = []
        while i < len(self.firsts) and self.firsts[i] <= last:
            if self.lasts[i] >= first:
                found.append((self.firsts[i], self.lasts[i]))
            i += 1
        return found

    # ---- algebra ----------------------------------------------------------------------

    def union(self, other: Spans) -> Spans:
        self._same_width(other)
        result = Spans(self.width, points=True)
        for first, last in _merge_sorted(iter(self), iter(other)):
            result._push(first, last)
        return result

    def difference(self, other: Spans) -> Spans:
        """Values in ``self`` and not in ``other``."""
        self._same_width(other)
        result = Spans(self.width, points=True)
        theirs = iter(other)
        cut = next(theirs, None)
        for first, last in self:
            start = first
            while cut is not None and cut[1] < start:
                cut = next(theirs, None)
            while cut is not None and cut[0] <= last:
                if cut[0] > start:
                    result._push(start, cut[0] - 1)
                if cut[1] >= last:
                    start = last + 1
                    break
                start = cut[1] + 1
                cut = next(theirs, None)
            if start <= last:
                result._push(start, last)
        return result

    def _same_width(self, other: Spans) -> None:
        if other.width != self.width:
            raise ValueError(f"spans of {self.width} and {other.width} bits")


def delta(old: Spans, new: Spans) -> tuple[Spans, Spans]:
    """What turns ``old`` into ``new``: (spans to add, spans to remove)."""
    return new.difference(old), old.difference(new)


def exact_difference(a: Spans, b: Spans) -> Spans:
    """The spans of ``a`` that are not spans of ``b`` as they stand (the same first and the
    same last): the elements of an interval set to add or delete whole, as the kernel holds
    them (it deletes an element only as it was added)."""
    a._same_width(b)
    result = Spans(a.width, points=True)
    theirs = iter(b)
    cut = next(theirs, None)
    for span in a:
        while cut is not None and cut < span:
            cut = next(theirs, None)
        if cut != span:
            result._append(*span)
    return result


def exact_delta(old: Spans, new: Spans) -> tuple[Spans, Spans]:
    """What turns the interval elements ``old`` into ``new``: (elements to add, to delete)."""
    return exact_difference(new, old), exact_difference(old, new)


def join(a: Spans, b: Spans) -> Spans:
    """``a`` and ``b`` in one sorted list; they must share no value (ValueError if they
    overlap). Adjacent spans stay apart: each stays the element it was."""
    a._same_width(b)
    result = Spans(a.width, points=True)
    last = -2
    for first, end in _merge_sorted(iter(a), iter(b)):
        if first <= last:
            raise ValueError("joined spans overlap")
        result._append(first, end)
        last = end
    return result


# Spans sorted at a time when the input was not in order. A run is sorted as a list of
# integers, first and last side by side (48 bytes a span while it lasts where the bounds
# have 32 bits or less, about 70 where they have 128): small runs keep that transient
# small, and with it the interpreter's pools that it leaves behind. Each run's word arrays are
# 128 KiB or more (the C library maps such blocks on their own: the front of a run given
# up goes back to the system at once).
RUN = 1 << 15
PART = 1 << 16  # spans merged between two cuts of what the runs have given
SAMPLE = 1 << 10  # every SAMPLE-th first value of each run picks the parts' bounds


class Collector:
    """Spans built from ``(first, last)`` pairs given one at a time, in any order.

    The pairs are kept in the packed arrays as they come (single values in one array, until
    a wider span comes); :meth:`finish` merges them in place when they came in order of
    their first value (no second copy). Else it cuts them into sorted runs of ``RUN`` spans
    from the end (the arrays shrink as the runs are made), and merges the runs into new
    arrays a part of about ``PART`` spans at a time, each run giving up what it gave after
    each part: the spans are held about once throughout, not twice.
    """

    def __init__(self, width: int) -> None:
        self.top = (1 << width) - 1
        self._start(width)

    def _start(self, width: int) -> None:
        self.spans = Spans(width, points=True)
        self.ordered = True
        self._first = -1
        self._narrow = self.spans.firsts.hi is None
        self._firsts = self.spans.firsts.lo
        self._lasts: array[int] | None = None  # while every pair is a single value

    def add(self, first: int, last: int) -> None:
        if not 0 <= first <= last <= self.top:
            raise ValueError(f"bad span {first}-{last} for {self.spans.width} bits")
        if first < self._first:
            self.ordered = False
        self._first = first
        if self._lasts is None and first != last:
            self.spans._spread()
            self._lasts = self.spans.lasts.lo
        if self._narrow:
            self._firsts.append(first)
            if self._lasts is not None:
                self._lasts.append(last)
        else:
            self.spans.firsts.append(first)
            if self._lasts is not None:
                self.spans.lasts.append(last)

    def __len__(self) -> int:
        return len(self.spans)

    def finish(self) -> Spans:
        raw = self.spans
        ordered = self.ordered
        self._start(raw.width)
        if ordered:
            return _merge_in_place(raw)
        return _merged(raw.width, _merge_runs(_sorted_runs(raw)))


def _sorted_runs(raw: Spans) -> list[Spans]:
    """``raw`` as sorted runs of ``RUN`` spans, taken from its end (``raw`` left empty)."""
    runs: list[Spans] = []
    end = len(raw)
    narrow = raw.firsts.hi is None
    points = raw.points
    while end > 0:
        start = (end - 1) // RUN * RUN
        run = Spans(raw.width, points)
        if narrow and points:
            run.firsts.lo = array(raw.firsts.lo.typecode, sorted(raw.firsts.lo[start:end]))
        elif narrow:  # one integer a span while sorted (48 bytes, not a tuple's 128)
            code = raw.firsts.lo.typecode
            keys = sorted(
                (first << 32) | last
                for first, last in zip(
                    islice(raw.firsts.lo, start, end),
                    islice(raw.lasts.lo, start, end),
                    strict=True,
                )
            )
            run.firsts.lo = array(code, (key >> 32 for key in keys))
            run.lasts.lo = array(code, (key & 0xFFFFFFFF for key in keys))
            del keys
        elif points:  # one 128-bit integer a value
            hi = raw.firsts.hi
            assert hi is not None
            keys = sorted(
                (high << 64) | low
                for high, low in zip(
                    islice(hi, start, end), islice(raw.firsts.lo, start, end), strict=True
                )
            )
            run.firsts.hi = array("Q", (key >> 64 for key in keys))
            run.firsts.lo = array("Q", (key & MASK64 for key in keys))
            del keys
        else:  # one integer a span as well (of 256 bits: about 70 bytes, not 150)
            keys = sorted((first << 128) | last for first, last in _pairs(raw, start, end))
            for key in keys:
                run.firsts.append(key >> 128)
                run.lasts.append(key & MASK128)
            del keys
        raw._truncate(start)
        runs.append(run)
        end = start
    runs.reverse()
    return runs


def _merge_runs(runs: list[Spans]) -> Iterator[tuple[int, int]]:
    """The spans of sorted ``runs`` in order of their first value, a part at a time: after
    each part, every run gives up the spans it yielded (``runs`` left empty)."""
    total = sum(len(run) for run in runs)
    samples = sorted(run.firsts[i] for run in runs for i in range(0, len(run), SAMPLE))
    parts = max(1, min(total // PART, len(samples)))
    bounds = sorted({samples[k * len(samples) // parts] for k in range(1, parts)})
    for bound in [*bounds, None]:
        cuts = [len(run) if bound is None else run.firsts.first_at_least(bound) for run in runs]
        yield from heapq.merge(
            *(_pairs(run, 0, cut) for run, cut in zip(runs, cuts, strict=True) if cut)
        )
        for run, cut in zip(runs, cuts, strict=True):
            run._drop(cut)


def _pairs(spans: Spans, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Spans ``start:end`` as ``(first, last)`` pairs (read at C speed where narrow)."""
    firsts, lasts = spans.firsts, spans.lasts
    if firsts.hi is None or lasts.hi is None:
        return zip(islice(firsts.lo, start, end), islice(lasts.lo, start, end), strict=True)
    if spans.points:
        return (
            (value, value)
            for value in (
                (high << 64) | low
                for high, low in zip(
                    islice(firsts.hi, start, end), islice(firsts.lo, start, end), strict=True
                )
            )
        )
    return (
        ((fh << 64) | fl, (lh << 64) | ll)
        for fh, fl, lh, ll in zip(
            islice(firsts.hi, start, end),
            islice(firsts.lo, start, end),
            islice(lasts.hi, start, end),
            islice(lasts.lo, start, end),
            strict=True,
        )
    )


def _merged(width: int, pairs: Iterable[tuple[int, int]]) -> Spans:
    """Spans of ``pairs`` sorted by first value (overlapping and adjacent ones merged;
    single values held once while every span is one)."""
    result = Spans(width, points=True)
    if result.firsts.hi is not None:
        for first, last in pairs:
            result._push(first, last)
        return result
    firsts = result.firsts.lo
    lasts: array[int] | None = None
    low = high = -2
    for first, last in pairs:
        if first <= high + 1:
            if last > high:
                high = last
            continue
        if high >= 0:
            if lasts is None and low != high:
                result._spread()
                lasts = result.lasts.lo
            firsts.append(low)
            if lasts is not None:
                lasts.append(high)
        low, high = first, last
    if high >= 0:
        if lasts is None and low != high:
            result._spread()
            lasts = result.lasts.lo
        firsts.append(low)
        if lasts is not None:
            lasts.append(high)
    return result


def _values(bounds: _Bounds) -> Iterator[int]:
    if bounds.hi is None:
        return iter(bounds.lo)
    return ((high << 64) | low for high, low in zip(bounds.hi, bounds.lo, strict=True))


def _merge_in_place(spans: Spans) -> Spans:
    """``spans`` (sorted by first, possibly overlapping or adjacent) merged in place."""
    firsts = spans.firsts
    if spans.points:
        following = _values(firsts)
        next(following, None)
        if all(b - a > 1 for a, b in zip(_values(firsts), following, strict=False)):
            return spans  # apart from each other: nothing to merge
        spans._spread()
    lasts = spans.lasts
    if firsts.hi is None:
        lo_firsts, lo_lasts = firsts.lo, lasts.lo
        n = 0
        low = high = -2
        for first, last in zip(lo_firsts, lo_lasts, strict=True):  # writes trail the reads
            if first <= high + 1:
                if last > high:
                    high = last
                continue
            if high >= 0:
                lo_firsts[n] = low
                lo_lasts[n] = high
                n += 1
            low, high = first, last
        if high >= 0:
            lo_firsts[n] = low
            lo_lasts[n] = high
            n += 1
        spans._truncate(n)
        return spans.compact()
    n = 0
    for i in range(len(firsts)):
        first, last = firsts[i], lasts[i]
        if n and first <= lasts[n - 1] + 1:
            if last > lasts[n - 1]:
                lasts.set(n - 1, last)
            continue
        if n != i:
            firsts.set(n, first)
            lasts.set(n, last)
        n += 1
    spans._truncate(n)
    return spans.compact()


def _merge_sorted(
    a: Iterator[tuple[int, int]], b: Iterator[tuple[int, int]]
) -> Iterator[tuple[int, int]]:
    x, y = next(a, None), next(b, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x <= y):
            assert x is not None
            yield x
            x = next(a, None)
        else:
            yield y
            y = next(b, None)


# ---- set elements ---------------------------------------------------------------------


def width_of(set_type: str) -> int | None:
    """The bit width of an interval set type's values (None: not a range type)."""
    return WIDTHS.get(set_type)


def span_text(set_type: str, first: int, last: int) -> str:
    """One element's text as the kernel prints it: a host, a network or ``first-last``."""
    if set_type == "inet_service":
        return str(first) if first == last else f"{first}-{last}"
    make = ipaddress.IPv4Address if set_type == "ipv4_addr" else ipaddress.IPv6Address
    low, high = make(first), make(last)
    if first == last:
        return str(low)
    size = last - first + 1
    if size & (size - 1) == 0 and first % size == 0:
        return f"{low}/{WIDTHS[set_type] - size.bit_length() + 1}"
    return f"{low}-{high}"
