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
- ``strip_pseudo_headers``: lines that begin with ``:`` (HTTP/2 pseudo-headers) removed;
- ``from_base64:[bytes N][, offset N][, mode rfc4648|rfc2045|strict]``: the base64 decode of
  the buffer from ``offset`` on, ``bytes`` of it (an offset or a count reaching the end of
  the buffer leaves it as it is); rfc4648 (the default) stops at the first byte neither in
  the alphabet nor ``=`` and decodes a last incomplete group of 2 or 3 characters, rfc2045
  skips such bytes and drops a last incomplete group, strict decodes nothing unless the
  whole input is padded base64; ``=`` ends a group (third: 1 byte, fourth: 2), never the
  decoding; nothing decoded makes the buffer empty;
- ``pcrexform:"REGEX"``: the first capture group of the regex's first match (the buffer as
  it is when the regex does not match).
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Callable, Sequence

from appliance.inspect.pcrecompat import compile_pcre

Transform = tuple[str, bytes]  # (name, argument: the xor key, else b"")

_SPACES = b" \t\n\x0b\x0c\r"
_RUNS = re.compile(rb"([ \t\n\x0b\x0c\r])[ \t\n\x0b\x0c\r]+")
_NAMES = re.compile(rb"(?:^|(?<=\n))[^:]*")
_PSEUDO = re.compile(rb"(?m)^:[^\n]*(?:\n|$)")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(sorted(set(range(256)) - set(_ALPHABET + b"=")))
_PREFIX = re.compile(rb"[A-Za-z0-9+/=]*")
_STRICT = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
BASE64_MODES = ("rfc4648", "rfc2045", "strict")
MAX_BASE64 = 65535  # the largest bytes and offset of from_base64
_EQ = 0x3D


def _decode_groups(chars: bytes, partial: bool) -> bytes:
    """Groups of 4 characters of the alphabet or ``=`` decoded as Suricata's decoder does:
    a group with ``=`` third gives 1 byte, fourth 2 bytes, first or second nothing at all
    (the input is refused); a last partial group is padded with ``=`` when ``partial``
    (rfc4648: 2 or 3 characters give 1 or 2 bytes, 1 character refuses the input), else
    dropped (rfc2045)."""
    tail = len(chars) % 4
    if tail:
        if not partial:
            chars = chars[:-tail]
        elif tail == 1:
            return b""
        else:
            chars += b"=" * (4 - tail)
    first = chars.find(b"=")
    if first < 0:
        return binascii.a2b_base64(chars) if chars else b""
    whole = first - first % 4  # the groups before the first with "="
    out = bytearray(binascii.a2b_base64(chars[:whole]) if whole else b"")
    for at in range(whole, len(chars), 4):
        group = chars[at : at + 4]
        if group[0] == _EQ or group[1] == _EQ:
            return b""
        if group[2] == _EQ:
            out += binascii.a2b_base64(group[:2] + b"==")
        elif group[3] == _EQ:
            out += binascii.a2b_base64(group[:3] + b"=")
        else:
            out += binascii.a2b_base64(group)
    return bytes(out)


def base64_decode(data: bytes, mode: str = "rfc4648") -> bytes:
    """``data`` decoded as base64 in Suricata's ``mode``; b"" when nothing decodes.
    rfc4648 reads up to the first byte neither in the alphabet nor ``=``; rfc2045 skips
    such bytes; strict takes only padded base64, whole."""
    if mode == "strict":
        if len(data) % 4 or _STRICT.fullmatch(data) is None:
            return b""
        return binascii.a2b_base64(data)
    if mode == "rfc2045":
        return _decode_groups(data.translate(None, _NOT_BASE64), False)
    match = _PREFIX.match(data)
    return _decode_groups(match.group(), True) if match else b""


def from_base64(data: bytes, argument: bytes) -> bytes:
    """The ``from_base64`` transformation; ``argument`` as ``parse_argument`` packs it."""
    nbytes, offset, mode = unpack_base64(argument)
    chunk = data
    if offset:
        if offset >= len(data):
            return data
        chunk = data[offset:]
    if nbytes:
        if nbytes >= len(chunk):
            return data  # the buffer as it is, its offset included
        chunk = chunk[:nbytes]
    return base64_decode(chunk, mode) if chunk else chunk


def unpack_base64(argument: bytes) -> tuple[int, int, str]:
    """(bytes, offset, mode) of a packed ``from_base64`` argument."""
    return (
        int.from_bytes(argument[0:2], "big"),
        int.from_bytes(argument[2:4], "big"),
        BASE64_MODES[argument[4]] if len(argument) > 4 else "rfc4648",
    )


_REGEXES: dict[bytes, re.Pattern[bytes]] = {}


def pcrexform(data: bytes, source: bytes) -> bytes:
    """The first capture group of ``source``'s first match in ``data`` (``data`` when it
    does not match; an unset group gives b"")."""
    regex = _REGEXES.get(source)
    if regex is None:
        regex = _REGEXES[source] = re.compile(source)
    match = regex.search(data)
    if match is None:
        return data
    return match.group(1) or b""


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
    "from_base64": from_base64,
    "pcrexform": pcrexform,
}
NAMES = frozenset(_FUNCTIONS)
WITH_ARGUMENT = frozenset({"xor", "pcrexform"})  # a value needed
OPTIONAL_ARGUMENT = frozenset({"from_base64"})  # a value allowed


def parse_argument(name: str, value: str | None) -> bytes:
    """The argument of a transformation (``xor:"0d0ac8ff"``: the key); ValueError if it is
    missing where needed, or given where none is taken."""
    if name in OPTIONAL_ARGUMENT:
        return parse_base64(value or "")
    if name not in WITH_ARGUMENT:
        if value is not None:
            raise ValueError(f"{name} takes no value")
        return b""
    if name == "pcrexform":
        return parse_pcrexform(value or "")
    text = (value or "").strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1]
    if not text or len(text) % 2 or not all(c in "0123456789abcdefABCDEF" for c in text):
        raise ValueError(f'{name} needs a key of hex digit pairs, like "0d0ac8ff"')
    if len(text) > 510:
        raise ValueError(f"{name}: a key of at most 255 bytes")
    return bytes.fromhex(text)


def parse_base64(text: str) -> bytes:
    """``from_base64``'s options (``bytes N, offset N, mode M``, each at most once, in any
    order) packed as 2 bytes of count, 2 of offset and 1 of mode; ValueError if bad."""
    found: dict[str, str] = {}
    for part in text.split(","):
        words = part.split()
        if not words and not text.strip():
            break
        if len(words) != 2 or words[0] not in ("bytes", "offset", "mode"):
            raise ValueError(f"from_base64: expected bytes N, offset N or mode M, got {part!r}")
        if words[0] in found:
            raise ValueError(f"from_base64: {words[0]} given twice")
        found[words[0]] = words[1]
    mode = found.get("mode", "rfc4648")
    if mode not in BASE64_MODES:
        raise ValueError(f"from_base64: mode {mode!r}, expected one of {', '.join(BASE64_MODES)}")
    numbers = []
    for key in ("bytes", "offset"):
        word = found.get(key, "0")
        if not word.isdigit() or int(word) > MAX_BASE64:
            raise ValueError(f"from_base64: {key} must be a number 0..{MAX_BASE64}, got {word!r}")
        numbers.append(int(word))
    return (
        numbers[0].to_bytes(2, "big")
        + numbers[1].to_bytes(2, "big")
        + bytes([BASE64_MODES.index(mode)])
    )


def parse_pcrexform(text: str) -> bytes:
    """``pcrexform``'s quoted regex (no delimiters, no flags), checked: Python's ``re``
    compiles it as for ``pcre`` (``pcrecompat.py``: ``\\g`` back references and split
    look-behinds written as ``re`` writes them) and it has a capture group; ValueError if
    not. The source kept is the one ``re`` compiled."""
    text = text.strip()
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise ValueError(f"pcrexform needs a quoted regex, got {text!r}")
    try:
        regex = compile_pcre(text[1:-1])
    except ValueError as exc:
        raise ValueError(f"pcrexform: {exc}") from None
    source = regex.pattern
    if regex.groups < 1:
        raise ValueError("pcrexform: the regex needs a capture group")
    _REGEXES[source] = regex
    return source


def apply(data: bytes, transforms: Sequence[Transform]) -> bytes:
    """The buffer after its transformations, in order."""
    for name, argument in transforms:
        data = _FUNCTIONS[name](data, argument)
    return data
