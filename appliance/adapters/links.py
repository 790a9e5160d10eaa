"""Segment links in the kernel: observe them over rtnetlink, carry out steps with pyroute2.

The adapter for :mod:`appliance.reconcile.segments`. Observing (at every reconcile of the
daemon) uses the standard library (:mod:`appliance.adapters.rtnl`); changes, which are rare,
run in a short-lived child that imports pyroute2, so the daemon never carries pyroute2's
memory. Work inside another namespace (the far end of a ``netns`` segment) happens in a child
that entered it: the daemon's own namespace never changes. Every failure is a KernelError of
one line naming the step.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Iterable
from typing import Any

from appliance.adapters import rtnl
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
_CHANGE_TIMEOUT = 120.0
_NAMESPACE_OPS = ("create_netns", "delete_netns")


def segment_links_present() -> bool:
    """Whether any link of this namespace carries a segment alias (one rtnetlink dump)."""
    return _any_ours(rtnl.dump_links())


def _any_ours(links: list[rtnl.RtLink]) -> bool:
    return any(segment_of_alias(link.alias) is not None for link in links)


class LinkBackend:
    """Segment links of the calling process's network namespace."""

    def observe(self, wanted: Iterable[DesiredSegment] = ()) -> ObservedLinks:
        wanted = list(wanted)
        raw = rtnl.dump_links()
        if not wanted and not _any_ours(raw):
            return ObservedLinks()  # no segments, none to remove
        links, foreign = _links(raw, rtnl.dump_addresses())
        namespaces = rtnl.namespaces()
        peers: dict[str, PeerState | None] = {}
        for desired in wanted:
            peer = desired.peer
            if peer is None or peer.netns not in namespaces or peer.netns in peers:
                continue
            peers[peer.netns] = _in_netns(peer.netns, _observe_peer, peer.name, peer.netns)
        return ObservedLinks(links, frozenset(foreign), namespaces, peers)

    def run(self, steps: list[Step]) -> list[Step]:
        """Carry out ``steps`` in order, in a child (pyroute2 stays out of this process);
        the steps done. SegmentStepError at the first failure (``done``: those before it)."""
        if not steps:
            return []
        from appliance.adapters.nsexec import run_in_netns

        try:
            index, reason = run_in_netns(None, _run_steps, steps, timeout=_CHANGE_TIMEOUT)
        except ApplianceError as exc:
            raise SegmentStepError(f"segment links: {exc}", []) from None
        if reason is not None:
            raise _failure(steps[index], reason, steps[:index])
        return list(steps)


def _failure(step: Step, reason: str, done: list[Step]) -> SegmentStepError:
    hint = ""
    if step.op == "create_link" and step.state is not None and "not supported" in reason:
        hint = f" (this kernel has no {step.state.kind} links: see `appliance probe`)"
    return SegmentStepError(f"{step.describe().lstrip('+-~ ')}: {reason}{hint}", done)


def _in_netns(netns: str, fn: Any, *args: Any) -> Any:
    from appliance.adapters.nsexec import run_in_netns

    try:
        return run_in_netns(netns, fn, *args, timeout=_CHILD_TIMEOUT)
    except ApplianceError as exc:
        raise KernelError(f"netns {netns}: {exc}") from None


# ---- observing ---------------------------------------------------------------------------


def _links(
    raw: list[rtnl.RtLink], addresses: dict[int, list[str]]
) -> tuple[dict[str, LinkState], set[str]]:
    names = {link.index: link.name for link in raw}
    ours: dict[str, LinkState] = {}
    foreign: set[str] = set()
    for link in raw:
        mark = segment_of_alias(link.alias)
        if mark is None:
            foreign.add(link.name)
            continue
        segment, netns, created = mark
        ours[link.name] = LinkState(
            link.name,
            link.kind,
            segment,
            parent=names.get(link.link) if link.kind == "vlan" else None,
            vlan_id=link.vlan_id,
            table=link.vrf_table,
            master=names.get(link.master) if link.master else None,
            addresses=frozenset(addresses.get(link.index, ())),
            up=bool(link.flags & IFF_UP),
            netns=netns,
            created_netns=created,
        )
    return ours, foreign


def _observe_peer(name: str, netns: str) -> PeerState | None:
    """Inside the namespace: the far end ``name``, if it is a veth."""
    for link in rtnl.dump_links():
        if link.name != name:
            continue
        if link.kind != "veth":
            return None
        return PeerState(
            netns,
            name,
            frozenset(rtnl.dump_addresses().get(link.index, ())),
            frozenset(rtnl.dump_default_gateways(link.index)),
            up=bool(link.flags & IFF_UP),
        )
    return None


# ---- doing -------------------------------------------------------------------------------


def _where(step: Step) -> str | None:
    """The namespace a step runs in (None: here). Namespaces are made and removed here."""
    return None if step.op in _NAMESPACE_OPS else step.netns


def _run_steps(steps: list[Step]) -> tuple[int, str | None]:
    """In a child, here: the steps in order, each run of steps inside one namespace in one
    grandchild that entered it; (index, reason) of the first that failed, or (len, None)."""
    i = 0
    while i < len(steps):
        where = _where(steps[i])
        j = i + 1
        while j < len(steps) and _where(steps[j]) == where:
            j += 1
        if where is None:
            failed = _run_batch(steps[i:j])
        else:
            try:
                failed = _in_netns(where, _run_batch, steps[i:j])
            except KernelError as exc:
                return i, str(exc)
        if failed is not None:
            return i + failed[0], failed[1]
        i = j
    return len(steps), None


def _run_batch(steps: list[Step]) -> tuple[int, str] | None:
    """The steps in order, on one netlink socket; (index, reason) of the first that failed."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        for i, step in enumerate(steps):
            try:
                _do(ipr, step)
            except NetlinkError as exc:
                return i, os.strerror(exc.code) or str(exc)
            except OSError as exc:
                return i, exc.strerror or str(exc)
            except KernelError as exc:
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
    if op == "create_netns":
        from pyroute2 import netns as pr_netns

        pr_netns.create(step.netns)
    elif op == "delete_netns":
        from pyroute2 import netns as pr_netns

        try:
            pr_netns.remove(step.netns)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
    elif op == "create_link":
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
