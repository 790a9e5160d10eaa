"""Segments in the kernel (root): a `netns` segment's veth pair, addresses and routes made
by `appliance apply`, traffic across it, drift shown by `plan`, removal, and refusals that
change nothing. (`vlan` and `vrf` segments need kernel support this host may lack: they are
tested in the QEMU guest, tests/integration/test_segments_guest.py.)"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import nft_in, run_appliance

pytestmark = pytest.mark.root


def ip_json(ns: str, *args: str) -> list[dict[str, object]]:
    out = subprocess.run(
        ["ip", "-n", ns, "-j", *args], capture_output=True, text=True, check=True
    ).stdout
    result: list[dict[str, object]] = json.loads(out or "[]")
    return result


def link(ns: str, name: str) -> dict[str, object] | None:
    for item in ip_json(ns, "-d", "link", "show"):
        if item.get("ifname") == name:
            return item
    return None


def addresses(ns: str, name: str) -> set[str]:
    found: set[str] = set()
    for item in ip_json(ns, "addr", "show", "dev", name):
        for info in item.get("addr_info", []):  # type: ignore[attr-defined]
            if info.get("scope") != "link":
                found.add(f"{info['local']}/{info['prefixlen']}")
    return found


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.fixture
def segment_ns() -> Iterator[str]:
    """The name of the segment's namespace (removed afterwards if anything made it)."""
    name = f"aps-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def profile(tmp_path: Path, netns: str, segment: bool = True, peer: str = "10.50.0.10/24") -> Path:
    text = """
version = 1
name = "segments"
[[rules]]
name = "mec-ping"
from = "mec"
to = "self"
proto = "icmp"
action = "accept"
"""
    if segment:
        text += f"""
[[isolation.segments]]
name = "mec1"
kind = "netns"
netns = "{netns}"
addresses = ["10.50.0.1/24", "fd00:50::1/64"]
peer_addresses = ["{peer}", "fd00:50::10/64"]
zone = "mec"
"""
    else:
        text += '\n[zones.mec]\ninterfaces = ["ap-mec1"]\n'
    path = tmp_path / "segments.toml"
    path.write_text(text)
    return path


def ping(ns: str, address: str) -> bool:
    from appliance.lab import traffic

    return traffic.ping(ns, address, timeout=1.0) == "open"


def tcp_open(ns: str, address: str, port: int) -> bool:
    code = f"import socket; socket.create_connection(('{address}', {port}), timeout=1)"
    result = subprocess.run(
        ["ip", "netns", "exec", ns, "python3", "-c", code], capture_output=True, check=False
    )
    return result.returncode == 0


def test_netns_segment_is_made_used_repaired_and_removed(
    netns: str, segment_ns: str, tmp_path: Path
) -> None:
    path = profile(tmp_path, segment_ns)
    result = run_appliance("apply", "--netns", netns, str(path))
    assert result.returncode == 0, result.stderr
    here = link(netns, "ap-mec1")
    assert (
        here is not None and here["ifalias"] == f"appliance segment mec1 netns={segment_ns} created"
    )
    assert here["linkinfo"]["info_kind"] == "veth"  # type: ignore[index]
    assert addresses(netns, "ap-mec1") == {"10.50.0.1/24", "fd00:50::1/64"}
    assert segment_ns in namespaces()
    assert addresses(segment_ns, "ap-mec1") == {"10.50.0.10/24", "fd00:50::10/64"}
    routes = ip_json(segment_ns, "route", "show", "default")
    assert [r["gateway"] for r in routes] == ["10.50.0.1"]
    routes6 = ip_json(segment_ns, "-6", "route", "show", "default")
    assert [r["gateway"] for r in routes6] == ["fd00:50::1"]
    # The segment's link is zone mec: ping is allowed, anything else to the appliance is not.
    assert ping(segment_ns, "10.50.0.1")
    assert not tcp_open(segment_ns, "10.50.0.1", 22)
    assert "ap-mec1" in nft_in(netns, "list", "table", "inet", "appliance")

    # Nothing to do the second time; drift inside the namespace shows and is repaired.
    again = run_appliance("plan", "--netns", netns, str(path))
    assert again.returncode == 0 and again.stdout.strip() == "no changes", again.stdout
    subprocess.run(
        ["ip", "-n", segment_ns, "addr", "del", "10.50.0.10/24", "dev", "ap-mec1"], check=True
    )
    drift = run_appliance("plan", "--netns", netns, str(path))
    assert drift.returncode == 3
    assert f"+ address 10.50.0.10/24 on ap-mec1 in netns {segment_ns}" in drift.stdout
    assert run_appliance("apply", "--netns", netns, str(path)).returncode == 0
    assert "10.50.0.10/24" in addresses(segment_ns, "ap-mec1")
    assert [r["gateway"] for r in ip_json(segment_ns, "route", "show", "default")] == ["10.50.0.1"]

    # A changed peer address: the old one goes after the table is applied.
    moved = profile(tmp_path, segment_ns, peer="10.50.0.20/24")
    assert run_appliance("apply", "--netns", netns, str(moved)).returncode == 0
    assert addresses(segment_ns, "ap-mec1") == {"10.50.0.20/24", "fd00:50::10/64"}

    # The segment leaves the profile: its link goes, and the namespace the appliance made.
    gone = profile(tmp_path, segment_ns, segment=False)
    result = run_appliance("apply", "--netns", netns, str(gone))
    assert result.returncode == 0, result.stderr
    assert link(netns, "ap-mec1") is None
    assert segment_ns not in namespaces()


def test_a_namespace_that_was_there_stays_when_the_segment_goes(
    netns: str, segment_ns: str, tmp_path: Path
) -> None:
    subprocess.run(["ip", "netns", "add", segment_ns], check=True)
    assert (
        run_appliance("apply", "--netns", netns, str(profile(tmp_path, segment_ns))).returncode == 0
    )
    here = link(netns, "ap-mec1")
    assert here is not None and here["ifalias"] == f"appliance segment mec1 netns={segment_ns}"
    gone = profile(tmp_path, segment_ns, segment=False)
    assert run_appliance("apply", "--netns", netns, str(gone)).returncode == 0
    assert link(netns, "ap-mec1") is None
    assert segment_ns in namespaces()


def test_a_foreign_link_under_the_segments_name_is_refused_and_nothing_changes(
    netns: str, segment_ns: str, tmp_path: Path
) -> None:
    subprocess.run(
        ["ip", "-n", netns, "link", "add", "ap-mec1", "type", "veth", "peer", "name", "other"],
        check=True,
    )
    result = run_appliance("apply", "--netns", netns, str(profile(tmp_path, segment_ns)))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "link ap-mec1 exists and is not the appliance's" in result.stderr
    assert nft_in(netns, "list", "tables").strip() == ""  # no table either
    assert segment_ns not in namespaces()
    assert link(netns, "ap-mec1") is not None  # left as it was


def test_a_step_the_kernel_refuses_takes_back_what_was_made(
    netns: str, segment_ns: str, tmp_path: Path
) -> None:
    """IPv6 is off in the segment's namespace: the peer's IPv6 address is refused halfway;
    the pair made before it goes again, and the table is not applied."""
    subprocess.run(["ip", "netns", "add", segment_ns], check=True)
    subprocess.run(
        ["ip", "netns", "exec", segment_ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
        check=True,
    )
    subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            segment_ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.default.disable_ipv6=1",
        ],
        check=True,
    )
    result = run_appliance("apply", "--netns", netns, str(profile(tmp_path, segment_ns)))
    assert result.returncode == 1, result.stdout
    assert "fd00:50::10/64 on ap-mec1 in netns" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert link(netns, "ap-mec1") is None
    assert nft_in(netns, "list", "tables").strip() == ""
    assert segment_ns in namespaces()  # it was there before: it stays


SLICES = """
version = 1
name = "slices"
[[rules]]
name = "slice-ping"
from = "slice"
to = "self"
proto = "icmp"
action = "accept"

[[isolation.segments]]
name = "vrf-embb"
kind = "vrf"
table = 100

[[isolation.segments]]
name = "slice-embb"
kind = "vlan"
parent = "eth1"
vlan_id = 100
addresses = ["10.100.0.1/24"]
zone = "slice"
vrf = "vrf-embb"
"""


@pytest.mark.guest
def test_vlan_segment_in_a_vrf_carries_tagged_traffic(
    netns: str, segment_ns: str, tmp_path: Path
) -> None:
    """In the QEMU guest (802.1Q and VRF links): a VLAN segment on eth1, enslaved to a VRF
    segment; a switch-side namespace tags its traffic with VLAN 100 and reaches the
    appliance; the connected route lives in table 100."""
    subprocess.run(["ip", "netns", "add", segment_ns], check=True)
    subprocess.run(
        ["ip", "-n", netns, "link", "add", "eth1", "type", "veth", "peer", "name", "sw0"],
        check=True,
    )
    subprocess.run(["ip", "-n", netns, "link", "set", "sw0", "netns", segment_ns], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "eth1", "up"], check=True)
    for command in (
        ["link", "set", "sw0", "up"],
        ["link", "add", "link", "sw0", "name", "sw0.100", "type", "vlan", "id", "100"],
        ["link", "set", "sw0.100", "up"],
        ["addr", "add", "10.100.0.2/24", "dev", "sw0.100"],
        ["addr", "add", "10.99.0.2/24", "dev", "sw0"],
    ):
        subprocess.run(["ip", "-n", segment_ns, *command], check=True)
    path = tmp_path / "slices.toml"
    path.write_text(SLICES)
    result = run_appliance("apply", "--netns", netns, str(path))
    assert result.returncode == 0, result.stderr
    vlan = link(netns, "ap-slice-embb")
    vrf = link(netns, "ap-vrf-embb")
    assert vlan is not None and vrf is not None
    assert vlan["linkinfo"]["info_kind"] == "vlan"  # type: ignore[index]
    assert vlan["linkinfo"]["info_data"]["id"] == 100  # type: ignore[index]
    assert vlan["link"] == "eth1" and vlan["master"] == "ap-vrf-embb"
    assert vrf["linkinfo"]["info_data"]["table"] == 100  # type: ignore[index]
    table = ip_json(netns, "route", "show", "table", "100")
    assert any(r.get("dst") == "10.100.0.0/24" for r in table), table
    assert ping(segment_ns, "10.100.0.1")  # tagged, zone slice (meta sdifname): allowed
    plan = run_appliance("plan", "--netns", netns, str(path))
    assert plan.returncode == 0 and plan.stdout.strip() == "no changes", plan.stdout
    # The slices go: their links go, eth1 (not the appliance's) stays.
    path.write_text('version = 1\nname = "none"\n')
    assert run_appliance("apply", "--netns", netns, str(path)).returncode == 0
    assert link(netns, "ap-slice-embb") is None and link(netns, "ap-vrf-embb") is None
    assert link(netns, "eth1") is not None


def test_segments_the_kernel_cannot_make_are_refused_before_anything(
    netns: str, tmp_path: Path
) -> None:
    from appliance.probe import probe_features

    if probe_features().get("vrf", False):
        pytest.skip("this kernel has VRF links")
    path = tmp_path / "slices.toml"
    path.write_text(SLICES)
    result = run_appliance("apply", "--netns", netns, str(path))
    assert result.returncode == 1
    assert "isolation.segments[0]: segment 'vrf-embb' needs VRF links" in result.stderr
    assert result.stderr.count("\n") == 1
    assert nft_in(netns, "list", "tables").strip() == ""
    assert link(netns, "ap-vrf-embb") is None


def _present_in(ns: str) -> bool:
    from appliance.adapters.links import segment_links_present

    return segment_links_present()


def test_the_cheap_scan_finds_segment_links_by_their_alias(netns: str) -> None:
    from appliance.adapters.nsexec import run_in_netns

    assert run_in_netns(netns, _present_in, netns) is False
    subprocess.run(
        ["ip", "-n", netns, "link", "add", "x0", "type", "veth", "peer", "name", "x1"], check=True
    )
    subprocess.run(["ip", "-n", netns, "link", "set", "x0", "alias", "uplink"], check=True)
    assert run_in_netns(netns, _present_in, netns) is False
    subprocess.run(
        ["ip", "-n", netns, "link", "set", "x1", "alias", "appliance segment gone"], check=True
    )
    assert run_in_netns(netns, _present_in, netns) is True


@pytest.mark.guest
def test_a_vlan_whose_parent_comes_late_waits_and_the_rest_is_applied(
    netns: str, tmp_path: Path
) -> None:
    """In the QEMU guest: the parent NIC is not there yet. The table and the VRF are put in
    place, the VLAN segment waits (said on stderr and by `plan`), and the next apply once
    the NIC is there makes it."""
    path = tmp_path / "slices.toml"
    path.write_text(SLICES)
    result = run_appliance("apply", "--netns", netns, str(path))
    assert result.returncode == 0, result.stderr
    assert "segment slice-embb: waiting for its parent link eth1" in result.stderr
    assert link(netns, "ap-vrf-embb") is not None and link(netns, "ap-slice-embb") is None
    assert "slice-ping" in nft_in(netns, "list", "table", "inet", "appliance")
    plan = run_appliance("plan", "--netns", netns, str(path))
    assert plan.returncode == 0
    assert plan.stdout.splitlines() == [
        "no changes",
        "! segment slice-embb: waiting for its parent link eth1",
    ]
    subprocess.run(
        ["ip", "-n", netns, "link", "add", "eth1", "type", "veth", "peer", "name", "sw0"],
        check=True,
    )
    plan = run_appliance("plan", "--netns", netns, str(path))
    assert plan.returncode == 3 and "+ link ap-slice-embb (vlan 100 on eth1)" in plan.stdout
    result = run_appliance("apply", "--netns", netns, str(path))
    assert result.returncode == 0 and result.stderr == ""
    vlan = link(netns, "ap-slice-embb")
    assert vlan is not None and vlan["master"] == "ap-vrf-embb"
