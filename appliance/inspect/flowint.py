"""``flowint``: integer variables kept per flow, with Suricata's semantics.

``flowint: NAME, MODIFIER[, VALUE]``: the value is a number (0 to 2^32 - 1) or another
flowint's name (read when the rule is checked; one that is not set counts as 0).

- Conditions (``isset``, ``notset`` or ``isnotset``, ``==``, ``!=``, ``<``, ``<=``, ``>``,
  ``>=``) are part of the rule's match, all checked before anything of the rule is applied.
  A comparison of a variable that is not set does not hold, whatever the operator.
- Assignments (``=``, ``+``, ``-``) happen when the rule matches, in the rule's order. As in
  Suricata the variables are unsigned 32-bit: ``+`` and ``-`` wrap around (0 - 1 gives
  4294967295); ``+`` on a variable that is not set sets it to the value, ``-`` on one leaves
  it unset.

A flow holds at most ``MAX_VARS`` variables: an assignment that would create one more is
not made and is counted (``flowint.dropped``). Names come from the loaded rules, so the
bound only matters with many of them.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Sequence

MAX_VARS = 16
U32 = 0xFFFFFFFF
ASSIGNMENTS = frozenset(("=", "+", "-"))
COMPARISONS: dict[str, Callable[[int, int], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
MODIFIERS = ("=", "+", "-", *COMPARISONS, "isset", "notset", "isnotset")

# (name, modifier, value): a number, another flowint's name, or None (isset, notset)
Flowint = tuple[str, str, "int | str | None"]

_NAME = re.compile(r"[A-Za-z][\w./]*", re.ASCII)


class FlowVars(set[str]):
    """A flow's flowbits (the set's names) and its flowints (``ints``)."""

    __slots__ = ("ints",)

    def __init__(self, bits: Iterable[str] = ()) -> None:
        super().__init__(bits)
        self.ints: dict[str, int] = {}


def parse_flowint(value: str) -> Flowint:
    """``NAME, MODIFIER[, VALUE]`` as a flowint (``isnotset`` read as ``notset``). Raises
    ValueError with the message to show."""
    parts = [p.strip() for p in value.split(",")]
    if len(parts) not in (2, 3):
        raise ValueError(f"flowint: expected NAME, MODIFIER[, VALUE], got {value.strip()!r}")
    name, modifier = parts[0], parts[1]
    if not _NAME.fullmatch(name):
        raise ValueError(f"flowint: {name!r} is not a name (a letter, then letters, digits, _ . /)")
    if modifier not in MODIFIERS:
        raise ValueError(f"flowint: unknown modifier {modifier!r} ({' '.join(MODIFIERS)})")
    if modifier in ("isset", "notset", "isnotset"):
        if len(parts) == 3:
            raise ValueError(f"flowint: {modifier} takes no value")
        return (name, "notset" if modifier == "isnotset" else modifier, None)
    if len(parts) == 2 or not parts[2]:
        raise ValueError(f"flowint: {modifier} needs a value")
    text = parts[2]
    if text.isdigit() and text.isascii():
        if len(text) > 10 or int(text) > U32:
            raise ValueError(f"flowint: {text[:12]} is out of range 0..{U32}")
        return (name, modifier, int(text))
    if not _NAME.fullmatch(text):
        raise ValueError(f"flowint: value {text!r} is neither a number nor a flowint's name")
    return (name, modifier, text)


def uses(checks: bool, sets: bool) -> int:
    """A rule's place among a packet's matches by how it uses one kind of state (flowbits,
    flowints, xbits), as Suricata orders them: rules that only set first (0), then those
    that set and check (1), those that only check (2), those without it last (3)."""
    return (0 if not checks else 1) if sets else (2 if checks else 3)


def order(flowints: Sequence[Flowint]) -> int:
    """A rule's place among a packet's matches by its flowints (``uses``)."""
    return uses(
        any(f[1] not in ASSIGNMENTS for f in flowints), any(f[1] in ASSIGNMENTS for f in flowints)
    )


def _target(value: int | str | None, ints: dict[str, int]) -> int:
    if isinstance(value, int):
        return value
    return ints.get(value, 0) if value is not None else 0


def hold(flowints: Sequence[Flowint], ints: dict[str, int]) -> bool:
    """Whether a rule's conditions hold on the flow's variables."""
    for name, modifier, value in flowints:
        if modifier in ASSIGNMENTS:
            continue
        current = ints.get(name)
        if modifier == "isset":
            if current is None:
                return False
        elif modifier == "notset":
            if current is not None:
                return False
        elif current is None or not COMPARISONS[modifier](current, _target(value, ints)):
            return False
    return True


def apply(
    flowints: Sequence[Flowint],
    ints: dict[str, int],
    errors: dict[str, int] | None = None,
    max_vars: int = MAX_VARS,
) -> None:
    """A matching rule's assignments, in order."""
    for name, modifier, value in flowints:
        if modifier not in ASSIGNMENTS:
            continue
        target = _target(value, ints)
        current = ints.get(name)
        if current is None:
            if modifier == "-":
                continue  # nothing to subtract from
            if len(ints) >= max_vars:
                if errors is not None:
                    errors["flowint.dropped"] = errors.get("flowint.dropped", 0) + 1
                continue
            ints[name] = target
        elif modifier == "=":
            ints[name] = target
        elif modifier == "+":
            ints[name] = (current + target) & U32
        else:
            ints[name] = (current - target) & U32
