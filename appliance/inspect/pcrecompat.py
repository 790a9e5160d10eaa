"""A PCRE pattern compiled by Python's ``re``, as ``pcre`` and ``pcrexform`` both need it.

Two PCRE forms ``re`` does not take are written as ``re`` writes the same thing: ``\\g``
back references (``backrefs.py``) and look-behinds whose alternatives have different
fixed widths (``lookbehind.py``, tried only when ``re`` refuses the look-behind). What
``re`` would run differently from PCRE, or not at all, is refused with a ValueError:
branch resets, verbs, ``\\K``, ``\\R``, ``\\X``, ``\\G``, ``\\Q...\\E``, ``\\h``, ``\\v``, ``\\z``,
recursion and subroutine calls, a look-behind of no fixed width.
"""

from __future__ import annotations

import re

from appliance.inspect.backrefs import write_backrefs
from appliance.inspect.lookbehind import split_lookbehinds

_INLINE_X = re.compile(r"\(\?[a-zA-Z]*x")  # the x flag set inside the pattern
_UNSUPPORTED = re.compile(r"\(\?\||\(\*|\\[KRXGQEhHvVz]|\\g|\(\?R\)|\(\?[+-]?\d|\(\?P?>\w|\(\?&")


def compile_pcre(pattern: str, flags: int = 0) -> re.Pattern[bytes]:
    """``pattern`` (PCRE's syntax, without delimiters) compiled over bytes with ``re``'s
    ``flags``; ValueError, its message one line, for a form ``re`` cannot run the same way."""
    verbose = bool(flags & re.VERBOSE) or _INLINE_X.search(pattern) is not None
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
