"""The synthetic capture: as long as asked, every frame well formed for the engine."""

from __future__ import annotations

import pytest

from appliance.inspect.decode import PROTO_TCP, decode_packet
from appliance.inspect.pcap import LINKTYPE_ETHERNET
from appliance.lab.mix import FLOOD_FLAGS, Mix, flood, make_engine


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


def tls_streams(frames: list[tuple[float, bytes, int]]) -> dict[tuple[bytes, int], bytes]:
    """The TCP payload each plain TLS flow's direction carries, by (source, source port)."""
    streams: dict[tuple[bytes, int], bytes] = {}
    for _, data, _ in frames:
        if data[23] != 6 or 443 not in (data[34] << 8 | data[35], data[36] << 8 | data[37]):
            continue
        start = 34 + (data[46] >> 4) * 4
        key = (data[26:30], data[34] << 8 | data[35])
        streams[key] = streams.get(key, b"") + data[start:]
    return streams


def test_the_records_mix_carries_tls_records_both_ways() -> None:
    """With records, each TLS direction is whole TLS records (the server's handshake, then
    application data); the mix without them is as before, its flows the same."""
    frames = Mix(seed=3, records=True).build(6000)
    streams = tls_streams(frames)
    kinds = set()
    for data in streams.values():
        pos = 0
        while pos < len(data):
            assert data[pos] in (20, 22, 23) and data[pos + 1] == 3
            kinds.add(data[pos])
            pos += 5 + (data[pos + 3] << 8 | data[pos + 4])
        assert pos == len(data)
    assert kinds == {20, 22, 23}
    plain = Mix(seed=3).build(6000)

    def flows(capture: list[tuple[float, bytes, int]]) -> list[bytes]:
        return list(dict.fromkeys(d[26:38] for _, d, _ in capture))[:100]

    assert flows(plain) == flows(frames)  # the same flows, in the same order


@pytest.mark.parametrize("kind", sorted(FLOOD_FLAGS))
def test_a_flood_of_each_kind_opens_a_new_flow_with_every_packet(kind: str) -> None:
    frames = flood(300, seed=2, kind=kind)
    keys = set()
    for _ts, data, _lt in frames:
        layer = decode_packet(data, 1, {})
        if kind == "gtp":  # a G-PDU carrying it
            assert layer is not None and layer.gtp is not None and layer.gtp.teid
            layer = layer.gtp.inner
        assert layer is not None and layer.proto == PROTO_TCP
        assert layer.flags == FLOOD_FLAGS[kind]
        assert len(layer.payload) == (64 if kind == "data" else 0)
        keys.add((layer.src, layer.sport))
    assert len(keys) == len(frames)
