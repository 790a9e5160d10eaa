"""Which ``nft monitor`` transactions hint at drift (pure), and the monitor child dies with
the daemon (root)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.daemon.monitor import foreign_drift
from tests.daemon.conftest import Daemon, alive, children, wait_until, write_profile

OWN = 100


@pytest.mark.parametrize(
    ("events", "pid", "expected"),
    [
        (["delete rule inet appliance input handle 69"], 200, True),
        (["delete rule inet appliance input handle 69"], OWN, False),
        (["delete table inet appliance"], 200, True),
        (["add rule inet appliance input tcp dport 4444 accept"], 200, True),
        (["delete element inet appliance blocklist { 10.0.0.1 }"], 200, True),
        (["add element inet appliance blocklist { 10.9.9.9 }"], 200, False),
        (["add rule inet other input accept"], 200, False),
        (["delete table inet appliance2"], 200, False),
        (["add rule ip appliance input accept"], 200, False),
        ([], 200, False),
    ],
)
def test_foreign_drift(events: list[str], pid: int, expected: bool) -> None:
    assert foreign_drift(events, pid, OWN) is expected


@pytest.mark.root
def test_the_nft_monitor_child_dies_with_a_daemon_killed_with_sigkill(
    netns: str, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = start_daemon(netns, write_profile(tmp_path / "p.toml"))
    assert daemon.proc is not None
    pid = daemon.proc.pid
    wait_until(lambda: children(pid, "nft"))  # the monitor starts after READY
    monitors = children(pid, "nft")
    daemon.kill()  # SIGKILL: no cleanup in the daemon runs
    wait_until(lambda: not alive(monitors[0]), timeout=30)
