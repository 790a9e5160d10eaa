"""PCRE's ``\\g`` back references, for Python's ``re``.

PCRE writes a back reference ``\\g{N}`` or ``\\gN`` (group N), ``\\g{-N}`` or ``\\g-N`` (the
Nth group opened before it) and ``\\g{name}``; Python's ``re`` knows none of these but means
the same by ``\\N`` and ``(?P=name)``. Each is written ``(?:\\N)`` (so a digit after it is
not read as part of the number) or ``(?P=name)``; the text elsewhere is unchanged. What
Python cannot run stays as it is and is refused: ``\\g<...>`` and ``\\g'...'`` (subroutine
calls, not back references), a group above 99, a relative reference before the first group.
"""

from __future__ import annotations

import re

from appliance.inspect.lookbehind import class_end

_REFERENCE = re.compile(r"\\g(?:\{(-?\d+|[A-Za-z_]\w*)\}|(-?\d+))", re.ASCII)
_NAMED_GROUP = ("(?P<", "(?'")


def write_backrefs(pattern: str, verbose: bool = False) -> str:
    """The pattern with each ``\\g`` back reference written as Python writes it.
    ``verbose``: the ``x`` flag, under which ``#`` starts a comment."""
    out: list[str] = []
    groups = 0  # capturing groups opened so far
    pos = 0
    while pos < len(pattern):
        c = pattern[pos]
        end = pos + 1
        if c == "\\":
            found = _REFERENCE.match(pattern, pos)
            end = found.end() if found else pos + 2
            if found:
                out.append(_reference(found, groups) or found.group())
                pos = end
                continue
        elif c == "[":
            end = class_end(pattern, pos)
        elif c == "#" and verbose:
            newline = pattern.find("\n", pos)
            end = len(pattern) if newline < 0 else newline + 1
        elif pattern.startswith("(?#", pos):
            close = pattern.find(")", pos)
            end = len(pattern) if close < 0 else close + 1
        elif c == "(":
            after = pattern[pos + 1 : pos + 2]
            named = pattern.startswith(_NAMED_GROUP, pos) or (
                pattern.startswith("(?<", pos) and pattern[pos + 3 : pos + 4] not in ("=", "!")
            )
            if (after != "?" and after != "*") or named:
                groups += 1
        out.append(pattern[pos:end])
        pos = end
    return "".join(out)


def _reference(found: re.Match[str], groups: int) -> str | None:
    text = found.group(1) or found.group(2)
    if not text[0].isdigit() and text[0] != "-":
        return f"(?P={text})"
    if len(text) > 4:
        return None  # past 99 however it is counted
    number = int(text)
    if number < 0:
        number = groups + 1 + number  # -1: the group opened last
    if not 1 <= number <= 99:
        return None
    return f"(?:\\{number})"
