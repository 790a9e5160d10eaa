"""Live inspection in the daemon with real traffic in the lab (root): sample mode over NFLOG,
mirror mode over AF_PACKET, the detect-to-block loop, never_block, overload, and inline
refused on a kernel without the nftables queue statement."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.adapters.nsexec import run_in_netns
from appliance.lab import traffic
from tests.conftest import run_appliance
from tests.daemon.conftest import Daemon, nft_in_curl
from tests.integration.labtools import Lab, profile

pytestmark = pytest.mark.root

SERVICE = 5000  # an allowed service on the appliance
DROP_PORT = 8080  # the port of the `drop` signature
EXTRA_WAN = (
    "198.51.100.3",
    "198.51.100.4",
    "198.51.100.5",
    "198.51.100.6",
    "198.51.100.8",
    "198.51.100.9",
)
WAN = "198.51.100.2"
APPLIANCE_WAN = "198.51.100.1"
APPLIANCE_LAN = "192.168.10.1"

RULES = """\
drop tcp any any -> any 8080 (msg:"test drop"; content:"EVIL"; sid:1; rev:1;)
alert tcp any any -> any 5000 (msg:"test alert"; content:"HELLO"; sid:2; rev:1;)
alert dns any any -> any any (msg:"test dns"; dns.query; content:"evil.example"; sid:3; rev:1;)
drop tls any any -> any any (msg:"test sni"; tls.sni; content:".ngrok.io"; sid:5; rev:1;)
"""


@pytest.fixture(scope="module")
def servers(lab: Lab) -> Iterator[None]:
    ns = lab.ns("wan")
    for address in EXTRA_WAN:
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0"], check=True)
    with traffic.serve(lab.ns("appliance"), "tcp", [SERVICE, DROP_PORT]):
        yield


@pytest.fixture
def daemon(lab: Lab, tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(body: str, *extra: str, ready: bool = True) -> Daemon:
        rules = tmp_path / "test.rules"
        rules.write_text(RULES)
        text = profile("inspect-live", textwrap.dedent(body).replace("RULES", str(rules)))
        text += '\n[metrics]\nlisten = "127.0.0.1:9469"\n'
        path = tmp_path / f"profile{len(started)}.toml"
        path.write_text(text)
        d = Daemon(
            lab.ns("appliance"), tmp_path, path, "--alerts", str(tmp_path / "eve.json"), *extra
        )
        started.append(d)
        d.start()
        return d.ready() if ready else d

    try:
        yield start
    finally:
        for d in started:
            d.close()
        # the table stays after the daemon (fail closed): remove it for the next test
        lab.nft("delete", "table", "inet", "appliance") if _has_table(lab) else None


def _has_table(lab: Lab) -> bool:
    return "appliance" in lab.nft("list", "tables")


def sample_profile(never_block: str = "[]", rate: str = "") -> str:
    return f"""
    [[rules]]
    name = "services"
    from = "any"
    to = "self"
    proto = "tcp"
    dport = [{SERVICE}, {DROP_PORT}]
    action = "accept"

    [protect]
    block_timeout = "3s"
    never_block = {never_block}

    [inspect]
    mode = "sample"
    block = true
    rules = ["RULES"]
    [inspect.detectors]
    port_scan = {{ ports = 20, window = "10s" }}
    {rate}
    """


def autoblock(lab: Lab, name: str = "autoblock_v4") -> list[str]:
    listing = lab.nft("-j", "list", "set", "inet", "appliance", name)
    for obj in json.loads(listing)["nftables"]:
        if "set" in obj:
            return [
                e["elem"]["val"] if isinstance(e, dict) else e for e in obj["set"].get("elem", [])
            ]
    return []


def eve(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "eve.json"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate: Callable[[], Any], timeout: float, step: float = 0.01) -> float | None:
    """Seconds until ``predicate()`` held, None if it did not within ``timeout``."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            return None
        time.sleep(step)


def syns(src: str, dst: str, ports: range, sport: int = 40000) -> list[bytes]:
    from scapy.layers.inet import IP, TCP

    return [
        bytes(IP(src=src, dst=dst) / TCP(sport=sport + i, dport=port, flags="S", seq=1000 + i))
        for i, port in enumerate(ports)
    ]


def _send_payload_child(addr: str, port: int, payload: bytes, source: str | None) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        if source:
            sock.bind((source, 0))
        try:
            sock.connect((addr, port))
            sock.sendall(payload)
            sock.recv(100)
        except OSError as exc:
            return f"error {exc}"
    return "sent"


def _send_in_pieces_child(addr: str, port: int, pieces: list[bytes], source: str) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((source, 0))
        try:
            sock.connect((addr, port))
            for piece in pieces:  # one segment each: the peer acknowledges in between
                sock.sendall(piece)
                time.sleep(0.1)
        except OSError as exc:
            return f"error {exc}"
    return "sent"


def send_payload(ns: str, addr: str, port: int, payload: bytes, source: str | None = None) -> str:
    result: str = run_in_netns(ns, _send_payload_child, addr, port, payload, source, timeout=5.0)
    return result


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- sample mode: the detect-to-block loop ---------------------------------------------------


def test_port_scan_is_blocked_within_a_second_and_the_block_expires(
    lab: Lab, servers: None, daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = daemon(sample_profile())
    status = d.status()["inspect"]
    assert status["mode"] == "sample" and "received" in status, status
    wan, lan = lab.ns("wan"), lab.ns("lan")
    assert traffic.tcp_connect(wan, APPLIANCE_WAN, SERVICE, 2.0) == "open"

    # 21 distinct ports cross the threshold (more than 20): the block must follow within 1 s
    scan = syns(WAN, APPLIANCE_WAN, range(1000, 1035))
    traffic.send_raw(wan, scan[:21])  # returns once the 21st SYN is sent
    waited = wait_for(lambda: WAN in autoblock(lab), 3.0)
    assert waited is not None, d.log()
    print(f"port scan blocked {1000 * waited:.0f} ms after the SYN that crossed the threshold")
    assert waited < 1.0
    traffic.send_raw(wan, scan[21:])  # the rest of the scan: dropped, still alerted once

    # the source is cut off; another source is not
    assert traffic.tcp_connect(wan, APPLIANCE_WAN, SERVICE, 0.7) == "timeout"
    assert traffic.tcp_connect(lan, APPLIANCE_LAN, SERVICE, 2.0) == "open"
    assert traffic.tcp_connect(wan, APPLIANCE_WAN, SERVICE, 2.0, source=EXTRA_WAN[0]) == "open"

    # the block runs out ([protect].block_timeout = 3s) and the source connects again
    assert wait_for(lambda: WAN not in autoblock(lab), 6.0, 0.1) is not None
    assert traffic.tcp_connect(wan, APPLIANCE_WAN, SERVICE, 2.0) == "open"

    alerts = [e for e in eve(tmp_path) if e["alert"]["signature_id"] == 9000001]
    assert alerts, eve(tmp_path)
    assert alerts[0]["src_ip"] == WAN and alerts[0]["alert"]["action"] == "blocked"
    text = d.metrics()
    assert metric(text, 'appliance_alerts_total{signature_id="9000001"}') >= 1
    assert metric(text, "appliance_inspect_packets_total") >= 35
    status = d.status()["inspect"]
    assert status["blocks"] == 1, status  # one block for the scan, not one per alert


def test_ipv6_port_scan_is_blocked_in_autoblock_v6(
    lab: Lab, servers: None, daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6

    d = daemon(sample_profile())
    src, dst = "2001:db8:100::2", "2001:db8:100::1"
    scan = [
        bytes(IPv6(src=src, dst=dst) / TCP(sport=41000 + p, dport=p, flags="S"))
        for p in range(3000, 3030)
    ]
    traffic.send_raw(lab.ns("wan"), scan)
    waited = wait_for(lambda: src in autoblock(lab, "autoblock_v6"), 3.0)
    assert waited is not None and waited < 1.0, d.log()
    assert WAN not in autoblock(lab)
    alert = next(e for e in eve(tmp_path) if e["src_ip"] == src)
    assert alert["alert"]["signature_id"] == 9000001 and alert["alert"]["action"] == "blocked"


def test_reload_keeps_inspection_unless_it_changed(
    lab: Lab, servers: None, daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = daemon(sample_profile())
    wan = lab.ns("wan")
    assert send_payload(wan, APPLIANCE_WAN, SERVICE, b"hello\n") == "sent"
    assert wait_for(lambda: d.status()["inspect"]["received"] > 0, 3.0, 0.05) is not None
    received = d.status()["inspect"]["received"]
    d.send_signal(signal.SIGHUP)
    d.wait_for("READY=1")
    assert d.status()["inspect"]["received"] >= received  # the same inspection goes on
    # a changed rule file restarts it with the new rules
    (tmp_path / "test.rules").write_text(
        RULES + 'alert tcp any any -> any 5000 (msg:"new"; content:"NEWRULE"; sid:4; rev:1;)\n'
    )
    d.send_signal(signal.SIGHUP)
    d.wait_for("READY=1")
    assert d.status()["inspect"]["received"] == 0
    assert send_payload(wan, APPLIANCE_WAN, SERVICE, b"NEWRULE\n", EXTRA_WAN[0]) == "sent"
    found = wait_for(lambda: any(e["alert"]["signature_id"] == 4 for e in eve(tmp_path)), 3.0)
    assert found is not None, d.log()


def test_drop_signature_blocks_its_source_and_alert_does_not(
    lab: Lab, servers: None, daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = daemon(sample_profile())
    wan = lab.ns("wan")
    dropper, alerter = EXTRA_WAN[1], EXTRA_WAN[2]
    assert send_payload(wan, APPLIANCE_WAN, SERVICE, b"HELLO\n", alerter) == "sent"
    assert send_payload(wan, APPLIANCE_WAN, DROP_PORT, b"EVIL\n", dropper) == "sent"
    assert wait_for(lambda: dropper in autoblock(lab), 3.0) is not None, d.log()
    assert alerter not in autoblock(lab)
    assert traffic.tcp_connect(wan, APPLIANCE_WAN, SERVICE, 0.7, source=dropper) == "timeout"
    assert traffic.tcp_connect(wan, APPLIANCE_WAN, SERVICE, 2.0, source=alerter) == "open"
    events = {e["alert"]["signature_id"]: e for e in eve(tmp_path)}
    assert events[1]["alert"]["action"] == "blocked" and events[1]["src_ip"] == dropper
    assert events[2]["alert"]["action"] == "allowed" and events[2]["src_ip"] == alerter
    assert d.status()["sets"]["autoblock_v4"] >= 1
    assert metric(d.metrics(), "appliance_autoblock_elements") >= 1


@pytest.mark.parametrize("segments", [1, 2])
def test_sni_of_a_post_quantum_client_hello_blocks(
    lab: Lab, servers: None, daemon: Callable[..., Daemon], tmp_path: Path, segments: int
) -> None:
    """A ClientHello of about 1.7 kB (an ML-KEM key share before the server_name, as
    browsers send it), its SNI past the first 1448 bytes: in one (GSO) packet the snaplen
    must take all of it; in two segments the engine must put them together."""
    from tests.inspect.traffic import client_hello

    d = daemon(sample_profile())
    wan = lab.ns("wan")
    source = EXTRA_WAN[3 + segments]
    # First a hello too short to hold its fields: a decoder error, counted by reason.
    broken = b"\x16\x03\x01\x00\x06\x01\x00\x00\x02\x03\x03"
    assert send_payload(wan, APPLIANCE_WAN, SERVICE, broken, source) == "sent"
    counted = lambda: d.status()["inspect"]["decode_errors"].get("tls.truncated")  # noqa: E731
    assert wait_for(counted, 3.0) is not None, d.status()["inspect"]
    errors = 'appliance_inspect_decode_errors_total{reason="tls.truncated"}'
    assert metric(d.metrics(), errors) >= 1
    hello = client_hello("c2.ngrok.io", key_share=1600)
    assert hello.find(b"c2.ngrok.io") > 1448  # past the first segment
    pieces = [hello[:1000], hello[1000:]] if segments == 2 else [hello]
    sent = run_in_netns(wan, _send_in_pieces_child, APPLIANCE_WAN, SERVICE, pieces, source)
    assert sent == "sent"
    assert wait_for(lambda: source in autoblock(lab), 3.0) is not None, d.log()
    assert "tls.hello_gap" not in d.status()["inspect"]["decode_errors"]
    alert = next(e for e in eve(tmp_path) if e["alert"]["signature_id"] == 5)
    assert alert["src_ip"] == source and alert["tls"] == {"sni": "c2.ngrok.io"}
    assert alert["alert"]["action"] == "blocked"
    assert traffic.tcp_connect(wan, APPLIANCE_WAN, SERVICE, 0.7, source=source) == "timeout"


def test_never_block_source_is_alerted_not_blocked(
    lab: Lab, servers: None, daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    trusted = EXTRA_WAN[3]
    d = daemon(sample_profile(never_block=f'["{trusted}"]'))
    wan = lab.ns("wan")
    traffic.send_raw(wan, syns(trusted, APPLIANCE_WAN, range(2000, 2030)))
    assert wait_for(lambda: any(e["src_ip"] == trusted for e in eve(tmp_path)), 3.0), d.log()
    time.sleep(0.3)
    assert trusted not in autoblock(lab)
    alert = next(e for e in eve(tmp_path) if e["src_ip"] == trusted)
    assert alert["alert"]["signature_id"] == 9000001
    assert alert["alert"]["action"] == "allowed"
    assert traffic.tcp_connect(wan, APPLIANCE_WAN, SERVICE, 2.0, source=trusted) == "open"
    assert d.status()["inspect"]["blocks"] == 0


def test_overload_drops_samples_and_the_daemon_still_answers(
    lab: Lab, servers: None, daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = daemon(
        """
        [inspect]
        mode = "sample"
        block = false
        [inspect.detectors]
        port_scan = { ports = 20, window = "10s" }
        """,
        "--inspect-queue",
        "16",
    )
    wan = lab.ns("wan")
    # every SYN is a new flow, so each one is sampled: 20000 of them, against a queue of 16
    floods = [
        syns(WAN, APPLIANCE_WAN, range(1, 10001), sport=10000 * chunk + 1) for chunk in range(2)
    ]
    done = threading.Event()

    def flood() -> None:
        try:
            for packets in floods:
                traffic.send_raw(wan, packets)
        finally:
            done.set()

    sender = threading.Thread(target=flood)
    sender.start()
    slowest = 0.0
    try:
        while not done.is_set():  # the control socket answers during the flood
            start = time.monotonic()
            d.status()
            slowest = max(slowest, time.monotonic() - start)
            time.sleep(0.05)
    finally:
        sender.join(60)
    print(f"slowest status answer during the flood: {1000 * slowest:.0f} ms")
    assert slowest < 2.0, f"status took {slowest:.2f}s during the flood"
    answered = d.status()
    assert answered["inspect"]["mode"] == "sample"
    text = d.metrics()
    assert metric(text, "appliance_inspect_dropped_total") > 0, answered["inspect"]
    assert metric(text, "appliance_inspect_packets_total") > 0
    assert wait_for(lambda: d.status()["inspect"]["queue"]["queued"] == 0, 10.0, 0.1) is not None


# -- mirror mode --------------------------------------------------------------------------


def _dns_query_child(server: str, name: str) -> str:
    from scapy.layers.dns import DNS, DNSQR

    query = bytes(DNS(id=0x4242, rd=1, qd=DNSQR(qname=name)))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(query, (server, 53))
    return "sent"


def test_mirror_mode_sees_a_dns_query(
    lab: Lab, servers: None, daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = daemon(
        """
        [inspect]
        mode = "mirror"
        interfaces = ["eth1"]
        rules = ["RULES"]
        """
    )
    assert d.status()["inspect"]["mode"] == "mirror"
    run_in_netns(lab.ns("lan"), _dns_query_child, APPLIANCE_LAN, "www.evil.example", timeout=5.0)
    found = wait_for(lambda: any(e["alert"]["signature_id"] == 3 for e in eve(tmp_path)), 3.0)
    assert found is not None, d.log()
    alert = next(e for e in eve(tmp_path) if e["alert"]["signature_id"] == 3)
    assert alert["dns"]["rrname"] == "www.evil.example"
    assert alert["src_ip"] == "192.168.10.10" and alert["proto"] == "UDP"
    # no sample chain in mirror mode
    assert "log group" not in lab.nft("list", "table", "inet", "appliance")


# -- inline -------------------------------------------------------------------------------


def _kernel_has_queue() -> bool:
    from appliance.probe import probe_features

    return probe_features().get("queue", False)


def test_inline_is_refused_without_the_queue_statement(
    lab: Lab, daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    if _kernel_has_queue():
        pytest.skip("this kernel has the nftables queue statement")
    body = '[inspect]\nmode = "inline"\n'
    path = tmp_path / "inline.toml"
    path.write_text(profile("inline", body))
    done = lab.appliance("apply", str(path), check=False)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert re.search(r'inspect\.mode: "inline" needs the nftables queue statement', lines[0])
    assert "Traceback" not in done.stderr
    # the daemon refuses it too: the error is in status, the failsafe is enforced
    d = daemon(body)
    status = d.status()
    assert status["source"] != "profile"
    assert 'inspect.mode: "inline" needs the nftables queue statement' in status["last_error"]


@pytest.mark.guest
def test_inline_queue_bypass_lets_traffic_pass_without_a_reader(lab: Lab, tmp_path: Path) -> None:
    """Where the kernel has the queue statement (the QEMU guest): with no reader bound to the
    queues, `bypass` lets the sampled packets pass."""
    if not _kernel_has_queue():
        pytest.skip("this kernel lacks the nftables queue statement")
    lab.apply(
        profile(
            "inline",
            f"""
            [[rules]]
            name = "services"
            from = "any"
            to = "self"
            proto = "tcp"
            dport = [{SERVICE}]
            action = "accept"
            [inspect]
            mode = "inline"
            """,
        )
    )
    with traffic.serve(lab.ns("appliance"), "tcp", [SERVICE]):
        assert traffic.tcp_connect(lab.ns("wan"), APPLIANCE_WAN, SERVICE, 2.0) == "open"


@pytest.mark.guest
def test_inline_drop_signature_drops_the_packet_and_blocks(
    lab: Lab, servers: None, daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    """Where the kernel has the queue statement (the QEMU guest): the packet that matches a
    `drop` signature never reaches the server, its source is blocked, others pass."""
    if not _kernel_has_queue():
        pytest.skip("this kernel lacks the nftables queue statement")
    d = daemon(sample_profile().replace('mode = "sample"', 'mode = "inline"'))
    assert d.status()["inspect"]["mode"] == "inline"
    wan = lab.ns("wan")
    dropper, other = EXTRA_WAN[1], EXTRA_WAN[2]
    assert send_payload(wan, APPLIANCE_WAN, SERVICE, b"HELLO\n", other) == "sent"
    assert send_payload(wan, APPLIANCE_WAN, DROP_PORT, b"EVIL\n", dropper).startswith("error")
    assert wait_for(lambda: dropper in autoblock(lab), 3.0) is not None, d.log()
    assert d.status()["inspect"]["packets_dropped_inline"] >= 1
    assert traffic.tcp_connect(wan, APPLIANCE_WAN, SERVICE, 2.0, source=other) == "open"


def test_metrics_answer_in_sample_mode(
    lab: Lab, servers: None, daemon: Callable[..., Daemon]
) -> None:
    d = daemon(sample_profile())
    text = nft_in_curl(lab.ns("appliance"), "http://127.0.0.1:9469/metrics")
    assert "appliance_inspect_packets_total" in text
    assert "appliance_inspect_dropped_total" in text
    shown = run_appliance("status", "--control-socket", d.socket)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^inspect: +sample: \d+ received, \d+ inspected", shown.stdout, re.M)
