"""Named sets in rules, port lists and ranges, and run-time set changes (real traffic, root)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.lab import traffic
from tests.integration.labtools import Lab, probe, profile

pytestmark = pytest.mark.root

PORTS = [5000, 5001, 5005, 5999, 6000, 6005, 6010, 6011]


@pytest.fixture(scope="module")
def servers(lab: Lab) -> Iterator[None]:
    with (
        traffic.serve(lab.ns("wan"), "both", PORTS),
        traffic.serve(lab.ns("lan"), "both", PORTS),
        traffic.serve(lab.ns("mec"), "both", PORTS),
    ):
        yield


@pytest.mark.parametrize("family", [4, 6])
def test_saddr_set(lab: Lab, servers: None, family: int) -> None:
    lab.apply(
        profile(
            "saddr-set",
            """
            [sets.partners]
            type = "ipv4_addr"
            elements = ["198.51.100.2"]

            [sets.partners_v6]
            type = "ipv6_addr"
            elements = ["2001:db8:100::2"]

            [[rules]]
            name = "partners-to-mec"
            from = "any"
            to = "mec"
            proto = "tcp"
            saddr = ["@partners", "@partners_v6"]
            dport = [5000]
            action = "accept"
            """,
        )
    )
    assert probe(lab, "wan", "mec", "tcp", 5000, family, expect="open") == "open"
    assert probe(lab, "lan", "mec", "tcp", 5000, family, expect="timeout") == "timeout"


@pytest.mark.parametrize("family", [4, 6])
def test_daddr_interval_set(lab: Lab, servers: None, family: int) -> None:
    lab.apply(
        profile(
            "daddr-set",
            """
            [sets.servers]
            type = "ipv4_addr"
            interval = true
            elements = ["10.45.0.0/28"]

            [sets.servers_v6]
            type = "ipv6_addr"
            interval = true
            elements = ["fd00:45::/120"]

            [[rules]]
            name = "lan-to-servers"
            from = "lan"
            to = "any"
            proto = "udp"
            daddr = ["@servers", "@servers_v6"]
            dport = [5000]
            action = "accept"
            """,
        )
    )
    assert probe(lab, "lan", "mec", "udp", 5000, family, expect="open") == "open"
    assert probe(lab, "lan", "wan", "udp", 5000, family, expect="timeout") == "timeout"


def test_dport_set_and_literal_addresses(lab: Lab, servers: None) -> None:
    lab.apply(
        profile(
            "dport-set",
            """
            [sets.app_ports]
            type = "inet_service"
            elements = ["5000", "5005"]

            [[rules]]
            name = "wan-to-app-ports"
            from = "wan"
            to = "mec"
            proto = "tcp"
            daddr = ["10.45.0.10", "fd00:45::10"]
            dport = ["@app_ports"]
            action = "accept"
            """,
        )
    )
    for family in (4, 6):
        assert probe(lab, "wan", "mec", "tcp", 5000, family, expect="open") == "open"
        assert probe(lab, "wan", "mec", "tcp", 5005, family, expect="open") == "open"
        assert probe(lab, "wan", "mec", "tcp", 5001, family, expect="timeout") == "timeout"


def test_port_ranges_and_lists(lab: Lab, servers: None) -> None:
    lab.apply(
        profile(
            "port-range",
            """
            [[rules]]
            name = "range"
            from = "lan"
            to = "wan"
            proto = "tcp"
            dport = [5005, "6000-6010"]
            action = "accept"

            [[rules]]
            name = "sport-range"
            from = "wan"
            to = "mec"
            proto = "udp"
            sport = ["1-1023"]
            action = "accept"
            """,
        )
    )
    for port, want in [
        (5005, "open"),
        (5999, "timeout"),
        (6000, "open"),
        (6005, "open"),
        (6010, "open"),
        (6011, "timeout"),
    ]:
        assert probe(lab, "lan", "wan", "tcp", port, expect=want) == want, port
    # sport: an ephemeral source port is above 1023 and does not match; a low one does.
    assert probe(lab, "wan", "mec", "udp", 5000, expect="timeout") == "timeout"
    assert traffic.udp_probe(lab.ns("wan"), "10.45.0.10", 5000, 3.0, sport=999) == "open"
    assert traffic.udp_probe(lab.ns("wan"), "10.45.0.10", 5000, 0.7, sport=1024) == "timeout"


BLOCKLIST = """
[sets.blocklist]
type = "ipv4_addr"
interval = true

[sets.blocklist_v6]
type = "ipv6_addr"
interval = true

[[rules]]
name = "blocklist-in"
from = "wan"
to = "any"
saddr = ["@blocklist", "@blocklist_v6"]
action = "drop"

[[rules]]
name = "wan-to-mec"
from = "wan"
to = "mec"
proto = "tcp"
dport = [5000]
action = "accept"
"""


@pytest.mark.parametrize(
    ("family", "set_name", "element"),
    [(4, "blocklist", "198.51.100.2"), (6, "blocklist_v6", "2001:db8:100::/64")],
)
def test_set_add_takes_effect_live(
    lab: Lab, servers: None, family: int, set_name: str, element: str
) -> None:
    lab.apply(profile("blocklist", BLOCKLIST))
    handles_before = lab.nft("-a", "list", "chain", "inet", "appliance", "forward")
    assert probe(lab, "wan", "mec", "tcp", 5000, family, expect="open") == "open"
    lab.set_add(set_name, element)
    try:
        assert element in lab.appliance("set", "list", set_name).stdout
        assert probe(lab, "wan", "mec", "tcp", 5000, family, expect="timeout") == "timeout"
        # Only the set changed: same rules, same handles.
        handles_after = lab.nft("-a", "list", "chain", "inet", "appliance", "forward")
        assert _strip_counters(handles_after) == _strip_counters(handles_before)
    finally:
        lab.set_del(set_name, element)
    assert probe(lab, "wan", "mec", "tcp", 5000, family, expect="open") == "open"


def test_set_add_refuses_wrong_family_and_unknown_set(lab: Lab, servers: None) -> None:
    lab.apply(profile("blocklist", BLOCKLIST))
    assert lab.appliance("set", "add", "blocklist", "2001:db8::1", check=False).returncode == 2
    assert lab.appliance("set", "add", "no_such_set", "192.0.2.1", check=False).returncode == 2


def test_profile_elements_are_loaded(lab: Lab, servers: None) -> None:
    lab.apply(
        profile(
            "elements",
            """
            [sets.blocked]
            type = "ipv4_addr"
            interval = true
            elements = ["198.51.100.0/30"]

            [[rules]]
            name = "blocked-reject"
            from = "any"
            to = "any"
            saddr = ["@blocked"]
            action = "reject"

            [[rules]]
            name = "to-mec"
            from = "any"
            to = "mec"
            proto = "tcp"
            dport = [5000]
            action = "accept"
            """,
        )
    )
    assert probe(lab, "wan", "mec", "tcp", 5000, expect="refused") == "refused"
    assert probe(lab, "lan", "mec", "tcp", 5000, expect="open") == "open"


def _strip_counters(text: str) -> str:
    import re

    return re.sub(r"packets \d+ bytes \d+", "", text)


def _blocklist_profile(folder: Path, name: str, elements: list[str]) -> str:
    listing = folder / f"{name}.txt"
    listing.write_text("".join(f"{e}\n" for e in elements))
    return profile(
        name,
        f"""
        [sets.feed]
        type = "ipv4_addr"
        size = 262144
        elements_file = "{listing}"

        [[rules]]
        name = "drop-feed"
        from = "any"
        to = "any"
        saddr = ["@feed"]
        action = "drop"

        [[rules]]
        name = "lan-to-wan"
        from = "lan"
        to = "wan"
        proto = "tcp"
        dport = [5000]
        action = "accept"
        """,
    )


def test_an_established_connection_survives_a_100k_element_delta(
    lab: Lab, servers: None, tmp_path: Path
) -> None:
    """A set of 100k elements (100.64.0.0/10, no lab address) loses 50k and gains 50k in
    one apply while a TCP connection through the appliance is held: it still echoes."""
    hosts = [f"100.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}" for i in range(150_000)]
    lab.apply(_blocklist_profile(tmp_path, "feed-a", hosts[:100_000]))
    wan = lab.addr("wan")
    with traffic.connections(lab.ns("lan"), wan, 5000, count=1, timeout=5.0) as held:
        assert held.outcomes == ["open"]
        assert held.echo(timeout=5.0) == ["open"]
        lab.apply(_blocklist_profile(tmp_path, "feed-b", hosts[50_000:]))
        assert held.echo(timeout=5.0) == ["open"]
    listed = json.loads(lab.nft("-j", "list", "set", "inet", "appliance", "feed"))
    body = next(obj["set"] for obj in listed["nftables"] if "set" in obj)
    texts = {e["elem"]["val"] if isinstance(e, dict) else e for e in body["elem"]}
    assert texts == set(hosts[50_000:])
