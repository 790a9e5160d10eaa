"""Outside interference: someone flushes the whole ruleset, deletes the daemon's rules, or
keeps writing into its table while it reloads; the table comes back each time and every
repair is counted, in status and in metrics."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.daemon.control import request
from tests.conftest import nft_in
from tests.daemon.conftest import (
    EXTRA_RULE,
    Daemon,
    rule_handles,
    wait_until,
    write_profile,
)
from tests.reliability.conftest import trials

pytestmark = pytest.mark.root

Start = Callable[..., Daemon]

ROUNDS = trials(ci=5, soak=50)
REPAIRED_WITHIN = 15.0  # generous: a wait for the event, not a timing criterion


def _repairs(daemon: Daemon) -> dict[str, int]:
    repairs: dict[str, int] = daemon.status()["drift_repairs"]
    return repairs


def _total(daemon: Daemon) -> int:
    return sum(_repairs(daemon).values())


def _back(ns: str, expected: set[str]) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return set(rule_handles(ns)) == expected
        except Exception:  # table missing for the moment
            return False

    return check


def test_flush_ruleset_brings_the_table_back_each_time_and_counts_each_repair(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    daemon = start_daemon(netns, write_profile(tmp_path / "p.toml"))
    expected = set(rule_handles(netns))
    took: list[float] = []
    for round_ in range(ROUNDS):
        before = _total(daemon)
        started = time.monotonic()
        nft_in(netns, "flush", "ruleset")
        wait_until(
            lambda before=before: _total(daemon) > before and _back(netns, expected)(),
            timeout=REPAIRED_WITHIN,
            step=0.01,
        )
        took.append(time.monotonic() - started)
        assert _total(daemon) == round_ + 1
    assert _repairs(daemon) == {"table_missing": ROUNDS}
    assert f'appliance_drift_repairs_total{{kind="table_missing"}} {ROUNDS}.0' in daemon.metrics()
    assert daemon.status()["last_error"] is None
    print(f"flush ruleset: {ROUNDS} repairs, slowest {max(took):.3f}s (resync interval 0.5s)")


def test_each_deleted_rule_is_put_back_and_counted(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    daemon = start_daemon(netns, write_profile(tmp_path / "p.toml"))
    expected = set(rule_handles(netns))
    took: list[float] = []
    for round_ in range(ROUNDS):
        handle = rule_handles(netns)["ssh"]
        started = time.monotonic()
        nft_in(netns, "delete", "rule", "inet", "appliance", "input", "handle", str(handle))
        wait_until(
            lambda round_=round_: _total(daemon) > round_ and _back(netns, expected)(),
            timeout=REPAIRED_WITHIN,
            step=0.01,
        )
        took.append(time.monotonic() - started)
    assert _repairs(daemon) == {"structure": ROUNDS}
    assert daemon.status()["last_error"] is None
    print(f"rule deletion: {ROUNDS} repairs, slowest {max(took):.3f}s")


def test_a_competing_writer_during_reloads_loses_and_the_daemon_ends_clean(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    profile = write_profile(tmp_path / "p.toml")
    daemon = start_daemon(netns, profile)
    stop = threading.Event()
    writes = 0

    def compete() -> None:
        nonlocal writes
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            nft_in(
                netns,
                "insert",
                "rule",
                "inet",
                "appliance",
                "input",
                "tcp",
                "dport",
                "4444",
                "accept",
                check=False,
            )
            writes += 1
            stop.wait(0.05)

    writer = threading.Thread(target=compete, daemon=True)
    writer.start()
    try:
        for reload in range(ROUNDS):
            write_profile(profile, extra=EXTRA_RULE if reload % 2 == 0 else "")
            daemon.send_signal(signal.SIGHUP)
            daemon.wait_for("RELOADING=1")
            daemon.wait_for("READY=1")
        wait_until(lambda: _total(daemon) >= 1, timeout=REPAIRED_WITHIN)
    finally:
        stop.set()
        writer.join(30)
    # the foreign rule (no comment) is gone once the writer stopped; the last profile holds
    wait_until(lambda: "dport 4444" not in nft_in(netns, "list", "table", "inet", "appliance"))
    assert ("web" in rule_handles(netns)) == ((ROUNDS - 1) % 2 == 0)
    status = daemon.status()
    assert status["last_error"] is None
    assert status["generation"] == ROUNDS + 1
    print(f"competing writer: {writes} foreign writes, repairs {status['drift_repairs']}")


def test_a_rule_deleted_beside_an_overlapping_run_time_element_is_repaired(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    """A run-time element that overlaps a policy element (the /24 taken out, a /25 of it put
    in) must not make the repair's transaction fail."""
    daemon = start_daemon(netns, write_profile(tmp_path / "p.toml"))
    expected = set(rule_handles(netns))
    # a read-back between the two requests puts the policy's /24 back and the kernel then
    # refuses the /25: the pair goes straight to the control socket (no process start in
    # between) and is tried again, bounded, until the /25 is in
    for _attempt in range(50):
        request(
            daemon.socket, {"op": "set_del", "set": "blocklist", "elements": ["203.0.113.0/24"]}
        )
        added = request(
            daemon.socket, {"op": "set_add", "set": "blocklist", "elements": ["203.0.113.0/25"]}
        )
        if added["ok"]:
            break
    assert added["ok"], added
    before = _total(daemon)
    handle = rule_handles(netns)["ssh"]
    nft_in(netns, "delete", "rule", "inet", "appliance", "input", "handle", str(handle))
    wait_until(
        lambda: _total(daemon) > before and _back(netns, expected)(),
        timeout=REPAIRED_WITHIN,
        step=0.01,
    )
    assert daemon.status()["last_error"] is None
