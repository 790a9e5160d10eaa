"""Segment links in the kernel, with netlink (pyroute2): observe them, carry out steps.

The adapter for :mod:`appliance.reconcile.segments`. Work inside another namespace (the far
end of a ``netns`` segment) happens in a short-lived child that entered it, so the daemon's
own namespace never changes. Every failure is a KernelError of one line naming the segment
and the step.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterable
from typing import Any

from appliance.adapters.capture import NLMSG_DONE, NLMSG_ERROR, ack_error, iter_attrs
from appliance.adapters.capture import iter_messages as iter_netlink
from appliance.errors import ApplianceError, KernelError
from appliance.reconcile.segments import (
    DesiredSegment,
    LinkState,
    ObservedLinks,
    PeerState,
    SegmentStepError,
    Step,
    alias_of,
    segment_of_alias,
)

IFF_UP = 0x1
IFA_F_NODAD = 0x02
_CHILD_TIMEOUT = 30.0
RTM_NEWLINK = 16
RTM_GETLINK = 18
IFLA_IFALIAS = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300


def segment_links_present() -> bool:
    """Whether any link of this namespace carries a segment alias: one RTM_GETLINK dump on
    a plain netlink socket (a millisecond; pyroute2 is imported only when there is work)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(5.0)
        body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0)
        header = struct.pack(
            "=IHHII", 16 + len(body), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
        )
        sock.sendall(header + body)
        found = False
        while True:
            data = sock.recv(1 << 16)
            for kind, _seq, message in iter_netlink(data):
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    raise KernelError(f"listing links: {os.strerror(ack_error(message))}")
                if kind != RTM_NEWLINK:
                    continue
                for attr, value in iter_attrs(message, 16):
                    if attr == IFLA_IFALIAS:
                        alias = value.rstrip(b"\0").decode("utf-8", "replace")
                        found = found or segment_of_alias(alias) is not None


class LinkBackend:
    """Segment links of the calling process's network namespace."""

    def observe(self, wanted: Iterable[DesiredSegment] = ()) -> ObservedLinks:
        wanted = list(wanted)
        if not wanted and not segment_links_present():
            return ObservedLinks()  # no segments, none to remove: no pyroute2 at all
        from pyroute2 import IPRoute
        from pyroute2 import netns as pr_netns

        try:
            namespaces = frozenset(pr_netns.listnetns())
        except OSError:
            namespaces = frozenset()
        with IPRoute() as ipr:
            links, foreign = _links(ipr)
        peers: dict[str, PeerState | None] = {}
        for desired in wanted:
            peer = desired.peer
            if peer is None or peer.netns not in namespaces or peer.netns in peers:
                continue
            peers[peer.netns] = _in_netns(peer.netns, _observe_peer, peer.name, peer.netns)
        return ObservedLinks(links, frozenset(foreign), namespaces, peers)

    def run(self, steps: list[Step]) -> list[Step]:
        """Carry out ``steps`` in order; the steps done (KernelError at the first failure,
        whose ``done`` attribute lists the steps done before it)."""
        done: list[Step] = []
        i = 0
        while i < len(steps):
            step = steps[i]
            if step.netns is not None and step.op not in ("create_netns", "delete_netns"):
                # a run of steps inside one namespace: one child for all of them
                j = i
                while (
                    j < len(steps)
                    and steps[j].netns == step.netns
                    and steps[j].op
                    not in (
                        "create_netns",
                        "delete_netns",
                    )
                ):
                    j += 1
                batch = steps[i:j]
                failed = _in_netns(step.netns, _run_batch, batch)
                if failed is not None:
                    index, message = failed
                    raise _failure(batch[index], message, done + batch[:index])
                done += batch
                i = j
                continue
            from pyroute2.netlink.exceptions import NetlinkError

            try:
                _run_here(step)
            except NetlinkError as exc:
                raise _failure(step, os.strerror(exc.code) or str(exc), done) from None
            except OSError as exc:
                raise _failure(step, exc.strerror or str(exc), done) from None
            done.append(step)
            i += 1
        return done


def _failure(step: Step, reason: str, done: list[Step]) -> SegmentStepError:
    hint = ""
    if step.op == "create_link" and step.state is not None and "not supported" in reason:
        hint = f" (this kernel has no {step.state.kind} links: see `appliance probe`)"
    return SegmentStepError(f"{step.describe().lstrip('+-~ ')}: {reason}{hint}", done)


def _in_netns(netns: str, fn: Any, *args: Any) -> Any:
    from appliance.lab.nsexec import run_in_netns

    try:
        return run_in_netns(netns, fn, *args, timeout=_CHILD_TIMEOUT)
    except ApplianceError as exc:
        raise KernelError(f"netns {netns}: {exc}") from None


# ---- observing ---------------------------------------------------------------------------


def _links(ipr: Any) -> tuple[dict[str, LinkState], set[str]]:
    raw = ipr.get_links()
    names = {msg["index"]: msg.get_attr("IFLA_IFNAME") for msg in raw}
    addresses = _addresses(ipr, names)
    ours: dict[str, LinkState] = {}
    foreign: set[str] = set()
    for msg in raw:
        name = names[msg["index"]]
        mark = segment_of_alias(msg.get_attr("IFLA_IFALIAS"))
        if mark is None:
            foreign.add(name)
            continue
        segment, netns, created = mark
        kind, vlan_id, table = "", None, None
        info = msg.get_attr("IFLA_LINKINFO")
        if info is not None:
            kind = str(info.get_attr("IFLA_INFO_KIND") or "")
            data = info.get_attr("IFLA_INFO_DATA")
            if data is not None and kind == "vlan":
                vlan_id = data.get_attr("IFLA_VLAN_ID")
            elif data is not None and kind == "vrf":
                table = data.get_attr("IFLA_VRF_TABLE")
        parent = names.get(msg.get_attr("IFLA_LINK")) if kind == "vlan" else None
        master = names.get(msg.get_attr("IFLA_MASTER")) if msg.get_attr("IFLA_MASTER") else None
        ours[name] = LinkState(
            name,
            kind,
            segment,
            parent=parent,
            vlan_id=vlan_id,
            table=table,
            master=master,
            addresses=frozenset(addresses.get(msg["index"], ())),
            up=bool(msg["flags"] & IFF_UP),
            netns=netns,
            created_netns=created,
        )
    return ours, foreign


def _addresses(ipr: Any, names: dict[int, str]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for msg in ipr.get_addr():
        address = msg.get_attr("IFA_ADDRESS")
        if address is None or msg["index"] not in names:
            continue
        if ipaddress.ip_address(address).is_link_local:
            continue
        found.setdefault(msg["index"], []).append(f"{address}/{msg['prefixlen']}")
    return {
        index: [str(ipaddress.ip_interface(a)) for a in items] for index, items in found.items()
    }


def _observe_peer(name: str, netns: str) -> PeerState | None:
    """Inside the namespace: the far end ``name``, if it is a veth."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return None
        (msg,) = ipr.get_links(found[0])
        info = msg.get_attr("IFLA_LINKINFO")
        if info is None or info.get_attr("IFLA_INFO_KIND") != "veth":
            return None
        index = msg["index"]
        addresses = _addresses(ipr, {index: name}).get(index, [])
        gateways: list[str] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for route in ipr.get_routes(family=family, oif=index):
                if route["dst_len"] == 0 and route.get_attr("RTA_GATEWAY"):
                    gateways.append(str(route.get_attr("RTA_GATEWAY")))
        return PeerState(
            netns,
            name,
            frozenset(addresses),
            frozenset(gateways),
            up=bool(msg["flags"] & IFF_UP),
        )


# ---- doing -------------------------------------------------------------------------------


def _run_here(step: Step) -> None:
    from pyroute2 import IPRoute
    from pyroute2 import netns as pr_netns

    if step.op == "create_netns":
        assert step.netns is not None
        pr_netns.create(step.netns)
        return
    if step.op == "delete_netns":
        assert step.netns is not None
        try:
            pr_netns.remove(step.netns)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        return
    with IPRoute() as ipr:
        _do(ipr, step)


def _run_batch(steps: list[Step]) -> tuple[int, str] | None:
    """Inside a namespace: the steps in order; (index, reason) of the first that failed."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        for i, step in enumerate(steps):
            try:
                _do(ipr, step)
            except NetlinkError as exc:
                return i, os.strerror(exc.code) or str(exc)
            except (OSError, KernelError) as exc:
                return i, str(exc)
    return None


def _index(ipr: Any, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise KernelError(f"no link {name}")
    return int(found[0])


def _do(ipr: Any, step: Step) -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    op = step.op
    if op == "create_link":
        _create(ipr, step)
    elif op == "delete_link":
        found = ipr.link_lookup(ifname=step.link)
        if found:
            try:
                ipr.link("del", index=found[0])
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise
    elif op == "set_master":
        master = _index(ipr, step.value) if step.value else 0
        ipr.link("set", index=_index(ipr, step.link), master=master)
    elif op == "set_up":
        index = _index(ipr, step.link)
        try:
            ipr.link("set", index=index, state="up")
        except NetlinkError as exc:
            if exc.code != errno.ENETDOWN:
                raise
            # A VLAN comes up only on a parent that is up: the profile names the parent,
            # so it is brought up too (never taken down again by the appliance).
            (msg,) = ipr.get_links(index)
            ipr.link("set", index=msg.get_attr("IFLA_LINK"), state="up")
            ipr.link("set", index=index, state="up")
        _promote_secondaries(step.link)
        if step.netns is not None:  # the far end of a netns segment: its loopback too
            lo = ipr.link_lookup(ifname="lo")
            if lo:
                ipr.link("set", index=lo[0], state="up")
    elif op in ("add_address", "del_address"):
        iface = ipaddress.ip_interface(step.value)
        index = _index(ipr, step.link)
        kw: dict[str, Any] = {
            "index": index,
            "address": str(iface.ip),
            "prefixlen": iface.network.prefixlen,
            "family": socket.AF_INET6 if iface.version == 6 else socket.AF_INET,
        }
        if op == "add_address":
            if iface.version == 6:
                kw["flags"] = IFA_F_NODAD
            try:
                ipr.addr("add", **kw)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
        else:
            try:
                ipr.addr("del", **kw)
            except NetlinkError as exc:
                if exc.code not in (errno.EADDRNOTAVAIL, errno.ENOENT):
                    raise
    elif op in ("add_route", "del_route"):
        gateway = ipaddress.ip_address(step.value)
        family = socket.AF_INET6 if gateway.version == 6 else socket.AF_INET
        dst = "::/0" if gateway.version == 6 else "0.0.0.0/0"
        command = "replace" if op == "add_route" else "del"
        try:
            ipr.route(
                command,
                dst=dst,
                gateway=str(gateway),
                oif=_index(ipr, step.link),
                family=family,
            )
        except NetlinkError as exc:
            if op == "add_route" or exc.code != errno.ESRCH:
                raise
    else:  # pragma: no cover - the planner makes no other steps
        raise KernelError(f"unknown step {op}")


def _promote_secondaries(ifname: str) -> None:
    """Removing a link's primary IPv4 address removes the others of its subnet too, unless
    they are promoted: an address replaced by another of the same subnet (added first,
    removed after the table) must survive. /proc/sys/net is that of this namespace."""
    path = f"/proc/sys/net/ipv4/conf/{ifname}/promote_secondaries"
    try:
        with open(path, "w") as handle:
            handle.write("1")
    except OSError:
        pass  # read-only /proc/sys: a replaced address comes back at the next repair


def _create(ipr: Any, step: Step) -> None:
    state = step.state
    assert state is not None
    if state.kind == "vlan":
        ipr.link(
            "add",
            ifname=state.name,
            kind="vlan",
            link=_index(ipr, state.parent or ""),
            vlan_id=state.vlan_id,
        )
    elif state.kind == "vrf":
        ipr.link("add", ifname=state.name, kind="vrf", vrf_table=state.table)
    else:
        peer = step.peer
        assert peer is not None
        ipr.link(
            "add",
            ifname=state.name,
            kind="veth",
            peer={"ifname": peer.name, "net_ns_fd": peer.netns},
        )
    alias = alias_of(state.segment, state.netns, state.created_netns)
    ipr.link("set", index=_index(ipr, state.name), ifalias=alias)
