"""A PCRE pattern compiled by Python's ``re``, as ``pcre`` and ``pcrexform`` both need it.

PCRE forms ``re`` does not take are written as ``re`` writes the same thing: named groups
``(?<name>...)`` and ``(?'name'...)`` as ``(?P<name>...)``; references to them
``\\k<name>``, ``\\k'name'`` and ``\\k{name}`` as ``(?P=name)``; ``\\xH`` (one hex digit) as
``\\x0H`` and ``\\x{HH}`` as ``\\xHH``; ``\\g`` back references (``backrefs.py``); and
look-behinds whose alternatives have different fixed widths (``lookbehind.py``, tried only
when ``re`` refuses the look-behind). What
``re`` would run differently from PCRE, or not at all, is refused with a ValueError:
branch resets, verbs, ``\\K``, ``\\R``, ``\\X``, ``\\G``, ``\\Q...\\E``, ``\\h``, ``\\v``, ``\\z``,
recursion and subroutine calls, a look-behind of no fixed width.
"""

from __future__ import annotations

import re
import warnings

from appliance.inspect.backrefs import write_backrefs
from appliance.inspect.lookbehind import class_end, split_lookbehinds

# re warns of a "possible nested set" ([[ in a class), a syntax it may read otherwise one
# day: PCRE reads it as re reads it now, and a rule file's load is no place for the notice
warnings.filterwarnings("ignore", category=FutureWarning, module=__name__)

_INLINE_X = re.compile(r"\(\?[a-zA-Z]*x")  # the x flag set inside the pattern
# an escape PCRE writes otherwise than re: \x{HH}, \xH (one digit), \k<name> and its forms;
# any other escape taken whole (so that \\ is not read as the start of one)
_ESCAPE = re.compile(
    r"\\(?:x\{([0-9A-Fa-f]{1,2})\}|x([0-9A-Fa-f])(?![0-9A-Fa-f])|k(?:<(\w+)>|'(\w+)'|\{(\w+)\}))"
    r"|\\.",
    re.ASCII | re.DOTALL,
)
_GROUP_NAME = re.compile(r"\(\?(?:<(?![=!])(\w+)>|'(\w+)')", re.ASCII)
_UNSUPPORTED = re.compile(r"\(\?\||\(\*|\\[KRXGQEhHvVz]|\\g|\(\?R\)|\(\?[+-]?\d|\(\?P?>\w|\(\?&")


def compile_pcre(pattern: str, flags: int = 0) -> re.Pattern[bytes]:
    """``pattern`` (PCRE's syntax, without delimiters) compiled over bytes with ``re``'s
    ``flags``; ValueError, its message one line, for a form ``re`` cannot run the same way."""
    verbose = bool(flags & re.VERBOSE) or _INLINE_X.search(pattern) is not None
    if "\\x" in pattern or "\\k" in pattern or "(?<" in pattern or "(?'" in pattern:
        pattern = _python_forms(pattern)
    if "\\g" in pattern:
        pattern = write_backrefs(pattern, verbose)
    if _UNSUPPORTED.search(pattern):
        raise ValueError("a PCRE construct Python's re does not run the same way")
    try:
        try:
            return re.compile(pattern.encode("utf-8", "surrogateescape"), flags)
        except re.error as exc:
            if "look-behind requires fixed-width" not in str(exc):
                raise
            split = split_lookbehinds(pattern, verbose)
            try:
                return re.compile(split.encode("utf-8", "surrogateescape"), flags)
            except re.error:
                raise ValueError(
                    "a look-behind of variable width (only alternatives of fixed widths run)"
                ) from None
    except re.error as exc:
        raise ValueError(f"not a supported expression: {exc}") from None
    except (OverflowError, RecursionError):
        raise ValueError("expression too complex") from None


def _escape(found: re.Match[str]) -> str:
    hex_pair, hex_one = found.group(1), found.group(2)
    if hex_pair is not None:
        return "\\x" + hex_pair.rjust(2, "0")
    if hex_one is not None:
        return "\\x0" + hex_one
    name = found.group(3) or found.group(4) or found.group(5)
    if name is not None:
        return f"(?P={name})"
    return found.group()


def _python_forms(pattern: str) -> str:
    """The pattern with PCRE's named groups, named references and short hex escapes written
    as ``re`` writes them; character classes and escaped characters kept as they are but for
    their hex escapes."""
    out: list[str] = []
    pos = 0
    while pos < len(pattern):
        c = pattern[pos]
        if c == "\\":
            found = _ESCAPE.match(pattern, pos)
            if found is None:  # a backslash at the end
                out.append(pattern[pos:])
                break
            out.append(_escape(found))
            pos = found.end()
        elif c == "[":
            end = class_end(pattern, pos)
            out.append(_ESCAPE.sub(_escape, pattern[pos:end]))
            pos = end
        elif c == "(" and (named := _GROUP_NAME.match(pattern, pos)) is not None:
            out.append(f"(?P<{named.group(1) or named.group(2)}>")
            pos = named.end()
        else:
            out.append(c)
            pos += 1
    return "".join(out)
