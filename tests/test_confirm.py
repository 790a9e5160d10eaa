"""Commit-confirm's snapshot of the segments' links and their restore, on the fake links."""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from pathlib import Path

import pytest

from appliance.confirm import links_snapshot, pending_path, restore_links
from appliance.daemon.policies import policy_from_profile
from appliance.engine import Engine
from appliance.model.parse import load_profile
from appliance.reconcile.state import Desired
from tests.conftest import nft_in, run_appliance
from tests.daemon.conftest import wait_until
from tests.fakekernel import FakeKernel, FakeLinks


def _segments(tmp_path: Path, name: str, *segments: tuple[str, str, str]) -> Desired:
    text = f'version = 1\nname = "{name}"\n'
    for segment, netns, address in segments:
        text += (
            f'\n[[isolation.segments]]\nname = "{segment}"\nkind = "netns"\nnetns = "{netns}"\n'
            f'addresses = ["{address}.1/24"]\npeer_addresses = ["{address}.10/24"]\n'
            f'zone = "z{segment}"\n'
        )
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return policy_from_profile(str(path), load_profile(path)).desired


def test_a_rollback_puts_the_links_back_as_they_were(tmp_path: Path) -> None:
    links = FakeLinks()
    engine = Engine(FakeKernel(), links)
    engine.apply(
        _segments(tmp_path, "before", ("mec1", "mec-a", "10.50.0"), ("mec2", "mec-b", "10.60.0"))
    )
    before = copy.deepcopy(links.state)
    snapshot = json.loads(json.dumps(links_snapshot(links)))  # as the pending record keeps it
    # the new policy: mec1 readdressed, mec2 gone (its link and namespace), mec3 new
    engine.apply(
        _segments(tmp_path, "after", ("mec1", "mec-a", "10.70.0"), ("mec3", "mec-c", "10.80.0"))
    )
    assert links.state != before
    restore_links(links, snapshot)
    assert links.state.links == before.links
    assert {ns: links.state.peers.get(ns) for ns in before.peers} == before.peers
    assert "ap-mec3" not in links.state.links


def test_without_segments_nothing_is_recorded_or_changed(tmp_path: Path) -> None:
    links = FakeLinks()
    snapshot = links_snapshot(links)
    assert snapshot == []
    restore_links(links, [])
    assert links.runs == [[], []] or links.runs == []
    assert links_snapshot(None) is None


@pytest.mark.root
def test_an_unconfirmed_apply_takes_back_the_segment_links_it_made(
    netns: str, tmp_path: Path
) -> None:
    segment_ns = f"aps-{uuid.uuid4().hex[:8]}"
    profile = tmp_path / "seg.toml"
    profile.write_text(
        'version = 1\nname = "segments"\n\n[[isolation.segments]]\nname = "mec1"\n'
        f'kind = "netns"\nnetns = "{segment_ns}"\naddresses = ["10.50.0.1/24"]\n'
        'peer_addresses = ["10.50.0.10/24"]\nzone = "mec"\n'
    )
    state = tmp_path / "state"
    try:
        result = run_appliance(
            "apply", "--netns", netns, "--state-dir", str(state), "--confirm", "1s", str(profile)
        )
        assert result.returncode == 0, result.stderr
        assert "ap-mec1" in _links(netns)
        # the watcher removes the pending record once it has rolled back
        wait_until(lambda: not pending_path(str(state)).exists(), timeout=30)
        assert "ap-mec1" not in _links(netns)
        assert segment_ns not in _namespaces()  # the apply made it: it goes too
        assert nft_in(netns, "list", "tables", check=False).strip() == ""
    finally:
        subprocess.run(["ip", "netns", "del", segment_ns], capture_output=True, check=False)


def _links(ns: str) -> list[str]:
    out = subprocess.run(
        ["ip", "-n", ns, "-j", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    return [item["ifname"] for item in json.loads(out)]


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
