"""Segments: desired links, the steps from what is there, undo (pure, no kernel)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from appliance.model.profile import Segment
from appliance.reconcile.segments import (
    LinkState,
    ObservedLinks,
    PeerState,
    SegmentError,
    Step,
    alias_of,
    canonical_address,
    desired_segments,
    plan_segments,
    segment_of_alias,
    undo_steps,
)

VLAN = Segment(
    "slice-embb",
    "vlan",
    "ap-slice-embb",
    parent="eth1",
    vlan_id=100,
    addresses=("10.100.0.1/24",),
    vrf="vrf-embb",
)
VRF = Segment("vrf-embb", "vrf", "ap-vrf-embb", table=100)
MEC = Segment(
    "mec-app1",
    "netns",
    "ap-mec-app1",
    addresses=("10.50.0.1/24", "fd00:50::1/64"),
    netns="mec-app1",
    peer_addresses=("10.50.0.10/24", "fd00:50::10/64"),
)


def ops(steps: list[Step]) -> list[tuple[str, str, str | None, str]]:
    return [(s.op, s.link, s.netns, s.value) for s in steps]


def in_place(*segments: Segment) -> ObservedLinks:
    """The kernel once every segment is in place (plus a physical eth1)."""
    wanted = desired_segments(segments)
    links = {d.link.name: d.link for d in wanted}
    peers: dict[str, PeerState | None] = {d.peer.netns: d.peer for d in wanted if d.peer}
    return ObservedLinks(links, frozenset({"lo", "eth1"}), frozenset(peers), peers)


def test_alias_marks_the_appliances_links() -> None:
    assert segment_of_alias(alias_of("mec-app1")) == ("mec-app1", None, False)
    assert segment_of_alias(alias_of("mec-app1", "ns1", True)) == ("mec-app1", "ns1", True)
    assert segment_of_alias("uplink to core") is None
    assert segment_of_alias(None) is None
    assert segment_of_alias("appliance segment x bogus") is None


def test_addresses_are_canonical() -> None:
    assert canonical_address("fd00:50:0::1/64") == "fd00:50::1/64"
    assert canonical_address("10.50.0.1/24") == "10.50.0.1/24"


def test_desired_links_put_vrfs_first_and_point_peers_back() -> None:
    wanted = desired_segments((MEC, VLAN, VRF))
    assert [d.link.name for d in wanted] == ["ap-vrf-embb", "ap-mec-app1", "ap-slice-embb"]
    vlan = wanted[2].link
    assert (vlan.kind, vlan.parent, vlan.vlan_id, vlan.master) == (
        "vlan",
        "eth1",
        100,
        "ap-vrf-embb",
    )
    peer = wanted[1].peer
    assert peer is not None and peer.netns == "mec-app1" and peer.name == "ap-mec-app1"
    assert peer.gateways == {"10.50.0.1", "fd00:50::1"}


def test_everything_is_created_on_a_bare_kernel() -> None:
    bare = ObservedLinks(foreign=frozenset({"lo", "eth1"}))
    plan = plan_segments(desired_segments((VLAN, VRF, MEC)), bare)
    assert plan.remove == []
    assert ops(plan.apply) == [
        ("create_link", "ap-vrf-embb", None, ""),
        ("set_up", "ap-vrf-embb", None, ""),
        ("create_netns", "", "mec-app1", ""),
        ("create_link", "ap-mec-app1", None, ""),
        ("add_address", "ap-mec-app1", None, "10.50.0.1/24"),
        ("add_address", "ap-mec-app1", None, "fd00:50::1/64"),
        ("set_up", "ap-mec-app1", None, ""),
        ("add_address", "ap-mec-app1", "mec-app1", "10.50.0.10/24"),
        ("add_address", "ap-mec-app1", "mec-app1", "fd00:50::10/64"),
        ("set_up", "ap-mec-app1", "mec-app1", ""),
        ("add_route", "ap-mec-app1", "mec-app1", "10.50.0.1"),
        ("add_route", "ap-mec-app1", "mec-app1", "fd00:50::1"),
        ("create_link", "ap-slice-embb", None, ""),
        ("set_master", "ap-slice-embb", None, "ap-vrf-embb"),
        ("add_address", "ap-slice-embb", None, "10.100.0.1/24"),
        ("set_up", "ap-slice-embb", None, ""),
    ]
    veth = next(s for s in plan.apply if s.op == "create_link" and s.link == "ap-mec-app1")
    assert veth.state is not None and veth.state.created_netns  # the appliance made it
    assert "peer ap-mec-app1 in netns mec-app1" in veth.describe()


def test_a_kernel_that_has_it_all_needs_nothing() -> None:
    plan = plan_segments(desired_segments((VLAN, VRF, MEC)), in_place(VLAN, VRF, MEC))
    assert not plan.changed and plan.describe() == []


def test_an_existing_namespace_is_used_and_not_marked_created() -> None:
    observed = ObservedLinks(foreign=frozenset({"lo"}), namespaces=frozenset({"mec-app1"}))
    plan = plan_segments(desired_segments((MEC,)), observed)
    assert "create_netns" not in [s.op for s in plan.apply]
    veth = plan.apply[0]
    assert veth.op == "create_link" and veth.state is not None
    assert not veth.state.created_netns


def test_changed_addresses_are_added_before_and_removed_after_the_table() -> None:
    moved = replace(MEC, addresses=("10.60.0.1/24",), peer_addresses=("10.60.0.10/24",))
    plan = plan_segments(desired_segments((moved,)), in_place(MEC))
    assert ops(plan.apply) == [
        ("add_address", "ap-mec-app1", None, "10.60.0.1/24"),
        ("add_address", "ap-mec-app1", "mec-app1", "10.60.0.10/24"),
        ("del_route", "ap-mec-app1", "mec-app1", "10.50.0.1"),
        ("del_route", "ap-mec-app1", "mec-app1", "fd00:50::1"),
        ("add_route", "ap-mec-app1", "mec-app1", "10.60.0.1"),
    ]
    assert ops(plan.remove) == [
        ("del_address", "ap-mec-app1", None, "10.50.0.1/24"),
        ("del_address", "ap-mec-app1", None, "fd00:50::1/64"),
        ("del_address", "ap-mec-app1", "mec-app1", "10.50.0.10/24"),
        ("del_address", "ap-mec-app1", "mec-app1", "fd00:50::10/64"),
    ]


def test_a_link_that_cannot_become_the_wanted_one_is_recreated() -> None:
    observed = in_place(VLAN, VRF)
    plan = plan_segments(desired_segments((replace(VLAN, vlan_id=101), VRF)), observed)
    assert ops(plan.apply)[:2] == [
        ("delete_link", "ap-slice-embb", None, ""),
        ("create_link", "ap-slice-embb", None, ""),
    ]


def test_a_peer_gone_with_its_namespace_brings_a_new_pair() -> None:
    observed = in_place(MEC)
    observed.namespaces = frozenset()
    observed.peers = {}
    plan = plan_segments(desired_segments((MEC,)), observed)
    assert [s.op for s in plan.apply][:3] == ["delete_link", "create_netns", "create_link"]


def test_link_down_or_master_lost_is_repaired() -> None:
    observed = in_place(VLAN, VRF)
    link = observed.links["ap-slice-embb"]
    observed.links["ap-slice-embb"] = replace(link, up=False, master=None)
    plan = plan_segments(desired_segments((VLAN, VRF)), observed)
    assert ops(plan.apply) == [
        ("set_master", "ap-slice-embb", None, "ap-vrf-embb"),
        ("set_up", "ap-slice-embb", None, ""),
    ]


def test_segments_that_went_lose_their_links_and_created_namespaces() -> None:
    observed = in_place(VLAN, VRF, MEC)
    mec = observed.links["ap-mec-app1"]
    observed.links["ap-mec-app1"] = replace(mec, created_netns=True)
    plan = plan_segments([], observed)
    assert plan.apply == []
    assert ops(plan.remove) == [
        ("delete_link", "ap-mec-app1", None, ""),
        ("delete_link", "ap-slice-embb", None, ""),
        ("delete_link", "ap-vrf-embb", None, ""),
        ("delete_netns", "", "mec-app1", ""),
    ]
    # a namespace the appliance did not create stays
    observed.links["ap-mec-app1"] = mec
    assert "delete_netns" not in [s.op for s in plan_segments([], observed).remove]


def test_a_foreign_link_under_the_name_is_an_error() -> None:
    foreign = ObservedLinks(foreign=frozenset({"lo", "eth1", "ap-vrf-embb"}))
    with pytest.raises(SegmentError, match="ap-vrf-embb exists and is not the appliance's"):
        plan_segments(desired_segments((VRF,)), foreign)


def test_a_vlan_whose_parent_is_not_there_waits_and_the_rest_goes_ahead() -> None:
    no_parent = ObservedLinks(foreign=frozenset({"lo"}))
    plan = plan_segments(desired_segments((VLAN, VRF)), no_parent)
    assert plan.waiting == ["segment slice-embb: waiting for its parent link eth1"]
    assert ops(plan.apply) == [
        ("create_link", "ap-vrf-embb", None, ""),
        ("set_up", "ap-vrf-embb", None, ""),
    ]
    assert plan.describe()[-1] == "! segment slice-embb: waiting for its parent link eth1"
    only_waiting = plan_segments(
        desired_segments((VLAN, VRF)), replace(in_place(VRF), foreign=frozenset({"lo"}))
    )
    assert not only_waiting.changed and only_waiting.waiting


def test_undo_takes_back_what_was_made_last_first() -> None:
    bare = ObservedLinks(foreign=frozenset({"lo", "eth1"}))
    done = plan_segments(desired_segments((MEC,)), bare).apply
    assert ops(undo_steps(done)) == [
        ("del_route", "ap-mec-app1", "mec-app1", "fd00:50::1"),
        ("del_route", "ap-mec-app1", "mec-app1", "10.50.0.1"),
        ("del_address", "ap-mec-app1", "mec-app1", "fd00:50::10/64"),
        ("del_address", "ap-mec-app1", "mec-app1", "10.50.0.10/24"),
        ("del_address", "ap-mec-app1", None, "fd00:50::1/64"),
        ("del_address", "ap-mec-app1", None, "10.50.0.1/24"),
        ("delete_link", "ap-mec-app1", None, ""),
        ("delete_netns", "", "mec-app1", ""),
    ]


def test_link_state_of_a_vrf_segment() -> None:
    (vrf,) = desired_segments((VRF,))
    assert vrf.link == LinkState("ap-vrf-embb", "vrf", "vrf-embb", table=100)


def test_a_renamed_segment_keeps_the_mark_of_the_namespace_the_appliance_made() -> None:
    observed = in_place(MEC)
    observed.links["ap-mec-app1"] = replace(observed.links["ap-mec-app1"], created_netns=True)
    renamed = replace(MEC, name="mec-app2", link="ap-mec-app2")
    plan = plan_segments(desired_segments((renamed,)), observed)
    create = next(s for s in plan.apply if s.op == "create_link")
    assert create.link == "ap-mec-app2" and create.state is not None
    assert create.state.created_netns
    assert ops(plan.remove) == [("delete_link", "ap-mec-app1", None, "")]  # the namespace stays
