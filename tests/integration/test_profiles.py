"""The shipped profiles, enforced in the lab: the flows typical of each (real traffic, root)."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest

import appliance.lab
from appliance.lab import netns, runner, scenarios, traffic
from tests.integration.labtools import REPO, Lab, probe

pytestmark = pytest.mark.root

PROFILES = REPO / "profiles"
SHIPPED = {
    "edge-gateway.toml": scenarios.EDGE_GATEWAY,
    "mec-node.toml": scenarios.MEC_NODE,
    "iot-gateway.toml": scenarios.IOT_GATEWAY,
    "5g-upf-n6.toml": scenarios.UPF_N6,
}


def run_scenario(lab: Lab, scenario: scenarios.Scenario) -> None:
    out = io.StringIO()
    try:
        results = runner.run_steps(lab.topo, scenario, str(lab.state_dir), out)
    finally:
        # Run-time elements outlive the next apply: take them out again.
        for step in scenario.steps:
            if isinstance(step, scenarios.SetAdd):
                lab.appliance("set", "del", step.set, *step.elements, check=False)
    failed = [r for r in results if not r.ok]
    assert not failed, out.getvalue()


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_profile_in_the_lab(lab: Lab, name: str) -> None:
    lab.apply_file(PROFILES / name)
    run_scenario(lab, SHIPPED[name])


def test_base_profile(lab: Lab) -> None:
    lab.apply_file(PROFILES / "base.toml")
    with traffic.serve(lab.ns("appliance"), "tcp", [22, 80]):
        # SSH only from the management set (192.168.10.0/28 holds the lan host).
        assert probe(lab, "lan", "appliance", "tcp", 22, expect="open") == "open"
        assert probe(lab, "lan", "appliance", "tcp", 22, 6, expect="open") == "open"
        assert probe(lab, "wan", "appliance", "tcp", 22, expect="timeout") == "timeout"
        assert probe(lab, "lan", "appliance", "tcp", 80, expect="timeout") == "timeout"
        assert probe(lab, "wan", "appliance", "icmp", 0, expect="open") == "open"
        assert probe(lab, "wan", "appliance", "icmp", 0, 6, expect="open") == "open"
    # Nothing is forwarded.
    with traffic.serve(lab.ns("wan"), "tcp", 80):
        assert probe(lab, "lan", "wan", "tcp", 80, expect="timeout") == "timeout"


def test_upf_only_named_core_peers_speak_pfcp(lab: Lab) -> None:
    lab.apply_file(PROFILES / "5g-upf-n6.toml")
    impostor = "192.168.10.20"  # on the core link, but not a core peer
    netns.add_address(lab.ns("lan"), "eth0", f"{impostor}/32")
    try:
        with traffic.serve(lab.ns("appliance"), "udp", [2152, 8805]) as upf:
            for port in (8805, 2152):
                got = traffic.udp_probe(lab.ns("lan"), "192.168.10.1", port, 0.7, source=impostor)
                assert got == "timeout", port
                got = traffic.udp_probe(lab.ns("lan"), "192.168.10.1", port, 3.0)
                assert got == "open", port
            assert impostor not in upf.peers()
    finally:
        netns.del_address(lab.ns("lan"), "eth0", f"{impostor}/32")


def test_edge_gateway_demo() -> None:
    prefix = f"idemo{uuid.uuid4().hex[:3]}-"
    out = io.StringIO()
    try:
        status = appliance.lab.demo(str(PROFILES / "edge-gateway.toml"), prefix=prefix, out=out)
        assert status == 0, out.getvalue()
        assert "all" in out.getvalue() and "expectations held" in out.getvalue()
        assert "lan-web-out" in out.getvalue()  # the counters are shown
        assert netns.existing(prefix) == []  # and the lab is gone
    finally:
        netns.down(prefix)


def test_demo_with_an_unknown_profile_surveys(tmp_path: Path) -> None:
    profile = tmp_path / "open.toml"
    profile.write_text(
        'version = 1\nname = "wide-open"\n[defaults]\ninput = "accept"\nforward = "accept"\n'
    )
    prefix = f"isurv{uuid.uuid4().hex[:3]}-"
    out = io.StringIO()
    try:
        assert appliance.lab.demo(str(profile), prefix=prefix, out=out) == 0, out.getvalue()
        assert "lan -> wan 198.51.100.2 tcp/443" in out.getvalue()
    finally:
        netns.down(prefix)


def test_demo_reports_a_profile_that_does_not_apply(tmp_path: Path) -> None:
    profile = tmp_path / "bad.toml"
    profile.write_text('version = 1\nname = "bad"\n[defaults]\ninput = "sometimes"\n')
    prefix = f"ibad{uuid.uuid4().hex[:3]}-"
    out = io.StringIO()
    try:
        assert appliance.lab.demo(str(profile), prefix=prefix, out=out) == 1
        assert "defaults.input" in out.getvalue()
        assert netns.existing(prefix) == []
    finally:
        netns.down(prefix)
