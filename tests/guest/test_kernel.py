"""The guest kernel has what this host's lacks, and the appliance's probes see it.

Each test works in network namespaces of its own, inside the guest.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from appliance.probe import FEATURE_NAMES, probe_report

pytestmark = [pytest.mark.guest, pytest.mark.root]


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def links(ns: str) -> dict[str, dict[str, object]]:
    return {link["ifname"]: link for link in json.loads(ip("-n", ns, "-j", "-d", "link", "show"))}


def test_probe_finds_every_feature_in_the_debian_kernel() -> None:
    report = probe_report()
    missing = {name: report.errors.get(name, "") for name, ok in report.features.items() if not ok}
    assert missing == {}
    assert set(report.features) == set(FEATURE_NAMES)


def test_vlan_vrf_and_dummy_links(netns: str) -> None:
    ip("-n", netns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    ip("-n", netns, "link", "add", "link", "v0", "name", "v0.100", "type", "vlan", "id", "100")
    ip("-n", netns, "link", "add", "vrf-a", "type", "vrf", "table", "100")
    ip("-n", netns, "link", "set", "v0.100", "master", "vrf-a")
    ip("-n", netns, "link", "add", "d0", "type", "dummy")
    for name in ("v0", "v0.100", "vrf-a", "d0"):
        ip("-n", netns, "link", "set", name, "up")
    ip("-n", netns, "addr", "add", "198.18.100.1/24", "dev", "v0.100")

    got = links(netns)
    vlan = got["v0.100"]["linkinfo"]
    assert vlan["info_kind"] == "vlan"  # type: ignore[index]
    assert vlan["info_data"]["id"] == 100  # type: ignore[index]
    assert got["v0.100"]["master"] == "vrf-a"
    assert got["vrf-a"]["linkinfo"]["info_data"]["table"] == 100  # type: ignore[index]
    assert got["d0"]["linkinfo"]["info_kind"] == "dummy"  # type: ignore[index]
    # The VLAN's connected route lives in the VRF's table, not in main.
    assert "198.18.100.0/24" in ip("-n", netns, "route", "show", "vrf", "vrf-a")
    assert "198.18.100.0/24" not in ip("-n", netns, "route", "show", "table", "main")


# --- flowtable: a forwarded flow leaves the forward hook once offloaded -------

ECHO_SERVER = textwrap.dedent(
    """
    import socket
    s = socket.socket()
    s.bind(("198.18.21.2", 9000))
    s.listen()
    print("listening", flush=True)
    s.settimeout(120)
    conn, _ = s.accept()
    conn.settimeout(60)
    while data := conn.recv(64):
        conn.sendall(data)
    """
)

PING_PONG = textwrap.dedent(
    """
    import socket, sys
    rounds = int(sys.argv[1])
    with socket.create_connection(("198.18.21.2", 9000), timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(rounds):
            s.sendall(b"x")
            assert s.recv(1) == b"x"
    print("done")
    """
)

FLOWTABLE = """
table inet fastpath {
  flowtable ft { hook ingress priority 0; devices = { r0, r1 }; }
  chain forward {
    type filter hook forward priority 0; policy accept;
    %s
    counter
  }
}
"""


@pytest.fixture
def routed(netns: str) -> Iterator[tuple[str, str, str]]:
    """client -- router -- server, three namespaces (the router is ``netns``)."""
    router = netns
    made = []
    try:
        for side, peer, net in (("c", "r0", "198.18.20"), ("s", "r1", "198.18.21")):
            ns = f"{router}-{side}"
            subprocess.run(["ip", "netns", "add", ns], check=True)
            made.append(ns)
            ip("-n", router, "link", "add", peer, "type", "veth", "peer", "name", "e0", "netns", ns)
            ip("-n", router, "addr", "add", f"{net}.1/24", "dev", peer)
            ip("-n", router, "link", "set", peer, "up")
            ip("-n", ns, "addr", "add", f"{net}.2/24", "dev", "e0")
            ip("-n", ns, "link", "set", "e0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "route", "add", "default", "via", f"{net}.1")
        subprocess.run(
            ["ip", "netns", "exec", router, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
            check=True,
        )
        yield made[0], router, made[1]
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False)


def forward_chain_packets(client: str, router: str, server: str, rule: str, rounds: int) -> int:
    """Packets the router's forward chain saw for ``rounds`` request/answer pairs."""
    subprocess.run(
        ["ip", "netns", "exec", router, "nft", "-f", "-"],
        input=FLOWTABLE % rule,
        text=True,
        check=True,
    )
    srv = subprocess.Popen(
        ["ip", "netns", "exec", server, sys.executable, "-c", ECHO_SERVER],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "listening"
        out = subprocess.run(
            ["ip", "netns", "exec", client, sys.executable, "-c", PING_PONG, str(rounds)],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        ).stdout
        assert out.strip() == "done"
    finally:
        srv.kill()
        srv.wait(10)
    chain = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            router,
            "nft",
            "-j",
            "list",
            "chain",
            "inet",
            "fastpath",
            "forward",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    subprocess.run(["ip", "netns", "exec", router, "nft", "delete", "table", "inet", "fastpath"])
    for entry in json.loads(chain)["nftables"]:
        for expr in entry.get("rule", {}).get("expr", []):
            if "counter" in expr:
                return int(expr["counter"]["packets"])
    raise AssertionError("no counter in the forward chain")


def test_flowtable_takes_an_established_flow_off_the_forward_hook(
    routed: tuple[str, str, str],
) -> None:
    rounds = 100
    slow = forward_chain_packets(*routed, rule="", rounds=rounds)
    fast = forward_chain_packets(*routed, rule="meta l4proto tcp flow add @ft", rounds=rounds)
    # Without the flowtable every packet of both directions crosses the hook.
    assert slow >= 2 * rounds
    # With it, only the handshake does, before the flow is offloaded.
    assert fast < 20, f"{fast} packets crossed the forward hook"


UDP_TO_SELF = textwrap.dedent(
    """
    import socket
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 9999))
    rx.settimeout(2)
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", 9999))
    try:
        print("received" if rx.recv(8) == b"x" else "other")
    except TimeoutError:
        print("lost")
    """
)


@pytest.mark.parametrize(
    ("statement", "expected"), [("queue num 3 bypass", "received"), ("queue num 3", "lost")]
)
def test_nft_queue_hands_packets_to_user_space(netns: str, statement: str, expected: str) -> None:
    # No program listens on queue 3: with bypass the packet goes on, without it
    # the kernel drops it (the queue exists, it has nobody to take it).
    subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-f", "-"],
        input=f"""
table inet q {{
  chain out {{
    type filter hook output priority 0;
    udp dport 9999 {statement}
  }}
}}
""",
        text=True,
        check=True,
    )
    got = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", UDP_TO_SELF],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert got == expected
