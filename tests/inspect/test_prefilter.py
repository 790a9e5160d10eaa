"""The multi-pattern prefilter against its reference twin: an engine whose rule groups scan
each buffer once for the rules' fast patterns gives exactly the alerts of an engine that
checks every rule in full on every packet (the mixed capture, crafted sessions and
generated payloads, with the shipped rules and the rule corpus)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import DNS, DNSQR, IP, UDP, Ether, raw  # type: ignore[attr-defined]

from appliance.inspect import core, prefilter
from appliance.inspect.engine import InspectionEngine
from appliance.inspect.eve import to_eve
from appliance.inspect.match import Matcher
from appliance.inspect.pcap import LINKTYPE_ETHERNET
from appliance.inspect.prefilter import (
    MAX_NESTING,
    Exhaustive,
    Prefilter,
    TwinPrefilter,
    trie_alternation,
)
from appliance.inspect.rules import Content, Signature, Variables, load_rules
from appliance.lab.mix import Mix, make_engine
from appliance.model.values import parse_network
from tests.inspect.traffic import client_hello, http_get, tcp_session

CORPUS = Path(__file__).parent / "rules" / "corpus.rules"
T0 = 1_700_000_000.0

Frame = tuple[float, bytes, int]


def _signatures() -> list[Signature]:
    shipped = make_engine().config.signatures
    variables = Variables.from_networks([parse_network("10.0.0.0/8")])
    return [*shipped, *load_rules([str(CORPUS)], variables).signatures]


SIGNATURES = _signatures()


def _engines() -> tuple[InspectionEngine, InspectionEngine]:
    base = make_engine()
    config = replace(base.config, signatures=SIGNATURES)
    fast = InspectionEngine(config)
    reference = InspectionEngine(config)
    reference.matcher = Matcher(config.signatures, exhaustive=True)
    return fast, reference


def _events(alerts: Iterable[Any]) -> list[str]:
    return sorted(json.dumps(to_eve(a), sort_keys=True, default=str) for a in alerts)


def _same_alerts(frames: Sequence[Frame]) -> int:
    """Runs both engines over the frames, packet by packet; the count of alerts."""
    fast, reference = _engines()
    total = 0
    for ts, data, linktype in frames:
        got = _events(fast.process(ts, data, linktype))
        want = _events(reference.process(ts, data, linktype))
        assert got == want, (ts, data)
        total += len(got)
    return total


def _patterns() -> list[bytes]:
    return sorted({c.pattern for sig in SIGNATURES for c in sig.contents if c.pattern})


PATTERNS = _patterns()


def test_the_mixed_capture_alerts_alike() -> None:
    assert _same_alerts(Mix().build(4000)) > 0


def test_crafted_sessions_alert_alike() -> None:
    packets = [
        *tcp_session(
            "203.0.113.5",
            "10.1.2.3",
            40000,
            80,
            [
                http_get("/cgi-bin/../../etc/passwd", headers="User-Agent: sqlmap/1.0\r\n"),
                http_get("/x?q=1 UNION SELECT a", host="pastebin.com"),
            ],
            [b"HTTP/1.1 200 OK\r\nServer: Apache/2.2\r\n\r\nMZ\x90\x00PE\x00\x00"],
        ),
        *tcp_session("10.1.2.3", "198.51.100.7", 40001, 443, [client_hello("evil.example")]),
        Ether()
        / IP(src="10.1.2.3", dst="10.0.0.53")
        / UDP(sport=5353, dport=53)
        / DNS(rd=1, qd=DNSQR(qname="a.pastebin.com")),
    ]
    frames = [(T0 + i * 0.001, raw(p), LINKTYPE_ETHERNET) for i, p in enumerate(packets)]
    assert _same_alerts(frames) > 0


def _flip(data: bytes, mask: int) -> bytes:
    """The case of the ASCII letters at the positions the mask's bits name swapped."""
    return bytes(
        b ^ 0x20 if b < 0x80 and chr(b).isalpha() and mask >> (i % 31) & 1 else b
        for i, b in enumerate(data)
    )


payloads = st.lists(
    st.one_of(st.sampled_from(PATTERNS), st.binary(max_size=24)), min_size=1, max_size=6
).map(b"".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    requests=st.lists(st.tuples(payloads, st.integers(0, 2**31 - 1)), min_size=1, max_size=3),
    port=st.sampled_from([80, 443, 8080, 21, 25, 445, 3389, 12345]),
    http=st.booleans(),
)
def test_generated_payloads_alert_alike(
    requests: list[tuple[bytes, int]], port: int, http: bool
) -> None:
    bodies = [_flip(p, mask) for p, mask in requests]
    if http:
        bodies = [http_get("/" + b.hex()[:40], headers="X: ") + b for b in bodies]
    packets = [
        *tcp_session("203.0.113.9", "10.4.5.6", 41000, port, bodies, bodies[::-1]),
        *(
            Ether() / IP(src="10.4.5.6", dst="192.0.2.1") / UDP(sport=41001, dport=port) / b
            for b in bodies
        ),
    ]
    frames = [(T0 + i * 0.001, raw(p), LINKTYPE_ETHERNET) for i, p in enumerate(packets)]
    _same_alerts(frames)


@settings(max_examples=100, deadline=None)
@given(data=st.lists(st.one_of(st.sampled_from(PATTERNS), st.binary(max_size=16)), max_size=6))
def test_candidates_cover_every_rule_whose_pattern_occurs(data: list[bytes]) -> None:
    """The prefilter's candidates hold every rule whose fast pattern occurs, case folded."""
    text = b"".join(data)
    entries = [
        (Content(pattern=p), SIGNATURES[i % len(SIGNATURES)]) for i, p in enumerate(PATTERNS)
    ]
    entries = list({sig.sid: (c, sig) for c, sig in entries}.values())
    found = Prefilter("pkt", entries).candidates(text) or []
    want = {sig.sid for c, sig in entries if c.pattern.lower() in text.lower()}
    assert want <= {sig.sid for sig in found}
    assert want or not found
    assert {s.sid for s in Exhaustive("pkt", entries).candidates(text) or []} >= want


def test_one_pattern_without_letters_is_found_as_it_is() -> None:
    sig = SIGNATURES[0]
    prefilter = Prefilter("pkt", [(Content(pattern=b"\x00\x01/"), sig)])
    assert prefilter.candidates(b"ab\x00\x01/cd") == [sig]
    assert prefilter.candidates(b"ab\x00\x01cd") is None
    cased = Prefilter("pkt", [(Content(pattern=b"EvIl"), sig)])
    assert cased.candidates(b"xx evil") == [sig]


def _flat(patterns: list[bytes]) -> bytes:
    return b"|".join(re.escape(p) for p in sorted(patterns, key=lambda p: (-len(p), p)))


_BYTE = st.sampled_from(b"ab.\x00|(")  # few bytes, so that patterns share prefixes


@settings(max_examples=120, deadline=None)
@given(
    patterns=st.lists(st.lists(_BYTE, min_size=3, max_size=7).map(bytes), min_size=1),
    texts=st.lists(st.lists(_BYTE, max_size=30).map(bytes)),
)
def test_the_trie_alternation_matches_as_the_flat_one(
    patterns: list[bytes], texts: list[bytes]
) -> None:
    """At each position the trie matches what the flat alternation, longest first, does:
    the same first hit and the same texts for the candidates."""
    unique = sorted(set(patterns))
    flat, trie = _flat(unique), trie_alternation(unique)
    for text in texts:
        want = re.search(flat, text, re.DOTALL)
        got = re.search(trie, text, re.DOTALL)
        assert (got and (got.start(), got.group())) == (want and (want.start(), want.group()))
        assert re.findall(b"(?=(" + trie + b"))", text) == re.findall(b"(?=(" + flat + b"))", text)


def test_a_trie_nested_too_deep_is_written_flat() -> None:
    chain = [b"a" * n for n in range(3, MAX_NESTING + 10)]
    assert trie_alternation(chain) == _flat(chain)
    assert trie_alternation([b"abc", b"abd", b"xyz"]) == b"(?:ab(?:c|d)|xyz)"


@settings(max_examples=100, deadline=None)
@given(
    data=st.lists(st.one_of(st.sampled_from(PATTERNS), st.binary(max_size=16)), max_size=6),
    cased=st.integers(0, 2**31 - 1),
)
def test_the_automaton_finds_what_the_alternation_finds(data: list[bytes], cased: int) -> None:
    """With the ahocorasick module, a prefilter's alternation is an automaton: the same
    candidates as the regular expression's, on any buffer."""
    pytest.importorskip("ahocorasick")
    text = _flip(b"".join(data), cased)
    entries = [
        (Content(pattern=p), SIGNATURES[i % len(SIGNATURES)]) for i, p in enumerate(PATTERNS)
    ]
    automaton = TwinPrefilter("pkt", entries)
    assert automaton._automaton is not None
    try:
        prefilter.USE_AUTOMATON = False
        alternation = TwinPrefilter("pkt", entries)
    finally:
        prefilter.USE_AUTOMATON = True
    assert alternation._automaton is None
    got = automaton.candidates(text) or []
    want = alternation.candidates(text) or []
    assert {id(s) for s in got} == {id(s) for s in want}
    assert len(got) == len({s.sid for s in got})


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.sampled_from(PATTERNS[:40]), st.binary(max_size=8)).map(
            lambda v: v + b".example"
        ),
        max_size=40,
    ),
    bound=st.integers(1, 6),
)
def test_an_application_buffer_seen_before_gives_what_a_scan_gives(
    values: list[bytes], bound: int
) -> None:
    """An application buffer's prefilter keeps the candidates of the values it scanned (up
    to MEMO_ENTRIES of them, then anew): a value seen before, or again after the bound
    dropped it, gives what a fresh scan of it gives."""
    entries = [
        (Content(pattern=p, buffer="http.host"), SIGNATURES[i % len(SIGNATURES)])
        for i, p in enumerate(PATTERNS)
    ]
    entries = list({sig.sid: (c, sig) for c, sig in entries}.values())
    kept = Prefilter("http.host", entries)
    saved = prefilter.MEMO_ENTRIES
    prefilter.MEMO_ENTRIES = bound
    try:
        for value in values + values[::-1]:
            got = kept.candidates(value) or []
            want = Prefilter("http.host", entries).candidates(value) or []
            assert [s.sid for s in got] == [s.sid for s in want]
            assert kept.none_in(value) is not bool(got)
    finally:
        prefilter.MEMO_ENTRIES = saved


_compiled = pytest.mark.skipif(
    not core.available() or core.switched_off(),
    reason="the compiled core is not built (setup.py) or is switched off",
)
_SMALL = st.sampled_from(b"aAbB\x00.")  # few bytes: patterns share prefixes and overlap
_pattern = st.one_of(
    st.sampled_from(PATTERNS),
    st.lists(_SMALL, min_size=1, max_size=6).map(bytes),  # short ones, one or two bytes too
    st.tuples(_SMALL, st.integers(3, 9)).map(lambda t: bytes([t[0]]) * t[1]),  # runs
    st.binary(min_size=1, max_size=12),
)


@_compiled
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    patterns=st.lists(_pattern, min_size=1, max_size=60),
    texts=st.lists(
        st.lists(st.one_of(_pattern, st.binary(max_size=20)), max_size=8).map(b"".join),
        min_size=1,
        max_size=4,
    ),
    buffer=st.sampled_from(["pkt", "http.host", "dns.query"]),
    dotprefix=st.booleans(),
    shared=st.booleans(),
    cased=st.integers(0, 2**31 - 1),
)
def test_the_compiled_scanner_gives_what_the_python_shapes_give(
    patterns: list[bytes],
    texts: list[bytes],
    buffer: str,
    dotprefix: bool,
    shared: bool,
    cased: int,
) -> None:
    """Every shape (patterns alone, runs, short ones, an automaton or an alternation, a
    transformed buffer, an application buffer's memo; rules of one sid or several): the
    compiled scanner's candidates are the Python shapes' rules, and none_in says the same."""
    entries = [
        (Content(pattern=p, buffer=buffer), SIGNATURES[(i // 2 if shared else i) % len(SIGNATURES)])
        for i, p in enumerate(patterns)
    ]
    transforms = (("dotprefix", b""),) if dotprefix else ()
    compiled = Prefilter(buffer, entries, transforms)
    twin = TwinPrefilter(buffer, entries, transforms)
    for text in [_flip(t, cased) for t in texts] + texts[:1]:
        got = compiled.candidates(text) or []
        want = twin.candidates(text) or []
        assert {id(s) for s in got} == {id(s) for s in want}
        assert len({s.sid for s in got}) == len({s.sid for s in want})
        assert compiled.none_in(text) == twin.none_in(text)
    if buffer == "pkt" and not transforms:
        assert compiled.patterns is not None and compiled.candidates == compiled.patterns.candidates
    assert twin.patterns is None


@_compiled
def test_the_compiled_scanner_is_made_by_the_first_scan() -> None:
    sig = SIGNATURES[0]
    made = Prefilter("pkt", [(Content(pattern=b"evil"), sig), (Content(pattern=b"x"), sig)])
    assert made.patterns is None and not made.none_in(b"")
    data = b"nothing here"
    assert made.candidates(data) is None and made.none_in(data)
    assert made.patterns is not None
    assert made.candidates(b"EVIL") == [sig] and not made.none_in(b"EVIL")


def test_a_scanner_found_but_not_loadable_leaves_the_python_shapes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sig = SIGNATURES[0]
    monkeypatch.setattr(core, "enabled", lambda: True)
    monkeypatch.setattr(core, "patterns_class", lambda: None)
    made = Prefilter("pkt", [(Content(pattern=b"evil"), sig), (Content(pattern=b"x"), sig)])
    data = b"EVIL"
    assert made.candidates(data) == [sig] and not made.none_in(data)
    assert made.patterns is None and made.candidates(b"none") is None
