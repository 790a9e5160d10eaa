"""Durations and rates as the profile writes them: ``10s``, ``5m``, ``50/second``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, cast

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
RateUnit = Literal["second", "minute", "hour", "day"]
UNIT_SECONDS: dict[RateUnit, int] = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"^(\d+)\s*/\s*(second|minute|hour|day)$")
MAX_TIMEOUT_SECONDS = 365 * 86400  # a run-time set element's timeout: at most a year


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (``500ms``, ``10s``, ``5m``, ``1h``, ``1d``). ValueError if malformed."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"bad duration {text!r} (expected e.g. 500ms, 10s, 5m, 1h, 1d)")
    value = int(match.group(1)) * _DURATION_SECONDS[match.group(2)]
    if value <= 0:
        raise ValueError(f"bad duration {text!r}: must be above zero")
    return float(value)


def parse_timeout(value: object) -> float:
    """A set element's timeout: a duration text (``10m``) or a number of seconds, finite,
    from 1 ms to :data:`MAX_TIMEOUT_SECONDS`. ValueError otherwise (``true``, ``-5``,
    ``Infinity``, ``1e30``)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"bad timeout {value!r} (expected a duration such as 10m)")
    seconds = parse_duration(value) if isinstance(value, str) else float(value)
    if not math.isfinite(seconds) or seconds < 0.001:
        raise ValueError(f"bad timeout {value!r}: must be from 1ms to 365d")
    if seconds > MAX_TIMEOUT_SECONDS:
        raise ValueError(f"bad timeout {value!r}: must be at most 365d")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact nft duration for ``seconds`` (``600`` -> ``10m``)."""
    ms = round(seconds * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


@dataclass(frozen=True)
class Rate:
    """A count per unit of time (``10/second``)."""

    count: int
    per: RateUnit

    def __str__(self) -> str:
        return f"{self.count}/{self.per}"

    @property
    def per_second(self) -> float:
        return self.count / UNIT_SECONDS[self.per]


def parse_rate(text: str) -> Rate:
    """``N/second|minute|hour`` (and ``/day``). ValueError if malformed."""
    match = _RATE.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"bad rate {text!r} (expected N/second, N/minute or N/hour)")
    count = int(match.group(1))
    if count <= 0:
        raise ValueError(f"bad rate {text!r}: must be above zero")
    return Rate(count, cast(RateUnit, match.group(2)))
