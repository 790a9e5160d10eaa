"""Transformations of a sticky buffer, as Suricata applies them before its items match.

A rule names them right after its sticky buffer (``http.uri; url_decode; to_lowercase;
content:"/admin";``); they run in that order, each on the output of the one before. Pure
functions over bytes: every one is linear in its input and none raises.

- ``dotprefix``: a ``.`` before the buffer;
- ``to_lowercase`` / ``to_uppercase``: ASCII letters only;
- ``strip_whitespace``: every byte C's ``isspace()`` counts removed (space, tab, CR, LF, VT, FF);
- ``compress_whitespace``: a run of whitespace kept as its first byte;
- ``to_md5`` / ``to_sha1`` / ``to_sha256``: the raw digest of the buffer;
- ``url_decode``: ``%XX`` decoded and ``+`` made a space; a ``%`` not followed by two hex
  digits stays as it is, with the byte after it;
- ``xor:"KEY"``: each byte XORed with the key (hex), repeated;
- ``header_lowercase``: the names of ``Name: value`` lines lowercased, the values kept;
- ``strip_pseudo_headers``: lines that begin with ``:`` (HTTP/2 pseudo-headers) removed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence

Transform = tuple[str, bytes]  # (name, argument: the xor key, else b"")

_SPACES = b" \t\n\x0b\x0c\r"
_RUNS = re.compile(rb"([ \t\n\x0b\x0c\r])[ \t\n\x0b\x0c\r]+")
_NAMES = re.compile(rb"(?:^|(?<=\n))[^:]*")
_PSEUDO = re.compile(rb"(?m)^:[^\n]*(?:\n|$)")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def url_decode(data: bytes) -> bytes:
    if b"%" not in data:
        return data.replace(b"+", b" ")
    out = bytearray()
    size = len(data)
    pos = 0
    while pos < size:
        at = data.find(b"%", pos)
        if at < 0:
            out += data[pos:].replace(b"+", b" ")
            break
        out += data[pos:at].replace(b"+", b" ")
        first = data[at + 1 : at + 2]
        if not first or first[0] not in _HEX:
            out += data[at : at + 2]  # "%" and the byte after it, as they are
            pos = at + 2
            continue
        second = data[at + 2 : at + 3]
        if not second or second[0] not in _HEX:
            out += data[at : at + 3]
            pos = at + 3
            continue
        out.append(int(data[at + 1 : at + 3], 16))
        pos = at + 3
    return bytes(out)


def xor(data: bytes, key: bytes) -> bytes:
    if not data or not key:
        return data
    size = len(data)
    stream = (key * (size // len(key) + 1))[:size]
    value = int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")
    return value.to_bytes(size, "big")


def _lower_names(data: bytes) -> bytes:
    return _NAMES.sub(lambda m: m.group().lower(), data)


_FUNCTIONS: dict[str, Callable[[bytes, bytes], bytes]] = {
    "dotprefix": lambda data, _: b"." + data,
    "to_lowercase": lambda data, _: data.lower(),
    "to_uppercase": lambda data, _: data.upper(),
    "strip_whitespace": lambda data, _: data.translate(None, _SPACES),
    "compress_whitespace": lambda data, _: _RUNS.sub(rb"\1", data),
    "to_md5": lambda data, _: hashlib.md5(data, usedforsecurity=False).digest(),
    "to_sha1": lambda data, _: hashlib.sha1(data, usedforsecurity=False).digest(),
    "to_sha256": lambda data, _: hashlib.sha256(data).digest(),
    "url_decode": lambda data, _: url_decode(data),
    "xor": xor,
    "header_lowercase": lambda data, _: _lower_names(data),
    "strip_pseudo_headers": lambda data, _: _PSEUDO.sub(b"", data),
}
NAMES = frozenset(_FUNCTIONS)
WITH_ARGUMENT = frozenset({"xor"})


def parse_argument(name: str, value: str | None) -> bytes:
    """The argument of a transformation (``xor:"0d0ac8ff"``: the key); ValueError if it is
    missing where needed, or given where none is taken."""
    if name not in WITH_ARGUMENT:
        if value is not None:
            raise ValueError(f"{name} takes no value")
        return b""
    text = (value or "").strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1]
    if not text or len(text) % 2 or not all(c in "0123456789abcdefABCDEF" for c in text):
        raise ValueError(f'{name} needs a key of hex digit pairs, like "0d0ac8ff"')
    if len(text) > 510:
        raise ValueError(f"{name}: a key of at most 255 bytes")
    return bytes.fromhex(text)


def apply(data: bytes, transforms: Sequence[Transform]) -> bytes:
    """The buffer after its transformations, in order."""
    for name, argument in transforms:
        data = _FUNCTIONS[name](data, argument)
    return data
