"""Seeded fuzzing of what real rule sets and tunnels bring: any combination of keywords and
values loads or is skipped with a FILE:LINE reason (never another error), the tunnel
decoders take any bytes, and a rule's chain of relative items stays bounded on any payload."""

from __future__ import annotations

import struct
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.errors import RuleFileError
from appliance.inspect.decode import Errors, decode_packet
from appliance.inspect.engine import InspectionConfig, InspectionEngine
from appliance.inspect.flowint import MAX_VARS, MODIFIERS, U32, FlowVars
from appliance.inspect.match import contents_match
from appliance.inspect.rules import SURICATA_KEYWORDS, Variables, load_rules, parse_rules

SEEDED = settings(
    max_examples=300,
    deadline=300,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
VARS = Variables.from_networks(None)
VALUES = st.sampled_from(
    [
        None,
        '"abc"',
        '"|00 01|x"',
        "1",
        "-3",
        "0,relative",
        "2,>,1,0",
        "1,0,relative",
        '"/a+b/iR"',
        "set,x",
        "isset,x|y",
        "<5",
        "3<>9",
        "to_server,established",
        "http",
        "!http",
        "type limit, track by_src, count 1, seconds 1",
        "track by_dst, count 2, seconds 5",
        "",
        "x y z",
        "bytes 2, offset 0, oper +, rvalue 1, result r, relative",
        "bytes 1, offset 1, oper <<, rvalue r, result s",
        '"0d0ac8ff"',
        "tls1.2,!sslv3",
        "client_hello|!server_keyx",
        "*MD",
        "lsrr",
        "1.3",
        "!0x10",
        "bytes 4, offset 1, relative",
        "offset 2, mode rfc2045",
        "mode strict",
        '"(a+)b"',
        '"/(?<!ab|c)x/i"',
        '"/(a)(?<=a|bc)\\g{-1}/"',
        "n,+,1",
        "n, >=, m",
        "n,isnotset",
        "n,=,4294967296",
        "n,frob,1",
    ]
)
OPTION = st.tuples(st.sampled_from(sorted(SURICATA_KEYWORDS)), VALUES)


def option_text(options: list[tuple[str, str | None]]) -> str:
    return " ".join(f"{k};" if v is None else f"{k}:{v};" for k, v in options)


@SEEDED
@given(st.lists(OPTION, max_size=8), st.sampled_from(["tcp", "http", "dns", "ip", "ssh"]))
def test_any_keywords_load_or_are_skipped_with_a_reason(
    options: list[tuple[str, str | None]], proto: str
) -> None:
    line = f"alert {proto} any any -> any any ({option_text(options)} sid:1;)"
    try:
        sigs = list(parse_rules(line, "f.rules", VARS))
    except RuleFileError as exc:
        assert str(exc).startswith("f.rules:1: ")
    else:
        payload = b"abc\x00\x01xaab" * 4
        for sig in sigs:
            contents_match(sig, dict.fromkeys([c.buffer for c in sig.contents], payload))


def test_lenient_load_never_raises_for_a_rule(tmp_path: Path) -> None:
    lines = [
        f"alert tcp any any -> any any ({k}:{v}; sid:{i + 1};)"
        for i, (k, v) in enumerate((k, '"x"') for k in sorted(SURICATA_KEYWORDS))
    ]
    path = tmp_path / "all.rules"
    path.write_text("\n".join(lines) + "\n")
    rules = load_rules([str(path)], VARS)
    assert len(rules.signatures) + len(rules.skipped) == len(lines)


def ipv4(proto: int, body: bytes) -> bytes:
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 64, proto, 0, b"\xc0\0\2\1", b"\xc0\0\2\2"
    )
    return b"\0" * 12 + b"\x08\x00" + head + body


@SEEDED
@given(st.sampled_from([4, 41, 47]), st.binary(max_size=200))
def test_fuzz_ip_in_ip_and_gre(proto: int, body: bytes) -> None:
    errors: Errors = {}
    decode_packet(ipv4(proto, body), 1, errors)


@SEEDED
@given(st.binary(max_size=200))
def test_fuzz_vxlan(body: bytes) -> None:
    udp = struct.pack("!HHHH", 5555, 4789, 8 + len(body), 0) + body
    errors: Errors = {}
    decode_packet(ipv4(17, udp), 1, errors)


@SEEDED
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 64), st.booleans(), st.binary(max_size=40)),
        max_size=12,
    )
)
def test_fuzz_fragments(parts: list[tuple[int, int, bool, bytes]]) -> None:
    from appliance.inspect.defrag import Defragmenter

    defrag = Defragmenter(max_datagrams=2, max_bytes=256, timeout=1.0)
    errors: Errors = {}
    for i, (ident, offset8, more, data) in enumerate(parts):
        body = struct.pack("!HHHH", 1, 2, 8 + len(data), 0) + data if offset8 == 0 else data
        flags = (0x2000 if more else 0) | offset8
        head = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(body),
            ident,
            flags,
            64,
            17,
            0,
            b"\1\1\1\1",
            b"\2\2\2\2",
        )
        layer = decode_packet(b"\0" * 12 + b"\x08\x00" + head + body, 1, errors)
        if layer is not None and layer.frag is not None:
            whole = defrag.add(i * 0.1, layer, errors)
            if whole is not None:  # the first fragment's header, the datagram's length
                assert whole.raw[0] == 0x45 and whole.raw[6:8] == b"\0\0"
                assert struct.unpack("!H", whole.raw[2:4])[0] == len(whole.raw)
        assert defrag.held <= 256 and len(defrag) <= 2


FLOWINT_NAMES = st.sampled_from(["a", "b", "ET.c/d"])
FLOWINT_VALID = st.one_of(
    st.tuples(FLOWINT_NAMES, st.sampled_from(["isset", "notset", "isnotset"]), st.none()),
    st.tuples(
        FLOWINT_NAMES,
        st.sampled_from([m for m in MODIFIERS if "set" not in m]),
        st.sampled_from(["0", "1", "2", str(U32), "a", "b"]),
    ),
)
FLOWINT = st.one_of(
    FLOWINT_VALID,
    FLOWINT_VALID,
    FLOWINT_VALID,
    st.tuples(
        st.sampled_from(["a", "1x", ""]),
        st.sampled_from([*MODIFIERS, "=>", "~"]),
        st.sampled_from([None, "1", str(U32 + 1), "-1", "x y"]),
    ),
)


def tcp_packet(sport: int, flags: int, payload: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, 80, 1, 1, 0x50, flags, 8192, 0, 0) + payload
    return ipv4(6, tcp)


@settings(SEEDED, max_examples=150)  # each example builds an engine
@given(
    st.lists(st.lists(FLOWINT, min_size=1, max_size=4), min_size=1, max_size=6),
    st.lists(st.tuples(st.sampled_from([1000, 1001]), st.binary(max_size=8)), max_size=12),
)
def test_fuzz_flowint_rules_over_flows(
    rules: list[list[tuple[str, str, str | None]]], packets: list[tuple[int, bytes]]
) -> None:
    """Any flowint options load or are skipped with a reason; loaded, on any packets, a
    flow's variables stay within the bound and 32 bits."""
    lines = []
    for sid, options in enumerate(rules, 1):
        text = " ".join(
            f"flowint:{n},{m};" if v is None else f"flowint:{n},{m},{v};" for n, m, v in options
        )
        lines.append(f"alert tcp any any -> any any ({text} sid:{sid};)")
    signatures = []
    for line in lines:
        try:
            signatures.extend(parse_rules(line, "f.rules", VARS))
        except RuleFileError as exc:
            assert str(exc).startswith("f.rules:1: flowint: "), line
    eng = InspectionEngine(InspectionConfig(signatures=signatures))
    for i, (sport, payload) in enumerate(packets):
        eng.process(1_700_000_000.0 + i, tcp_packet(sport, 0x18, payload), 1)
    for flow in eng.flows.flows.values():
        bits = getattr(flow, "bits", None)
        if isinstance(bits, FlowVars):
            assert len(bits.ints) <= MAX_VARS
            assert all(0 <= v <= U32 for v in bits.ints.values())
