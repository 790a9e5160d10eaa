"""The compiled counters a new flow's first segment feeds (``threshold_allow``,
``port_scan_syn``, ``syn_flood_syn``) against their twins ``ThresholdState.allow``,
``PortScan.syn`` and ``SynFlood.syn``: the same answer and the same tables, in the same
order, after every event, their bounds reached and time going back now and then."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from appliance.inspect import core, detectors
from appliance.inspect.rules import Threshold
from appliance.inspect.threshold import ThresholdState
from appliance.model.profile import PortScanDetector, SynFloodDetector
from appliance.units import Rate

pytestmark = pytest.mark.skipif(
    not core.available() or core.switched_off(),
    reason="the compiled fast path is not built (setup.py) or is switched off",
)


def compiled() -> Any:
    from appliance.inspect import _fastpath

    return _fastpath


def events(rng: random.Random, count: int) -> list[tuple[float, bytes, bytes, int]]:
    """SYN-like events from a few sources to a few destinations and ports; time moves on in
    small and large steps, and now and then back; in half the runs by steps that add up
    exactly, so that windows end exactly on an event."""
    exact = rng.random() < 0.5
    sources = [bytes((198, 51, 100, i)) for i in range(1, 9)]
    dests = [bytes((10, 0, 0, i)) for i in range(1, 5)]
    ts = 1000.0
    out = []
    for _ in range(count):
        if exact:
            ts += rng.choice((0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 2.5, 5.0, -0.5))
        else:
            ts += rng.choice((0.0, 0.001, 0.01, 0.2, 1.5, 7.0, -0.5))
        out.append((ts, rng.choice(sources), rng.choice(dests), rng.randrange(1, 30)))
    return out


def table(od: Any) -> list[Any]:
    return list(od.items())


def detections_alike(
    rng: random.Random,
    twin: Callable[[float, bytes, bytes, int], Any],
    mine: Callable[[float, bytes, bytes, int], Any],
    tables: list[tuple[Any, Any]],
) -> int:
    """Events through a detector's method and its compiled form, each on a detector of its
    own: the same detections, the same tables after each; how many detections."""
    found = 0
    for ts, src, dst, dport in events(rng, 1500):
        want = twin(ts, src, dst, dport)
        assert mine(ts, src, dst, dport) == want, (ts, src, dst, dport)
        for my_table, their_table in tables:
            assert table(my_table) == table(their_table)
        found += want is not None
    return found


@pytest.mark.parametrize("seed", range(10))
def test_thresholds_count_alike(seed: int) -> None:
    rng = random.Random(seed)
    twin, mine = ThresholdState(max_entries=rng.choice((3, 7, 100))), None
    mine = ThresholdState(max_entries=twin.max_entries)
    rules = [
        (
            sid,
            Threshold(
                type=rng.choice(("limit", "threshold", "both", "detection_filter")),
                track=rng.choice(("by_src", "by_dst")),
                count=rng.randrange(1, 5),
                seconds=rng.choice((1, 2, 5)),
            ),
        )
        for sid in range(1, 6)
    ]
    allowed = 0
    for ts, src, dst, _ in events(rng, 1500):
        sid, threshold = rng.choice(rules)
        want = twin.allow(sid, threshold, src, dst, ts)
        got = compiled().threshold_allow(mine, sid, threshold, src, dst, ts)
        assert got is want, (sid, threshold, ts)
        assert table(mine._entries) == table(twin._entries)
        allowed += want
    assert 0 < allowed < 1500


@pytest.mark.parametrize("seed", range(10))
def test_port_scans_count_alike(seed: int) -> None:
    rng = random.Random(seed)
    config = PortScanDetector(ports=rng.choice((0, 1, 2, 4)), window=rng.choice((5.0, 30.0)))
    twin, mine = detectors.PortScan(config), detectors.PortScan(config)
    twin._seen.limit = mine._seen.limit = rng.choice((3, 6, 1000))
    assert detections_alike(
        rng,
        lambda ts, src, dst, dport: twin.syn(ts, src, dport),
        lambda ts, src, dst, dport: compiled().port_scan_syn(mine, ts, src, dport),
        [(mine._seen, twin._seen)],
    )


@pytest.mark.parametrize("seed", range(10))
def test_syn_floods_count_alike(seed: int) -> None:
    rng = random.Random(seed)
    config = SynFloodDetector(rate=Rate(rng.choice((2, 3, 5)), rng.choice(("second", "minute"))))
    twin, mine = detectors.SynFlood(config), detectors.SynFlood(config)
    bound = rng.choice((2, 5, 1000))
    for det in (twin, mine):
        det._tracked = det._by_src.limit = det._by_dst.limit = bound
    assert detections_alike(
        rng,
        lambda ts, src, dst, dport: twin.syn(ts, src, dst),
        lambda ts, src, dst, dport: compiled().syn_flood_syn(mine, ts, src, dst),
        [(mine._by_src, twin._by_src), (mine._by_dst, twin._by_dst)],
    )


def test_state_not_of_its_shape_is_an_error_not_a_crash() -> None:
    state = ThresholdState()
    threshold = Threshold(type="limit", track="by_src", count=1, seconds=5)
    state._entries[(1, b"\x01\x02\x03\x04")] = "odd"  # type: ignore[assignment]
    with pytest.raises(TypeError):
        compiled().threshold_allow(state, 1, threshold, b"\x01\x02\x03\x04", b"", 1.0)
    scan = detectors.PortScan(PortScanDetector(ports=2, window=5.0))
    scan._seen[b"\x01\x02\x03\x04"] = (1, 2, 3)
    with pytest.raises(TypeError):
        compiled().port_scan_syn(scan, 1.0, b"\x01\x02\x03\x04", 80)
    with pytest.raises(ValueError):
        compiled().port_scan_syn(scan, 1.0, b"\x05\x06\x07\x08", 70000)
    flood = detectors.SynFlood(SynFloodDetector(rate=Rate(5, "second")))
    flood._by_dst[b"\x05"] = (1.0, 2)
    with pytest.raises(TypeError):
        compiled().syn_flood_syn(flood, 1.0, b"\x01", b"\x05")
