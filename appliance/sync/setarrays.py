"""A bundle's set arrays read from its bytes, one element at a time. Pure.

A hub bundle is JSON: ``{"version", "expires", "profile", "sets": {NAME: {"full": [...]}
or {"base", "add", "del"}}}``. Decoding it whole would make one string object per element
of every set (about 70 bytes each, a million of them for a large blocklist) before they
are packed. Instead :func:`split` walks the document's top object and its ``sets`` on the
bytes and finds each element array that is plain: printable ASCII strings without escapes,
the only form an address or a port takes. It gives the document with those arrays cut out
(each left as ``[]``, so the rest still goes through the JSON decoder and its checks), and
where each array lies; :func:`texts` then reads an array's strings one at a time. The bytes
are the signed bytes: nothing else is parsed.

An array that is not plain (an escape, a number, anything else) is left in the document,
for the decoder and its error. A document that is not the expected shape gives None: the
caller decodes it whole, as before.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

WS = rb"[ \t\n\r]*+"
BLANKS = re.compile(WS)
# a JSON string (escapes as a backslash and one character: the decoder checks them later).
# A group is never repeated possessively (``(?:...)*+``): Python 3.11's engine can keep a
# failed repetition's bytes, so that ``["", "]\u0100"]`` matched as the array ``["", "]``.
STRING = re.compile(WS + rb'"((?:[^"\\\x00-\x1f]|\\.)*)"' + WS)
PLAIN = rb'"[\x20\x21\x23-\x5b\x5d-\x7e]*+"'  # printable ASCII, no quote, no backslash
ARRAY = re.compile(rb"\[" + WS + rb"(?:" + PLAIN + WS + rb"(?:," + WS + PLAIN + WS + rb")*)?\]")
ELEMENT = re.compile(rb'"([\x20\x21\x23-\x5b\x5d-\x7e]*)"')
NESTED = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')  # what counts in skipping a value
SCALAR = re.compile(rb"[^,}\]\s]*")
ELEMENT_KEYS = ("full", "add", "del")

Place = tuple[int, int]  # an array's first and last-plus-one byte


class _Shape(Exception):
    """Not the shape this walk reads: the caller decodes the whole document."""


class _Walk:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.arrays: dict[tuple[str, str], Place] = {}

    def ws(self) -> None:
        match = BLANKS.match(self.data, self.pos)
        assert match is not None  # it matches the empty string
        self.pos = match.end()

    def expect(self, char: bytes) -> None:
        self.ws()
        if self.data[self.pos : self.pos + 1] != char:
            raise _Shape
        self.pos += 1

    def peek(self, char: bytes) -> bool:
        self.ws()
        return self.data[self.pos : self.pos + 1] == char

    def key(self) -> str:
        match = STRING.match(self.data, self.pos)
        if match is None:
            raise _Shape
        self.pos = match.end()
        try:
            key = json.loads(self.data[match.start(1) - 1 : match.end(1) + 1])
        except ValueError:
            raise _Shape from None
        if not isinstance(key, str):  # pragma: no cover - a JSON string decodes to one
            raise _Shape
        self.expect(b":")
        self.ws()
        return key

    def members(self) -> Iterator[str]:
        """The keys of the object at the position, the position at each one's value."""
        self.expect(b"{")
        if self.peek(b"}"):
            self.pos += 1
            return
        while True:
            yield self.key()
            if self.peek(b","):
                self.pos += 1
                continue
            self.expect(b"}")
            return

    def skip(self) -> None:
        """Past the value at the position (checked by the decoder, not here)."""
        data = self.data
        if data[self.pos : self.pos + 1] not in (b"{", b"["):
            match = STRING.match(data, self.pos) or SCALAR.match(data, self.pos)
            assert match is not None  # SCALAR matches the empty string
            self.pos = match.end()
            return
        depth = 0
        for match in NESTED.finditer(data, self.pos):
            token = match.group()
            if token in (b"{", b"["):
                depth += 1
            elif token in (b"}", b"]"):
                depth -= 1
                if depth == 0:
                    self.pos = match.end()
                    return
        raise _Shape  # never closed

    def document(self) -> None:
        for key in self.members():
            if key == "sets" and self.peek(b"{"):
                self.sets()
            else:
                self.skip()
        self.ws()
        if self.pos != len(self.data):
            raise _Shape

    def sets(self) -> None:
        for name in self.members():
            if not self.peek(b"{"):
                self.skip()
                continue
            for key in self.members():
                match = ARRAY.match(self.data, self.pos) if key in ELEMENT_KEYS else None
                if match is None:
                    self.skip()
                    continue
                self.arrays[(name, key)] = (match.start(), match.end())
                self.pos = match.end()


def split(data: bytes) -> tuple[bytes, dict[tuple[str, str], Place]] | None:
    """``data`` with its plain set arrays cut out (each left as ``[]``) and where each one
    lies, by ``(set name, key)``; None if the document is not an object this walk reads."""
    walk = _Walk(data)
    try:
        walk.document()
    except _Shape:
        return None
    parts: list[bytes] = []
    at = 0
    for start, end in sorted(walk.arrays.values()):
        parts += [data[at:start], b"[]"]
        at = end
    parts.append(data[at:])
    return b"".join(parts), walk.arrays


def texts(data: bytes, place: Place) -> Iterator[str]:
    """The strings of the plain array at ``place``, one at a time."""
    start, end = place
    for match in ELEMENT.finditer(data, start, end):
        yield match.group(1).decode("ascii")
