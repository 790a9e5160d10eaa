"""Multi-pattern prefilters: which rules of a group may match a buffer, from one scan.

A prefilter holds the fast patterns of the rules of one buffer (the packet payload,
``dns.query``, ``tls.sni``, ``http.host``, ``http.uri``) and answers, for a buffer's bytes,
the rules whose fast pattern occurs in it; only those are then checked in full. A
prefilter of a transformed buffer (``dns.query; dotprefix;``) holds the patterns of the rules
that transform it the same way and scans the buffer once transformed.

Where the compiled core is built and not switched off, :class:`Prefilter` scans with its
compiled scanner (``_fastpath.Patterns``: every pattern, found in one pass, the buffer read
in place), made by its first scan. Its Python shapes (:class:`TwinPrefilter`, and every
prefilter without the core) scan with one compiled alternation of the escaped patterns
(the regular-expression engine is C), or with ``bytes.find`` when the buffer has a single
pattern. The alternation is written as a trie (patterns of one prefix share it: ``ab(?:c|d)``
for ``abc`` and ``abd``), so that at each position of the buffer the engine follows the
buffer's next byte instead of trying every pattern in turn (391 ``dns.query`` patterns over a
16-byte name: 0.8 us, 20 us as a flat list). :class:`Exhaustive` is its reference twin:
every rule is a candidate on every buffer. Both give the same alerts; the differential tests
hold them equal.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from operator import itemgetter
from typing import Any, ClassVar

from appliance.inspect import core
from appliance.inspect.rules import PKT, Content, Signature
from appliance.inspect.transforms import Transform, apply

_MAX_HITS = 4096  # matched texts whose rules are kept
# Patterns this short occur in most buffers: in an alternation they would make each scan
# stop early and then look at every position; each is looked for on its own instead.
SHORT = 2
# Up to this many patterns, bytes.find on each (a fast substring search in C) beats one
# scan of their alternation.
FIND_LIMIT = 8
# From this many patterns the alternation is an automaton (where the ahocorasick module is
# there): below it, the regular expression's skip over bytes no pattern starts with is the
# faster on long payloads (11 patterns over 1 kB of zeros: 4 us, 8 us through the automaton).
AUTOMATON_MIN = 32
# An application buffer's values recur (hosts, names, agents, URIs): the candidates of the
# last MEMO_ENTRIES distinct values of at most MEMO_BYTES bytes are kept by each prefilter of
# one, so a value seen before costs a dictionary look-up, not a scan (past the bound the
# kept ones are dropped and kept anew). The packet payload's are not: it seldom recurs.
MEMO_ENTRIES = 256
MEMO_BYTES = 128
# A trie whose branches nest deeper than this is written as a flat alternation (the
# regular-expression parser recurses once per nested group).
MAX_NESTING = 100


def _has_letters(pattern: bytes) -> bool:
    return pattern.lower() != pattern.upper()


class Prefilter:
    """One buffer's multi-pattern prefilter over the fast patterns of a group's rules.

    The scan runs over the lower-cased buffer with every pattern lower-cased: an alternation
    of plain literals lets the regular-expression engine skip ahead on their first bytes
    (case-insensitive groups would defeat that). Case-sensitive patterns may so be reported
    where only their case differs; the full check of each candidate rule settles it. When
    no pattern has a letter, the buffer is scanned as it is (lower-casing it would change
    nothing a pattern can match). Patterns of at most ``SHORT`` bytes stay out of the
    alternation, and so do all when there are at most ``FIND_LIMIT``: each is looked for
    with ``bytes.find``. Where the ``ahocorasick`` module (python3-ahocorasick) is there, an
    alternation of at least ``AUTOMATON_MIN`` patterns is an Aho-Corasick automaton instead:
    one pass over the buffer, whatever the patterns' first bytes (46 binary patterns over TLS
    payloads of 256 bytes: 2 us, 11 to 14 us through the regular expression); it finds the
    same patterns.
    """

    __slots__ = (
        "_automaton",
        "_by_hit",
        "_by_pattern",
        "_fold",
        "_look",
        "_ordered",
        "_scan",
        "_short",
        "_unique",
        "buffer",
        "candidates",
        "entries",
        "none_in",
        "patterns",
        "transforms",
    )

    compiled: ClassVar[bool] = True  # the compiled scanner, where the core is built and on
    # The rules whose fast pattern may occur in a buffer's bytes (None: none occurs).
    candidates: Callable[[bytes], list[Signature] | None]
    # Whether the last scan was of this very buffer and found no pattern in it (a stream
    # then scans only what spans the segment's start: see ``stream_hits``).
    none_in: Callable[[bytes], bool]
    # The compiled scanner (``_fastpath.Patterns``) whose ``candidates`` and ``none_in`` are
    # this prefilter's, once made (by the first scan): the compiled core then scans a
    # segment with it itself. None: the Python shapes, or not made yet.
    patterns: Any

    def __init__(
        self,
        buffer: str,
        entries: list[tuple[Content, Signature]],
        transforms: tuple[Transform, ...] = (),
    ) -> None:
        self.buffer = buffer
        self.transforms = transforms  # applied to the buffer before it is scanned
        self.entries = [(c.pattern.lower(), sig) for c, sig in entries]
        patterns = {p for p, _ in self.entries}
        self._fold = any(_has_letters(p) for p in patterns)
        self.patterns = None
        self._ordered: list[bytes] = []
        self._short: list[tuple[bytes, list[Signature]]] = []
        self._unique = True
        self._scan: re.Pattern[bytes] | None = None
        self._look: re.Pattern[bytes] | None = None
        self._automaton: Any = None
        self._by_pattern: dict[str, list[Signature]] = {}
        self._by_hit: dict[bytes, list[Signature]] = {}
        if self.compiled and core.enabled():
            # every pattern in the compiled scanner, made by the first scan (an engine loads
            # the compiled module by its first packet: an idle one holds none of it)
            self._ordered = sorted(patterns, key=lambda p: (-len(p), p))
            self._bind_compiled()
            return
        self._shape(patterns)

    def _shape(self, patterns: set[bytes]) -> None:
        """The Python shapes' scans over the patterns, bound as ``candidates`` and
        ``none_in``."""
        ordered = sorted((p for p in patterns if len(p) > SHORT), key=lambda p: (-len(p), p))
        found_alone = sorted(p for p in patterns if len(p) <= SHORT)
        if len(ordered) + len(found_alone) <= FIND_LIMIT:
            found_alone, ordered = sorted(patterns, key=lambda p: (-len(p), p)), []
        elif len(ordered) >= AUTOMATON_MIN and USE_AUTOMATON and _automaton(()) is not None:
            # a run of one byte (b"\x00\x00\x00\x00") occurs at every place of a long
            # run of it: the automaton would report each; bytes.find stops at the first
            runs = [p for p in ordered if len(set(p)) == 1]
            if runs:
                found_alone += runs
                ordered = [p for p in ordered if len(set(p)) > 1]
        by_pattern: dict[bytes, list[Signature]] = {}  # each pattern's rules, in order
        for pattern, sig in self.entries:
            found = by_pattern.get(pattern)
            if found is None:
                by_pattern[pattern] = [sig]
            else:
                found.append(sig)
        self._short = [(p, by_pattern[p]) for p in found_alone]
        # each rule once, under one sid of its own: the hits of the patterns looked for
        # alone are then simply joined (a rule has one fast pattern per buffer)
        self._unique = len({sig.sid for _, sig in self.entries}) == len(self.entries)
        if ordered:
            if len(ordered) >= AUTOMATON_MIN and USE_AUTOMATON:
                self._automaton = _automaton(tuple(ordered))
            if self._automaton is None:
                self._scan, self._look = _compiled(tuple(ordered))
            else:
                self._by_pattern = {
                    p.decode("latin-1"): sigs for p, sigs in by_pattern.items() if len(p) > SHORT
                }
        self._bind()

    def _bind(self) -> None:
        """``candidates`` and ``none_in``, as closures over what this prefilter holds: for
        the common shapes (patterns looked for alone, one automaton) the whole scan in one
        call, with nothing looked up on the prefilter per buffer; for the others, around
        ``_candidates``."""
        last: bytes | None = None  # the buffer last scanned, and what it gave
        last_found: list[Signature] | None = None
        fold = self._fold
        short = self._short
        scan: Callable[[bytes], list[Signature] | None] = self._candidates
        candidates: Callable[[bytes], list[Signature] | None]
        if self.transforms or (
            short and (not self._unique or self._scan is not None or self._automaton is not None)
        ):

            def candidates(data: bytes) -> list[Signature] | None:
                nonlocal last, last_found
                last = data
                last_found = found = scan(data)
                return found

        elif len(short) == 1:
            ((pattern, sigs),) = short

            def candidates(data: bytes) -> list[Signature] | None:
                nonlocal last, last_found
                last = data
                last_found = found = sigs if pattern in (data.lower() if fold else data) else None
                return found

        elif short:  # each rule once: the hits of each pattern simply joined

            def candidates(data: bytes) -> list[Signature] | None:
                nonlocal last, last_found
                text = data.lower() if fold else data
                joined: list[Signature] | None = None
                for pattern, sigs in short:
                    if pattern in text:
                        joined = sigs if joined is None else joined + sigs
                last = data
                last_found = joined
                return joined

        elif self._automaton is not None:
            by_pattern = self._by_pattern
            iterate = self._automaton.iter

            def candidates(data: bytes) -> list[Signature] | None:
                nonlocal last, last_found
                text = data.lower() if fold else data
                hits = dict.fromkeys(map(_VALUE, iterate(text.decode("latin-1"))))
                found: list[Signature] | None
                if not hits:
                    found = None
                elif len(hits) == 1:
                    found = by_pattern[next(iter(hits))]
                else:
                    found = _joined(by_pattern[p] for p in hits)
                last = data
                last_found = found
                return found

        else:
            long = self._long

            def candidates(data: bytes) -> list[Signature] | None:
                nonlocal last, last_found
                last = data
                last_found = found = long(data.lower() if fold else data)
                return found

        if self.buffer != PKT:
            self.candidates, self.none_in = _remembering(candidates, None, True)
            return

        def none_in(data: bytes) -> bool:
            return last is data and last_found is None

        self.candidates = candidates
        self.none_in = none_in

    def _bind_compiled(self) -> None:
        """``candidates`` and ``none_in`` that make the compiled scanner on their first call,
        then are the scanner's own (or closures around it: a transformed buffer, an
        application buffer's memo)."""

        def first(data: bytes) -> list[Signature] | None:
            self._compile()
            return self.candidates(data)

        def none_yet(data: bytes) -> bool:
            return False

        self.candidates = first
        self.none_in = none_yet

    def _compile(self) -> None:
        """The compiled scanner over every pattern (longest first), with each pattern's rules
        and their join, bound as ``candidates`` and ``none_in``."""
        Patterns = core.patterns_class()
        if Patterns is None:  # found but not loadable: the Python shapes
            self._shape(set(self._ordered))
            return
        by_pattern: dict[bytes, list[Signature]] = {p: [] for p in self._ordered}
        for pattern, sig in self.entries:
            by_pattern[pattern].append(sig)
        rules = [by_pattern[p] for p in self._ordered]

        def join(found: tuple[int, ...]) -> list[Signature]:
            return _joined(rules[index] for index in found)

        if not self.transforms:  # an application buffer's memo kept by the scanner
            memo = None if self.buffer == PKT else (MEMO_ENTRIES, MEMO_BYTES)
            scanner = Patterns(self._ordered, self._fold, rules, join, memo)
            self.patterns = scanner
            self.candidates = scanner.candidates
            self.none_in = scanner.none_in
            return
        # (a transformed buffer's memo is _remembering's, by the value before the transforms)
        scanner = Patterns(self._ordered, self._fold, rules, join)
        self.candidates, self.none_in = _remembering(
            scanner.candidates, self.transforms, self.buffer != PKT
        )

    def _candidates(self, data: bytes) -> list[Signature] | None:
        """The rules whose fast pattern may occur in ``data`` (None: none occurs): every
        shape of prefilter (``candidates`` is this, or its shape's own form of it)."""
        if self.transforms:
            data = apply(data, self.transforms)
        text = data.lower() if self._fold else data
        if not self._short:
            return self._long(text)
        if self._unique and self._scan is None and self._automaton is None:
            joined: list[Signature] | None = None
            for pattern, sigs in self._short:
                if pattern in text:
                    if joined is None:
                        joined = list(sigs)
                    else:
                        joined += sigs
            return joined
        found: dict[int, Signature] = {}
        for pattern, sigs in self._short:
            if pattern in text:
                if len(sigs) == 1:
                    found[sigs[0].sid] = sigs[0]
                    continue
                for sig in sigs:
                    found[sig.sid] = sig
        more = self._long(text)
        if more:
            if not found:
                return more
            for sig in more:
                found[sig.sid] = sig
        return list(found.values()) or None

    def _long(self, text: bytes) -> list[Signature] | None:
        """The rules whose pattern (longer than ``SHORT``) occurs in the folded text."""
        if self._automaton is not None:
            return self._found(text)
        if self._scan is None or self._look is None:
            return None
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

    def _found(self, text: bytes) -> list[Signature] | None:
        """``_long`` through the automaton: every occurrence of every pattern, in one pass
        (the distinct patterns gathered without a Python step per occurrence: a pattern of
        zeros occurs at every place of a payload of zeros)."""
        hits = dict.fromkeys(map(_VALUE, self._automaton.iter(text.decode("latin-1"))))
        if not hits:
            return None
        by_pattern = self._by_pattern
        if len(hits) == 1:
            return by_pattern[next(iter(hits))]
        return _joined(by_pattern[p] for p in hits)

    def _for_hit(self, hit: bytes) -> list[Signature]:
        """Rules whose pattern is in the matched text (a longer alternative may hide one)."""
        sigs = self._by_hit.get(hit)
        if sigs is None:
            sigs = [sig for pattern, sig in self.entries if pattern in hit]
            if len(self._by_hit) < _MAX_HITS:
                self._by_hit[hit] = sigs
        return sigs


def _remembering(
    scan: Callable[[bytes], list[Signature] | None],
    transforms: tuple[Transform, ...] | None,
    memo: bool,
) -> tuple[Callable[[bytes], list[Signature] | None], Callable[[bytes], bool]]:
    """``candidates`` and ``none_in`` around ``scan``: the buffer transformed first (where
    ``transforms``), the candidates of the last ``MEMO_ENTRIES`` values of at most
    ``MEMO_BYTES`` bytes kept (where ``memo``: an application buffer), the last buffer and
    what it gave remembered for ``none_in``."""
    last: bytes | None = None  # the buffer last scanned, and what it gave
    last_found: list[Signature] | None = None
    kept: dict[bytes, list[Signature] | None] = {}
    get = kept.get

    def candidates(data: bytes) -> list[Signature] | None:
        nonlocal last, last_found
        found = get(data, _UNSEEN) if memo and type(data) is bytes else _UNSEEN
        if found is _UNSEEN:
            found = scan(apply(data, transforms) if transforms else data)
            if memo and len(data) <= MEMO_BYTES and type(data) is bytes:
                if len(kept) >= MEMO_ENTRIES:
                    kept.clear()
                kept[data] = found
        last = data
        last_found = found
        return found

    def none_in(data: bytes) -> bool:
        return last is data and last_found is None

    return candidates, none_in


_VALUE = itemgetter(1)  # of an automaton's (end, value) hits
_UNSEEN: list[Signature] = []  # (by identity) a value the memo does not hold


def _joined(rule_lists: Iterable[list[Signature]]) -> list[Signature]:
    """The rules of several patterns found, each once (by sid)."""
    found: dict[int, Signature] = {}
    for sigs in rule_lists:
        for sig in sigs:
            found[sig.sid] = sig
    return list(found.values())


# False: the regular expression even where the ahocorasick module is there (the tests
# compare the two)
USE_AUTOMATON = True


@lru_cache(maxsize=256)
def _automaton(patterns: tuple[bytes, ...]) -> Any:
    """An Aho-Corasick automaton over the patterns (as Latin-1 text, each its own value),
    made once for every prefilter of the same patterns; None without the ahocorasick
    module."""
    try:
        import ahocorasick  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return None
    automaton = ahocorasick.Automaton()
    for pattern in patterns:
        text = pattern.decode("latin-1")
        automaton.add_word(text, text)
    automaton.make_automaton()
    return automaton


@lru_cache(maxsize=256)
def _compiled(patterns: tuple[bytes, ...]) -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    """The scan and the look-ahead of an alternation, compiled once for every prefilter of
    the same patterns (the groups of a reload, of another engine)."""
    alternatives = trie_alternation(list(patterns))
    scan = re.compile(alternatives, re.DOTALL)
    return scan, re.compile(b"(?=(" + alternatives + b"))", re.DOTALL)


_Trie = dict[int, "_Trie"]  # by next byte (-1: a pattern ends here)


def trie_alternation(patterns: list[bytes]) -> bytes:
    """A regular expression matching, at a position, the longest of ``patterns`` that starts
    there (as their flat alternation longest first does), written as a trie: the patterns
    sharing a prefix share it, each branch point a group of the next bytes, a pattern that
    ends where longer ones go on an optional group (greedy: the longer tried first). Tries
    nesting deeper than ``MAX_NESTING`` groups are written flat."""
    root: _Trie = {}
    for pattern in patterns:
        node = root
        for byte in pattern:
            node = node.setdefault(byte, {})
        node[-1] = {}  # a pattern ends here
    written = _trie_node(root, 0)
    if written is None:
        return b"|".join(re.escape(p) for p in sorted(patterns, key=lambda p: (-len(p), p)))
    return written


def _trie_node(node: _Trie, depth: int) -> bytes | None:
    """The expression of a trie node's continuations (None: nested too deep)."""
    if depth > MAX_NESTING:
        return None
    branches: list[bytes] = []
    for byte in sorted(b for b in node if b >= 0):
        run = bytearray((byte,))
        child = node[byte]
        while len(child) == 1 and -1 not in child:  # a run of bytes without a branch
            ((byte, child),) = child.items()
            run.append(byte)
        rest = _trie_node(child, depth + 1) if child.keys() - {-1} else b""
        if rest is None:
            return None
        branches.append(re.escape(bytes(run)) + rest)
    if not branches:
        return b""
    ends = -1 in node
    if len(branches) == 1 and not ends:
        return branches[0]
    group = b"(?:" + b"|".join(branches) + b")"
    return group + b"?" if ends else group


class TwinPrefilter(Prefilter):
    """:class:`Prefilter` in its pure-Python shapes, whatever the compiled core (the twin the
    differential tests hold the compiled scanner equal to)."""

    __slots__ = ()

    compiled = False


class Exhaustive:
    """The reference twin of :class:`Prefilter`: every rule of the buffer is a candidate."""

    __slots__ = ("_all", "buffer", "entries", "transforms")

    patterns = None  # (no compiled scanner)

    def __init__(
        self,
        buffer: str,
        entries: list[tuple[Content, Signature]],
        transforms: tuple[Transform, ...] = (),
    ) -> None:
        self.buffer = buffer
        self.transforms = transforms
        self.entries = [(c.pattern.lower(), sig) for c, sig in entries]
        found: dict[int, Signature] = {}
        for _, sig in self.entries:
            found.setdefault(sig.sid, sig)
        self._all = list(found.values())

    def candidates(self, data: bytes) -> list[Signature] | None:
        return self._all or None

    def none_in(self, data: bytes) -> bool:
        return False
