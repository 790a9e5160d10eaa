"""Probes, servers and captures inside the lab (root), and the namespace runner."""

from __future__ import annotations

import os
import time

import pytest

from appliance.lab import topology, traffic

pytestmark = pytest.mark.root


def children() -> set[int]:
    """Live child processes of this process."""
    found: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            found |= {int(pid) for pid in f.read().split()}
    return found


@pytest.fixture(autouse=True)
def _no_process_left_behind() -> object:
    before = children()
    yield None
    assert children() <= before


@pytest.mark.parametrize("family", [4, 6])
def test_tcp_open_refused_and_seen(lab: topology.Lab, family: int) -> None:
    target = lab.addr("wan", family)
    with traffic.serve(lab.ns("wan"), "tcp", [7001]) as server:
        assert traffic.tcp_connect(lab.ns("lan"), target, 7001, 2.0) == "open"
        assert traffic.tcp_connect(lab.ns("lan"), target, 7002, 2.0) == "refused"
        assert server.peers("tcp", 7001) == [lab.addr("lan", family)]


@pytest.mark.parametrize("family", [4, 6])
def test_udp_echo_and_port_unreachable(lab: topology.Lab, family: int) -> None:
    target = lab.addr("mec", family)
    with traffic.serve(lab.ns("mec"), "udp", 7003) as server:
        assert traffic.udp_probe(lab.ns("lan"), target, 7003, 2.0) == "open"
        assert traffic.udp_probe(lab.ns("lan"), target, 7004, 2.0) == "refused"
        assert server.peers("udp") == [lab.addr("lan", family)]


def test_server_serves_both_protocols_on_several_ports(lab: topology.Lab) -> None:
    with traffic.serve(lab.ns("mec"), "both", [7005, 7006]) as server:
        for port in (7005, 7006):
            assert traffic.tcp_connect(lab.ns("wan"), "10.45.0.10", port, 2.0) == "open"
            assert traffic.udp_probe(lab.ns("wan"), "10.45.0.10", port, 2.0) == "open"
        assert [(s.proto, s.port) for s in server.seen()] == [
            ("tcp", 7005),
            ("udp", 7005),
            ("tcp", 7006),
            ("udp", 7006),
        ]


@pytest.mark.parametrize("family", [4, 6])
def test_ping(lab: topology.Lab, family: int) -> None:
    assert traffic.ping(lab.ns("lan"), lab.addr("mec", family), 2.0) == "open"
    # No route for it on the appliance: it answers "unreachable".
    unrouted = "10.99.0.1" if family == 4 else "fd99::1"
    assert traffic.ping(lab.ns("lan"), unrouted, 2.0) == "refused"


def test_timeout_is_bounded(lab: topology.Lab) -> None:
    # A neighbour that never answers: the address is on the lan link but no host has it.
    start = time.monotonic()
    assert traffic.tcp_connect(lab.ns("wan"), "192.168.10.99", 80, 0.5) == "timeout"
    assert traffic.udp_probe(lab.ns("wan"), "192.168.10.99", 80, 0.5) == "timeout"
    assert traffic.ping(lab.ns("wan"), "192.168.10.98", 0.5) == "timeout"
    assert time.monotonic() - start < 10.0  # three 0.5 s waits, none left to hang


def test_connections_are_held_and_echo(lab: topology.Lab) -> None:
    with (
        traffic.serve(lab.ns("wan"), "tcp", 7007) as server,
        traffic.connections(lab.ns("lan"), "198.51.100.2", 7007, count=3, timeout=2.0) as conns,
    ):
        assert conns.outcomes == ["open"] * 3
        assert conns.echo(2.0) == ["open"] * 3
        assert conns.echo(2.0) == ["open"] * 3
        assert len(server.peers()) == 3


def test_connections_report_what_did_not_open(lab: topology.Lab) -> None:
    with traffic.connections(lab.ns("lan"), "198.51.100.2", 7008, count=2, timeout=2.0) as conns:
        assert conns.outcomes == ["refused", "refused"]
        assert conns.echo(0.5) == ["closed", "closed"]


def test_tcp_connect_many(lab: topology.Lab) -> None:
    with traffic.serve(lab.ns("wan"), "tcp", 7009) as server:
        outcomes = traffic.tcp_connect_many(lab.ns("mec"), "198.51.100.2", 7009, 25, 2.0)
        assert outcomes == ["open"] * 25
        assert len(server.peers()) == 25


def test_capture_and_raw_send(lab: topology.Lab) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    def sent(frame: traffic.Frame) -> bool:
        packet = Ether(frame.data)
        return UDP in packet and packet[UDP].sport == 4242 and packet[UDP].dport == 7010

    packet = bytes(IP(src="198.51.100.2", dst="10.45.0.10") / UDP(sport=4242, dport=7010))
    with traffic.capture(lab.ns("mec"), "eth0") as cap:
        assert traffic.send_raw(lab.ns("wan"), packet) == 1
        seen = cap.wait_for(sent, 10.0)
    assert any(sent(f) for f in seen if not f.outgoing)
    assert any(sent(f) for f in cap.frames if not f.outgoing)


def test_server_stops_when_the_block_fails(lab: topology.Lab) -> None:
    with pytest.raises(RuntimeError), traffic.serve(lab.ns("wan"), "tcp", 7011):
        raise RuntimeError("test failed inside")
    assert traffic.tcp_connect(lab.ns("lan"), "198.51.100.2", 7011, 2.0) == "refused"


def test_normalize() -> None:
    assert traffic.normalize("::ffff:192.0.2.1") == "192.0.2.1"
    assert traffic.normalize("fe80::1%eth0") == "fe80::1"
    assert traffic.normalize("2001:db8::1") == "2001:db8::1"
