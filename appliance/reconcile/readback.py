"""What other transactions did to the sets, from the kernel's nf_tables events: a read-back
without a dump.

Every committed transaction is announced with the elements it added and deleted (an
element's comment, its tag, included) and the generation it made. :class:`EventJournal`
keeps those of the last transactions, by generation, packed; while it holds every
generation since a read-back that stood for the kernel, the sets as they are now follow
from that read-back and the events (:func:`follow`), without listing a set again: the
inverse of what another process did is then a delta of the elements it named. Where the
journal has a gap (events lost to a full receive queue, more elements than it keeps) or
the events do not fit what was read (an element deleted that was not there), nothing is
followed and the sets are dumped, as without events.

Only the transactions after the read-back that stands for the kernel are ever followed:
once one stands at a generation (:meth:`EventJournal.settle`), no later read-back starts
before it, and the elements of that generation and the ones before it are not kept (a
reload's own delta, 100,000 element changes, would otherwise stay in the journal).

Pure, apart from the journal's lock: it is filled by the event loop and read by the
kernel worker thread.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from appliance.adapters.nfelements import ElementReader
from appliance.adapters.nftevents import (
    NFT_MSG_DELSETELEM,
    NFT_MSG_NEWSETELEM,
    ElementList,
    PackedElements,
    Transaction,
)
from appliance.model.elements import Elements
from appliance.model.intervals import Spans, exact_difference, join, width_of
from appliance.reconcile.state import HUB_TAG, PROFILE_TAG, Element

CAPACITY = 1024  # transactions kept
BUDGET = 8 * 1024 * 1024  # bytes of packed elements kept in all
WAIT = 1.0  # seconds a read-back waits for the events of a generation it has read


class EventJournal:
    """The last transactions the kernel announced, by generation (filled by the table
    watch; read by the read-back, in another thread)."""

    def __init__(self, capacity: int = CAPACITY, budget: int = BUDGET) -> None:
        self.capacity = capacity
        self.budget = budget
        self.records: dict[int, Transaction] = {}
        self.kept = 0
        self.newest: int | None = None
        self.floor: int | None = None  # no read-back starts before this generation (settle)
        self.live = False  # the watch is reading events: a missing generation may come
        self.writer: int | None = None  # the thread that records
        self.followed = 0  # read-backs that followed events instead of dumping
        self.fell_back = 0  # read-backs that could not (a gap, events that did not fit)
        self.on_read: Callable[[bool, str], None] | None = None  # told of each of them
        self._cond = threading.Condition()

    def note(self, followed: bool, detail: str) -> None:
        """A read-back after other transactions followed the events, or could not."""
        if followed:
            self.followed += 1
        else:
            self.fell_back += 1
        if self.on_read is not None:
            self.on_read(followed, detail)

    @staticmethod
    def _size(transaction: Transaction) -> int:
        return sum(e.nbytes() for e in transaction.elements or ())

    def wanted(self, generation: int) -> bool:
        """Whether a read-back may still follow the transaction that makes ``generation``
        (the table watch keeps no elements of one that is not)."""
        floor = self.floor
        return floor is None or generation > floor

    def settle(self, generation: int) -> None:
        """A read-back stands for the kernel at ``generation``: the read-backs to come
        start there or later, so the elements of the transactions up to it are dropped
        (their records stay, as not wholly known)."""
        with self._cond:
            if self.floor is not None and generation <= self.floor:
                return
            self.floor = generation
            for number, transaction in self.records.items():
                if number <= generation and transaction.elements:
                    self.kept -= self._size(transaction)
                    self.records[number] = replace(transaction, elements=None)

    def record(self, transaction: Transaction) -> None:
        """A transaction as the kernel announced it (one without a generation is a gap)."""
        with self._cond:
            self.writer = threading.get_ident()
            generation = transaction.generation
            if generation is None:
                self._clear()
                return
            if transaction.elements and not self.wanted(generation):
                transaction = replace(transaction, elements=None)
            self.records[generation] = transaction
            self.kept += self._size(transaction)
            self.newest = generation
            while self.records and (len(self.records) > self.capacity or self.kept > self.budget):
                oldest = next(iter(self.records))
                self.kept -= self._size(self.records.pop(oldest))
            self._cond.notify_all()

    def lost(self) -> None:
        """Events were lost: no transaction before the next one recorded is known."""
        with self._cond:
            self._clear()
            self._cond.notify_all()

    def _clear(self) -> None:
        self.records = {}
        self.kept = 0

    def set_live(self, live: bool) -> None:
        with self._cond:
            self.live = live
            if not live:
                self._clear()
            self._cond.notify_all()

    def between(self, after: int, through: int, wait: float = WAIT) -> list[Transaction] | None:
        """The transactions of generations ``after`` + 1 to ``through``, each wholly known,
        or None. While the watch is live, waits up to ``wait`` seconds for generations not
        read yet (never in the thread that records: it would wait on itself)."""
        if through <= after or through - after > self.capacity:
            return None
        deadline = time.monotonic() + wait
        with self._cond:
            while (
                self.live
                and (self.newest is None or self.newest < through)
                and self.writer != threading.get_ident()
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            found = [self.records.get(g) for g in range(after + 1, through + 1)]
        if any(
            t is None or t.elements is None or any(c.kind == -1 for c in t.changes) for t in found
        ):
            return None
        return [t for t in found if t is not None]


@dataclass(frozen=True)
class SetShape:
    """What an element of a set looks like: its type, intervals, width."""

    set_type: str
    interval: bool
    width: int


class Unfollowed(Exception):
    """The events do not fit what was read back: the set must be read again."""


def shapes(objects: Iterable[dict[str, Any]]) -> dict[str, SetShape]:
    """The address and port sets of a listing whose elements change only by transactions
    (no timeouts, not dynamic: the packet path adds to those), by name."""
    found: dict[str, SetShape] = {}
    for obj in objects:
        body = obj.get("set")
        if body is None or {"timeout", "dynamic"} & set(body.get("flags", [])):
            continue
        width = width_of(body["type"])
        if width is not None:
            found[body["name"]] = SetShape(body["type"], "interval" in body.get("flags", []), width)
    return found


def follow(
    transactions: Sequence[Transaction],
    names: Iterable[str],
    set_shapes: dict[str, SetShape],
    tagged: dict[str, dict[str, Elements]],
    elements: dict[str, dict[str, Element]],
) -> set[str]:
    """Carry the element events of ``transactions`` into ``tagged`` and ``elements`` (both
    changed in place, per set: a new dict each, the Elements replaced, never changed) for
    the sets ``names``. Returns the sets the events could not be followed in (elements with
    a timeout, an element deleted that was not there, an overlap): they must be read."""
    wanted = set(names)
    failed: set[str] = set()
    for transaction in transactions:
        assert transaction.elements is not None
        for kind, name, lists in _groups(transaction.elements):
            if name not in wanted or name in failed:
                continue
            shape = set_shapes.get(name)
            if shape is None:
                failed.add(name)
                continue
            try:
                _apply(
                    kind, shape, lists, tagged.setdefault(name, {}), elements.setdefault(name, {})
                )
            except Unfollowed:
                failed.add(name)
    return failed


Listed = ElementList | PackedElements


def _groups(lists: list[Listed]) -> Iterable[tuple[int, str, list[Listed]]]:
    """Runs of element messages of one kind in one set, in the transaction's order (an
    interval's start and end, two messages, decode together)."""
    run: list[Listed] = []
    key: tuple[int, str] | None = None
    for item in lists:
        if (item.kind, item.set) != key:
            if key is not None:
                yield key[0], key[1], run
            key, run = (item.kind, item.set), []
        run.append(item)
    if key is not None:
        yield key[0], key[1], run


def _apply(
    kind: int,
    shape: SetShape,
    lists: list[Listed],
    tagged: dict[str, Elements],
    runtime: dict[str, Element],
) -> None:
    reader = ElementReader(shape.width, shape.interval, ordered=False)
    for item in lists:
        if isinstance(item, ElementList):
            reader.feed(item.elements, 0, len(item.elements))
            continue
        if item.timed():
            raise Unfollowed("elements with a timeout")
        if len(item) and item.klen != shape.width // 8:
            raise Unfollowed("keys of another length")
        for listed in item.lists():  # a chunk at a time, as a dump's messages
            reader.feed(listed, 0, len(listed))
    if reader.skipped:
        raise Unfollowed("elements with a timeout")
    for tag, spans in reader.result().items():
        items = Elements(shape.set_type, shape.interval, spans)
        if tag in (PROFILE_TAG, HUB_TAG):
            held = tagged.get(tag)
            if kind == NFT_MSG_NEWSETELEM:
                tagged[tag] = items if held is None else _elements(held, _added(held, spans))
            elif kind == NFT_MSG_DELSETELEM:
                if held is None:
                    raise Unfollowed("deleted, not held")
                tagged[tag] = _elements(held, _removed(held, spans))
        elif kind == NFT_MSG_NEWSETELEM:
            runtime.update((text, Element(text, tag)) for text in items)
        elif kind == NFT_MSG_DELSETELEM:
            for text in items:
                if runtime.pop(text, None) is None:
                    raise Unfollowed("deleted, not held")


def _elements(like: Elements, spans: Spans) -> Elements:
    return Elements(like.set_type, like.interval, spans)


def _added(held: Elements, spans: Spans) -> Spans:
    assert held.spans is not None
    if held.interval:  # elements stay apart; an overlap means the read-back was not right
        return patched(held.spans, spans, _join)
    return patched(held.spans, spans, Spans.union)


def _join(a: Spans, b: Spans) -> Spans:
    try:
        return join(a, b)
    except ValueError:
        raise Unfollowed("overlap") from None


def _removed(held: Elements, spans: Spans) -> Spans:
    assert held.spans is not None

    def remove(a: Spans, b: Spans) -> Spans:
        left = a.difference(b)
        if a.count() - left.count() != b.count():
            raise Unfollowed("deleted, not held")
        return left

    return patched(held.spans, spans, remove)


def joined(held: Elements, more: Elements) -> Elements:
    """``held.join(more)``, worked out only where ``more`` touches ``held``."""
    if held.spans is None or more.spans is None:
        return held.join(more)
    op = join if held.interval else Spans.union
    return _elements(held, patched(held.spans, more.spans, op))


def without(held: Elements, gone: Elements) -> Elements:
    """``held.minus(gone)``, worked out only where ``gone`` touches ``held``."""
    if held.spans is None or gone.spans is None:
        return held.minus(gone)
    op = exact_difference if held.interval else Spans.difference
    return _elements(held, patched(held.spans, gone.spans, op))


# ---- a small change to many spans, without a pass over all of them in Python ------------


def _sequence(bounds: Any) -> Sequence[int]:
    return bounds.lo if bounds.hi is None else bounds  # type: ignore[no-any-return]


def _copy(out: Spans, source: Spans, i: int, j: int) -> None:
    """Append spans ``i`` to ``j`` of ``source`` to ``out`` (array slices, no merging)."""
    if j > i:
        for target, words in zip(out.words(), source.words(), strict=True):
            target.extend(words[i:j])


def _part(source: Spans, i: int, j: int) -> Spans:
    part = Spans(source.width)
    _copy(part, source, i, j)
    return part


def patched(spans: Spans, change: Spans, op: Callable[[Spans, Spans], Spans]) -> Spans:
    """``op(spans, change)`` for an ``op`` whose result differs from ``spans`` only where
    ``change`` touches it (a value of ``change`` or one next to it): worked out on those
    few spans, the others copied as array slices. ``spans`` is not changed."""
    if len(change) * 64 >= len(spans):
        return op(spans, change)
    firsts, lasts = _sequence(spans.firsts), _sequence(spans.lasts)
    windows: list[list[int]] = []  # [i, j, k, l]: spans[i:j] meet change[k:l]
    for k, (first, last) in enumerate(change):
        i = bisect_left(lasts, first - 1)  # the first span that ends at or after first - 1
        j = bisect_right(firsts, last + 1)  # past the last span that starts by last + 1
        if windows and i <= windows[-1][1]:
            windows[-1][1] = max(windows[-1][1], j)
            windows[-1][3] = k + 1
        else:
            windows.append([i, j, k, k + 1])
    out = Spans(spans.width)
    at = 0
    for i, j, k, last in windows:
        _copy(out, spans, at, i)
        result = op(_part(spans, i, j), _part(change, k, last))
        _copy(out, result, 0, len(result))
        at = j
    _copy(out, spans, at, len(spans))
    return out
