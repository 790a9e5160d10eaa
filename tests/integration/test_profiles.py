"""The shipped profiles, enforced in the lab: the flows typical of each (real traffic, root)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

import appliance.lab
from appliance.lab import netns, runner, scenarios, traffic
from tests.conftest import owned
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


def _rule_packets(output: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in output.splitlines():
        match = re.fullmatch(r'\s*appliance_rule_packets_total\{rule="([^"]+)"\} (\S+)', line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


def _daemon_pid(output: str) -> int:
    match = re.search(r"READY=1 after \S+ \(pid (\d+)\)", output)
    assert match, output
    return int(match.group(1))


def test_edge_gateway_demo() -> None:
    prefix = owned("idemo") + "-"
    out = io.StringIO()
    try:
        status = appliance.lab.demo(str(PROFILES / "edge-gateway.toml"), prefix=prefix, out=out)
        text = out.getvalue()
        assert status == 0, text
        assert "all" in text and "expectations held" in text
        assert "policy:        edge-gateway (profile)" in text  # `appliance status`
        # The metrics, scraped from the daemon inside the namespace.
        packets = _rule_packets(text)
        assert packets.get("lan-web-out", 0) > 0, text
        assert sum(1 for value in packets.values() if value > 0) >= 5, text
        for name in ("appliance_apply_total", 'appliance_set_elements{set="blocklist"}'):
            assert name in text
        assert 'appliance_drift_repairs_total{kind="structure"} 1.0' in text
        assert "$ appliance set add blocklist 198.51.100.2: exit 0" in text
        assert "exit status 0" in text  # SIGTERM
        assert not Path(f"/proc/{_daemon_pid(text)}").exists()  # nothing left running
        assert netns.existing(prefix) == []  # and the lab is gone
    finally:
        netns.down(prefix)


def test_demo_with_an_unknown_profile_surveys(tmp_path: Path) -> None:
    profile = tmp_path / "open.toml"
    profile.write_text(
        'version = 1\nname = "wide-open"\n[defaults]\ninput = "accept"\nforward = "accept"\n'
    )
    prefix = owned("isurv") + "-"
    out = io.StringIO()
    try:
        assert appliance.lab.demo(str(profile), prefix=prefix, out=out) == 0, out.getvalue()
        assert "lan -> wan 198.51.100.2 tcp/443" in out.getvalue()
        # No [metrics] in the profile: the demo gives the daemon the lab's loopback.
        assert "appliance_policy_version 1.0" in out.getvalue()
        assert netns.existing(prefix) == []
    finally:
        netns.down(prefix)


def test_demo_reports_a_profile_that_does_not_apply(tmp_path: Path) -> None:
    profile = tmp_path / "bad.toml"
    profile.write_text('version = 1\nname = "bad"\n[defaults]\ninput = "sometimes"\n')
    prefix = owned("ibad") + "-"
    out = io.StringIO()
    try:
        assert appliance.lab.demo(str(profile), prefix=prefix, out=out) == 1
        assert "defaults.input" in out.getvalue()
        assert "failsafe policy instead" in out.getvalue()
        assert not Path(f"/proc/{_daemon_pid(out.getvalue())}").exists()
        assert netns.existing(prefix) == []
    finally:
        netns.down(prefix)
