"""PCRE look-behinds whose alternatives have different widths, for Python's ``re``.

PCRE runs a look-behind whose top-level alternatives each have a fixed width, the widths
differing (``(?<!TOP|//)``); Python's ``re`` wants one width for the whole look-behind. Split
into one look-behind per alternative, it means the same, exactly:

- ``(?<=A|BC)``: some alternative ends here, tried in order: ``(?:(?<=A)|(?<=BC))``;
- ``(?<!A|BC)``: none ends here: ``(?:(?<!A)(?<!BC))``.

No group is added but non-capturing ones, so group numbers and names stay as they were. A
look-behind whose alternative itself varies in width (``(?<=a+)``, ``(?<=x(?:a|bc))``) is
not split: PCRE before 10.43 refuses it too, and the rule's pattern stays refused.
"""

from __future__ import annotations

_OPENERS = ("(?<=", "(?<!")


def class_end(pattern: str, start: int) -> int:
    """The index after the character class opening at ``start``."""
    at = start + 1
    if at < len(pattern) and pattern[at] == "^":
        at += 1
    if at < len(pattern) and pattern[at] == "]":
        at += 1  # a leading ] is a member
    while at < len(pattern):
        c = pattern[at]
        if c == "\\":
            at += 2
        elif c == "[" and pattern[at + 1 : at + 2] in (":", ".", "="):
            close = pattern.find(pattern[at + 1] + "]", at + 2)  # [:alpha:] and the like
            at = len(pattern) if close < 0 else close + 2
        elif c == "]":
            return at + 1
        else:
            at += 1
    return len(pattern)


class _Unbalanced(Exception):
    pass


def split_lookbehinds(pattern: str, verbose: bool = False) -> str:
    """The pattern with each look-behind of several alternatives written as one look-behind
    per alternative (the text elsewhere unchanged). ``verbose``: the ``x`` flag, under which
    ``#`` starts a comment. A pattern whose parentheses do not balance is returned as it is
    (the regex compiler says what is wrong with it)."""
    pos = 0

    def alternatives() -> list[str]:
        """The alternatives of the current level, up to its closing parenthesis."""
        nonlocal pos
        alts = [""]
        while pos < len(pattern):
            c = pattern[pos]
            if c == "\\":
                alts[-1] += pattern[pos : pos + 2]
                pos += 2
            elif c == "[":
                end = class_end(pattern, pos)
                alts[-1] += pattern[pos:end]
                pos = end
            elif c == "#" and verbose:
                end = pattern.find("\n", pos)
                end = len(pattern) if end < 0 else end + 1
                alts[-1] += pattern[pos:end]
                pos = end
            elif c == "|":
                alts.append("")
                pos += 1
            elif c == ")":
                return alts
            elif c == "(" and pattern.startswith("(?#", pos):
                end = pattern.find(")", pos)
                if end < 0:
                    raise _Unbalanced
                alts[-1] += pattern[pos : end + 1]
                pos = end + 1
            elif c == "(":
                opener = pattern[pos : pos + 4] if pattern.startswith(_OPENERS, pos) else "("
                pos += len(opener)
                inner = alternatives()
                if pos >= len(pattern):
                    raise _Unbalanced
                pos += 1  # its ")"
                if opener == "(" or len(inner) == 1:
                    alts[-1] += opener + "|".join(inner) + ")"
                elif opener == "(?<=":
                    alts[-1] += "(?:" + "|".join(f"(?<={a})" for a in inner) + ")"
                else:
                    alts[-1] += "(?:" + "".join(f"(?<!{a})" for a in inner) + ")"
            else:
                alts[-1] += c
                pos += 1
        return alts

    try:
        top = alternatives()
        if pos < len(pattern):
            raise _Unbalanced  # a ")" with no "("
    except _Unbalanced:
        return pattern
    return "|".join(top)
