"""Build and remove the lab with netlink (pyroute2). The adapter for ``topology``.

``up`` converges: it creates what is missing and repairs what is half built, so running it
twice, or after an interrupted run, leaves the same lab. ``down`` removes the namespaces of
the lab (and with them their links) and says nothing if there is nothing to remove.
Everything inside a namespace is done by a child process that has entered it
(:mod:`appliance.lab.nsexec`); the caller's own namespace is never changed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError

from appliance.adapters.nsexec import ChildError, run_in_netns
from appliance.errors import ApplianceError
from appliance.lab import topology

IFA_F_NODAD = 0x02
_STEP_TIMEOUT = 30.0
_OPER_UP_WAIT = 5.0


class LabError(ApplianceError):
    """The lab cannot be set up or taken down: a link is missing or does not come up."""


def existing(prefix: str = topology.DEFAULT_PREFIX) -> list[str]:
    """The lab namespaces of ``prefix`` that exist now."""
    present = set(pr_netns.listnetns())
    return [ns.name for ns in topology.lab(prefix).namespaces if ns.name in present]


def up(prefix: str = topology.DEFAULT_PREFIX) -> topology.Lab:
    """Create (or repair) the lab of ``prefix``; returns its description."""
    lab = topology.lab(prefix)
    present = set(pr_netns.listnetns())
    for ns in lab.namespaces:
        if ns.name not in present:
            pr_netns.create(ns.name)
    for veth in lab.veths:
        kind_a = run_in_netns(veth.ns_a, _link_kind, veth.ifname_a, timeout=_STEP_TIMEOUT)
        kind_b = run_in_netns(veth.ns_b, _link_kind, veth.ifname_b, timeout=_STEP_TIMEOUT)
        if kind_a == "veth" and kind_b == "veth":
            continue
        # Half a pair, or something else under the name: start this pair over.
        run_in_netns(veth.ns_a, _delete_links, [veth.ifname_a], timeout=_STEP_TIMEOUT)
        run_in_netns(veth.ns_b, _delete_links, [veth.ifname_b], timeout=_STEP_TIMEOUT)
        run_in_netns(veth.ns_a, _add_veth, veth, timeout=_STEP_TIMEOUT)
    for ns in lab.namespaces:
        run_in_netns(ns.name, _configure, ns, timeout=_STEP_TIMEOUT)
    # The kernel activates a link's queue only when it notices the carrier, up to a second
    # later; packets sent before that are lost. Wait for every link to be operationally up.
    for ns in lab.namespaces:
        ifnames = sorted({a.ifname for a in ns.addresses})
        run_in_netns(ns.name, _wait_oper_up, ifnames, _OPER_UP_WAIT, timeout=_STEP_TIMEOUT)
    return lab


def down(prefix: str = topology.DEFAULT_PREFIX) -> None:
    """Remove the lab of ``prefix``: its links and namespaces. Quiet if nothing is there."""
    lab = topology.lab(prefix)
    present = set(pr_netns.listnetns())
    errors: list[str] = []
    # Delete the veth pairs explicitly (from the appliance side): a namespace that some
    # stray process still holds would otherwise keep its links alive after the unmount.
    for veth in lab.veths:
        if veth.ns_a in present:
            try:
                run_in_netns(veth.ns_a, _delete_links, [veth.ifname_a], timeout=_STEP_TIMEOUT)
            except ChildError as exc:
                errors.append(str(exc))
    for ns in lab.namespaces:
        if ns.name not in present:
            continue
        try:
            pr_netns.remove(ns.name)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                errors.append(f"{ns.name}: {exc}")
    if errors:
        raise LabError("; ".join(errors))


def add_address(ns: str, ifname: str, cidr: str) -> None:
    """Add ``cidr`` to ``ifname`` in ``ns`` (IPv6 without DAD); no-op if it is there."""
    address, _, plen = cidr.partition("/")
    family = 6 if ":" in address else 4
    prefixlen = int(plen) if plen else (128 if family == 6 else 32)
    run_in_netns(ns, _add_address, ifname, address, prefixlen, timeout=_STEP_TIMEOUT)


def del_address(ns: str, ifname: str, cidr: str) -> None:
    """Remove ``cidr`` from ``ifname`` in ``ns``; no-op if it is not there."""
    address, _, plen = cidr.partition("/")
    family = 6 if ":" in address else 4
    prefixlen = int(plen) if plen else (128 if family == 6 else 32)
    run_in_netns(ns, _del_address, ifname, address, prefixlen, timeout=_STEP_TIMEOUT)


def flush_neighbours(ns: str) -> None:
    """Forget every learned neighbour (ARP and NDP) in ``ns``."""
    run_in_netns(ns, _flush_neighbours, timeout=_STEP_TIMEOUT)


# -- run inside the namespace ------------------------------------------------------------


def _index(ipr: Any, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def _link_kind(ifname: str) -> str | None:
    """``"veth"``, another kind, ``""`` for a link without kind, None if absent."""
    with IPRoute() as ipr:
        idx = _index(ipr, ifname)
        if idx is None:
            return None
        (link,) = ipr.get_links(idx)
        info = link.get_attr("IFLA_LINKINFO")
        if info is None:
            return ""
        return str(info.get_attr("IFLA_INFO_KIND") or "")


def _delete_links(ifnames: list[str]) -> None:
    with IPRoute() as ipr:
        for ifname in ifnames:
            idx = _index(ipr, ifname)
            if idx is None:
                continue
            try:
                ipr.link("del", index=idx)
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise


def _add_veth(veth: topology.Veth) -> None:
    with IPRoute() as ipr:
        ipr.link(
            "add",
            ifname=veth.ifname_a,
            kind="veth",
            peer={"ifname": veth.ifname_b, "net_ns_fd": veth.ns_b},
        )


def _write_sysctl(path: str, value: str) -> None:
    with open(os.path.join("/proc/sys", path), "w") as f:
        f.write(value)


def _has_address(ipr: Any, idx: int, address: str, prefixlen: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    want = socket.inet_pton(family, address)
    for msg in ipr.get_addr(index=idx, family=family):
        have = msg.get_attr("IFA_ADDRESS")
        if have is None:
            continue
        if msg["prefixlen"] == prefixlen and socket.inet_pton(family, have) == want:
            return True
    return False


def _has_link_local(ipr: Any, idx: int) -> bool:
    for msg in ipr.get_addr(index=idx, family=socket.AF_INET6):
        addr = msg.get_attr("IFA_ADDRESS")
        if addr is not None and addr.lower().startswith("fe80:"):
            return True
    return False


def _add_address_with(ipr: Any, idx: int, address: str, prefixlen: int) -> None:
    if _has_address(ipr, idx, address, prefixlen):
        return
    if ":" in address:
        ipr.addr(
            "add",
            index=idx,
            family=socket.AF_INET6,
            address=address,
            prefixlen=prefixlen,
            flags=IFA_F_NODAD,
        )
    else:
        ipr.addr("add", index=idx, family=socket.AF_INET, address=address, prefixlen=prefixlen)


def _add_address(ifname: str, address: str, prefixlen: int) -> None:
    with IPRoute() as ipr:
        idx = _index(ipr, ifname)
        if idx is None:
            raise LabError(f"no link {ifname}")
        _add_address_with(ipr, idx, address, prefixlen)


def _del_address(ifname: str, address: str, prefixlen: int) -> None:
    with IPRoute() as ipr:
        idx = _index(ipr, ifname)
        if idx is None or not _has_address(ipr, idx, address, prefixlen):
            return
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        ipr.addr("del", index=idx, family=family, address=address, prefixlen=prefixlen)


def _flush_neighbours() -> None:
    with IPRoute() as ipr:
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in ipr.get_neighbours(family=family):
                dst = msg.get_attr("NDA_DST")
                if dst is None:
                    continue
                # It may be gone meanwhile, or be a permanent entry of the kernel's.
                with contextlib.suppress(NetlinkError):
                    ipr.neigh("del", ifindex=msg["ifindex"], family=family, dst=dst)


def _wait_oper_up(ifnames: list[str], wait: float) -> None:
    deadline = time.monotonic() + wait
    with IPRoute() as ipr:
        while True:
            down = []
            for ifname in ifnames:
                links = ipr.get_links(ifname=ifname)
                if not links or links[0].get_attr("IFLA_OPERSTATE") != "UP":
                    down.append(ifname)
            if not down:
                return
            if time.monotonic() >= deadline:
                raise LabError(f"links not up after {wait:.0f}s: {', '.join(down)}")
            time.sleep(0.05)


def _configure(ns: topology.Namespace) -> None:
    with IPRoute() as ipr:
        lo = _index(ipr, "lo")
        if lo is not None:
            ipr.link("set", index=lo, state="up")
        ifnames = sorted({a.ifname for a in ns.addresses} | {r.ifname for r in ns.routes})
        indexes: dict[str, int] = {}
        for ifname in ifnames:
            idx = _index(ipr, ifname)
            if idx is None:
                raise LabError(f"{ns.name}: link {ifname} is missing")
            indexes[ifname] = idx
        # Sysctls first (forwarding, rp_filter), once the links they name exist.
        for path, value in ns.sysctls:
            _write_sysctl(path, value)
        for ifname in indexes:
            if ns.role != "appliance":
                _write_sysctl(f"net/ipv6/conf/{ifname}/accept_ra", "0")
            _write_sysctl(f"net/ipv6/conf/{ifname}/accept_dad", "0")
        for idx in indexes.values():
            if not _has_link_local(ipr, idx):
                # Its IPv6 link-local address was removed: the kernel makes a new one when
                # the link comes up again.
                ipr.link("set", index=idx, state="down")
        for a in ns.addresses:
            _add_address_with(ipr, indexes[a.ifname], a.address, a.prefixlen)
        for idx in indexes.values():
            ipr.link("set", index=idx, state="up")
        for r in ns.routes:
            if r.family == 6:
                ipr.route(
                    "replace",
                    family=socket.AF_INET6,
                    dst="::",
                    dst_len=0,
                    gateway=r.gateway,
                    oif=indexes[r.ifname],
                )
            else:
                ipr.route(
                    "replace",
                    family=socket.AF_INET,
                    dst="0.0.0.0",
                    dst_len=0,
                    gateway=r.gateway,
                    oif=indexes[r.ifname],
                )
