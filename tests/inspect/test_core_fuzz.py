"""A longer fuzz of the compiled core's entry points against the twin, opt-in:
``APPLIANCE_CORE_FUZZ=N`` runs N rounds (each a few seconds). The regression captures and
the benchmark's mix, mutated (cut at any byte, bits flipped anywhere, 16-bit lengths set to
0, 1, their true value plus or minus one or 0xffff, bytes inserted or dropped), go through
an engine with the core and one with the twin (FastPath, RuleHits), the decoder, and the
DNS, SNI and HTTP parsers on the payloads. Made to run under AddressSanitizer too (see
test_core_sanitize.py)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from appliance.inspect import core
from appliance.inspect.decode import decode_packet
from appliance.inspect.pcap import read_capture
from appliance.lab.mix import Mix, flood

from .test_core import Frames, decoded_alike, http_alike, parsed_alike, same, sni_alike
from .test_core_hello import hellos_alike
from .test_engine_scan import SCANNED, scanned_frames

ROUNDS = int(os.environ.get("APPLIANCE_CORE_FUZZ", "0") or "0")

pytestmark = [
    pytest.mark.skipif(ROUNDS <= 0, reason="opt-in: APPLIANCE_CORE_FUZZ=ROUNDS"),
    pytest.mark.skipif(
        not core.available() or core.switched_off(),
        reason="the compiled fast path is not built (setup.py) or is switched off",
    ),
]

CORPUS = Path(__file__).parent / "corpus"


def corpus_frames() -> Frames:
    frames: Frames = []
    for path in sorted(CORPUS.glob("*.pcap")):
        with open(path, "rb") as handle:
            frames.extend((ts, data, lt) for ts, data, lt in read_capture(handle, str(path)))
    return frames


def damage(data: bytes, rng: random.Random) -> bytes:
    """One hostile change: a cut, flipped bits, a 16-bit field at its limits, bytes in or
    out."""
    raw = bytearray(data)
    if not raw:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(8)))
    kind = rng.randrange(6)
    if kind == 0:
        del raw[rng.randrange(len(raw) + 1) :]
    elif kind == 1:
        for _ in range(rng.randrange(1, 4)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    elif kind == 2 and len(raw) >= 2:
        at = rng.randrange(len(raw) - 1)
        true = int.from_bytes(raw[at : at + 2], "big")
        value = rng.choice((0, 1, 0xFFFF, 0x7FFF, 0x8000, true + 1, true - 1, len(raw) - at))
        raw[at : at + 2] = (value & 0xFFFF).to_bytes(2, "big")
    elif kind == 3:
        at = rng.randrange(len(raw) + 1)
        raw[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
    elif kind == 4:
        at = rng.randrange(len(raw))
        del raw[at : at + rng.randrange(1, 6)]
    else:
        raw[rng.randrange(len(raw))] = rng.choice((0, 0xFF, 0x7F, 0x80))
    return bytes(raw)


def mangled(frames: Frames, rng: random.Random, share: float) -> Frames:
    return [
        (ts, damage(data, rng) if rng.random() < share else data, lt) for ts, data, lt in frames
    ]


def payloads_of(frames: Frames) -> list[bytes]:
    out = []
    for _ts, data, lt in frames:
        layer = decode_packet(data, lt, {})
        if layer is not None and layer.payload:
            out.append(bytes(layer.payload))
    return out


def test_mutated_captures_through_every_entry_point() -> None:
    corpus = corpus_frames()
    for round_ in range(ROUNDS):
        rng = random.Random(round_)
        mix = Mix(seed=1000 + round_).build(3_000)
        # a flood of segments opening flows (SYNs, or ACKs, RSTs, FINs, data without one)
        kinds = ("syn", "ack", "rst", "fin", "data", "gtp")
        syns = flood(300, seed=round_, kind=kinds[round_ % len(kinds)])
        share = rng.uniform(0.05, 0.6)
        for frames in (mangled(corpus, rng, share), mangled(mix + syns, rng, share)):
            same(frames)
            same(frames, corpus=True, max_flows=200)
            same(frames, rules=SCANNED)
            decoded_alike(frames)
            decoded_alike(frames, gtp=False)
        same(mangled(scanned_frames(round_, flows=20), rng, share), rules=SCANNED)
        payloads = payloads_of(mix) + payloads_of(corpus)
        hostile = [damage(p, rng) for p in payloads for _ in range(2)]
        for batch in (payloads, hostile):
            parsed_alike(batch)
            sni_alike(batch)
            http_alike(batch)
            hellos_alike([p[9:] for p in batch if p[:1] == b"\x16"] + batch[:200])


def test_the_scanner_over_mutated_payloads() -> None:
    """The compiled multi-pattern scanner against ``pattern in data.lower()``: patterns cut
    from the payloads (a few, or hundreds sharing their first bytes), over the payloads
    damaged, at any offset."""
    from .test_core import found_by_find, patterns_type

    corpus = corpus_frames()
    for round_ in range(ROUNDS):
        rng = random.Random(round_)
        payloads = payloads_of(Mix(seed=2000 + round_).build(1_000)) + payloads_of(corpus)
        payloads = [p for p in payloads if p]
        for count in (1, 3, 8, 9, 40, 400):
            patterns = []
            for _ in range(count):
                source = rng.choice(payloads)
                at = rng.randrange(len(source))
                patterns.append(source[at : at + rng.randrange(1, 24)])
            fold = rng.random() < 0.5
            scanner = patterns_type()(patterns, fold)
            for data in rng.sample(payloads, min(60, len(payloads))):
                data = damage(data, rng)
                start = rng.randrange(len(data) + 1)
                want = found_by_find(patterns, data[start:], fold)
                assert scanner.scan(data, start) == want
