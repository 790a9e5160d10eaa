"""A reproducible mixed capture for the inspection engine, built with ``struct``.

Web (with a few attacks), DNS (with a few tunnel-like names), TLS (ClientHello with SNI),
GTP-U carrying TLS, and bulk TCP, in the proportions of an edge site, from a seeded random
source: the same seed gives the same frames. Fast enough for 200k packets in seconds; used by
the throughput benchmark and by the tests that compare the engine's fast and full paths.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable
from pathlib import Path

from appliance.inspect.engine import InspectionConfig, InspectionEngine
from appliance.inspect.pcap import LINKTYPE_ETHERNET
from appliance.inspect.rules import Variables, parse_rule_files
from appliance.model.profile import (
    Detectors,
    DnsTunnelDetector,
    GtpDetector,
    PortScanDetector,
    SynFloodDetector,
)
from appliance.model.values import parse_network

# The shipped signatures, in a source checkout.
RULES = Path(__file__).resolve().parents[2] / "profiles" / "rules" / "edge.rules"
MAC = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02"

Frame = tuple[float, bytes, int]


# ---- a small packet builder (struct, so that 200k packets take seconds, not minutes) -------


def _checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int = 0) -> bytes:
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0x4000, 64, proto, 0, src, dst
    )
    return head[:10] + struct.pack("!H", _checksum(head)) + head[12:] + payload


def tcp(sport: int, dport: int, flags: int, seq: int, ack: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(
            "!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50, flags, 65535, 0, 0
        )
        + payload
    )


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def eth(packet: bytes) -> bytes:
    return MAC + b"\x08\x00" + packet


def dns_query(ident: int, name: str, qtype: int = 1) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + struct.pack("!HH", qtype, 1)


def dns_answer(query: bytes) -> bytes:
    return (
        query[:2]
        + b"\x81\x80"
        + query[4:6]
        + b"\x00\x01"
        + query[8:]
        + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04\x5d\xb8\xd8\x22"
    )


def sni_extension(sni: str) -> bytes:
    """A TLS server_name extension carrying one host name."""
    name = sni.encode()
    server_name = b"\x00" + len(name).to_bytes(2, "big") + name
    return (
        b"\x00\x00"
        + (len(server_name) + 2).to_bytes(2, "big")
        + len(server_name).to_bytes(2, "big")
        + server_name
    )


def client_hello(sni: str, rng: random.Random | None = None) -> bytes:
    """A TLS 1.3 ClientHello naming ``sni``; its random and session id drawn from ``rng``
    (a capture made again from the same seed is the same), or from os.urandom."""
    draw = rng.randbytes if rng is not None else os.urandom
    ext = sni_extension(sni)
    ext += (
        b"\x00\x0a\x00\x04\x00\x02\x00\x1d"
        + b"\x00\x0d\x00\x04\x00\x02\x04\x03"
        + b"\x00\x2b\x00\x03\x02\x03\x04"
    )
    body = b"\x03\x03" + draw(32) + b"\x20" + draw(32) + b"\x00\x04\x13\x01\x13\x02\x01\x00"
    body += len(ext).to_bytes(2, "big") + ext
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(hs).to_bytes(2, "big") + hs


def gtpu(teid: int, inner: bytes) -> bytes:
    return struct.pack("!BBHI", 0x30, 255, len(inner), teid) + inner


def tls_records(kind: int, size: int) -> bytes:
    """``size`` bytes of TLS records of one type (at most 1,400 bytes of body each)."""
    out = bytearray()
    while len(out) + 5 < size:
        body = min(1400, size - len(out) - 5)
        out += bytes((kind, 3, 3)) + body.to_bytes(2, "big") + bytes(body)
    return bytes(out)


def server_flight(size: int) -> bytes:
    """A TLS 1.2 server's handshake of ``size`` bytes or so: its hello, a certificate
    message (of zeros) and hello done, its cipher spec and finished."""
    hello = b"\x02\x00\x00\x26\x03\x03" + bytes(32) + b"\x00\xc0\x2f\x00"
    rest = max(0, size - 140)
    certificate = b"\x0b" + rest.to_bytes(3, "big") + bytes(rest)
    handshake = hello + certificate + b"\x0e\x00\x00\x00"
    return (
        b"\x16\x03\x03"
        + len(handshake).to_bytes(2, "big")
        + handshake
        + b"\x14\x03\x03\x00\x01\x01"
        + b"\x16\x03\x03\x00\x28"
        + bytes(40)
    )


class Mix:
    """Generates the flows of the mixed capture. ``records``: the TLS flows (and those in
    GTP-U tunnels) carry TLS records both ways, the server's handshake and application data,
    as real ones do; else their server sends zeros and the client one empty record."""

    def __init__(self, seed: int = 7, records: bool = False) -> None:
        self.records = records
        self.rng = random.Random(seed)
        self.ts = 1_700_000_000.0
        self.frames: list[Frame] = []

    def emit(self, packet: bytes) -> None:
        self.ts += 0.00002
        self.frames.append((self.ts, eth(packet), LINKTYPE_ETHERNET))

    def host(self, net: int) -> bytes:
        return bytes(
            [net, self.rng.randrange(256), self.rng.randrange(256), self.rng.randrange(1, 255)]
        )

    def tcp_flow(
        self,
        client: bytes,
        server: bytes,
        dport: int,
        requests: list[bytes],
        responses: list[int] | list[bytes],
        wrap: Callable[[bytes], bytes] | None = None,
    ) -> None:
        rng = self.rng
        sport = rng.randrange(1024, 65535)
        cseq, sseq = rng.randrange(2**32), rng.randrange(2**32)

        def out(packet: bytes) -> None:
            self.emit(wrap(packet) if wrap else packet)

        out(ipv4(client, server, 6, tcp(sport, dport, 0x02, cseq, 0)))
        out(ipv4(server, client, 6, tcp(dport, sport, 0x12, sseq, cseq + 1)))
        cseq += 1
        sseq += 1
        out(ipv4(client, server, 6, tcp(sport, dport, 0x10, cseq, sseq)))
        for request, response in zip(requests, responses, strict=False):
            out(ipv4(client, server, 6, tcp(sport, dport, 0x18, cseq, sseq, request)))
            cseq += len(request)
            segments = 0
            body: bytes | None = None
            if isinstance(response, bytes):
                body, size = response, len(response)
            else:
                assert isinstance(response, int)
                size = response
            sent = 0
            while size > 0:
                chunk = min(size, 1448)
                data = b"\x00" * chunk if body is None else body[sent : sent + chunk]
                out(ipv4(server, client, 6, tcp(dport, sport, 0x10, sseq, cseq, data)))
                sseq += chunk
                sent += chunk
                size -= chunk
                segments += 1
                if segments % 2 == 0 or size <= 0:  # delayed ACK: one per two segments
                    out(ipv4(client, server, 6, tcp(sport, dport, 0x10, cseq, sseq)))
        out(ipv4(client, server, 6, tcp(sport, dport, 0x11, cseq, sseq)))
        out(ipv4(server, client, 6, tcp(dport, sport, 0x11, sseq, cseq + 1)))
        out(ipv4(client, server, 6, tcp(sport, dport, 0x10, cseq + 1, sseq + 1)))

    def web(self) -> None:
        rng = self.rng
        paths = [
            "/",
            "/index.html",
            "/api/v1/items?id=42",
            "/static/app.js",
            "/login",
            "/search?q=edge+node",
        ]
        attacks = [
            "/item.php?id=1%20UNION%20SELECT%20password%20FROM%20users",
            "/../../etc/passwd",
            "/?x=${jndi:ldap://e.example/a}",
        ]
        uri = rng.choice(attacks) if rng.random() < 0.05 else rng.choice(paths)
        agent = (
            "sqlmap/1.7" if rng.random() < 0.02 else "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"
        )
        request = (
            f"GET {uri} HTTP/1.1\r\nHost: shop.example.com\r\n"
            f"User-Agent: {agent}\r\nAccept: */*\r\n\r\n"
        ).encode()
        self.tcp_flow(
            self.host(198),
            bytes([10, 0, 0, 80]),
            80,
            [request, request],
            [rng.randrange(200, 6000), rng.randrange(200, 3000)],
        )

    def tls(self) -> None:
        rng = self.rng
        sni = (
            rng.choice(["api.example.com", "cdn.example.net", "login.example.org", "x.ngrok.io"])
            if rng.random() < 0.1
            else "www.example.com"
        )
        # (the random draws in the order the capture has always made them)
        client, server = bytes([10, 0, 1, rng.randrange(1, 255)]), self.host(93)
        hello = client_hello(sni, self.rng)
        size = rng.randrange(1000, 9000)
        if self.records:
            data = tls_records(23, 305)
            answers: list[int] | list[bytes] = [server_flight(2900), tls_records(23, size)]
        else:
            data = b"\x17\x03\x03" + b"\x00" * 300
            answers = [2900, size]
        self.tcp_flow(client, server, 443, [hello, data], answers)

    def dns(self) -> None:
        rng = self.rng
        client = bytes([10, 0, 2, rng.randrange(1, 255)])
        resolver = bytes([10, 0, 0, 53])
        name = rng.choice(
            [
                "www.example.com",
                "mail.example.org",
                "cdn.example.net",
                "api.vendor.io",
                "time.example.com",
            ]
        )
        if rng.random() < 0.03:
            name = (
                "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(40))
                + ".t.example"
            )
        sport = rng.randrange(1024, 65535)
        query = dns_query(rng.randrange(65536), name)
        self.emit(ipv4(client, resolver, 17, udp(sport, 53, query)))
        self.emit(ipv4(resolver, client, 17, udp(53, sport, dns_answer(query))))

    def gtp(self) -> None:
        rng = self.rng
        gnb, upf = bytes([10, 0, 9, rng.randrange(1, 16)]), bytes([10, 0, 9, 100])
        ue = bytes([10, 45, rng.randrange(256), rng.randrange(1, 255)])
        teid_up, teid_down = rng.randrange(1, 2**32), rng.randrange(1, 2**32)

        def uplink(inner: bytes) -> bytes:
            if inner[12:16] == ue:
                return ipv4(gnb, upf, 17, udp(2152, 2152, gtpu(teid_up, inner)))
            return ipv4(upf, gnb, 17, udp(2152, 2152, gtpu(teid_down, inner)))

        server = self.host(93)
        hello = client_hello("video.example.com", self.rng)
        size = rng.randrange(3000, 12000)
        answer: list[int] | list[bytes] = [size]
        if self.records:  # the server's handshake, then data
            answer = [server_flight(2900) + tls_records(23, size - 2900)]
        self.tcp_flow(ue, server, 443, [hello], answer, wrap=uplink)

    def bulk(self) -> None:
        self.tcp_flow(
            bytes([10, 0, 3, 10]), bytes([10, 0, 4, 20]), 5201, [b"\x00" * 64], [1448 * 100]
        )

    def build(self, count: int) -> list[Frame]:
        kinds = [self.web] * 8 + [self.tls] * 7 + [self.dns] * 12 + [self.gtp] * 5 + [self.bulk] * 2
        while len(self.frames) < count:
            self.rng.choice(kinds)()
        return self.frames[:count]


FLOOD_FLAGS = {"syn": 0x02, "ack": 0x10, "rst": 0x04, "fin": 0x11, "data": 0x18, "gtp": 0x02}


def flood(count: int, seed: int = 7, kind: str = "syn") -> list[Frame]:
    """TCP segments from random sources and ports to one network: every packet a new flow.
    ``kind``: bare SYNs (the default), bare ACKs, RSTs or FIN/ACKs (no handshake before
    them), ACKs carrying 64 bytes of data ("data"), or bare SYNs from UEs (random addresses
    of the mix's UE pool) to the internet carried in G-PDUs from 15 gNBs to one UPF
    ("gtp")."""
    rng = random.Random(seed)
    frames: list[Frame] = []
    eth = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
    flags = FLOOD_FLAGS[kind]
    payload = b"A" * 64 if kind == "data" else b""
    total = 40 + len(payload)
    for i in range(count):
        src = struct.pack("!I", rng.getrandbits(32) | 0x01000000)
        dst = bytes((10, 0, rng.randrange(256), rng.randrange(1, 255)))
        if kind == "gtp":
            src = bytes((10, 45, rng.randrange(256), rng.randrange(1, 255)))
            dst = bytes((93, 184, rng.randrange(256), rng.randrange(1, 255)))
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, i & 0xFFFF, 0, 64, 6, 0, src, dst)
        tcp = struct.pack(
            "!HHIIBBHHH",
            rng.randrange(1024, 65536),
            80,
            rng.getrandbits(32),
            0,
            0x50,
            flags,
            1024,
            0,
            0,
        )
        packet = ip + tcp + payload
        if kind == "gtp":
            gnb = bytes((10, 0, 9, 1 + i % 15))
            tunnel = gtpu(rng.randrange(1, 2**32), packet)
            packet = ipv4(gnb, bytes((10, 0, 9, 100)), 17, udp(2152, 2152, tunnel))
        frames.append((1_700_000_000.0 + i * 1e-5, eth + packet, 1))
    return frames


def make_engine(rules: Path = RULES) -> InspectionEngine:
    """An engine with the shipped signatures and all four detectors, for the mix's networks."""
    variables = Variables.from_networks([parse_network("10.0.0.0/8")])
    detectors = Detectors(
        port_scan=PortScanDetector(),
        syn_flood=SynFloodDetector(),
        dns_tunnel=DnsTunnelDetector(),
        gtp=GtpDetector(ue_pools=(parse_network("10.45.0.0/16"),)),
    )
    return InspectionEngine(
        InspectionConfig(signatures=parse_rule_files([str(rules)], variables), detectors=detectors)
    )
