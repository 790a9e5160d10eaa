"""A set's elements, packed: address and port elements as sorted spans of integers
(:class:`~appliance.model.intervals.Spans`), never a string per element. Pure.

In an interval set each span is one element (overlapping and adjacent ranges merged, as the
kernel would refuse overlaps); in a hash set each value covered is one element (a run of
consecutive values is held as one span). Interface names (``ifname``) are kept as text.

The elements read as their canonical texts, in order, and compare as sets of elements:
``minus``, ``common`` and ``join`` work on whole elements as the kernel holds them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from appliance.model.intervals import (
    Collector,
    Spans,
    exact_difference,
    join,
    span_text,
    width_of,
)
from appliance.model.values import element_bounds


class Elements:
    """The elements of one set of type ``set_type`` (interval or hash)."""

    __slots__ = ("_digest", "interval", "names", "set_type", "spans")

    def __init__(
        self,
        set_type: str,
        interval: bool,
        spans: Spans | None = None,
        names: Iterable[str] = (),
    ) -> None:
        width = width_of(set_type)
        self.set_type = set_type
        self.interval = interval and width is not None
        if width is not None and spans is None:
            spans = Spans(width)
        self.spans = spans
        self.names: tuple[str, ...] = tuple(sorted(set(names))) if width is None else ()
        self._digest: str | None = None

    @classmethod
    def of(cls, set_type: str, interval: bool, texts: Iterable[str]) -> Elements:
        """The elements of canonical ``texts`` (as ``canonical_element`` gives them)."""
        width = width_of(set_type)
        if width is None:
            return cls(set_type, interval, names=texts)
        collector = Collector(width)
        for text in texts:
            collector.add(*element_bounds(set_type, text))
        return cls(set_type, interval, collector.finish())

    # ---- reading ----------------------------------------------------------------------

    @property
    def packed(self) -> bool:
        return self.spans is not None

    def __len__(self) -> int:
        """How many elements the kernel holds for these."""
        if self.spans is None:
            return len(self.names)
        return len(self.spans) if self.interval else self.spans.count()

    def __bool__(self) -> bool:
        return bool(self.spans) if self.spans is not None else bool(self.names)

    def bounds(self) -> Iterator[tuple[int, int]]:
        """Each element's first and last value, in order."""
        assert self.spans is not None
        if self.interval:
            yield from self.spans
        else:
            for value in self.spans.values():
                yield value, value

    def __iter__(self) -> Iterator[str]:
        """Each element's canonical text, in order."""
        if self.spans is None:
            yield from self.names
            return
        for first, last in self.bounds():
            yield span_text(self.set_type, first, last)

    def first(self, n: int) -> list[str]:
        """The texts of the first ``n`` elements."""
        texts: list[str] = []
        for text in self:
            if len(texts) == n:
                break
            texts.append(text)
        return texts

    def __contains__(self, text: object) -> bool:
        if not isinstance(text, str):
            return False
        if self.spans is None:
            return text in self.names
        try:
            first, last = element_bounds(self.set_type, text)
        except ValueError:
            return False
        if self.interval:
            return (first, last) in self.spans.overlapping(first, last)
        return first == last and self.spans.contains(first)

    def digest(self) -> str:
        """A hash of the elements (from the packed bytes): equal elements, equal digests."""
        if self._digest is None:
            if self.spans is not None:
                body = self.spans.digest()
            else:
                body = hashlib.sha256("\n".join(self.names).encode()).hexdigest()
            self._digest = f"{self.set_type}:{int(self.interval)}:{body}"
        return self._digest

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Elements) and self.digest() == other.digest()

    def __hash__(self) -> int:
        return hash(self.digest())

    def __repr__(self) -> str:
        return f"Elements({self.set_type}, {len(self)} elements, {self.digest()[-16:]})"

    def nbytes(self) -> int:
        return self.spans.nbytes() if self.spans is not None else 0

    def park(self) -> None:
        """Hold the spans compressed until they are read other than in order (see
        :meth:`Spans.park`); the digest is taken first, so comparing needs no spans."""
        if self.spans is not None:
            self.digest()
            self.spans.park()

    # ---- algebra on whole elements ----------------------------------------------------

    def _like(self, spans: Spans | None = None, names: Iterable[str] = ()) -> Elements:
        return Elements(self.set_type, self.interval, spans, names)

    def minus(self, other: Elements) -> Elements:
        """The elements of ``self`` that ``other`` does not hold."""
        if self.spans is None or other.spans is None:
            return self._like(names=set(self.names) - set(other.names))
        if self.interval:
            return self._like(exact_difference(self.spans, other.spans))
        return self._like(self.spans.difference(other.spans))

    def common(self, other: Elements) -> Elements:
        """The elements both hold."""
        return self.minus(self.minus(other))

    def join(self, other: Elements) -> Elements:
        """The elements of both; in an interval set they must not overlap (ValueError)."""
        if self.spans is None or other.spans is None:
            return self._like(names=set(self.names) | set(other.names))
        if self.interval:
            return self._like(join(self.spans, other.spans))
        return self._like(self.spans.union(other.spans))

    def merge(self, other: Elements) -> Elements:
        """The elements of both, overlapping and adjacent ranges of an interval set merged."""
        if self.spans is None or other.spans is None:
            return self._like(names=set(self.names) | set(other.names))
        return self._like(self.spans.union(other.spans))
