"""No input crashes or hangs the engine: fuzzing per decoder, and a regression corpus of the
inputs that break naive decoders, each bounded in time and memory."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.errors import RuleFileError
from appliance.inspect import appproto
from appliance.inspect.decode import Errors, Layer, decode_gtp, decode_packet
from appliance.inspect.engine import InspectionConfig, InspectionEngine
from appliance.inspect.eve import to_eve
from appliance.inspect.pcap import CaptureError, read_capture
from appliance.inspect.rules import Variables, parse_rules
from appliance.model.profile import (
    Detectors,
    DnsTunnelDetector,
    GtpDetector,
    PortScanDetector,
    SynFloodDetector,
)
from appliance.model.values import parse_network
from tests.conftest import REPO
from tests.inspect.traffic import client_hello

FUZZ = settings(
    max_examples=400,
    deadline=200,  # ms per example: a hang shows up as a deadline failure
    suppress_health_check=[HealthCheck.too_slow],
)

ETH_IPV4 = b"\x00" * 12 + b"\x08\x00"
ETH_IPV6 = b"\x00" * 12 + b"\x86\xdd"


def udp4(payload: bytes, dport: int = 2152) -> bytes:
    """Ethernet + IPv4 + UDP around ``payload``, lengths consistent."""
    udp = struct.pack("!HHHH", 2152, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        17,
        0,
        b"\xc0\x00\x02\x01",
        b"\x0a\x00\x00\x01",
    )
    return ETH_IPV4 + ip + udp


def all_detectors_engine() -> InspectionEngine:
    signatures = list(
        parse_rules(
            (REPO / "profiles" / "rules" / "edge.rules").read_text(),
            "edge.rules",
            Variables.from_networks([parse_network("10.0.0.0/8")]),
        )
    )
    return InspectionEngine(
        InspectionConfig(
            signatures=signatures,
            detectors=Detectors(
                port_scan=PortScanDetector(),
                syn_flood=SynFloodDetector(),
                dns_tunnel=DnsTunnelDetector(),
                gtp=GtpDetector(ue_pools=(parse_network("10.45.0.0/16"),)),
            ),
        )
    )


# ---- fuzzing: each decoder on arbitrary bytes -----------------------------------------------


@FUZZ
@given(st.binary(max_size=400), st.sampled_from([0, 1, 101, 108, 113, 228, 229, 276, 9999]))
def test_fuzz_decode_packet(data: bytes, linktype: int) -> None:
    errors: Errors = {}
    layer = decode_packet(data, linktype, errors)
    assert layer is None or isinstance(layer, Layer)
    assert all(isinstance(v, int) and v > 0 for v in errors.values())


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_ipv4_and_ipv6_payloads(data: bytes) -> None:
    for head in (ETH_IPV4 + b"\x45", ETH_IPV4 + b"\x46", ETH_IPV6 + b"\x60"):
        decode_packet(head + data, 1, {})


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_gtp(data: bytes) -> None:
    errors: Errors = {}
    layer = decode_packet(udp4(data), 1, errors)
    assert layer is not None and layer.gtp is not None
    outer = Layer(4, b"\x00" * 4, b"\x00" * 4, 17, 0)
    decode_gtp(outer, data, 0, len(data), errors)


@FUZZ
@given(st.binary(max_size=300), st.booleans())
def test_fuzz_dns(data: bytes, tcp: bool) -> None:
    query = appproto.parse_dns(data, {}, tcp=tcp)
    assert query is None or len(query.name) <= 255 + 64


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_tls(data: bytes) -> None:
    appproto.parse_tls_sni(b"\x16\x03\x01" + data, {})
    appproto.parse_tls_sni(data, {})


@FUZZ
@given(st.integers(0, 200), st.binary(max_size=8))
def test_fuzz_tls_mutations(cut: int, junk: bytes) -> None:
    hello = client_hello("fuzz.example")
    appproto.parse_tls_sni(hello[:cut] + junk + hello[cut + len(junk) :], {})


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_http(data: bytes) -> None:
    appproto.parse_http_request(b"GET " + data, {})
    appproto.parse_http_request(data, {})


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_pcap_and_pcapng(data: bytes) -> None:
    for head in (b"\xd4\xc3\xb2\xa1", b"\x0a\x0d\x0d\x0a", b""):
        try:
            for _ts, _data, _lt in read_capture(io.BytesIO(head + data)):
                pass
        except CaptureError:
            pass


@FUZZ
@given(st.text(max_size=200))
def test_fuzz_rule_parser(text: str) -> None:
    try:
        list(
            parse_rules(
                "alert tcp any any -> any any (" + text, "f.rules", Variables.from_networks(None)
            )
        )
        list(parse_rules(text, "f.rules", Variables.from_networks(None)))
    except RuleFileError as exc:
        assert str(exc).startswith("f.rules:")


_ENGINE = all_detectors_engine()


@FUZZ
@given(
    st.lists(st.binary(max_size=200), max_size=8),
    st.sampled_from([ETH_IPV4 + b"\x45\x00", ETH_IPV6 + b"\x60\x00", b""]),
)
def test_fuzz_engine(frames: list[bytes], head: bytes) -> None:
    for i, frame in enumerate(frames):
        for alert in _ENGINE.process(float(i), head + frame, 1):
            to_eve(alert)


# ---- regression corpus ----------------------------------------------------------------------


def gtp_header(flags: int, length: int, teid: int = 1, msg: int = 255) -> bytes:
    return struct.pack("!BBHI", flags, msg, length, teid)


def nested_vlan(depth: int) -> bytes:
    return b"\x00" * 12 + b"\x81\x00\x00\x01" * depth + b"\x08\x00" + b"\x45" + b"\x00" * 19


def nested_gtp(depth: int) -> bytes:
    inner = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20, 0, 0, 64, 6, 0, b"\x0a\x2d\x00\x01", b"\x01\x01\x01\x01"
    )
    for _ in range(depth):
        body = gtp_header(0x30, len(inner)) + inner
        udp = struct.pack("!HHHH", 2152, 2152, 8 + len(body), 0) + body
        inner = (
            struct.pack(
                "!BBHHHBBH4s4s",
                0x45,
                0,
                20 + len(udp),
                0,
                0,
                64,
                17,
                0,
                b"\xc0\x00\x02\x01",
                b"\xc0\x00\x02\x02",
            )
            + udp
        )
    return ETH_IPV4 + inner


def dns_loop() -> bytes:
    message = (
        struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0)
        + b"\x01a\xc0\x10\x01b\xc0\x0c"
        + b"\x00\x01\x00\x01"
    )
    return udp4(message, dport=53)


def ipv6_truncated_chain() -> bytes:
    # hop-by-hop says 8 bytes, routing header claims 2 KB more than the packet has
    ext = b"\x2b\x00" + b"\x00" * 6 + b"\x11\xff" + b"\x00" * 6
    head = struct.pack(
        "!IHBB16s16s",
        0x60000000,
        len(ext),
        0,
        64,
        b"\x20\x01" + b"\x00" * 14,
        b"\x20\x02" + b"\x00" * 14,
    )
    return ETH_IPV6 + head + ext


def tls_truncated() -> bytes:
    """A ClientHello cut by the capture (snaplen): the IP length counts all of it."""
    hello = client_hello("cut.example")
    tcp = struct.pack("!HHIIBBHHH", 40000, 443, 0, 0, 0x50, 0x18, 65535, 0, 0) + hello[:60]
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        40 + len(hello),
        0,
        0,
        64,
        6,
        0,
        b"\x0a\x00\x00\x05",
        b"\x0a\x00\x00\x50",
    )
    return ETH_IPV4 + ip + tcp


def ext_chain_loop() -> bytes:
    # 200 GTP extension headers, each of 4 bytes, announcing another
    exts = b"\x01\x00\x00\x85" * 200
    return udp4(gtp_header(0x34, 4 + len(exts)) + b"\x00\x00\x00\x85" + exts)


CORPUS: dict[str, tuple[Callable[[], bytes], str]] = {
    "zero-length GTP extension header": (
        lambda: udp4(gtp_header(0x34, 8) + b"\x00\x00\x00\x85" + b"\x00\x00\x00\x00"),
        "gtp.ext_zero_length",
    ),
    "GTP length shorter than its header": (
        lambda: udp4(gtp_header(0x32, 2) + b"\x00\x00\x00\x00"),
        "gtp.length_short",
    ),
    "GTP extension chain too long": (ext_chain_loop, "gtp.ext_too_many"),
    "DNS compression-pointer loop": (dns_loop, "dns.pointer_loop"),
    "truncated IPv6 extension chain": (ipv6_truncated_chain, "ipv6.ext_truncated"),
    "truncated TLS ClientHello": (tls_truncated, "tls.truncated"),
    "deeply nested VLAN": (lambda: nested_vlan(10_000), "vlan.too_deep"),
    "deeply nested GTP": (lambda: nested_gtp(200), "gtp.too_deep"),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_regression_corpus_bounded_in_time_and_memory(name: str) -> None:
    build, reason = CORPUS[name]
    data = build()
    engine = all_detectors_engine()
    tracemalloc.start()
    started = time.process_time()  # this process's CPU: whatever else the machine runs
    for i in range(50):
        for alert in engine.process(float(i), data, 1):
            to_eve(alert)
    elapsed = time.process_time() - started
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0, f"{name}: {elapsed:.3f}s for 50 packets"
    assert peak < 8 * 1024 * 1024 + 50 * len(data), f"{name}: peak {peak} bytes"
    assert engine.stats.errors.get(reason) == 50, engine.stats.errors
