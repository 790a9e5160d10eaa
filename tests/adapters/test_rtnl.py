"""rtnetlink parsing (pure) and dumps of this process's namespace (root)."""

from __future__ import annotations

import struct
import subprocess

import pytest

from appliance.adapters import rtnl
from appliance.adapters.netlink import nlattr


def link_message(index: int, name: str, kind: str, data: bytes, **attrs: bytes) -> bytes:
    body = struct.pack("=BxHiII", 0, 1, index, 0x1, 0)
    body += nlattr(rtnl.IFLA_IFNAME, name.encode() + b"\0")
    for number, value in attrs.items():
        body += nlattr(int(number[1:]), value)
    info = nlattr(rtnl.IFLA_INFO_KIND, kind.encode() + b"\0")
    info += nlattr(rtnl.IFLA_INFO_DATA | 0x8000, data)
    return body + nlattr(rtnl.IFLA_LINKINFO | 0x8000, info)


def test_vlan_and_vrf_data_are_read_by_their_kind() -> None:
    """IFLA_VLAN_ID and IFLA_VRF_TABLE are both attribute 1 of their kind's data."""
    vrf = rtnl.parse_link(
        link_message(7, "ap-vrf", "vrf", nlattr(rtnl.IFLA_VRF_TABLE, struct.pack("=I", 100)))
    )
    assert (vrf.index, vrf.name, vrf.kind, vrf.vrf_table, vrf.vlan_id) == (
        7,
        "ap-vrf",
        "vrf",
        100,
        None,
    )
    vlan = rtnl.parse_link(
        link_message(
            8,
            "ap-v",
            "vlan",
            nlattr(rtnl.IFLA_VLAN_ID, struct.pack("=H", 200)),
            a5=struct.pack("=i", 3),  # IFLA_LINK: the parent
            a10=struct.pack("=I", 7),  # IFLA_MASTER
            a20=b"appliance segment v\0",  # IFLA_IFALIAS
        )
    )
    assert (vlan.kind, vlan.vlan_id, vlan.vrf_table, vlan.link, vlan.master) == (
        "vlan",
        200,
        None,
        3,
        7,
    )
    assert vlan.alias == "appliance segment v" and vlan.flags & 0x1


@pytest.mark.root
def test_dumps_see_links_addresses_and_default_routes(netns: str) -> None:
    from appliance.adapters.nsexec import run_in_netns

    for command in (
        ["link", "add", "a0", "type", "veth", "peer", "name", "a1"],
        ["link", "set", "a0", "up"],
        ["link", "set", "a0", "alias", "appliance segment x"],
        ["addr", "add", "10.9.0.1/24", "dev", "a0"],
        ["-6", "addr", "add", "fd00:9::1/64", "dev", "a0", "nodad"],
        ["route", "add", "default", "via", "10.9.0.2", "dev", "a0"],
    ):
        subprocess.run(["ip", "-n", netns, *command], check=True)
    links, addresses, gateways = run_in_netns(netns, _dump_all)
    a0 = links["a0"]
    assert a0.kind == "veth" and a0.alias == "appliance segment x" and a0.flags & 0x1
    assert sorted(addresses[a0.index]) == ["10.9.0.1/24", "fd00:9::1/64"]
    assert gateways == ["10.9.0.2"]
    assert links["lo"].kind == ""


def _dump_all() -> tuple[dict[str, rtnl.RtLink], dict[int, list[str]], list[str]]:
    links = {link.name: link for link in rtnl.dump_links()}
    return links, rtnl.dump_addresses(), rtnl.dump_default_gateways(links["a0"].index)
