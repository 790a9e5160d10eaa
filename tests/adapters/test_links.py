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
    return (
        subprocess.run(
            ["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", address],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )


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
