"""Which ``nft monitor`` transactions hint at drift (pure), the watch going on after its
failures (a stand-in for ``nft monitor``), and the monitor child dies with the daemon
(root)."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.daemon.monitor import TableMonitor, foreign_drift
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


FAKE_MONITOR = """
import sys
print("delete rule inet appliance input handle 69")
print("# new generation 7 by process 200 (nft)", flush=True)
sys.exit(3)
"""


def _watch(
    on_drift: Callable[[], None], until: Callable[[TableMonitor], bool]
) -> tuple[TableMonitor, list[str]]:
    """A monitor over a stand-in for ``nft monitor`` that reports one foreign change and
    ends, run until ``until`` holds (10 s at most)."""
    told: list[str] = []
    log = logging.getLogger("test.monitor")
    command = (sys.executable, "-c", FAKE_MONITOR)
    monitor = TableMonitor(on_drift, OWN, log, command, on_error=told.append, restart_pause=0.01)

    async def run() -> None:
        assert await monitor.start()
        try:
            deadline = asyncio.get_running_loop().time() + 10
            while not until(monitor) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
        finally:
            await monitor.stop()

    asyncio.run(run())
    return monitor, told


def test_an_nft_monitor_that_ends_is_started_again_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hints: list[int] = []
    with caplog.at_level(logging.WARNING, logger="test.monitor"):
        monitor, told = _watch(lambda: hints.append(1), lambda m: len(hints) >= 3)
    assert len(hints) >= 3  # each new start reported the change again
    assert monitor.errors >= 2 and len(told) >= 2
    assert all("nft monitor ended (exit 3)" in reason for reason in told)
    lines = [r.getMessage() for r in caplog.records if "table watch" in r.getMessage()]
    assert lines and all("\n" not in line for line in lines)


def test_a_failed_drift_hint_is_logged_and_the_watch_goes_on() -> None:
    calls: list[int] = []

    def failing() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the kernel refused the repair")

    _monitor, told = _watch(failing, lambda m: len(calls) >= 2)
    assert len(calls) >= 2  # still watching after the failure
    assert any("drift hint failed" in r and "refused the repair" in r for r in told)


def test_the_daemon_counts_its_table_watch_failures_in_a_metric(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from tests.daemon.test_decisions import Rig

    rig = Rig(tmp_path)
    monitor = rig.daemon._monitor
    assert monitor.on_error is not None
    monitor.on_error("nft monitor ended (exit 1); started again in 1 s")
    monitor.on_error("drift hint failed: RuntimeError()")
    text = generate_latest(rig.daemon.ctx.metrics.registry).decode()
    assert "appliance_table_watch_errors_total 2.0" in text
    rig.daemon.ctx.executor.shutdown(wait=True)
