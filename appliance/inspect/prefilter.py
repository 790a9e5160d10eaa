"""Multi-pattern prefilters: which rules of a group may match a buffer, from one scan.

A prefilter holds the fast patterns of the rules of one buffer (the packet payload,
``dns.query``, ``tls.sni``, ``http.host``, ``http.uri``) and answers, for a buffer's bytes,
the rules whose fast pattern occurs in it; only those are then checked in full.

:class:`Prefilter` scans with one compiled alternation of the escaped patterns (the
regular-expression engine is C), or with ``bytes.find`` when the buffer has a single
pattern. :class:`Exhaustive` is its reference twin: every rule is a candidate on every
buffer. Both give the same alerts; the differential tests hold them equal.
"""

from __future__ import annotations

import re

from appliance.inspect.rules import Content, Signature

_MAX_HITS = 4096  # matched texts whose rules are kept


def _has_letters(pattern: bytes) -> bool:
    return pattern.lower() != pattern.upper()


class Prefilter:
    """One buffer's multi-pattern prefilter over the fast patterns of a group's rules.

    The scan runs over the lower-cased buffer with every pattern lower-cased: an alternation
    of plain literals lets the regular-expression engine skip ahead on their first bytes
    (case-insensitive groups would defeat that). Case-sensitive patterns may so be reported
    where only their case differs; the full check of each candidate rule settles it. When
    no pattern has a letter, the buffer is scanned as it is (lower-casing it would change
    nothing a pattern can match).
    """

    __slots__ = ("_by_hit", "_fold", "_look", "_only", "_scan", "buffer", "entries")

    def __init__(self, buffer: str, entries: list[tuple[Content, Signature]]) -> None:
        self.buffer = buffer
        self.entries = [(c.pattern.lower(), sig) for c, sig in entries]
        ordered = sorted({p for p, _ in self.entries}, key=lambda p: (-len(p), p))
        self._fold = any(_has_letters(p) for p in ordered)
        # one pattern: bytes.find, and its rules are the answer to every hit
        self._only: tuple[bytes, list[Signature]] | None = None
        if len(ordered) == 1:
            self._only = (ordered[0], [sig for _, sig in self.entries])
        alternatives = b"|".join(re.escape(p) for p in ordered)
        self._scan = re.compile(alternatives, re.DOTALL)
        self._look = re.compile(b"(?=(" + alternatives + b"))", re.DOTALL)
        self._by_hit: dict[bytes, list[Signature]] = {}

    def candidates(self, data: bytes) -> list[Signature] | None:
        """The rules whose fast pattern may occur in ``data`` (None: none occurs)."""
        text = data.lower() if self._fold else data
        only = self._only
        if only is not None:
            return only[1] if only[0] in text else None
        first = self._scan.search(text)
        if first is None:
            return None
        hits = set(self._look.findall(text, first.start()))
        if len(hits) == 1:
            return self._for_hit(hits.pop())
        found: dict[int, Signature] = {}
        for hit in hits:
            for sig in self._for_hit(hit):
                found[sig.sid] = sig
        return list(found.values())

    def _for_hit(self, hit: bytes) -> list[Signature]:
        """Rules whose pattern is in the matched text (a longer alternative may hide one)."""
        sigs = self._by_hit.get(hit)
        if sigs is None:
            sigs = [sig for pattern, sig in self.entries if pattern in hit]
            if len(self._by_hit) < _MAX_HITS:
                self._by_hit[hit] = sigs
        return sigs


class Exhaustive:
    """The reference twin of :class:`Prefilter`: every rule of the buffer is a candidate."""

    __slots__ = ("_all", "buffer", "entries")

    def __init__(self, buffer: str, entries: list[tuple[Content, Signature]]) -> None:
        self.buffer = buffer
        self.entries = [(c.pattern.lower(), sig) for c, sig in entries]
        found: dict[int, Signature] = {}
        for _, sig in self.entries:
            found.setdefault(sig.sid, sig)
        self._all = list(found.values())

    def candidates(self, data: bytes) -> list[Signature] | None:
        return self._all or None
