"""Inspection throughput: the engine against scapy dissection and a dpkt parse-only loop.

A mixed capture (web, DNS, TLS, GTP-U, bulk TCP; at least 200k packets) is generated, written
as a pcap and read back into memory. Each contender then goes over the same packets (scapy,
about 40 times slower than dpkt, over every 10th of them, so that a run takes seconds rather
than minutes); every figure is the best of three interleaved rounds and times the packet loop
only (no start-up, no file reading). The engine does its full work: decode, flow tracking,
app-layer parsing, the shipped signatures (profiles/rules/edge.rules) and all four detectors.

    .venv/bin/python bench/inspect_throughput.py [--packets 200000] [--runs 3]
        [--scapy-every N] [--pcap FILE]

Goals: at least 100x scapy and at least 5x dpkt parse-only.
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.inspect.engine import InspectionConfig, InspectionEngine
from appliance.inspect.pcap import LINKTYPE_ETHERNET, read_capture, write_pcap
from appliance.inspect.rules import Variables, parse_rule_files
from appliance.model.profile import (
    Detectors,
    DnsTunnelDetector,
    GtpDetector,
    PortScanDetector,
    SynFloodDetector,
)
from appliance.model.values import parse_network

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "profiles" / "rules" / "edge.rules"
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


def client_hello(sni: str) -> bytes:
    name = sni.encode()
    server_name = b"\x00" + len(name).to_bytes(2, "big") + name
    ext = (
        b"\x00\x00"
        + (len(server_name) + 2).to_bytes(2, "big")
        + len(server_name).to_bytes(2, "big")
        + server_name
    )
    ext += (
        b"\x00\x0a\x00\x04\x00\x02\x00\x1d"
        + b"\x00\x0d\x00\x04\x00\x02\x04\x03"
        + b"\x00\x2b\x00\x03\x02\x03\x04"
    )
    body = (
        b"\x03\x03"
        + os.urandom(32)
        + b"\x20"
        + os.urandom(32)
        + b"\x00\x04\x13\x01\x13\x02\x01\x00"
    )
    body += len(ext).to_bytes(2, "big") + ext
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(hs).to_bytes(2, "big") + hs


def gtpu(teid: int, inner: bytes) -> bytes:
    return struct.pack("!BBHI", 0x30, 255, len(inner), teid) + inner


class Mix:
    """Generates the flows of the mixed capture."""

    def __init__(self, seed: int = 7) -> None:
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
        responses: list[int],
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
        for request, size in zip(requests, responses, strict=False):
            out(ipv4(client, server, 6, tcp(sport, dport, 0x18, cseq, sseq, request)))
            cseq += len(request)
            segments = 0
            while size > 0:
                chunk = min(size, 1448)
                out(ipv4(server, client, 6, tcp(dport, sport, 0x10, sseq, cseq, b"\x00" * chunk)))
                sseq += chunk
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
        self.tcp_flow(
            bytes([10, 0, 1, rng.randrange(1, 255)]),
            self.host(93),
            443,
            [client_hello(sni), b"\x17\x03\x03" + b"\x00" * 300],
            [2900, rng.randrange(1000, 9000)],
        )

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

        self.tcp_flow(
            ue,
            self.host(93),
            443,
            [client_hello("video.example.com")],
            [rng.randrange(3000, 12000)],
            wrap=uplink,
        )

    def bulk(self) -> None:
        self.tcp_flow(
            bytes([10, 0, 3, 10]), bytes([10, 0, 4, 20]), 5201, [b"\x00" * 64], [1448 * 100]
        )

    def build(self, count: int) -> list[Frame]:
        kinds = [self.web] * 8 + [self.tls] * 7 + [self.dns] * 12 + [self.gtp] * 5 + [self.bulk] * 2
        while len(self.frames) < count:
            self.rng.choice(kinds)()
        return self.frames[:count]


def load(path: str) -> list[Frame]:
    with open(path, "rb") as handle:
        return list(read_capture(handle, path))


# ---- contenders ---------------------------------------------------------------------------


def make_engine() -> InspectionEngine:
    variables = Variables.from_networks([parse_network("10.0.0.0/8")])
    detectors = Detectors(
        port_scan=PortScanDetector(ports=20, window=10.0),
        syn_flood=SynFloodDetector(),
        dns_tunnel=DnsTunnelDetector(),
        gtp=GtpDetector(ue_pools=(parse_network("10.45.0.0/16"),)),
    )
    return InspectionEngine(
        InspectionConfig(signatures=parse_rule_files([str(RULES)], variables), detectors=detectors)
    )


def run_engine(frames: list[Frame]) -> tuple[float, int, int]:
    engine = make_engine()
    process = engine.process
    alerts = 0
    started = time.perf_counter()
    for ts, data, linktype in frames:
        if process(ts, data, linktype):
            alerts += 1
    return time.perf_counter() - started, alerts, engine.stats.fast


def run_dpkt(frames: list[Frame]) -> tuple[float, int]:
    import dpkt  # type: ignore[import-untyped]

    ethernet = dpkt.ethernet.Ethernet
    started = time.perf_counter()
    for _ts, data, _linktype in frames:
        ethernet(data)
    return time.perf_counter() - started, 0


def run_scapy(frames: list[Frame]) -> tuple[float, int]:
    from scapy.contrib.gtp import GTP_U_Header  # noqa: F401  (binds GTP-U to UDP 2152)
    from scapy.layers.l2 import Ether

    started = time.perf_counter()
    for _ts, data, _linktype in frames:
        Ether(data)
    return time.perf_counter() - started, 0


def kind(data: bytes) -> str:
    proto = data[23]
    ports = set(struct.unpack_from("!HH", data, 34))
    if proto == 17:
        return "gtp-u" if 2152 in ports else "dns"
    return "web" if 80 in ports else "tls" if 443 in ports else "bulk"


def breakdown(frames: list[Frame]) -> None:
    """Per kind of packet and path taken: engine and dpkt microseconds a packet (timed one
    packet at a time, so both include the timer's own cost)."""
    import dpkt  # type: ignore[import-untyped]

    engine = make_engine()
    process = engine.process
    ethernet = dpkt.ethernet.Ethernet
    clock = time.perf_counter
    spent: dict[str, list[float]] = {}
    for ts, data, linktype in frames:
        before = engine.stats.fast
        started = clock()
        process(ts, data, linktype)
        middle = clock()
        ethernet(data)
        done = clock()
        path = "fast" if engine.stats.fast > before else "full"
        row = spent.setdefault(f"{kind(data)}/{path}", [0, 0.0, 0.0])
        row[0] += 1
        row[1] += middle - started
        row[2] += done - middle
    total = sum(row[1] for row in spent.values())
    print(f"{'packets':16} {'share':>6} {'engine us':>10} {'dpkt us':>8} {'engine time':>12}")
    for name, (count, engine_s, dpkt_s) in sorted(spent.items()):
        print(
            f"{name:16} {count * 100 / len(frames):5.1f}% {engine_s / count * 1e6:10.1f} "
            f"{dpkt_s / count * 1e6:8.1f} {engine_s * 100 / total:11.0f}%"
        )
    # The ceiling of this mix: even if the full path cost nothing, the fast path's packets
    # alone would still take this long.
    dpkt_total = sum(row[2] for row in spent.values())
    fast_only = sum(row[1] for name, row in spent.items() if name.endswith("/fast"))
    print(
        f"engine/dpkt as timed here {dpkt_total / total:.2f}x; with a full path costing "
        f"nothing it would be {dpkt_total / fast_only:.2f}x (goal >= 5x)"
    )


def mix_summary(frames: list[Frame]) -> str:
    counts: dict[str, int] = {"web": 0, "tls": 0, "dns": 0, "gtp-u": 0, "bulk": 0}
    for _ts, data, _lt in frames:
        counts[kind(data)] += 1
    return ", ".join(f"{k} {v * 100 / len(frames):.0f}%" for k, v in counts.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--scapy-every",
        type=int,
        default=10,
        help="scapy dissects every Nth packet of the same capture (default 10; 1: all)",
    )
    parser.add_argument("--pcap", help="keep the generated capture here")
    parser.add_argument(
        "--breakdown", action="store_true", help="also time each kind of packet on its own"
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    generated = Mix().build(args.packets)
    path = args.pcap or os.path.join(tempfile.mkdtemp(prefix="inspect-bench-"), "mix.pcap")
    with open(path, "wb") as handle:
        write_pcap(handle, generated)
    frames = load(path)
    size = os.path.getsize(path)
    built = time.perf_counter() - started
    print(f"capture: {len(frames)} packets, {size / 1e6:.1f} MB ({path}), built in {built:.1f}s")
    print(f"mix: {mix_summary(frames)}")
    print(f"engine: {len(make_engine().matcher.signatures)} signatures, 4 detectors")

    scapy_frames = frames
    if args.scapy_every > 1:
        scapy_frames = frames[:: args.scapy_every]
    # rounds interleave the contenders, so that a busy machine slows them alike
    times: dict[str, list[float]] = {"engine": [], "dpkt": [], "scapy": []}
    alerting = fast = 0
    for _ in range(args.runs):
        elapsed, alerting, fast = run_engine(frames)
        times["engine"].append(elapsed)
        times["dpkt"].append(run_dpkt(frames)[0])
        times["scapy"].append(run_scapy(scapy_frames)[0])
    engine_pps = len(frames) / min(times["engine"])
    dpkt_pps = len(frames) / min(times["dpkt"])
    scapy_pps = len(scapy_frames) / min(times["scapy"])
    print(
        f"engine      {engine_pps:12,.0f} packets/s  (best {min(times['engine']):.2f}s; "
        f"{alerting} packets alerted; {fast * 100 / len(frames):.0f}% on a fast path)"
    )
    print(f"dpkt parse  {dpkt_pps:12,.0f} packets/s  (best {min(times['dpkt']):.2f}s)")
    print(
        f"scapy       {scapy_pps:12,.0f} packets/s  (best {min(times['scapy']):.2f}s over "
        f"{len(scapy_frames)} packets: every {args.scapy_every}th)"
    )
    print(f"ratio engine/scapy {engine_pps / scapy_pps:8.1f}x  (goal >= 100x)")
    print(f"ratio engine/dpkt  {engine_pps / dpkt_pps:8.2f}x  (goal >= 5x)")
    print(f"ratio dpkt/scapy   {dpkt_pps / scapy_pps:8.1f}x")
    if args.breakdown:
        breakdown(frames)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
