"""IPv4 and IPv6 fragments reassembled before the rules see the datagram; overlaps dropped
and counted; the reassembly state bounded in datagrams, bytes and time."""

from __future__ import annotations

from scapy.all import (  # type: ignore[attr-defined]
    IP,
    UDP,
    Ether,
    IPv6,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    fragment,
    raw,
)
from scapy.layers.inet6 import fragment6

from appliance.inspect.decode import LINKTYPE_ETHERNET, Errors, decode_packet
from appliance.inspect.defrag import Defragmenter
from tests.inspect.traffic import engine

RULE = 'alert udp any any -> any 9999 (msg:"split"; content:"SPLIT-ACROSS-FRAGMENTS"; sid:1;)'
BODY = b"a" * 30 + b"SPLIT-ACROSS-FRAGMENTS" + b"b" * 60


def run(frames: list[bytes]) -> tuple[list[int], Errors]:
    eng = engine(RULE)
    sids = []
    for i, frame in enumerate(frames):
        sids += [a.sid for a in eng.process(1000.0 + i * 0.001, frame, LINKTYPE_ETHERNET)]
    return sids, eng.stats.errors


def v4_fragments() -> list[bytes]:
    packet = IP(src="10.0.0.1", dst="10.0.0.2", id=77) / UDP(sport=1000, dport=9999) / BODY
    return [raw(Ether() / f) for f in fragment(packet, fragsize=24)]


def test_ipv4_fragments_in_any_order_match_once() -> None:
    frames = v4_fragments()
    assert len(frames) >= 4
    sids, errors = run(frames[::-1])
    assert sids == [1] and errors.get("frag.reassembled") == 1


def test_ipv6_fragments_match() -> None:
    packet = (
        IPv6(src="fd00::1", dst="fd00::2")
        / IPv6ExtHdrFragment(id=9)
        / UDP(sport=1000, dport=9999)
        / (BODY * 3)
    )
    frames = [raw(Ether() / f) for f in fragment6(packet, 120)]
    assert len(frames) >= 3
    sids, errors = run(frames)
    assert sids == [1] and errors.get("frag.reassembled") == 1


def test_overlapping_fragments_are_dropped_and_counted() -> None:
    frames = v4_fragments()
    # the second fragment again, moved back 8 bytes over the first one's end
    overlap = Ether() / IP(src="10.0.0.1", dst="10.0.0.2", id=77, frag=1, flags="MF", proto=17)
    sids, errors = run([frames[0], raw(overlap / (b"X" * 16)), *frames[1:]])
    assert sids == []
    assert errors.get("frag.overlap") == 1 and "frag.reassembled" not in errors


def test_bounds_datagrams_bytes_and_time() -> None:
    errors: Errors = {}
    defrag = Defragmenter(max_datagrams=4, max_bytes=64, timeout=5.0)

    def first(ident: int, size: int = 16) -> object:
        frame = raw(
            Ether()
            / IP(src="10.0.0.1", dst="10.0.0.2", id=ident, flags="MF", proto=17)
            / (b"z" * size)
        )
        layer = decode_packet(frame, LINKTYPE_ETHERNET, errors)
        assert layer is not None and layer.frag is not None
        return layer

    for ident in range(6):
        assert defrag.add(0.0, first(ident), errors) is None  # type: ignore[arg-type]
    assert len(defrag) == 4 and errors["frag.evicted"] == 2
    assert defrag.add(1.0, first(100, 48), errors) is None  # type: ignore[arg-type]
    assert defrag.held <= 64 and errors["frag.memory"] >= 1
    assert defrag.add(10.0, first(200), errors) is None  # type: ignore[arg-type]
    assert len(defrag) == 1 and errors["frag.timeout"] >= 1


def reassembled(frames: list[bytes]) -> object:
    errors: Errors = {}
    defrag = Defragmenter()
    whole = None
    for frame in frames:
        layer = decode_packet(frame, LINKTYPE_ETHERNET, errors)
        assert layer is not None and layer.frag is not None
        whole = defrag.add(0.0, layer, errors) or whole
    assert whole is not None
    return whole


def test_the_datagram_keeps_its_first_fragments_ipv4_header() -> None:
    packet = IP(src="10.0.0.1", dst="10.0.0.2", id=77, ttl=5, tos=4) / UDP(dport=9999) / BODY
    whole = reassembled([raw(Ether() / f) for f in fragment(packet, fragsize=24)])
    rebuilt = IP(whole.raw)  # type: ignore[attr-defined]
    assert (rebuilt.ttl, rebuilt.id, rebuilt.tos, rebuilt.frag, rebuilt.flags) == (5, 77, 4, 0, 0)
    assert rebuilt.len == len(raw(packet)) and raw(rebuilt[UDP].payload) == BODY
    checked = IP(raw(rebuilt))
    del checked.chksum
    assert IP(raw(checked)).chksum == rebuilt.chksum  # the checksum made again


def test_the_datagram_keeps_its_first_fragments_ipv6_chain_without_the_fragment_header() -> None:
    packet = (
        IPv6(src="fd00::1", dst="fd00::2", hlim=3)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrFragment(id=9)
        / UDP(sport=1000, dport=9999)
        / (BODY * 3)
    )
    whole = reassembled([raw(Ether() / f) for f in fragment6(packet, 120)])
    rebuilt = IPv6(whole.raw)  # type: ignore[attr-defined]
    assert rebuilt.hlim == 3 and rebuilt.nh == 0 and rebuilt[IPv6ExtHdrHopByHop].nh == 17
    assert IPv6ExtHdrFragment not in rebuilt
    assert rebuilt.plen == 8 + 8 + len(BODY * 3) and raw(rebuilt[UDP].payload) == BODY * 3
