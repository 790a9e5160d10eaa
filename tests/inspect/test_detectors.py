"""Behaviour detectors (sids 9000001..9000004) on crafted traffic."""

from __future__ import annotations

from typing import Any

from scapy.all import DNS, DNSQR, IP, TCP, UDP, Ether  # type: ignore[attr-defined]
from scapy.contrib.gtp import GTP_U_Header

from appliance.inspect.detectors import shannon_entropy
from appliance.model.profile import (
    Detectors,
    DnsTunnelDetector,
    GtpDetector,
    PortScanDetector,
    SynFloodDetector,
)
from appliance.model.values import parse_network
from appliance.units import Rate
from tests.inspect.traffic import gtp, inspect, sids

SCANNER, TARGET = "198.51.100.66", "10.0.0.80"


def detail(event: dict[str, Any]) -> str:
    """What the detector found: in alert.metadata, the signature being its msg exactly."""
    return " ".join(event["alert"]["metadata"]["detail"])


def syn(src: str, dst: str, dport: int, sport: int = 40000, flags: str = "S") -> object:
    return Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags)


def query(name: str, src: str = "10.0.0.5", sport: int = 5353) -> object:
    return (
        Ether()
        / IP(src=src, dst="9.9.9.9")
        / UDP(sport=sport, dport=53)
        / DNS(qd=DNSQR(qname=name))
    )


class TestPortScan:
    detectors = Detectors(port_scan=PortScanDetector(ports=20, window=10.0))

    def test_more_than_ports_distinct_ports_alerts_once_per_window(self) -> None:
        packets = [syn(SCANNER, TARGET, port) for port in range(1, 101)]
        events = inspect(packets, detectors=self.detectors)
        assert sids(events) == [9000001]
        event = events[0]
        assert event["src_ip"] == SCANNER and event["dest_port"] == 21  # the 21st port
        assert event["alert"]["action"] == "blocked"
        assert event["alert"]["signature"].startswith("APPLIANCE port scan")
        assert event["alert"]["severity"] == 2

    def test_exactly_ports_is_not_a_scan(self) -> None:
        packets = [syn(SCANNER, TARGET, port) for port in range(1, 21)]
        assert inspect(packets, detectors=self.detectors) == []

    def test_repeated_ports_and_syn_acks_do_not_count(self) -> None:
        packets = [syn(SCANNER, TARGET, 80, sport=1000 + i) for i in range(100)]
        packets += [syn(SCANNER, TARGET, port, flags="SA") for port in range(1, 100)]
        assert inspect(packets, detectors=self.detectors) == []

    def test_slow_scan_outside_the_window_is_not_reported(self) -> None:
        packets = [syn(SCANNER, TARGET, port) for port in range(1, 41)]
        assert inspect(packets, detectors=self.detectors, step=1.0) == []  # 10 ports per window

    def test_a_new_window_alerts_again(self) -> None:
        packets = [syn(SCANNER, TARGET, port) for port in range(1, 200)]
        # 199 SYNs 0.1 s apart: about 20 s, so two windows of 10 s
        assert sids(inspect(packets, detectors=self.detectors, step=0.1)) == [9000001, 9000001]

    def test_counted_per_source(self) -> None:
        packets = [syn(f"198.51.100.{port % 10}", TARGET, port) for port in range(1, 101)]
        assert inspect(packets, detectors=self.detectors) == []  # 10 sources, 10 ports each

    def test_off_when_not_configured(self) -> None:
        packets = [syn(SCANNER, TARGET, port) for port in range(1, 101)]
        assert inspect(packets) == []

    def test_block_false_reports_allowed(self) -> None:
        packets = [syn(SCANNER, TARGET, port) for port in range(1, 30)]
        events = inspect(packets, detectors=self.detectors, block=False)
        assert events[0]["alert"]["action"] == "allowed"

    def test_never_block_source_reports_allowed(self) -> None:
        packets = [syn(SCANNER, TARGET, port) for port in range(1, 30)]
        never = (parse_network("198.51.100.0/24"),)
        events = inspect(packets, detectors=self.detectors, never_block=never)
        assert events[0]["alert"]["action"] == "allowed"


class TestSynFlood:
    detectors = Detectors(syn_flood=SynFloodDetector(rate=Rate(50, "second")))

    def test_from_one_source(self) -> None:
        packets = [syn(SCANNER, TARGET, 80, sport=1000 + i) for i in range(200)]
        events = inspect(packets, detectors=self.detectors, step=0.001)
        assert sids(events) == [9000002]
        assert "from one source" in detail(events[0])

    def test_to_one_destination_from_many_sources(self) -> None:
        packets = [syn(f"198.51.{i // 250}.{i % 250}", TARGET, 80) for i in range(200)]
        events = inspect(packets, detectors=self.detectors, step=0.001)
        assert sids(events) == [9000002]
        assert "to one destination" in detail(events[0])

    def test_below_the_rate_is_quiet(self) -> None:
        packets = [syn(SCANNER, TARGET, 80, sport=1000 + i) for i in range(200)]
        assert inspect(packets, detectors=self.detectors, step=0.05) == []  # 20 per second

    def test_once_per_window_then_again(self) -> None:
        packets = [syn(SCANNER, TARGET, 80, sport=1000 + i) for i in range(300)]
        # 100 per second for 3 s
        assert sids(inspect(packets, detectors=self.detectors, step=0.01)) == [9000002] * 3


class TestDnsTunnel:
    detectors = Detectors(dns_tunnel=DnsTunnelDetector(max_label=52, max_entropy=4.0))

    def test_long_label(self) -> None:
        events = inspect([query("a" * 53 + ".t.example")], detectors=self.detectors)
        assert sids(events) == [9000003]
        assert events[0]["dns"]["rrname"] == "a" * 53 + ".t.example"
        assert "53 characters" in detail(events[0])

    def test_label_at_the_limit_is_fine(self) -> None:
        assert inspect([query("a" * 52 + ".t.example")], detectors=self.detectors) == []

    def test_high_entropy_label(self) -> None:
        label = "k9xq2lm7zp4rt8wv1nb6yc3hd5fg0jsa"  # 32 distinct characters: 5 bits each
        assert shannon_entropy(label.encode()) == 5.0
        events = inspect([query(label + ".t.example")], detectors=self.detectors)
        assert sids(events) == [9000003]
        assert "entropy" in detail(events[0])

    def test_short_random_labels_are_not_judged_by_entropy(self) -> None:
        assert inspect([query("q8Zr4Lx.t.example")], detectors=self.detectors) == []

    def test_ordinary_names_are_quiet(self) -> None:
        names = ["www.example.com", "mail.google.com", "a.root-servers.net", "updates.vendor.io"]
        assert inspect([query(n) for n in names], detectors=self.detectors) == []

    def test_one_alert_per_source_per_minute(self) -> None:
        packets = [query("a" * 60 + f"{i}.t.example", sport=1000 + i) for i in range(120)]
        # 120 queries, one a second: minutes start at 0 and 60
        events = inspect(packets, detectors=self.detectors, step=1.0)
        assert sids(events) == [9000003, 9000003]

    def test_query_rate(self) -> None:
        detectors = Detectors(
            dns_tunnel=DnsTunnelDetector(max_label=52, max_entropy=4.0, rate=Rate(10, "second"))
        )
        packets = [query(f"n{i}.example", sport=1000 + i) for i in range(30)]
        events = inspect(packets, detectors=detectors, step=0.01)
        assert sids(events) == [9000003]
        assert "queries" in detail(events[0])

    def test_responses_are_not_counted(self) -> None:
        answer = Ether() / IP(src="9.9.9.9", dst="10.0.0.5") / UDP(sport=53, dport=5353)
        answer = answer / DNS(qr=1, qd=DNSQR(qname="a" * 60 + ".t.example"))
        assert inspect([answer], detectors=self.detectors) == []


class TestGtp:
    detectors = Detectors(gtp=GtpDetector(ue_pools=(parse_network("10.45.0.0/16"),)))
    uplink = IP(src="10.45.0.7", dst="93.184.216.34") / TCP(sport=1, dport=80, flags="S")

    def run(self, *packets: object) -> list[dict[str, object]]:
        return inspect(list(packets), detectors=self.detectors)

    def test_ue_source_is_fine(self) -> None:
        assert self.run(gtp("192.0.2.10", "10.0.0.1", self.uplink)) == []

    def test_downlink_to_a_ue_is_fine(self) -> None:
        downlink = IP(src="93.184.216.34", dst="10.45.0.7") / TCP(sport=80, dport=1, flags="SA")
        assert self.run(gtp("10.0.0.1", "192.0.2.10", downlink)) == []

    def test_spoofed_inner_source(self) -> None:
        spoofed = IP(src="172.16.9.9", dst="93.184.216.34") / TCP(sport=1, dport=80, flags="S")
        events = self.run(gtp("192.0.2.10", "10.0.0.1", spoofed, teid=4242))
        assert sids(events) == [9000004]
        event = events[0]
        assert event["src_ip"] == "192.0.2.10" and event["dest_ip"] == "10.0.0.1"  # outer
        assert event["gtp"]["teid"] == 4242
        assert event["gtp"]["inner_src_ip"] == "172.16.9.9"
        assert event["gtp"]["inner_dest_ip"] == "93.184.216.34"
        assert "UE pools" in detail(event)
        assert event["alert"]["action"] == "blocked"

    def test_teid_zero(self) -> None:
        events = self.run(gtp("192.0.2.10", "10.0.0.1", self.uplink, teid=0))
        assert sids(events) == [9000004] and "TEID 0" in detail(events[0])

    def test_malformed_header(self) -> None:
        bad = Ether() / IP(src="192.0.2.10", dst="10.0.0.1") / UDP(sport=2152, dport=2152)
        bad = bad / b"\x32\xff\x00\x08\x00\x00\x00\x01"  # E/S set, but length 8 (with no room)
        bad = bad / b"\x00\x00\x00"
        events = self.run(bad)
        assert sids(events) == [9000004] and "malformed" in detail(events[0])
        assert events[0]["gtp"]["error"].startswith("gtp.")

    def test_gtp_in_gtp(self) -> None:
        nested = IP(src="10.45.0.7", dst="192.0.2.99") / UDP(sport=2152, dport=2152)
        nested = nested / GTP_U_Header(teid=5, gtp_type=255) / self.uplink
        events = self.run(gtp("192.0.2.10", "10.0.0.1", nested))
        assert sids(events) == [9000004] and "inside GTP-U" in detail(events[0])

    def test_repeats_are_suppressed_for_a_minute(self) -> None:
        spoofed = IP(src="172.16.9.9", dst="93.184.216.34") / UDP(sport=1, dport=53)
        packets = [gtp("192.0.2.10", "10.0.0.1", spoofed) for _ in range(50)]
        assert sids(inspect(packets, detectors=self.detectors)) == [9000004]

    def test_off_when_not_configured(self) -> None:
        assert inspect([gtp("192.0.2.10", "10.0.0.1", self.uplink, teid=0)]) == []


def test_port_scan_of_every_port_stays_fast_and_small() -> None:
    """A full-range scan in one window: one alert, bounded state, linear time."""
    import time

    from tests.inspect.traffic import engine, frames

    eng = engine(detectors=TestPortScan.detectors)
    packets = frames([syn(SCANNER, TARGET, port) for port in range(1, 4001)], step=0.00001)
    started = time.process_time()  # this process's CPU: whatever else the machine runs
    alerts = [a for ts, data, lt in packets for a in eng.process(ts, data, lt)]
    assert time.process_time() - started < 10
    assert [a.sid for a in alerts] == [9000001]
    assert eng.port_scan is not None
    state = eng.port_scan._seen[bytes([198, 51, 100, 66])]
    assert isinstance(state, list) and len(state[0]) <= 21
