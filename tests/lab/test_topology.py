"""The lab's desired shape (pure: no kernel)."""

from __future__ import annotations

import pytest

from appliance.lab import topology

ADDRESSES = [
    # role, ifname, address/prefixlen
    ("appliance", "eth0", "198.51.100.1/24"),
    ("appliance", "eth0", "2001:db8:100::1/64"),
    ("appliance", "eth1", "192.168.10.1/24"),
    ("appliance", "eth1", "fd00:10::1/64"),
    ("appliance", "eth2", "10.45.0.1/24"),
    ("appliance", "eth2", "fd00:45::1/64"),
    ("wan", "eth0", "198.51.100.2/24"),
    ("wan", "eth0", "2001:db8:100::2/64"),
    ("lan", "eth0", "192.168.10.10/24"),
    ("lan", "eth0", "fd00:10::10/64"),
    ("mec", "eth0", "10.45.0.10/24"),
    ("mec", "eth0", "fd00:45::10/64"),
]


def test_namespace_names_carry_the_prefix() -> None:
    lab = topology.lab("t1-")
    assert [ns.name for ns in lab.namespaces] == ["t1-wan", "t1-appliance", "t1-lan", "t1-mec"]
    assert lab.ns("appliance") == "t1-appliance"


def test_default_prefix() -> None:
    assert topology.lab().ns("wan") == "lab-wan"
    assert topology.DEFAULT_PREFIX == "lab-"


def test_each_host_is_joined_to_the_appliance() -> None:
    lab = topology.lab()
    pairs = {(v.ns_a, v.ifname_a, v.ns_b, v.ifname_b) for v in lab.veths}
    assert pairs == {
        ("lab-appliance", "eth0", "lab-wan", "eth0"),
        ("lab-appliance", "eth1", "lab-lan", "eth0"),
        ("lab-appliance", "eth2", "lab-mec", "eth0"),
    }


@pytest.mark.parametrize(("role", "ifname", "cidr"), ADDRESSES)
def test_addresses(role: topology.Role, ifname: str, cidr: str) -> None:
    ns = topology.lab().namespace(role)
    assert cidr in {a.cidr for a in ns.addresses if a.ifname == ifname}


def test_no_other_addresses() -> None:
    lab = topology.lab()
    every = {(ns.role, a.ifname, a.cidr) for ns in lab.namespaces for a in ns.addresses}
    assert every == set(ADDRESSES)


@pytest.mark.parametrize(
    ("role", "v4", "v6"),
    [
        ("wan", "198.51.100.1", "2001:db8:100::1"),
        ("lan", "192.168.10.1", "fd00:10::1"),
        ("mec", "10.45.0.1", "fd00:45::1"),
    ],
)
def test_hosts_route_everything_through_the_appliance(
    role: topology.HostRole, v4: str, v6: str
) -> None:
    ns = topology.lab().namespace(role)
    assert {(r.family, r.gateway, r.ifname) for r in ns.routes} == {
        (4, v4, "eth0"),
        (6, v6, "eth0"),
    }


def test_the_appliance_forwards_without_kernel_reverse_path_filter() -> None:
    sysctls = dict(topology.lab().namespace("appliance").sysctls)
    assert sysctls["net/ipv4/ip_forward"] == "1"
    assert sysctls["net/ipv6/conf/all/forwarding"] == "1"
    for name in ("all", "default", "eth0", "eth1", "eth2"):
        assert sysctls[f"net/ipv4/conf/{name}/rp_filter"] == "0"
    assert topology.lab().namespace("appliance").routes == ()


def test_hosts_do_not_forward() -> None:
    for role in topology.HOST_ROLES:
        sysctls = dict(topology.lab().namespace(role).sysctls)
        assert sysctls["net/ipv4/ip_forward"] == "0"  # whatever the machine's setting


def test_addr_helper() -> None:
    lab = topology.lab()
    assert lab.addr("lan") == "192.168.10.10"
    assert lab.addr("mec", 6) == "fd00:45::10"
    assert lab.addr("appliance", 4, toward="wan") == "198.51.100.1"
    assert lab.addr("appliance", 6, toward="mec") == "fd00:45::1"
    with pytest.raises(ValueError):
        lab.addr("appliance")


def test_appliance_ifnames() -> None:
    assert [topology.appliance_ifname(h) for h in topology.HOST_ROLES] == ["eth0", "eth1", "eth2"]


@pytest.mark.parametrize("prefix", ["", "a/b", "../x", ".hidden", "x" * 33, "sp ace"])
def test_bad_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError):
        topology.lab(prefix)


def test_address_family() -> None:
    assert topology.Address("eth0", "10.0.0.1", 8).family == 4
    assert topology.Address("eth0", "fd00::1", 64).family == 6
    assert topology.Route("fd00::1", "eth0").family == 6
