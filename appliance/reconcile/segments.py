"""Segments (``[[isolation.segments]]``): what their links should be, what is there, and the
steps between the two. Pure: the adapter (:mod:`appliance.adapters.links`) observes the
kernel into :class:`ObservedLinks` and carries out the :class:`Step` list.

Every link of a segment is ``ap-NAME`` and carries the alias ``appliance segment NAME`` (for
a ``netns`` segment whose namespace the appliance created, ``appliance segment NAME
netns-created``). Only links with that alias are the appliance's: a foreign link under the
name is an error, never replaced, and nothing else on the machine is touched.

- ``vlan``: an 802.1Q link on ``parent`` with ``vlan_id``;
- ``vrf``: a VRF link bound to routing table ``table``;
- ``netns``: a veth pair, ``ap-NAME`` here and ``ap-NAME`` inside the namespace, whose
  default routes point back at the appliance's side.

A segment's link may be enslaved to a ``vrf`` segment (``vrf = "NAME"``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Literal

from appliance.errors import KernelError
from appliance.model.profile import Segment

ALIAS_PREFIX = "appliance segment "


def alias_of(segment: str, netns: str | None = None, created: bool = False) -> str:
    """The alias marking a link as the appliance's: ``appliance segment NAME``, plus
    `` netns=NS`` for a veth (and `` created`` when the appliance made that namespace)."""
    alias = ALIAS_PREFIX + segment
    if netns:
        alias += f" netns={netns}" + (" created" if created else "")
    return alias


def segment_of_alias(alias: str | None) -> tuple[str, str | None, bool] | None:
    """(segment, namespace, whether the appliance created it), or None: not ours."""
    if not alias or not alias.startswith(ALIAS_PREFIX):
        return None
    words = alias[len(ALIAS_PREFIX) :].split(" ")
    name, netns, created = words[0], None, False
    for word in words[1:]:
        if word.startswith("netns=") and len(word) > 6:
            netns = word[6:]
        elif word == "created":
            created = True
        else:
            return None
    return (name, netns, created) if name else None


def canonical_address(text: str) -> str:
    """``10.100.0.1/24``, ``fd00::1/64``: an interface address as the kernel reports it."""
    iface = ipaddress.ip_interface(text)
    return f"{iface.ip.compressed}/{iface.network.prefixlen}"


@dataclass(frozen=True)
class LinkState:
    """One link as desired or observed (``kind``: vlan, vrf or veth)."""

    name: str
    kind: str
    segment: str
    parent: str | None = None  # vlan
    vlan_id: int | None = None  # vlan
    table: int | None = None  # vrf
    master: str | None = None  # the vrf link it is enslaved to
    addresses: frozenset[str] = frozenset()
    up: bool = True
    netns: str | None = None  # veth: the namespace of the far end
    created_netns: bool = False  # veth: the appliance made that namespace


@dataclass(frozen=True)
class PeerState:
    """The far end of a netns segment, inside its namespace."""

    netns: str
    name: str
    addresses: frozenset[str] = frozenset()
    gateways: frozenset[str] = frozenset()  # default routes' next hops
    up: bool = True


@dataclass
class ObservedLinks:
    """What the kernel holds: the appliance's links (by name), the names of other links,
    the namespaces, and the peers found inside the namespaces that were looked into."""

    links: dict[str, LinkState] = field(default_factory=dict)
    foreign: frozenset[str] = frozenset()  # links that are not the appliance's
    namespaces: frozenset[str] = frozenset()
    peers: dict[str, PeerState | None] = field(default_factory=dict)  # by namespace


@dataclass(frozen=True)
class DesiredSegment:
    """A segment with the link (and peer) it should have."""

    segment: Segment
    link: LinkState
    peer: PeerState | None = None


StepOp = Literal[
    "create_netns",
    "create_link",
    "delete_link",
    "set_master",
    "set_up",
    "add_address",
    "del_address",
    "add_route",
    "del_route",
    "delete_netns",
]


@dataclass(frozen=True)
class Step:
    """One change (see :data:`StepOp`). ``netns``: where the link of the step lives (None:
    here)."""

    op: StepOp
    link: str = ""
    netns: str | None = None
    value: str = ""  # an address, a gateway, a master's name
    state: LinkState | None = None  # create_link: what to create
    peer: PeerState | None = None  # create_link of a veth: its far end

    def describe(self) -> str:
        where = f" in netns {self.netns}" if self.netns else ""
        if self.op == "create_netns":
            return f"+ netns {self.netns}"
        if self.op == "delete_netns":
            return f"- netns {self.netns}"
        if self.op == "create_link":
            assert self.state is not None
            state = self.state
            detail = {
                "vlan": f"vlan {state.vlan_id} on {state.parent}",
                "vrf": f"vrf table {state.table}",
                "veth": f"veth, peer {state.name} in netns {self.peer.netns if self.peer else ''}",
            }.get(state.kind, state.kind)
            return f"+ link {self.link} ({detail}) for segment {state.segment}"
        if self.op == "delete_link":
            return f"- link {self.link}{where}"
        if self.op == "set_master":
            return f"~ link {self.link}{where}: master {self.value or 'none'}"
        if self.op == "set_up":
            return f"~ link {self.link}{where}: up"
        if self.op == "add_address":
            return f"+ address {self.value} on {self.link}{where}"
        if self.op == "del_address":
            return f"- address {self.value} on {self.link}{where}"
        if self.op == "add_route":
            return f"+ default route via {self.value} on {self.link}{where}"
        if self.op == "del_route":
            return f"- default route via {self.value} on {self.link}{where}"
        return f"{self.op} {self.link}{where} {self.value}".rstrip()


@dataclass
class SegmentPlan:
    """``apply``: creations and changes, done before the table; ``remove``: what goes, done
    after it (so a failure before the table leaves nothing half removed)."""

    apply: list[Step] = field(default_factory=list)
    remove: list[Step] = field(default_factory=list)
    # Segments that cannot be made yet (a VLAN whose parent link is not there: a NIC that
    # comes up late); the rest of the policy goes ahead, and they are made once it is.
    waiting: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.apply or self.remove)

    def describe(self) -> list[str]:
        return [step.describe() for step in self.apply + self.remove] + [
            f"! {line}" for line in self.waiting
        ]


def desired_segments(segments: tuple[Segment, ...]) -> list[DesiredSegment]:
    """Each segment's link (and peer), vrf segments first: a link's master exists first."""
    links = {segment.name: segment.link for segment in segments}
    out: list[DesiredSegment] = []
    for segment in sorted(segments, key=lambda s: (s.kind != "vrf", s.name)):
        master = links.get(segment.vrf) if segment.vrf else None
        addresses = frozenset(canonical_address(a) for a in segment.addresses)
        if segment.kind == "vlan":
            link = LinkState(
                segment.link,
                "vlan",
                segment.name,
                parent=segment.parent,
                vlan_id=segment.vlan_id,
                master=master,
                addresses=addresses,
            )
            out.append(DesiredSegment(segment, link))
        elif segment.kind == "vrf":
            link = LinkState(
                segment.link, "vrf", segment.name, table=segment.table, addresses=addresses
            )
            out.append(DesiredSegment(segment, link))
        else:
            assert segment.netns is not None
            link = LinkState(
                segment.link,
                "veth",
                segment.name,
                master=master,
                addresses=addresses,
                netns=segment.netns,
            )
            peer_addresses = frozenset(canonical_address(a) for a in segment.peer_addresses)
            peer = PeerState(
                segment.netns,
                segment.link,
                peer_addresses,
                gateways=_gateways(addresses, peer_addresses),
            )
            out.append(DesiredSegment(segment, link, peer))
    return out


def _gateways(ours: frozenset[str], theirs: frozenset[str]) -> frozenset[str]:
    """The peer's default routes point at the appliance's first address of each family the
    peer has an address of (IPv6: its first global one)."""
    found: list[str] = []
    for version in (4, 6):
        if not any(ipaddress.ip_interface(a).version == version for a in theirs):
            continue
        mine = sorted(a for a in ours if ipaddress.ip_interface(a).version == version)
        if mine:
            found.append(str(ipaddress.ip_interface(mine[0]).ip))
    return frozenset(found)


class SegmentError(Exception):
    """A segment cannot be put in place (a foreign link under its name, a missing parent)."""


class SegmentStepError(KernelError):
    """A step failed in the kernel; ``done``: the steps carried out before it."""

    def __init__(self, message: str, done: list[Step]) -> None:
        super().__init__(message)
        self.done = done


_INVERSE: dict[StepOp, StepOp] = {
    "create_link": "delete_link",
    "create_netns": "delete_netns",
    "add_address": "del_address",
    "add_route": "del_route",
}


def undo_steps(done: list[Step]) -> list[Step]:
    """The steps that take back ``done`` (what they created or added), last first."""
    undo: list[Step] = []
    for step in reversed(done):
        op = _INVERSE.get(step.op)
        if op is None:
            continue
        link = step.link
        netns = step.netns
        if step.op == "create_link":
            netns = None  # a veth goes with its far end
        undo.append(Step(op, link, netns, step.value))
    return undo


def plan_segments(wanted: list[DesiredSegment], observed: ObservedLinks) -> SegmentPlan:
    plan = SegmentPlan()
    wanted_names = {d.link.name for d in wanted}
    made_here = {link.netns for link in observed.links.values() if link.created_netns}
    for desired in wanted:
        link = desired.link
        have = observed.links.get(link.name)
        if have is None and link.name in observed.foreign:
            raise SegmentError(
                f"segment {link.segment}: link {link.name} exists and is not the appliance's"
                " (no 'appliance segment' alias): rename or remove it"
            )
        if link.kind == "vlan" and not _exists(observed, link.parent or ""):
            plan.waiting.append(
                f"segment {link.segment}: waiting for its parent link {link.parent}"
            )
            continue
        peer = desired.peer
        recreate = have is not None and not _same_link(link, have)
        if peer is not None and have is not None:
            far_end = observed.peers.get(peer.netns)
            if peer.netns not in observed.namespaces or far_end is None:
                recreate = True  # the namespace or the far end went: a new pair
        # The appliance made this namespace if a link of its own says so (this one, or the
        # link of a segment renamed since).
        created = peer is not None and peer.netns in made_here
        if recreate:
            assert have is not None
            plan.apply.append(Step("delete_link", link.name))
            have = None
        if peer is not None and peer.netns not in observed.namespaces:
            plan.apply.append(Step("create_netns", netns=peer.netns))
            created = True
        found = observed.peers.get(peer.netns) if peer is not None else None
        if have is None:
            state = replace(link, created_netns=created)
            plan.apply.append(Step("create_link", link.name, state=state, peer=peer))
            # a new link (and far end) has nothing yet: the steps below give it everything
            have = replace(link, master=None, addresses=frozenset(), up=False)
            found = None
        if have.master != link.master:
            plan.apply.append(Step("set_master", link.name, value=link.master or ""))
        plan.apply += [
            Step("add_address", link.name, value=a) for a in sorted(link.addresses - have.addresses)
        ]
        if not have.up:
            plan.apply.append(Step("set_up", link.name))
        plan.remove += [
            Step("del_address", link.name, value=a) for a in sorted(have.addresses - link.addresses)
        ]
        if peer is not None:
            plan.apply += _peer_steps(peer, found)
            if found is not None:
                plan.remove += [
                    Step("del_address", peer.name, peer.netns, value=a)
                    for a in sorted(found.addresses - peer.addresses)
                ]
    # Links of segments that went; then the namespaces the appliance created for them.
    kept = {d.peer.netns for d in wanted if d.peer is not None}
    gone: list[str] = []
    for name, have in sorted(observed.links.items()):
        if name in wanted_names:
            continue
        plan.remove.append(Step("delete_link", name))
        netns = have.netns if have.created_netns else None
        if netns and netns not in kept and netns in observed.namespaces and netns not in gone:
            gone.append(netns)
    plan.remove += [Step("delete_netns", netns=netns) for netns in gone]
    return plan


def _exists(observed: ObservedLinks, name: str) -> bool:
    return name in observed.foreign or name in observed.links


def _same_link(want: LinkState, have: LinkState) -> bool:
    """Can ``have`` become ``want`` by changes (masters, addresses, up), or must it go?"""
    return (
        want.kind == have.kind
        and want.segment == have.segment
        and want.parent == have.parent
        and want.vlan_id == have.vlan_id
        and want.table == have.table
        and want.netns == have.netns
    )


def _peer_steps(peer: PeerState, found: PeerState | None) -> list[Step]:
    steps: list[Step] = []
    have_addresses = found.addresses if found else frozenset()
    have_gateways = found.gateways if found else frozenset()
    steps += [
        Step("add_address", peer.name, peer.netns, value=a)
        for a in sorted(peer.addresses - have_addresses)
    ]
    if found is None or not found.up:
        steps.append(Step("set_up", peer.name, peer.netns))
    steps += [
        Step("del_route", peer.name, peer.netns, value=g)
        for g in sorted(have_gateways - peer.gateways)
    ]
    steps += [
        Step("add_route", peer.name, peer.netns, value=g)
        for g in sorted(peer.gateways - have_gateways)
    ]
    return steps
