"""[protect] and the autoblock sets: invalid, spoofing, SYN flood, connection limit,
automatic blocks and never_block (real traffic, root)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from appliance.lab import netns, traffic
from tests.integration.labtools import Lab, probe, profile, wait_until

pytestmark = pytest.mark.root

PORT = 5000

OPEN_RULES = """
[[rules]]
name = "wan-to-mec"
from = "wan"
to = "mec"
proto = "tcp"
dport = [5000]
action = "accept"

[[rules]]
name = "lan-to-mec"
from = "lan"
to = "mec"
dport = [5000]
proto = "tcp"
action = "accept"
"""


@pytest.fixture(scope="module")
def servers(lab: Lab) -> Iterator[None]:
    with (
        traffic.serve(lab.ns("mec"), "both", [PORT, 5002]),
        traffic.serve(lab.ns("appliance"), "tcp", [PORT]),
    ):
        yield


def protect(body: str, rules: str = OPEN_RULES) -> str:
    return profile("protect", body + rules)


# -- invalid ---------------------------------------------------------------------------


def _syn_fin(src: str, dst: str, sport: int) -> bytes:
    from scapy.layers.inet import IP, TCP

    return bytes(IP(src=src, dst=dst) / TCP(sport=sport, dport=PORT, flags="SF", seq=1000))


def _seen_syn_fin(frames: list[traffic.Frame], sport: int) -> bool:
    from scapy.layers.inet import TCP
    from scapy.layers.l2 import Ether

    for frame in frames:
        packet = Ether(frame.data)
        if TCP in packet and packet[TCP].sport == sport and packet[TCP].flags == "SF":
            return True
    return False


@pytest.mark.parametrize(("invalid", "passes"), [("drop", False), ("accept", True)])
def test_invalid(lab: Lab, servers: None, invalid: str, passes: bool) -> None:
    # SYN+FIN together is a flag combination conntrack calls invalid.
    lab.apply(protect(f'[protect]\ninvalid = "{invalid}"\n'))
    sport = 40000 + (1 if passes else 2)
    with traffic.capture(lab.ns("mec"), "eth0") as cap:
        traffic.send_raw(lab.ns("wan"), _syn_fin("198.51.100.2", "10.45.0.10", sport))
        if passes:
            cap.wait_for(lambda frame: _seen_syn_fin([frame], sport), 10.0)
        # Valid traffic is untouched either way; sent after the SYN+FIN on the same path, its
        # arrival also tells that a SYN+FIN let through would have arrived by now.
        assert probe(lab, "wan", "mec", "tcp", PORT, expect="open") == "open"
    assert _seen_syn_fin(cap.frames, sport) is passes
    if not passes:
        assert lab.counter("ap_invalid") >= 1


# -- spoofing --------------------------------------------------------------------------

SPOOF_ZONES = """
version = 1
name = "{name}"

[zones.wan]
interfaces = ["eth0"]

[zones.lan]
interfaces = ["eth1"]
networks = ["192.168.10.0/24", "fd00:10::/64"]

[zones.mec]
interfaces = ["eth2"]
"""

LAN_ONLY = """
[[rules]]
name = "lan-to-mec-udp"
from = "lan"
to = "mec"
proto = "udp"
dport = [5002]
action = "accept"
"""


@pytest.fixture
def spoofed_sources(lab: Lab) -> Iterator[dict[int, str]]:
    """Lan addresses put on the wan host, so it can send with a lan source."""
    sources = {4: "192.168.10.99", 6: "fd00:10::99"}
    wan = lab.ns("wan")
    try:
        for family, address in sources.items():
            netns.add_address(wan, "eth0", f"{address}/{32 if family == 4 else 128}")
        yield sources
    finally:
        for family, address in sources.items():
            netns.del_address(wan, "eth0", f"{address}/{32 if family == 4 else 128}")


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("spoofing", [True, False])
def test_spoofing(
    lab: Lab, servers: None, spoofed_sources: dict[int, str], family: int, spoofing: bool
) -> None:
    # The lan zone is also defined by its networks: without the reverse-path check a wan
    # host sending from a lan address would be treated as the lan.
    lab.apply(
        profile(
            "spoofing",
            f"[protect]\nspoofing = {str(spoofing).lower()}\n" + LAN_ONLY,
            zones=SPOOF_ZONES,
        )
    )
    source = spoofed_sources[family]
    target = lab.addr("mec", family)
    with traffic.capture(lab.ns("mec"), "eth0") as cap:
        # The answer goes to the lan, not back to the spoofer: only the mec side tells.
        traffic.udp_probe(lab.ns("wan"), target, 5002, 0.5, source=source)
        if not spoofing:
            cap.wait_for(lambda frame: _udp_from([frame], source, 5002), 10.0)
        # The real lan host passes the check (and, answered after the spoofed datagram was
        # sent, tells that one let through would have arrived by now).
        assert probe(lab, "lan", "mec", "udp", 5002, family, expect="open") == "open"
    arrived = _udp_from(cap.frames, source, 5002)
    assert arrived is not spoofing
    if spoofing:
        assert lab.counter("ap_spoofing") >= 1


def _udp_from(frames: list[traffic.Frame], source: str, dport: int) -> bool:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    for frame in frames:
        packet = Ether(frame.data)
        if UDP not in packet or packet[UDP].dport != dport:
            continue
        for layer in (IP, IPv6):
            if layer in packet and packet[layer].src == source:
                return True
    return False


def test_spoofing_keeps_neighbour_discovery_and_self_traffic(lab: Lab, servers: None) -> None:
    lab.apply(
        protect(
            "[protect]\nspoofing = true\n",
            rules=OPEN_RULES
            + """
            [[rules]]
            name = "ping6-self"
            from = "any"
            to = "self"
            proto = "icmpv6"
            action = "accept"
            """.replace("            ", ""),
        )
    )
    for ns in ("lan", "appliance", "mec"):
        netns.flush_neighbours(lab.ns(ns))
    assert probe(lab, "lan", "mec", "tcp", PORT, 6, expect="open") == "open"
    assert probe(lab, "lan", "appliance", "icmp", 0, 6, expect="open") == "open"


# -- SYN flood -------------------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_syn_flood_is_limited_per_source(lab: Lab, servers: None, family: int) -> None:
    lab.apply(protect('[protect]\nsyn_flood = "5/second"\n'))
    time.sleep(1.0)
    target = lab.addr("mec", family)
    burst = traffic.tcp_connect_many(lab.ns("wan"), target, PORT, 40, 0.7)
    assert "open" in burst
    assert burst.count("timeout") >= 20, burst
    assert lab.counter("ap_syn_flood") >= 20
    # Per source: the lan host, right after the flood, is not affected.
    lan = traffic.tcp_connect_many(lab.ns("lan"), target, PORT, 3, 2.0)
    assert lan == ["open"] * 3
    # And the flooding source recovers once it slows down.
    time.sleep(1.5)
    assert probe(lab, "wan", "mec", "tcp", PORT, family, expect="open") == "open"


def test_syn_flood_applies_to_the_appliance_too(lab: Lab, servers: None) -> None:
    lab.apply(
        protect(
            '[protect]\nsyn_flood = "5/second"\n',
            rules="""
            [[rules]]
            name = "wan-to-self"
            from = "wan"
            to = "self"
            proto = "tcp"
            dport = [5000]
            action = "accept"
            """.replace("            ", ""),
        )
    )
    time.sleep(1.0)
    burst = traffic.tcp_connect_many(lab.ns("wan"), "198.51.100.1", PORT, 40, 0.7)
    assert "open" in burst
    assert burst.count("timeout") >= 20, burst


# -- connection limit ------------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_conn_limit_per_source(lab: Lab, servers: None, family: int) -> None:
    lab.apply(protect("[protect]\nconn_limit = 3\n"))
    target = lab.addr("mec", family)
    with traffic.connections(lab.ns("wan"), target, PORT, count=3, timeout=2.0) as held:
        assert held.outcomes == ["open"] * 3
        assert probe(lab, "wan", "mec", "tcp", PORT, family, expect="timeout") != "open"
        # Another source has its own count.
        assert probe(lab, "lan", "mec", "tcp", PORT, family, expect="open") == "open"
        # The held connections keep working.
        assert held.echo(2.0) == ["open"] * 3
    # Once they are closed, the source may connect again.
    assert wait_until(
        lambda: probe(lab, "wan", "mec", "tcp", PORT, family, expect="open") == "open", 5.0
    )


# -- autoblock and never_block ---------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "set_name", "element"),
    [(4, "autoblock_v4", "198.51.100.2"), (6, "autoblock_v6", "2001:db8:100::2")],
)
def test_autoblock_drops_even_established_and_expires(
    lab: Lab, servers: None, family: int, set_name: str, element: str
) -> None:
    lab.apply(protect('[protect]\nblock_timeout = "10m"\n'))
    target = lab.addr("mec", family)
    with traffic.connections(lab.ns("wan"), target, PORT, count=1, timeout=2.0) as conn:
        assert conn.echo(2.0) == ["open"]
        lab.set_add(set_name, element, timeout="3s")
        blocked_at = time.monotonic()
        try:
            assert conn.echo(0.7) == ["timeout"]  # established, and still dropped
            assert probe(lab, "wan", "mec", "tcp", PORT, family, expect="timeout") == "timeout"
            assert (
                probe(lab, "wan", "appliance", "tcp", PORT, family, toward="wan", expect="timeout")
                == "timeout"
            )
            # Others are not affected.
            assert probe(lab, "lan", "mec", "tcp", PORT, family, expect="open") == "open"
            assert lab.counter("ap_autoblock") >= 1
        except BaseException:
            lab.set_del(set_name, element)
            raise
        # The element times out by itself.
        time.sleep(max(0.0, 3.5 - (time.monotonic() - blocked_at)))
        assert probe(lab, "wan", "mec", "tcp", PORT, family, expect="open") == "open"
        assert conn.echo(5.0) == ["open"]  # the held connection resumes (retransmission)


def test_autoblock_members_survive_a_reapply(lab: Lab, servers: None) -> None:
    lab.apply(protect(""))
    lab.set_add("autoblock_v4", "198.51.100.2", timeout="30s")
    try:
        lab.apply(protect("[protect]\nconn_limit = 100\n"))
        assert "198.51.100.2" in lab.appliance("set", "list", "autoblock_v4").stdout
        assert probe(lab, "wan", "mec", "tcp", PORT, expect="timeout") == "timeout"
    finally:
        lab.set_del("autoblock_v4", "198.51.100.2")
    assert probe(lab, "wan", "mec", "tcp", PORT, expect="open") == "open"


NEVER_BLOCK = """
[sets.core_peers]
type = "ipv4_addr"
elements = ["198.51.100.2"]

[sets.blocklist]
type = "ipv4_addr"
interval = true
elements = ["198.51.100.0/24"]

[protect]
never_block = ["@core_peers", "2001:db8:100::2"]

[[rules]]
name = "blocklist-in"
from = "wan"
to = "any"
saddr = ["@blocklist"]
action = "drop"
"""


@pytest.mark.parametrize(
    ("family", "set_name", "element"),
    [(4, "autoblock_v4", "198.51.100.2"), (6, "autoblock_v6", "2001:db8:100::2")],
)
def test_never_block_is_exempt_from_automatic_blocks(
    lab: Lab, servers: None, family: int, set_name: str, element: str
) -> None:
    lab.apply(protect(NEVER_BLOCK))
    done = lab.appliance("set", "add", set_name, element, "--timeout", "5s", check=False)
    try:
        assert done.returncode in (0, 2), done.stderr
        assert probe(lab, "wan", "mec", "tcp", PORT, family, expect="open") == "open"
    finally:
        if done.returncode == 0:
            lab.set_del(set_name, element)


def test_never_block_is_exempt_from_set_drops(lab: Lab, servers: None) -> None:
    lab.apply(protect(NEVER_BLOCK))
    # 198.51.100.2 is in the blocklist's /24 and in never_block: it passes.
    assert probe(lab, "wan", "mec", "tcp", PORT, expect="open") == "open"
    # Without the exemption the same blocklist drops it.
    lab.apply(protect(NEVER_BLOCK.replace('never_block = ["@core_peers", ', "never_block = [")))
    assert probe(lab, "wan", "mec", "tcp", PORT, expect="timeout") == "timeout"
