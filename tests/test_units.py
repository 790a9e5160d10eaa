"""Durations and rates as profiles write them."""

from __future__ import annotations

import pytest

from appliance.units import Rate, format_duration, parse_duration, parse_rate, parse_timeout


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("1ms", 0.001),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        (" 30s ", 30.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["", "10", "10 s", "1.5s", "-5s", "0s", "10sec", "1w", "s", 10, None]
)
def test_parse_duration_bad(value: object) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(600, "10m"), (0.5, "500ms"), (86400, "1d"), (90, "90s"), (3600, "1h"), (1.25, "1250ms")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "rate", "per_second"),
    [
        ("50/second", Rate(50, "second"), 50.0),
        ("120/minute", Rate(120, "minute"), 2.0),
        ("3600 / hour", Rate(3600, "hour"), 1.0),
        ("86400/day", Rate(86400, "day"), 1.0),
    ],
)
def test_parse_rate(text: str, rate: Rate, per_second: float) -> None:
    assert parse_rate(text) == rate
    assert parse_rate(text).per_second == pytest.approx(per_second)


@pytest.mark.parametrize(
    "value", ["", "50", "50/sec", "0/second", "-1/second", "fast", "50 per second", 50, None]
)
def test_parse_rate_bad(value: object) -> None:
    with pytest.raises(ValueError, match="bad rate"):
        parse_rate(value)  # type: ignore[arg-type]


def test_rate_text() -> None:
    assert str(Rate(200, "second")) == "200/second"


@pytest.mark.parametrize(
    ("value", "seconds"), [("10m", 600.0), (30, 30.0), (0.5, 0.5), ("365d", 31_536_000.0)]
)
def test_parse_timeout(value: object, seconds: float) -> None:
    assert parse_timeout(value) == seconds


@pytest.mark.parametrize(
    "value",
    [float("inf"), float("-inf"), float("nan"), 1e30, -5, 0, 0.0001, True, False, None, [], "x"],
)
def test_parse_timeout_refuses(value: object) -> None:
    with pytest.raises(ValueError, match=r"timeout|duration"):
        parse_timeout(value)
