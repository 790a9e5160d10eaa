"""The grouped matcher against a reference that checks every rule on every packet.

The matcher sorts rules once into classes of one header and, per packet kind, a group with a
prefilter per buffer (and per transformation of a buffer); the reference below tests each
rule's protocol, application, direction, addresses and ports with the rule's own expressions
and then every option of it. Random packets (addresses inside and outside ``$HOME_NET``, the
ports the rules name, random flags, TTLs and payloads made of the rules' own patterns in
random case) with random application buffers go through both, with the shipped rules, the
rule corpus and rules on transformed buffers: the same rules match.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from appliance.inspect import core
from appliance.inspect.decode import PROTO_ICMP, PROTO_TCP, PROTO_UDP, Layer, decode_packet
from appliance.inspect.engine import _rule_hits
from appliance.inspect.match import (
    Matcher,
    add_packet,
    addr_segments,
    contents_match,
    fast_gate,
    gates_clear,
    head_holds,
    head_tests,
    icmp_matches,
    reads_packet,
    rule_matches,
    size_gate,
)
from appliance.inspect.rules import (
    PKT,
    AddrExpr,
    MultiBuffer,
    PortExpr,
    Signature,
    Variables,
    chain_matches,
    independent,
    item_check,
    items_hold,
    load_rules,
    parse_rules,
)
from appliance.lab.mix import make_engine
from appliance.model.values import parse_network

CORPUS = Path(__file__).parent / "rules" / "corpus.rules"
PACKETS = 2500  # per seed

# Rules on transformed buffers, an empty transformed buffer among what they may match
_TRANSFORMED_OPTIONS = (
    ("dns", 'dns.query; dotprefix; content:".evil.test"; endswith;'),
    ("dns", 'dns.query; dotprefix; content:".";'),
    ("tls", 'tls.sni; dotprefix; content:".bad.example"; endswith; nocase;'),
    ("http", 'http.uri; to_lowercase; content:"/admin";'),
    ("http", 'http.host; to_lowercase; content:"evil"; fast_pattern; content:".test"; distance:0;'),
    ("dns", 'dns.query; strip_whitespace; content:"ab"; content:"cd"; distance:0;'),
)


def _rules_text(options: tuple[tuple[str, str], ...], msg: str, first_sid: int) -> str:
    """A rule file of one rule for each (protocol, options), any address and port."""
    return "\n".join(
        f'alert {proto} any any -> any any (msg:"{msg}{i}"; {body} sid:{first_sid + i};)'
        for i, (proto, body) in enumerate(options)
    )


TRANSFORMED = _rules_text(_TRANSFORMED_OPTIONS, "t", 3900001)

_PROTOS: dict[str, tuple[int, ...]] = {
    "tcp": (PROTO_TCP,),
    "http": (PROTO_TCP,),
    "tls": (PROTO_TCP,),
    "udp": (PROTO_UDP,),
    "gtp": (PROTO_UDP,),
    "dns": (PROTO_UDP, PROTO_TCP),
    "icmp": (PROTO_ICMP, 58),
    "icmpv6": (58,),
    "sctp": (132,),
}
_APPS = ("", "http", "tls", "dns", "none")
_APP_BUFFERS = {
    "http": ("http.uri", "http.host", "http.method", "http.user_agent", "http.header"),
    "tls": ("tls.sni",),
    "dns": ("dns.query",),
}


def _signatures(tmp: Path) -> list[Signature]:
    variables = Variables.from_networks([parse_network("10.0.0.0/8")])
    shipped = make_engine().config.signatures
    corpus = load_rules([str(CORPUS)], variables).signatures
    extra = parse_rules(TRANSFORMED, str(tmp / "transformed.rules"), variables)
    return [*shipped, *corpus, *extra]


def _addr_ok(expr: AddrExpr, addr: bytes) -> bool:
    return expr.match(ipaddress.ip_address(addr))


def _port_ok(expr: PortExpr, port: int) -> bool:
    return expr.is_any or (port >= 0 and expr.match(port))


def _header_ok(sig: Signature, layer: Layer, reverse: bool) -> bool:
    ports = layer.proto in (PROTO_TCP, PROTO_UDP, 132)
    sport = layer.sport if ports else -1
    dport = layer.dport if ports else -1
    src, dst = layer.src, layer.dst
    if reverse:
        src, dst, sport, dport = dst, src, dport, sport
    return (
        _addr_ok(sig.src, src)
        and _addr_ok(sig.dst, dst)
        and _port_ok(sig.sport, sport)
        and _port_ok(sig.dport, dport)
    )


def reference_hits(
    signatures: Sequence[Signature],
    layer: Layer,
    app: str,
    to_server: bool,
    established: bool,
    buffers: dict[str, bytes],
) -> list[int]:
    """The sids of the rules that match: every rule checked, nothing grouped or cached."""
    found = []
    for sig in signatures:
        protos = _PROTOS.get(sig.proto)
        if protos is not None and layer.proto not in protos:
            continue
        if sig.app and (sig.app != app or sig.app == "gtp"):
            continue
        if sig.not_app and sig.not_app == app:
            continue
        if (
            sig.ip_proto is not None
            and (sig.ip_proto[0] <= layer.proto <= sig.ip_proto[1]) == sig.ip_proto[2]
        ):
            continue
        if sig.flow_to_server is not None and sig.flow_to_server != to_server:
            continue
        if not _header_ok(sig, layer, False) and not (
            sig.bidirectional and _header_ok(sig, layer, True)
        ):
            continue
        if rule_matches(sig, layer, established, buffers):
            found.append(sig.sid)
    return sorted(found)


def _words(signatures: Sequence[Signature]) -> list[bytes]:
    words = {c.pattern for sig in signatures for c in sig.contents if c.pattern}
    return sorted(words | {b"GET ", b"\x00", b" ", b"ab cd", b"evil.test"})


def _text(rng: random.Random, words: Sequence[bytes]) -> bytes:
    parts = []
    for _ in range(rng.randrange(0, 5)):
        word = rng.choice(words)
        roll = rng.random()
        if roll < 0.2:
            word = word.upper()
        elif roll < 0.3:
            word = word[: max(1, len(word) // 2)]
        parts.append(word)
        if rng.random() < 0.3:
            parts.append(rng.randbytes(rng.randrange(1, 6)))
    return b"".join(parts)[:1200]


def _address(rng: random.Random) -> bytes:
    first = rng.choice((10, 10, 192, 172, 8))
    return bytes((first, rng.choice((0, 16, 168)), rng.randrange(4), rng.randrange(1, 255)))


def _frame(rng: random.Random, ports: Sequence[int], words: Sequence[bytes]) -> bytes:
    proto = rng.choice((PROTO_TCP, PROTO_TCP, PROTO_UDP, PROTO_ICMP))
    payload = _text(rng, words) if rng.random() < 0.8 else b""
    if proto == PROTO_TCP:
        flags = rng.choice((0x02, 0x12, 0x10, 0x18, 0x11, 0x04, 0x01, 0x29, 0x00, 0xC2))
        head = struct.pack(
            "!HHIIBBHHH",
            rng.choice(ports),
            rng.choice(ports),
            rng.getrandbits(32),
            rng.getrandbits(32),
            0x50,
            flags,
            rng.choice((1024, 65535, 512, 0)),
            0,
            0,
        )
    elif proto == PROTO_UDP:
        head = struct.pack("!HHHH", rng.choice(ports), rng.choice(ports), 8 + len(payload), 0)
    else:
        head = struct.pack("!BBHI", rng.choice((0, 3, 8, 11, 13)), rng.randrange(4), 0, 0)
    total = 20 + len(head) + len(payload)
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        rng.choice((0, 0x10, 0x08)),
        total,
        rng.getrandbits(16),
        rng.choice((0, 0x4000, 0x8000)),
        rng.choice((64, 128, 255, 1, 0)),
        proto,
        0,
        _address(rng),
        _address(rng),
    )
    ether = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
    return ether + ip + head + payload


def _ports(signatures: Sequence[Signature]) -> list[int]:
    found = {53, 80, 443, 2152, 22, 8080, 1024, 65535, 0, 1}

    def walk(expr: PortExpr) -> None:
        if expr.kind == "range":
            found.update({expr.low, expr.high, min(expr.high + 1, 65535)})
        for item in expr.items:
            walk(item)

    for sig in signatures:
        walk(sig.sport)
        walk(sig.dport)
    return sorted(found)


def _compare(signatures: list[Signature], seed: int, exhaustive: bool = False) -> int:
    rng = random.Random(seed)
    matcher = Matcher(signatures, exhaustive=exhaustive)
    words, ports = _words(signatures), _ports(signatures)
    packet = reads_packet(signatures)
    matched = 0
    for _ in range(PACKETS):
        layer = decode_packet(_frame(rng, ports, words), 1, {})
        assert layer is not None
        app = rng.choice(_APPS)
        to_server = rng.random() < 0.6
        established = rng.random() < 0.7
        buffers: dict[str, bytes] = {PKT: layer.payload}
        if packet:
            add_packet(layer, buffers)
        for name in _APP_BUFFERS.get(app, ()):
            if rng.random() < 0.8:
                buffers[name] = _text(rng, words) if rng.random() < 0.9 else b""
        group = matcher.group_for(layer, app, to_server, False)
        flags = layer.flags if layer.proto == PROTO_TCP else -1
        got = sorted(
            sig.sid for sig in _rule_hits(layer, group, established, flags, layer.payload, buffers)
        )
        want = reference_hits(signatures, layer, app, to_server, established, buffers)
        assert got == want, (seed, app, to_server, established, layer, buffers)
        matched += bool(want)
    return matched


# rules decided by the payload's size (dsize) and more: a plain rule's size gate
_SIZED_OPTIONS = (
    ("tcp", "flags:S,12; dsize:>20;"),
    ("tcp", "dsize:<10;"),
    ("tcp", "dsize:0;"),
    ("ip", 'dsize:5<>40; content:!"zz";'),
    ("udp", "dsize:>3; isdataat:!30;"),
    ("tcp", 'dsize:>2; pcre:"/^.{3}/s";'),
    ("icmp", "itype:8; dsize:>0;"),
    ("tcp", 'flags:S; dsize:>20; content:"GET";'),
    ("tcp", "flow:established; dsize:1<>6;"),
    ("udp", "byte_test:1,>,0,0; dsize:>1;"),
    ("tcp", 'dsize:>8; content:"a"; offset:2; depth:1; content:!"b"; distance:0;'),
)
SIZED = _rules_text(_SIZED_OPTIONS, "s", 3910001)


def test_rules_decided_by_the_payload_size_match_the_reference(tmp_path: Path) -> None:
    """Plain rules with a dsize (alone, with flags, negated contents, pcre, isdataat, a byte
    test, an ICMP type, a flow state): the size gate skips only rules that could not match;
    the compiled driver agrees."""
    signatures = [
        *_signatures(tmp_path),
        *parse_rules(SIZED, str(tmp_path / "s.rules"), Variables.from_networks(None)),
    ]
    gates = {s.sid: size_gate(s) for s in signatures if s.sid > 3910000}
    assert gates[3910001] is not None and gates[3910001][0] == 21
    assert gates[3910003] == (0, 0)
    assert size_gate(signatures[0]) is None or any(c.size for c in signatures[0].contents)
    assert _compare(signatures, 7) > 0
    compiled = core.rule_hits_class() if core.available() else None
    if compiled is not None:
        hits = _driver_alike(compiled, signatures, 8)
        assert sum(n for sid, n in hits.items() if sid > 3910000) > 100  # they do match


def _driver_alike(
    compiled: Any, signatures: list[Signature], seed: int, packet: bool = False
) -> Counter[int]:
    """The compiled rule driver's hits against the twin's (``_rule_hits``) on random packets
    (``packet``: with their ``ip:packet`` buffer, and now and then a later fragment); how
    often each sid hit."""
    driver = compiled(icmp_matches, head_holds, contents_match, rule_matches, _rule_hits)
    rng = random.Random(seed)
    matcher = Matcher(signatures)
    words, ports = _words(signatures), _ports(signatures)
    hits: Counter[int] = Counter()
    for _ in range(PACKETS):
        frame = bytearray(_frame(rng, ports, words))
        if packet and rng.random() < 0.1:  # a later fragment: no TCP header to read
            frame[20:22] = (0x2000 | rng.randrange(1, 50)).to_bytes(2, "big")
        layer = decode_packet(bytes(frame), 1, {})
        assert layer is not None
        flags = layer.flags if layer.proto == PROTO_TCP else -1
        for established in (False, True):
            group = matcher.group_for(layer, "", rng.random() < 0.5, False)
            buffers = {PKT: layer.payload}
            if packet:
                add_packet(layer, buffers, rng.random() < 0.5)
            want = _rule_hits(layer, group, established, flags, layer.payload, dict(buffers))
            got = driver.hits(layer, group, established, flags, layer.payload, dict(buffers))
            assert [id(s) for s in got] == [id(s) for s in want], layer
            hits.update(s.sid for s in want)
    return hits


# plain rules on header fields (and sizes, flags, flows, negated contents, flowbits), as the
# fast paths gate them
_HEADED_OPTIONS = (
    ("tcp", "flow:established; window:0;"),
    ("tcp", "flags:A,12; ttl:<5; dsize:0;"),
    ("ip", "ttl:1;"),
    ("ip", "tos:16; id:>1000;"),
    ("tcp", "fragbits:!D; seq:<100000000; window:>600;"),
    ("tcp", 'ack:!0; content:!"zz"; fragbits:*R;'),
    ("udp", "ttl:>200; dsize:>3;"),
    ("tcp", "flowbits:isnotset,x; ttl:0;"),
    ("ip", "window:512;"),
    ("tcp", 'ipopts:rr; content:!"a";'),
)
HEADED = _rules_text(_HEADED_OPTIONS, "h", 3920001)


def test_fast_gates_hold_of_every_packet_a_plain_rule_matches(tmp_path: Path) -> None:
    """A packet outside every gate of a group's plain rules (``gates_clear``), which a fast
    path then takes, is matched by none of them, whatever the rest of those rules: over
    sized and header rules and packets of every kind. A group with a rule of no gate
    (the shipped rules' flags-only ones, IP options, a window on a UDP packet) has none."""
    text = SIZED + "\n" + HEADED
    signatures = list(parse_rules(text, str(tmp_path / "h.rules"), Variables.from_networks(None)))
    gated = {s.sid: fast_gate(s, True) for s in signatures if s.sid > 3920000}
    assert gated[3920001] == (((7, 0, 0, 0, False),), 0, 1 << 20)
    assert gated[3920002] is not None and gated[3920002][1:] == (0, 0)
    assert gated[3920010] is None  # (IP options: no gate)
    udp_gate = fast_gate(next(s for s in signatures if s.sid == 3920009), False)
    assert udp_gate is None  # (a window: no field of a UDP packet)
    shipped = Matcher([*_signatures(tmp_path), *signatures])
    signatures = [s for s in signatures if s.sid not in (3920009, 3920010)]
    rng = random.Random(9)
    matcher = Matcher(signatures)
    words, ports = _words(signatures), _ports(signatures)
    seen = {True: 0, False: 0}
    matched = 0
    for _ in range(PACKETS):
        frame = _frame(rng, ports, words)
        layer = decode_packet(frame, 1, {})
        assert layer is not None
        if layer.proto not in (PROTO_TCP, PROTO_UDP):
            continue
        buffers = {PKT: layer.payload}
        add_packet(layer, buffers)
        flags = layer.flags if layer.proto == PROTO_TCP else -1
        for established in (False, True):
            to_server = rng.random() < 0.5
            if flags in (0x02, -1):
                group = shipped.group_for(layer, "", to_server, False)
                assert group.fast_gates(flags, established) is None
            group = matcher.group_for(layer, "", to_server, False)
            gates = group.fast_gates(flags, established)
            assert gates is not None
            clear = gates_clear(gates, frame, 14, len(layer.payload))
            hits = _rule_hits(layer, group, established, flags, b"", dict(buffers))
            plain = {id(s) for s in group.plain_for(flags, established)}
            hit = any(id(s) in plain for s in hits)
            assert not (clear and hit), (layer, [s.sid for s in hits])
            seen[clear] += 1
            matched += hit
    assert min(seen.values()) > 100, seen
    assert matched > 100, matched


# plain rules with byte tests of the payload (as ET's DNS rules on a message's flags)
_BYTE_OPTIONS = (
    ("udp", "byte_test:1,&,64,2;"),
    ("udp", 'content:!"7PYq"; depth:8; byte_test:1,!&,64,2; byte_test:1,&,32,2;'),
    ("ip", "byte_test:2,>,0,6; byte_test:2,>,0,10;"),
    ("tcp", "byte_test:2,=,1,0,little; flags:A,12;"),
    ("tcp", "byte_test:1,=,2,2,bitmask 0x78;"),
    ("ip", "byte_test:4,>,1000000000,4; ttl:<100;"),
    ("udp", "byte_test:1,<=,0x6d,0; byte_test:1,>=,0x61,0; byte_test:1,^,0x61,1;"),
    ("tcp", "byte_test:3,>,0,2,string,dec;"),
)
BYTED = _rules_text(_BYTE_OPTIONS, "b", 3930001)


def test_compiled_driver_gates_plain_rules_as_the_twin_checks_them(tmp_path: Path) -> None:
    """The compiled rule driver makes a plain rule's tests of an IPv4 header without options
    (and TCP's) and its byte tests of the payload at a fixed place itself (``rule_gate``) and
    skips the rule where one fails: the same hits as the twin's ``_rule_hits`` on packets of
    every protocol, later fragments included."""
    compiled = core.rule_hits_class() if core.available() else None
    if compiled is None:
        pytest.skip("the compiled core is not built, or not used")
    text = SIZED + "\n" + HEADED + "\n" + BYTED
    signatures = list(parse_rules(text, str(tmp_path / "h.rules"), Variables.from_networks(None)))
    hits = _driver_alike(compiled, signatures, 10, packet=True)
    assert sum(n for sid, n in hits.items() if 3920000 < sid < 3930000) > 100  # they match
    assert {sid for sid in hits if sid > 3930000} >= {3930001, 3930003, 3930005, 3930006}


def test_grouped_matcher_matches_what_every_rule_checked_matches(tmp_path: Path) -> None:
    signatures = _signatures(tmp_path)
    matched = sum(_compare(signatures, seed) for seed in (1, 2))
    assert matched > PACKETS // 10  # the traffic does reach the rules


def test_exhaustive_twin_matches_the_reference_too(tmp_path: Path) -> None:
    assert _compare(_signatures(tmp_path), 3, exhaustive=True) > 0


def test_transformed_buffers_are_prefiltered_and_still_match(tmp_path: Path) -> None:
    signatures = parse_rules(TRANSFORMED, str(tmp_path / "t.rules"), Variables.from_networks(None))
    matcher = Matcher(signatures)
    frame = _frame(random.Random(5), [53], [b"x"])
    layer = decode_packet(frame, 1, {})
    assert layer is not None
    group = matcher.group_for(layer, "dns", True, False)
    assert not group.plain  # every rule has a pattern to look for
    assert {p.transforms for p in group.prefilters} == {
        (("dotprefix", b""),),
        (("strip_whitespace", b""),),
    }
    for query, want in (
        (b"www.evil.test", [3900001, 3900002]),
        (b"evil.test", [3900001, 3900002]),
        (b"", [3900002]),  # the empty name transformed is "."
        (b"a b c d", [3900002, 3900006]),
        (b"xevil.test.org", [3900002]),
    ):
        buffers = {PKT: layer.payload, "dns.query": query}
        flags = layer.flags if layer.proto == PROTO_TCP else -1
        got = sorted(s.sid for s in _rule_hits(layer, group, True, flags, b"", buffers))
        assert got == want, query


def test_packets_of_different_headers_share_a_group_of_the_same_rules() -> None:
    variables = Variables.from_networks([parse_network("10.0.0.0/8")])
    signatures = parse_rules(
        'alert tcp any any -> $HOME_NET 80 (msg:"a"; content:"x"; sid:1;)\n'
        'alert tcp any [1000:2000] -> any any (msg:"b"; content:"y"; sid:2;)\n',
        "t.rules",
        variables,
    )
    matcher = Matcher(signatures)
    groups = []
    for sport in (3000, 4000, 1500):
        frame = _tcp(sport, 80)
        layer = decode_packet(frame, 1, {})
        assert layer is not None
        groups.append(matcher.group_for(layer, "", True, False))
    assert groups[0] is groups[1]  # ports outside [1000:2000]: the same rules, one group
    assert groups[2] is not groups[0]
    assert matcher.groups_built == 2


def _tcp(sport: int, dport: int) -> bytes:
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, bytes((192, 0, 2, 1)), bytes((10, 0, 0, 1))
    )
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 1024, 0, 0)
    return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + tcp


def test_header_rules_are_compiled_and_agree_with_the_full_check() -> None:
    signatures = list(
        parse_rules(
            'alert ip any any -> any any (msg:"a"; ttl:<5; sid:1;)\n'
            'alert ip any any -> any any (msg:"b"; ttl:!64; tos:16; sid:2;)\n'
            'alert ip any any -> any any (msg:"c"; fragbits:D; ipopts:any; sid:3;)\n'
            'alert tcp any any -> any any (msg:"d"; window:1024; sid:4;)\n'
            'alert tcp any any -> any any (msg:"e"; window:1024; content:"x"; sid:5;)\n',
            "t.rules",
            Variables.from_networks(None),
        )
    )
    compiled = [head_tests(sig) for sig in signatures]
    assert [tests is not None for tests in compiled] == [True, True, True, True, False]
    rng = random.Random(9)
    for _ in range(500):
        layer = decode_packet(_frame(rng, [80, 53], [b"x"]), 1, {})
        assert layer is not None
        buffers: dict[str, bytes] = {PKT: layer.payload}
        add_packet(layer, buffers)
        numbers: dict[str, int | None] = {}
        for sig, tests in zip(signatures, compiled, strict=True):
            if tests is not None:
                assert head_holds(tests, buffers, numbers) == contents_match(sig, buffers)


def test_address_segments_agree_with_each_expression() -> None:
    rng = random.Random(11)
    nets = ["10.0.0.0/8", "10.1.0.0/16", "192.168.0.0/16", "192.168.1.7/32", "0.0.0.0/1"]
    nets += ["fc00::/7", "2001:db8::/32", "2001:db8::1/128", "172.16.0.0/12"]

    def expr(depth: int) -> AddrExpr:
        roll = rng.random()
        if depth > 2 or roll < 0.4:
            return AddrExpr("net", ipaddress.ip_network(rng.choice(nets)))
        if roll < 0.5:
            return AddrExpr("any")
        if roll < 0.7:
            return AddrExpr("not", items=(expr(depth + 1),))
        return AddrExpr("list", items=tuple(expr(depth + 1) for _ in range(rng.randrange(1, 4))))

    exprs = [expr(0) for _ in range(60)]
    for size, version in ((4, 4), (16, 6)):
        starts, bits = addr_segments(exprs, size)
        points = {0, (1 << (8 * size)) - 1}
        for start in starts:
            points.update({start, max(start - 1, 0)})
        points.update(rng.getrandbits(8 * size) for _ in range(200))
        for point in sorted(points):
            addr = ipaddress.ip_address(point) if version == 4 else ipaddress.IPv6Address(point)
            found = bits[bisect_right(starts, point) - 1]
            want = sum(1 << i for i, e in enumerate(exprs) if e.match(addr))
            assert found == want, (point, exprs)


def test_independent_items_hold_as_their_chain_does(tmp_path: Path) -> None:
    """A buffer's items none of which is placed relative to another (nor reads a variable):
    each looked for on its own holds exactly when ``chain_matches`` holds."""
    signatures = _signatures(tmp_path)
    chains = []
    for sig in signatures:
        for buffer in dict.fromkeys(c.buffer for c in sig.contents):
            items = tuple(c for c in sig.contents if c.buffer == buffer)
            if independent(items) and not all(c.plain for c in items):
                chains.append(items)
    assert len(chains) > 20  # the corpus has such rules (negated contents, byte_test, ...)
    rng = random.Random(7)
    words = _words(signatures)
    held = 0
    for _ in range(20):
        for items in chains:
            data = _text(rng, words) if rng.random() < 0.8 else rng.randbytes(rng.randrange(40))
            want = chain_matches(items, data)
            assert items_hold(items, data) == want, (items, data)
            held += want
    assert held > 0


def test_each_item_check_answers_what_its_find_answers(tmp_path: Path) -> None:
    """An item's check, made once (``item_check``), holds on a buffer exactly when the
    item's ``find`` from the buffer's start finds it: every item of the shipped rules, the
    corpus and the transformed rules, on generated buffers (bytes and bytearray)."""
    signatures = _signatures(tmp_path)
    items = list(
        {id(c): c for sig in signatures for c in sig.contents if c.buffer != "tls.certs"}.values()
    )
    assert len(items) > 250
    rng = random.Random(11)
    words = _words(signatures)
    held = 0
    for _ in range(10):
        for item in items:
            data = _text(rng, words) if rng.random() < 0.8 else rng.randbytes(rng.randrange(40))
            want = item.find(data, 0) is not None
            assert item_check(item)(data) == want, (item, data)
            assert item_check(item)(bytearray(data)) == want, (item, data)
            held += want
    assert held > 0


def test_a_rule_of_several_values_is_checked_on_each(tmp_path: Path) -> None:
    """A buffer of several values (``tls.certs``) is checked value by value, as before the
    checks were made once."""
    variables = Variables.from_networks([parse_network("10.0.0.0/8")])
    text = (
        'alert tls any any -> any any (msg:"cert"; tls.certs; content:"abc"; '
        'content:!"xyz"; sid:1;)\n'
    )
    (sig,) = parse_rules(text, str(tmp_path / "certs.rules"), variables)
    assert contents_match(sig, {"tls.certs": MultiBuffer.of([b"..abc..", b"xyz"])})
    assert not contents_match(sig, {"tls.certs": MultiBuffer.of([b"..abc..xyz"])})
    assert not contents_match(sig, {"tls.certs": MultiBuffer.of([b"xyz", b"ab"])})


def test_address_expressions_are_kept_per_address_within_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The expressions an address falls in, kept per address (a flow's addresses come back
    with its next groups): the same as looked up each time, the cache bounded."""
    from types import SimpleNamespace

    from appliance.inspect import match

    monkeypatch.setattr(match, "ADDR_BITS_CACHE", 8)
    text = "".join(
        f'alert tcp {net} any -> any any (msg:"m{n}"; content:"x{n}"; sid:{n};)\n'
        for n, net in enumerate(
            ["10.0.0.0/8", "10.1.0.0/16", "!192.168.0.0/16", "[10.1.2.3,2001:db8::/32]"], 1
        )
    )
    matcher = Matcher(list(parse_rules(text, "t.rules", Variables.from_networks(None))))
    rng = random.Random(5)
    pool = [bytes([10, 1, rng.randrange(4), rng.randrange(256)]) for _ in range(20)]
    pool += [rng.randbytes(16) for _ in range(4)] + [bytes(16)]
    for _ in range(400):
        src, dst = rng.choice(pool), rng.choice(pool)
        layer = SimpleNamespace(src=src, dst=dst, proto=PROTO_TCP, sport=1000, dport=80)
        got = matcher._header_bits(layer)  # type: ignore[arg-type]
        for addr, bits in zip((src, dst), got[:2], strict=True):
            starts, table = matcher._addr_segments[len(addr)]
            assert bits == table[bisect_right(starts, int.from_bytes(addr, "big")) - 1]
        assert len(matcher._addr_bits) <= 8
