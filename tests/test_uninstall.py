"""`appliance uninstall`: what it would remove (pure), the refusal while a daemon answers,
and (root) the table, the segment links and the namespace the appliance created removed
from a throw-away namespace, a foreign link left alone, nothing removed without --yes."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.model.profile import Segment
from appliance.reconcile.segments import LinkState, ObservedLinks, desired_segments
from appliance.uninstall import plan_removal
from tests.conftest import nft_in, run_appliance

MEC = Segment(
    "mec1",
    "netns",
    "ap-mec1",
    addresses=("10.50.0.1/24",),
    netns="mec1",
    peer_addresses=("10.50.0.10/24",),
)


def test_removal_lists_the_table_then_the_owned_links_and_created_namespaces() -> None:
    (desired,) = desired_segments((MEC,))
    created = LinkState(**{**desired.link.__dict__, "created_netns": True})
    vrf = LinkState("ap-vrf1", "vrf", "vrf1", table=10)
    observed = ObservedLinks(
        {"ap-mec1": created, "ap-vrf1": vrf}, frozenset({"lo", "eth0"}), frozenset({"mec1"})
    )
    removal = plan_removal(True, observed)
    assert removal.describe() == [
        "- table inet appliance",
        "- link ap-mec1",
        "- link ap-vrf1",
        "- netns mec1",
    ]
    assert removal.table_commands() == [
        {"delete": {"table": {"family": "inet", "name": "appliance"}}}
    ]


def test_a_namespace_the_appliance_did_not_create_stays() -> None:
    (desired,) = desired_segments((MEC,))
    observed = ObservedLinks({"ap-mec1": desired.link}, frozenset(), frozenset({"mec1"}))
    assert plan_removal(False, observed).describe() == ["- link ap-mec1"]


def test_nothing_there_is_nothing_to_remove() -> None:
    removal = plan_removal(False, ObservedLinks(links={}, foreign=frozenset({"lo", "eth0"})))
    assert removal.empty
    assert removal.table_commands() == []


@pytest.fixture
def answering_socket(tmp_path: Path) -> Iterator[Path]:
    """A control socket that answers one status request, as a running daemon does."""
    path = tmp_path / "control.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.settimeout(30)

    def answer() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.recv(4096)
            conn.sendall(json.dumps({"ok": True, "status": {}}).encode() + b"\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        server.close()
        thread.join(timeout=5)


def test_refuses_while_a_daemon_answers(answering_socket: Path) -> None:
    done = run_appliance("uninstall", "--yes", "--control-socket", str(answering_socket))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"appliance: a daemon answers on {answering_socket}: stop it first "
        "(it would put the table back)"
    )


# ---- in the kernel (root) --------------------------------------------------------------


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def _namespaces() -> set[str]:
    return {line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()}


def _links(ns: str) -> set[str]:
    return {item["ifname"] for item in json.loads(_ip("-n", ns, "-j", "link", "show").stdout)}


@pytest.fixture
def segment_ns() -> Iterator[str]:
    """The name for the segment's namespace (removed afterwards if anything made it)."""
    name = f"apu-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        _ip("netns", "del", name)


@pytest.mark.root
def test_uninstall_removes_the_table_and_owned_links_only_with_yes(
    netns: str, segment_ns: str, tmp_path: Path
) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text(
        f"""
version = 1
name = "uninstall"
[[rules]]
name = "mec-ping"
from = "mec"
to = "self"
proto = "icmp"
action = "accept"
[[isolation.segments]]
name = "mec1"
kind = "netns"
netns = "{segment_ns}"
addresses = ["10.50.0.1/24"]
peer_addresses = ["10.50.0.10/24"]
zone = "mec"
"""
    )
    assert _ip("-n", netns, "link", "add", "keep0", "type", "veth", "peer", "keep1").returncode == 0
    common = ["--netns", netns, "--state-dir", str(tmp_path / "state"),
              "--control-socket", str(tmp_path / "control.sock")]  # fmt: skip
    applied = run_appliance("apply", str(profile), *common)
    assert applied.returncode == 0, applied.stderr
    assert "ap-mec1" in _links(netns) and segment_ns in _namespaces()

    dry = run_appliance("uninstall", *common)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "would remove:",
        "  - table inet appliance",
        "  - link ap-mec1",
        f"  - netns {segment_ns}",
        "nothing removed: run `appliance uninstall --yes` to remove it",
    ]
    assert "table inet appliance" in nft_in(netns, "list", "tables")
    assert "ap-mec1" in _links(netns) and segment_ns in _namespaces()

    done = run_appliance("uninstall", "--yes", *common)
    assert done.returncode == 0, done.stderr
    assert "removed table inet appliance" in done.stdout
    assert "table inet appliance" not in nft_in(netns, "list", "tables")
    assert _links(netns) == {"lo", "keep0", "keep1"}  # not the appliance's: stays
    assert segment_ns not in _namespaces()

    again = run_appliance("uninstall", "--yes", *common)
    assert (again.returncode, again.stdout) == (0, "nothing to remove\n")
