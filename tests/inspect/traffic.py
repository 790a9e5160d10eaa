"""Crafted traffic for the inspection tests: scapy builds packets, the engine or the CLI reads
them back."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from scapy.all import IP, TCP, UDP, Ether, Packet, raw  # type: ignore[attr-defined]
from scapy.contrib.gtp import GTP_U_Header

from appliance.inspect.engine import InspectionConfig, InspectionEngine
from appliance.inspect.eve import to_eve
from appliance.inspect.pcap import LINKTYPE_ETHERNET, write_pcap
from appliance.inspect.rules import Variables, parse_rules
from appliance.lab.mix import sni_extension
from appliance.model.profile import Detectors
from tests.conftest import run_appliance

T0 = 1_700_000_000.0
HOME = ("10.0.0.0/8",)
# given: scapy looks up no address
MAC_CLIENT, MAC_SERVER = "02:00:00:00:00:01", "02:00:00:00:00:02"


def frames(packets: Iterable[Packet], t0: float = T0, step: float = 0.001) -> list[Any]:
    out = []
    for i, pkt in enumerate(packets):
        ts = float(pkt.time) if getattr(pkt, "_fixed_time", False) else t0 + i * step
        out.append((ts, raw(pkt), LINKTYPE_ETHERNET))
    return out


def engine(rules: str = "", detectors: Detectors | None = None, **config: Any) -> InspectionEngine:
    variables = Variables.from_networks(ipaddress.ip_network(n) for n in HOME)
    signatures = list(parse_rules(rules, "test.rules", variables))
    return InspectionEngine(
        InspectionConfig(signatures=signatures, detectors=detectors or Detectors(), **config)
    )


def inspect(
    packets: Sequence[Packet],
    rules: str = "",
    detectors: Detectors | None = None,
    step: float = 0.001,
    **config: Any,
) -> list[dict[str, Any]]:
    """EVE events of the packets, run through an engine in this process."""
    eng = engine(rules, detectors, **config)
    events = []
    for ts, data, linktype in frames(packets, step=step):
        events.extend(to_eve(a) for a in eng.process(ts, data, linktype))
    return events


def sids(events: Iterable[dict[str, Any]]) -> list[int]:
    return [e["alert"]["signature_id"] for e in events]


def write(path: Path, packets: Sequence[Packet], step: float = 0.001) -> Path:
    with open(path, "wb") as handle:
        write_pcap(handle, frames(packets, step=step))
    return path


def run_cli(*args: str) -> tuple[int, list[dict[str, Any]], str]:
    result = run_appliance("inspect", *args)
    events = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result.returncode, events, result.stderr


def tcp_session(
    client: str,
    server: str,
    cport: int,
    sport: int,
    requests: Sequence[bytes] = (),
    responses: Sequence[bytes] = (),
    ipv6: bool = False,
) -> list[Packet]:
    """A handshake, then each request (and the matching response, if any)."""
    from scapy.all import IPv6  # type: ignore[attr-defined]

    def ip(src: str, dst: str) -> Packet:
        return IPv6(src=src, dst=dst) if ipv6 else IP(src=src, dst=dst)

    c2s = Ether() / ip(client, server)
    s2c = Ether() / ip(server, client)
    out = [
        c2s / TCP(sport=cport, dport=sport, flags="S", seq=100),
        s2c / TCP(sport=sport, dport=cport, flags="SA", seq=500, ack=101),
        c2s / TCP(sport=cport, dport=sport, flags="A", seq=101, ack=501),
    ]
    for i, request in enumerate(requests):
        out.append(c2s / TCP(sport=cport, dport=sport, flags="PA") / request)
        if i < len(responses):
            out.append(s2c / TCP(sport=sport, dport=cport, flags="PA") / responses[i])
    return out


def tcp_exchange(
    client: str,
    server: str,
    cport: int,
    sport: int,
    payloads: Sequence[bytes],
    answer: bytes = b"",
    seq: int = 1000,
    ack: int = 9000,
) -> list[Packet]:
    """A TCP connection carrying each of the client's payloads in order, each answered by
    ``answer`` (or a bare ACK), the sequence numbers as a real stack writes them (``seq`` and
    ``ack``: each side's first byte)."""
    c2s = Ether(src=MAC_CLIENT, dst=MAC_SERVER) / IP(src=client, dst=server)
    s2c = Ether(src=MAC_SERVER, dst=MAC_CLIENT) / IP(src=server, dst=client)
    out = [
        c2s / TCP(sport=cport, dport=sport, flags="S", seq=seq - 1),
        s2c / TCP(sport=sport, dport=cport, flags="SA", seq=ack - 1, ack=seq),
        c2s / TCP(sport=cport, dport=sport, flags="A", seq=seq, ack=ack),
    ]
    for payload in payloads:
        out.append(c2s / TCP(sport=cport, dport=sport, flags="PA", seq=seq, ack=ack) / payload)
        seq += len(payload)
        reply = s2c / TCP(sport=sport, dport=cport, flags="PA" if answer else "A", seq=ack, ack=seq)
        out.append(reply / answer if answer else reply)
        ack += len(answer)
    return out


def http_get(uri: str, host: str = "app.example", headers: str = "") -> bytes:
    return f"GET {uri} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode()


def gtp(outer_src: str, outer_dst: str, inner: Packet, teid: int = 0x1234) -> Packet:
    return (
        Ether()
        / IP(src=outer_src, dst=outer_dst)
        / UDP(sport=2152, dport=2152)
        / GTP_U_Header(teid=teid, gtp_type=255)
        / inner
    )


def client_hello(sni: str, key_share: int = 0) -> bytes:
    """A minimal TLS 1.2 ClientHello carrying one server_name. ``key_share``: bytes of a
    key_share extension put before the server_name, as a post-quantum hello has them (an
    X25519MLKEM768 share is 1216 bytes, and browsers shuffle the extensions)."""
    extensions = sni_extension(sni) + b"\x00\x17\x00\x00"  # extended master secret, empty
    if key_share:
        extensions = b"\x00\x33" + key_share.to_bytes(2, "big") + bytes(key_share) + extensions
    body = (
        b"\x03\x03"
        + bytes(32)
        + b"\x00"  # session id
        + b"\x00\x02\x13\x01"  # one cipher suite
        + b"\x01\x00"  # null compression
        + len(extensions).to_bytes(2, "big")
        + extensions
    )
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(handshake).to_bytes(2, "big") + handshake
