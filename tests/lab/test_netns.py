"""Building and removing the lab in the kernel (root)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from appliance.lab import netns, topology, traffic

pytestmark = pytest.mark.root


def ip_json(ns: str, *args: str) -> Any:
    out = subprocess.run(
        ["ip", "-n", ns, "-j", *args], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out or "[]")


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout
    return {entry["name"] for entry in json.loads(out or "[]")}


def snapshot(lab: topology.Lab) -> dict[str, Any]:
    """Links (name, index, state), addresses and routes of every lab namespace."""
    state: dict[str, Any] = {}
    for ns in lab.namespaces:
        links = sorted(
            (link["ifname"], link["ifindex"], link["operstate"])
            for link in ip_json(ns.name, "link", "show")
        )
        addrs = sorted(
            (entry["ifname"], a["local"], a["prefixlen"])
            for entry in ip_json(ns.name, "addr", "show")
            for a in entry.get("addr_info", [])
            if a.get("scope") != "link"
        )
        routes = sorted(
            json.dumps(r, sort_keys=True)
            for fam in ("-4", "-6")
            for r in ip_json(ns.name, fam, "route", "show")
        )
        state[ns.name] = {"links": links, "addrs": addrs, "routes": routes}
    return state


def sysctl(ns: str, name: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "sysctl", "-n", name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_up_builds_the_topology(prefix: str) -> None:
    lab = netns.up(prefix)
    assert {ns.name for ns in lab.namespaces} <= namespaces()
    for ns in lab.namespaces:
        have = {
            (entry["ifname"], f"{a['local']}/{a['prefixlen']}")
            for entry in ip_json(ns.name, "addr", "show")
            for a in entry.get("addr_info", [])
        }
        for a in ns.addresses:
            assert (a.ifname, a.cidr) in have, (ns.name, a)
        assert ("lo", "127.0.0.1/8") in have
        links = {link["ifname"]: link for link in ip_json(ns.name, "link", "show")}
        for a in ns.addresses:
            assert links[a.ifname]["operstate"] == "UP"
        for r in ns.routes:
            fam = "-6" if r.family == 6 else "-4"
            routes = ip_json(ns.name, fam, "route", "show", "default")
            assert [(x["gateway"], x["dev"]) for x in routes] == [(r.gateway, r.ifname)]


def test_ipv6_addresses_are_usable_at_once(prefix: str) -> None:
    lab = netns.up(prefix)
    for ns in lab.namespaces:
        for entry in ip_json(ns.name, "-6", "addr", "show"):
            for a in entry.get("addr_info", []):
                assert not a.get("tentative"), (ns.name, a)


def test_appliance_forwards_and_has_no_kernel_rp_filter(prefix: str) -> None:
    lab = netns.up(prefix)
    ap = lab.ns("appliance")
    assert sysctl(ap, "net.ipv4.ip_forward") == "1"
    assert sysctl(ap, "net.ipv6.conf.all.forwarding") == "1"
    for name in ("all", "eth0", "eth1", "eth2"):
        assert sysctl(ap, f"net.ipv4.conf.{name}.rp_filter") == "0"
    assert sysctl(lab.ns("lan"), "net.ipv4.ip_forward") == "0"


def test_up_twice_changes_nothing(prefix: str) -> None:
    lab = netns.up(prefix)
    before = snapshot(lab)
    netns.up(prefix)
    assert snapshot(lab) == before


@pytest.mark.parametrize(
    "damage",
    [
        ["ip", "-n", "{p}lan", "link", "del", "eth0"],
        ["ip", "-n", "{p}appliance", "link", "del", "eth2"],
        ["ip", "-n", "{p}wan", "addr", "flush", "dev", "eth0"],
        ["ip", "-n", "{p}mec", "route", "del", "default"],
        ["ip", "-n", "{p}appliance", "link", "set", "eth1", "down"],
        ["ip", "netns", "del", "{p}lan"],
    ],
    ids=["host-link", "appliance-link", "addresses", "route", "link-down", "namespace"],
)
def test_up_repairs_a_half_built_lab(prefix: str, damage: list[str]) -> None:
    lab = netns.up(prefix)
    want = snapshot(lab)
    subprocess.run([part.format(p=prefix) for part in damage], check=True)
    if damage[1] != "netns":
        assert snapshot(lab) != want
    netns.up(prefix)
    repaired = snapshot(lab)
    # Re-created links get new indexes; everything else is as it was.
    for name, state in repaired.items():
        assert [(n, s) for n, _, s in state["links"]] == [(n, s) for n, _, s in want[name]["links"]]
        assert state["addrs"] == want[name]["addrs"]
        assert len(state["routes"]) == len(want[name]["routes"])
    assert traffic.ping(lab.ns("lan"), "10.45.0.10", 2.0) == "open"


def test_down_removes_everything(prefix: str) -> None:
    lab = netns.up(prefix)
    netns.down(prefix)
    assert not {ns.name for ns in lab.namespaces} & namespaces()
    assert netns.existing(prefix) == []


def test_down_is_quiet_when_nothing_is_there(prefix: str) -> None:
    netns.down(prefix)
    netns.down(prefix)
    lab = netns.up(prefix)
    subprocess.run(["ip", "netns", "del", lab.ns("mec")], check=True)
    netns.down(prefix)  # half a lab
    assert netns.existing(prefix) == []


def test_host_namespace_is_untouched(prefix: str) -> None:
    def host_state() -> tuple[str, str]:
        links = subprocess.run(
            ["ip", "-br", "link"], capture_output=True, text=True, check=True
        ).stdout
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            return links, f.read()

    before = host_state()
    netns.up(prefix)
    assert host_state() == before
    netns.down(prefix)
    assert host_state() == before


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("host", topology.HOST_ROLES)
def test_hosts_reach_the_appliance(lab: topology.Lab, host: topology.HostRole, family: int) -> None:
    addr = lab.addr("appliance", family, toward=host)
    assert traffic.ping(lab.ns(host), addr, 2.0) == "open"


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize(("src", "dst"), [("lan", "wan"), ("wan", "mec"), ("mec", "lan")])
def test_hosts_reach_each_other_through_the_appliance(
    lab: topology.Lab, src: topology.HostRole, dst: topology.HostRole, family: int
) -> None:
    assert traffic.ping(lab.ns(src), lab.addr(dst, family), 2.0) == "open"


def test_secondary_addresses(lab: topology.Lab) -> None:
    wan = lab.ns("wan")
    netns.add_address(wan, "eth0", "198.51.100.77/32")
    netns.add_address(wan, "eth0", "198.51.100.77/32")  # idempotent
    try:
        with traffic.serve(lab.ns("mec"), "udp", 7777) as server:
            outcome = traffic.udp_probe(wan, "10.45.0.10", 7777, 2.0, source="198.51.100.77")
            assert outcome == "open"
            assert server.peers() == ["198.51.100.77"]
    finally:
        netns.del_address(wan, "eth0", "198.51.100.77/32")
    addrs = {a["local"] for e in ip_json(wan, "addr", "show") for a in e.get("addr_info", [])}
    assert "198.51.100.77" not in addrs


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run(
        [sys.executable, "-m", "appliance", "lab", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_lab_up_and_down_commands(prefix: str) -> None:
    lab = topology.lab(prefix)
    assert run_cli("up", "--prefix", prefix).returncode == 0
    assert {ns.name for ns in lab.namespaces} <= namespaces()
    assert run_cli("up", "--prefix", prefix).returncode == 0
    assert traffic.ping(lab.ns("wan"), "fd00:45::10", 2.0) == "open"
    assert run_cli("down", "--prefix", prefix).returncode == 0
    assert run_cli("down", "--prefix", prefix).returncode == 0
    assert netns.existing(prefix) == []


def test_lab_command_refuses_a_bad_prefix() -> None:
    done = run_cli("up", "--prefix", "../etc")
    assert done.returncode == 2
    assert "prefix" in done.stderr
    assert "Traceback" not in done.stderr
