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


def varied_headers(frames: Sequence[Any], seed: int, share: float = 0.3) -> list[Any]:
    """The frames with a share of their IPv4/TCP packets (plain or carried in a G-PDU)
    given other header fields: TTL (a G-PDU's own too), TOS, ID, the DF bit, window,
    acknowledgement number, each drawn from values on both sides of
    ``ESTABLISHED_HEADER_RULES``' tests (checksums left as they were: the engine does not
    verify them)."""
    import random

    rng = random.Random(seed)
    out = []
    for ts, data, linktype in frames:
        ip = -1
        if data[12:15] == b"\x08\x00\x45" and data[23] == 6:
            ip = 14
        elif (
            data[12:15] == b"\x08\x00\x45"
            and data[23] == 17
            and len(data) >= 90
            and data[36:38] == b"\x08\x68"
            and data[42] == 0x30
            and data[50] == 0x45
            and data[59] == 6
        ):
            ip = 50
        if ip < 0 or len(data) < ip + 40 or rng.random() >= share:
            out.append((ts, data, linktype))
            continue
        packet = bytearray(data)
        if ip == 50 and rng.random() < 0.3:
            packet[22] = rng.choice([2, 64])  # the G-PDU's own TTL
        packet[ip + 8] = rng.choice([1, 3, 64, 64, 128])  # TTL
        packet[ip + 1] = rng.choice([0, 0, 0x10])  # TOS
        packet[ip + 4 : ip + 6] = rng.choice([0, 7, 31337]).to_bytes(2, "big")  # ID
        packet[ip + 6] = (packet[ip + 6] & 0xBF) | rng.choice([0, 0x40])  # DF
        if rng.random() < 0.5:
            packet[ip + 34 : ip + 36] = rng.choice([0, 0, 512, 65535]).to_bytes(2, "big")
        if rng.random() < 0.2:
            packet[ip + 28 : ip + 32] = rng.randrange(2000).to_bytes(4, "big")  # ACK number
        out.append((ts, bytes(packet), linktype))
    return out


# Rules on the header fields and sizes of established flows' packets: each keeps only the
# packets its tests could hold of off the fast paths (the last one, on a field they do not
# test, keeps every packet of its group off)
ESTABLISHED_HEADER_RULES = (
    'alert tcp any any -> any any (msg:"zero window"; flow:established; flags:A,12; '
    "window:0; sid:50;)\n"
    'alert tcp any any -> any any (msg:"ttl one"; ttl:1; sid:51;)\n'
    'alert tcp any any -> any any (msg:"bare ack"; flow:established; flags:A; dsize:0; '
    "ack:<1000; threshold: type limit, track by_src, count 2, seconds 60; sid:52;)\n"
    'alert tcp any any -> any 80 (msg:"tos"; flow:to_server,established; tos:16; '
    "flowbits:set,tos; flowbits:noalert; sid:53;)\n"
    'alert tcp any any -> any any (msg:"tos then big"; flowbits:isset,tos; dsize:300<>400; '
    "sid:54;)\n"
    'alert tcp any any -> any any (msg:"big"; flow:established; dsize:1000<>1300; sid:55;)\n'
    'alert tcp any any -> any any (msg:"id"; id:31337; ttl:<100; sid:56;)\n'
    'alert tcp any any -> any any (msg:"no df"; fragbits:!D; flow:established; ttl:<10; '
    "window:>0; sid:57;)\n"
    'alert tcp any any -> any 443 (msg:"rr"; flow:established,to_server; ipopts:rr; '
    "sid:58;)\n"
    'alert tcp any any -> any 53 (msg:"dns ttl"; ttl:3; content:!"zz"; sid:59;)\n'
)
# ... and one on any IP packet (the G-PDUs themselves too)
ANY_IP_TTL_RULE = 'alert ip any any -> any any (msg:"any ttl"; ttl:<4; sid:60;)\n'
