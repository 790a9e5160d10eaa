"""The synthetic capture: as long as asked, every frame well formed for the engine."""

from __future__ import annotations

from appliance.inspect.pcap import LINKTYPE_ETHERNET
from appliance.lab.mix import Mix, make_engine


def test_mix_is_as_long_as_asked_and_decodes_cleanly() -> None:
    frames = Mix(seed=3).build(3000)
    assert len(frames) == 3000
    assert all(linktype == LINKTYPE_ETHERNET for _, _, linktype in frames)
    assert [ts for ts, _, _ in frames] == sorted(ts for ts, _, _ in frames)
    engine = make_engine()
    for ts, data, linktype in frames:
        engine.process(ts, data, linktype)
    assert engine.stats.decoded == engine.stats.packets == 3000
    assert not engine.stats.errors


def test_same_seed_same_flows() -> None:
    """Byte for byte (the TLS hellos' random bytes too), so that a benchmark's or a test's
    alerts are the same in every process."""
    first, second = Mix(seed=5).build(3000), Mix(seed=5).build(3000)
    assert first == second
    assert any(data[54:57] == b"\x16\x03\x01" for _, data, _ in first)  # hellos among them
    assert Mix(seed=6).build(3000) != first
