"""Read links, addresses and routes over rtnetlink with the standard library only.

Reading is what the daemon does at every reconcile; a plain netlink socket and a dump cost a
millisecond and no memory, where importing pyroute2 costs a few hundred milliseconds and
about 11 MiB for the life of the process. Changes (rare) go through pyroute2, in a child
(:mod:`appliance.adapters.links`).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from appliance.adapters.netlink import (
    IFINFOMSG,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    dump_answers,
    iter_attrs,
    nlmsg,
)
from appliance.errors import KernelError

RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26

IFLA_IFNAME, IFLA_LINK, IFLA_MASTER, IFLA_LINKINFO, IFLA_IFALIAS = 3, 5, 10, 18, 20
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_VLAN_ID = 1
IFLA_VRF_TABLE = 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_OIF, RTA_GATEWAY, RTA_TABLE = 4, 5, 15
RT_TABLE_MAIN = 254

_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, proto, scope, type
NETNS_RUN_DIR = "/run/netns"


@dataclass(frozen=True)
class RtLink:
    """A link as the kernel describes it over rtnetlink."""

    index: int
    name: str
    flags: int
    alias: str | None = None
    link: int = 0  # IFLA_LINK: a VLAN's parent
    master: int = 0
    kind: str = ""
    vlan_id: int | None = None
    vrf_table: int | None = None


def _dump(kind: int, body: bytes) -> Iterator[tuple[int, bytes]]:
    """(message type, body) of every answer to one dump request."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(5.0)
        try:
            request = nlmsg(kind, NLM_F_REQUEST | NLM_F_DUMP, 1, body)
            yield from dump_answers(sock, request, 1)
        except OSError as exc:
            raise KernelError(f"rtnetlink dump: {exc.strerror or exc}") from None


def _text(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode("utf-8", "replace")


def dump_links() -> list[RtLink]:
    links: list[RtLink] = []
    for msg_type, message in _dump(RTM_GETLINK, IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
        if msg_type == RTM_NEWLINK and len(message) >= IFINFOMSG.size:
            links.append(parse_link(message))
    return links


def parse_link(message: bytes) -> RtLink:
    """One RTM_NEWLINK body (ifinfomsg and its attributes)."""
    _family, _type, index, flags, _change = IFINFOMSG.unpack_from(message)
    name, alias, link, master, kind = "", None, 0, 0, ""
    vlan_id: int | None = None
    vrf_table: int | None = None
    for attr, value in iter_attrs(message, IFINFOMSG.size):
        if attr == IFLA_IFNAME:
            name = _text(value)
        elif attr == IFLA_IFALIAS:
            alias = _text(value)
        elif attr == IFLA_LINK and len(value) >= 4:
            link = struct.unpack_from("=i", value)[0]
        elif attr == IFLA_MASTER and len(value) >= 4:
            master = struct.unpack_from("=I", value)[0]
        elif attr == IFLA_LINKINFO:
            for info, info_value in iter_attrs(value):
                if info == IFLA_INFO_KIND:
                    kind = _text(info_value)
                elif info == IFLA_INFO_DATA:
                    # the kind comes first; the data's attribute numbers are the kind's own
                    for data, data_value in iter_attrs(info_value):
                        if kind == "vlan" and data == IFLA_VLAN_ID and len(data_value) >= 2:
                            vlan_id = struct.unpack_from("=H", data_value)[0]
                        elif kind == "vrf" and data == IFLA_VRF_TABLE and len(data_value) >= 4:
                            vrf_table = struct.unpack_from("=I", data_value)[0]
    return RtLink(index, name, flags, alias, link, master, kind, vlan_id, vrf_table)


def dump_addresses() -> dict[int, list[str]]:
    """Interface index -> its addresses (``addr/len``), link-local ones left out."""
    found: dict[int, list[str]] = {}
    for msg_type, message in _dump(RTM_GETADDR, _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
        if msg_type != RTM_NEWADDR or len(message) < _IFADDRMSG.size:
            continue
        family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(message)
        values: dict[int, bytes] = dict(iter_attrs(message, _IFADDRMSG.size))
        raw = values.get(IFA_LOCAL if family == socket.AF_INET else IFA_ADDRESS)
        if raw is None:
            raw = values.get(IFA_ADDRESS)
        if raw is None or family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(raw)
        if address.is_link_local:
            continue
        found.setdefault(index, []).append(f"{address.compressed}/{prefixlen}")
    return found


def dump_default_gateways(oif: int) -> list[str]:
    """Next hops of the main table's default routes out of interface ``oif``."""
    gateways: list[str] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        for msg_type, message in _dump(RTM_GETROUTE, body):
            if msg_type != RTM_NEWROUTE or len(message) < _RTMSG.size:
                continue
            _fam, dst_len, _src, _tos, table, _proto, _scope, _type, _flags = _RTMSG.unpack_from(
                message
            )
            if dst_len != 0:
                continue
            values: dict[int, bytes] = dict(iter_attrs(message, _RTMSG.size))
            if RTA_TABLE in values:
                table = struct.unpack_from("=I", values[RTA_TABLE])[0]
            out = values.get(RTA_OIF)
            if table != RT_TABLE_MAIN or out is None or struct.unpack_from("=I", out)[0] != oif:
                continue
            if RTA_GATEWAY in values:
                gateways.append(ipaddress.ip_address(values[RTA_GATEWAY]).compressed)
    return gateways


def namespaces() -> frozenset[str]:
    """The named network namespaces (``ip netns``)."""
    try:
        return frozenset(os.listdir(NETNS_RUN_DIR))
    except OSError:
        return frozenset()
