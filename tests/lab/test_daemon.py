"""The lab's daemon child: READY over a notify socket, status, metrics, stop, and no leftovers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.lab import topology
from appliance.lab.daemon import DaemonFailed, LabDaemon, metric_lines, metric_value, scrape

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "edge-gateway.toml"

EXPOSITION = """\
# HELP appliance_policy_version Generation of the enforced policy
# TYPE appliance_policy_version gauge
appliance_policy_version 2.0
appliance_rule_packets_total{rule="lan-web-out"} 7.0
appliance_rule_packets_created{rule="lan-web-out"} 1.7e+09
appliance_rule_bytes_total{rule="lan-web-out"} 420.0
appliance_set_elements{set="blocklist"} 3.0
"""


def test_metric_lines_picks_samples_by_name() -> None:
    lines = metric_lines(EXPOSITION, ("appliance_policy_version", "appliance_rule_packets_total"))
    assert lines == [
        "appliance_policy_version 2.0",
        'appliance_rule_packets_total{rule="lan-web-out"} 7.0',
    ]


def test_metric_value() -> None:
    assert metric_value(EXPOSITION, "appliance_policy_version") == 2.0
    assert metric_value(EXPOSITION, "appliance_set_elements", {"set": "blocklist"}) == 3.0
    assert metric_value(EXPOSITION, "appliance_set_elements", {"set": "nope"}) is None


@pytest.mark.root
def test_daemon_ready_status_metrics_and_stop(lab: topology.Lab, tmp_path: Path) -> None:
    with LabDaemon(lab.ns("appliance"), str(PROFILE), tmp_path) as daemon:
        seconds = daemon.start(timeout=30)
        assert 0 < seconds < 30
        status = daemon.status()
        assert (status["policy"], status["source"]) == ("edge-gateway", "profile")
        assert status["pid"] == daemon.pid
        text = scrape(lab.ns("appliance"), status["metrics_listen"])
        assert metric_value(text, "appliance_policy_version") == 1.0
        assert daemon.stop() == 0


@pytest.mark.root
def test_close_kills_a_running_daemon(lab: topology.Lab, tmp_path: Path) -> None:
    daemon = LabDaemon(lab.ns("appliance"), str(PROFILE), tmp_path)
    try:
        daemon.start(timeout=30)
        pid = daemon.pid
        assert pid is not None and os.path.exists(f"/proc/{pid}")
    finally:
        daemon.close()
    assert not daemon.running()
    assert not os.path.exists(f"/proc/{pid}")
    assert not os.path.exists(daemon.notify_path)


@pytest.mark.root
def test_a_daemon_that_exits_is_reported(lab: topology.Lab, tmp_path: Path) -> None:
    with LabDaemon(
        lab.ns("appliance"), str(PROFILE), tmp_path, extra_args=["--resync-interval", "0"]
    ) as daemon:
        with pytest.raises(DaemonFailed, match="exited with status 2"):
            daemon.start(timeout=30)
        assert any("--resync-interval" in line for line in daemon.log_lines())
