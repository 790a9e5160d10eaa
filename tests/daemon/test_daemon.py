"""The daemon in a namespace: readiness, shutdown, crash and restart, drift repair, reloads,
boot fallbacks, status and metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import nft_in, run_appliance
from tests.daemon.conftest import (
    ECHO_RULE,
    EXTRA_RULE,
    Daemon,
    echo_flow,
    monitor_listening,
    peer_namespace,
    rule_handles,
    set_elements,
    wait_until,
    write_profile,
)

pytestmark = pytest.mark.root

Start = Callable[..., Daemon]


def test_starts_reports_ready_and_answers_status(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    daemon = start_daemon(netns, write_profile(tmp_path / "p.toml"))
    assert any("READY=1" in m.split("\n") for m in daemon.messages)
    status = daemon.status()
    assert status["policy"] == "daemon-test"
    assert status["source"] == "profile"
    assert status["last_error"] is None
    assert status["sets"]["blocklist"] == 2
    assert status["rss_bytes"] > 0
    assert "drop-blocklist" in nft_in(netns, "list", "table", "inet", "appliance")
    result = run_appliance("status", "--control-socket", daemon.socket)
    assert result.returncode == 0, result.stderr
    assert "daemon-test" in result.stdout
    result = run_appliance("status", "--json", "--control-socket", daemon.socket)
    assert json.loads(result.stdout)["table_hash"] == status["table_hash"]
    # the last good policy is on disk, and the socket is private
    assert (daemon.state_dir / "last-good.json").exists()
    assert Path(daemon.socket).stat().st_mode & 0o777 == 0o600
    assert all(isinstance(e["msg"], str) for e in daemon.log_entries())


def test_status_without_daemon_exits_1(tmp_path: Path) -> None:
    result = run_appliance("status", "--control-socket", str(tmp_path / "none.sock"))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1


def test_sigterm_exits_0_and_the_table_stays(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    daemon = start_daemon(netns, write_profile(tmp_path / "p.toml"))
    before = rule_handles(netns)
    assert daemon.stop(signal.SIGTERM) == 0
    assert any("STOPPING=1" in m.split("\n") for m in _drain(daemon))
    assert rule_handles(netns) == before
    assert not Path(daemon.socket).exists()


def test_kill_9_leaves_the_table_and_a_restart_reconciles_without_a_gap(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    profile = write_profile(tmp_path / "p.toml")
    first = start_daemon(netns, profile)
    handles = rule_handles(netns)
    first.kill()
    assert rule_handles(netns) == handles  # still enforced with the daemon gone
    second = start_daemon(netns, profile)
    assert second.status()["source"] == "profile"
    assert rule_handles(netns) == handles  # same table: nothing was swapped or removed
    # a restart with a changed profile brings the kernel to it
    second.stop()
    write_profile(profile, extra=EXTRA_RULE)
    start_daemon(netns, profile)
    assert "web" in rule_handles(netns)


def _drain(daemon: Daemon) -> list[str]:
    while daemon.receive(0.2):
        pass
    return daemon.messages


def _first_handle(ns: str, comment: str) -> int:
    return rule_handles(ns)[comment]


DRIFT: dict[str, tuple[str, Callable[[str], object]]] = {
    "delete-rule": (
        "structure",
        lambda ns: nft_in(
            ns,
            "delete",
            "rule",
            "inet",
            "appliance",
            "input",
            "handle",
            str(_first_handle(ns, "ssh")),
        ),
    ),
    "insert-rule": (
        "structure",
        lambda ns: nft_in(
            ns, "insert", "rule", "inet", "appliance", "input", "tcp", "dport", "4444", "accept"
        ),
    ),
    "flush-set": (
        "elements",
        lambda ns: nft_in(ns, "flush", "set", "inet", "appliance", "blocklist"),
    ),
    "delete-table": (
        "table_missing",
        lambda ns: nft_in(ns, "delete", "table", "inet", "appliance"),
    ),
    "delete-element": (
        "elements",
        lambda ns: nft_in(
            ns, "delete", "element", "inet", "appliance", "blocklist", "{ 198.51.100.1 }"
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(DRIFT))
def test_drift_is_repaired_and_counted(
    netns: str, start_daemon: Start, tmp_path: Path, case: str
) -> None:
    kind, act = DRIFT[case]
    profile = write_profile(tmp_path / "p.toml")
    daemon = start_daemon(netns, profile)
    act(netns)
    wait_until(lambda: daemon.status()["drift_repairs"].get(kind, 0) >= 1)
    plan = run_appliance("plan", "--netns", netns, str(profile))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "4444" not in nft_in(netns, "list", "table", "inet", "appliance")
    assert f'appliance_drift_repairs_total{{kind="{kind}"}} 1.0' in daemon.metrics()
    assert any(e["msg"] == "drift repaired" and e["kind"] == kind for e in daemon.log_entries())


def test_run_time_set_add_is_not_drift(netns: str, start_daemon: Start, tmp_path: Path) -> None:
    daemon = start_daemon(netns, write_profile(tmp_path / "p.toml"))
    result = run_appliance(
        "set",
        "add",
        "blocklist",
        "192.0.2.77",
        "--netns",
        netns,
        "--control-socket",
        daemon.socket,
    )
    assert result.returncode == 0, result.stderr
    assert any("192.0.2.77" in e for e in set_elements(netns, "blocklist"))
    result = run_appliance(
        "set",
        "add",
        "autoblock_v4",
        "192.0.2.88",
        "--timeout",
        "1h",
        "--netns",
        netns,
        "--control-socket",
        daemon.socket,
    )
    assert result.returncode == 0, result.stderr
    time.sleep(2)  # four read-backs
    status = daemon.status()
    assert status["drift_repairs"] == {}
    assert status["sets"]["blocklist"] == 3
    assert status["sets"]["autoblock_v4"] == 1
    assert any("192.0.2.77" in e for e in set_elements(netns, "blocklist"))
    listed = run_appliance(
        "set", "list", "blocklist", "--netns", netns, "--control-socket", daemon.socket
    )
    assert "192.0.2.77" in listed.stdout
    bad = run_appliance(
        "set",
        "add",
        "blocklist",
        "2001:db8::1",
        "--netns",
        netns,
        "--control-socket",
        daemon.socket,
    )
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1
    assert 'appliance_set_elements{set="blocklist"} 3.0' in daemon.metrics()


def test_sighup_with_a_set_only_change_keeps_rule_handles(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    profile = write_profile(tmp_path / "p.toml")
    daemon = start_daemon(netns, profile)
    run_appliance("set", "add", "blocklist", "192.0.2.77", "--control-socket", daemon.socket)
    handles = rule_handles(netns)
    write_profile(profile, ["203.0.113.0/24", "198.51.100.9"])
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for("RELOADING=1")
    daemon.wait_for("READY=1")
    assert rule_handles(netns) == handles
    elements = " ".join(set_elements(netns, "blocklist"))
    assert "198.51.100.9" in elements
    assert '198.51.100.1"' not in elements
    assert "192.0.2.77" in elements  # run-time element kept
    assert daemon.status()["drift_repairs"] == {}


def test_sighup_with_a_structural_change_never_leaves_the_table_missing(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    profile = write_profile(tmp_path / "p.toml")
    daemon = start_daemon(netns, profile)
    run_appliance("set", "add", "blocklist", "192.0.2.77", "--control-socket", daemon.socket)
    failures: list[str] = []
    samples = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal samples
        while not done.is_set():
            result = subprocess.run(
                ["ip", "netns", "exec", netns, "nft", "list", "table", "inet", "appliance"],
                capture_output=True,
                text=True,
            )
            samples += 1
            if result.returncode != 0:
                failures.append(result.stderr)
            time.sleep(0.01)

    def wait_for_samples(count: int) -> None:
        deadline = time.monotonic() + 20
        while samples < count and time.monotonic() < deadline:
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        wait_for_samples(5)  # sampling before the reload ...
        write_profile(profile, extra=EXTRA_RULE)
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for("RELOADING=1")
        daemon.wait_for("READY=1")
        wait_for_samples(samples + 5)  # ... through it, and after it (however loaded the host)
    finally:
        done.set()
        sampler.join()
    assert samples >= 10
    assert failures == []
    assert "web" in rule_handles(netns)
    assert any("192.0.2.77" in e for e in set_elements(netns, "blocklist"))
    assert daemon.status()["generation"] == 2


def test_invalid_profile_on_reload_keeps_the_running_policy(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    profile = write_profile(tmp_path / "p.toml")
    daemon = start_daemon(netns, profile)
    before = daemon.status()["table_hash"]
    handles = rule_handles(netns)
    profile.write_text(profile.read_text() + "\n[[rules]]\nname = 'x'\naction = 'maybe'\n")
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for("RELOADING=1")
    daemon.wait_for("READY=1")
    status = daemon.status()
    assert status["table_hash"] == before
    assert str(profile) in status["last_error"]
    assert rule_handles(netns) == handles
    assert "appliance_policy_error 1.0" in daemon.metrics()


def test_invalid_profile_at_boot_enforces_the_last_good(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    profile = write_profile(tmp_path / "p.toml")
    first = start_daemon(netns, profile)
    good_hash = first.status()["table_hash"]
    assert first.stop() == 0
    nft_in(netns, "delete", "table", "inet", "appliance")  # e.g. after a reboot
    profile.write_text("version = 1\nname = 'broken'\n[zones.lan]\ninterfaces = 42\n")
    second = start_daemon(netns, profile)
    status = second.status()
    assert status["source"] == "last_good"
    assert status["table_hash"] == good_hash
    assert status["last_error"] and "zones.lan.interfaces" in status["last_error"]
    assert "drop-blocklist" in rule_handles(netns)
    metrics = second.metrics()  # the last good policy's [metrics] address
    assert "appliance_policy_error 1.0" in metrics
    assert 'source="last_good"' in metrics


def test_missing_profile_without_last_good_enforces_the_failsafe(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    daemon = start_daemon(netns, tmp_path / "absent.toml")
    status = daemon.status()
    assert status["source"] == "failsafe"
    assert status["policy"] == "failsafe"
    assert "absent.toml" in status["last_error"]
    table = nft_in(netns, "list", "table", "inet", "appliance")
    assert "policy drop" in table
    assert "failsafe-management" in table
    assert not (daemon.state_dir / "last-good.json").exists()


def test_metrics_endpoint_answers_with_the_metric_names(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    daemon = start_daemon(netns, write_profile(tmp_path / "p.toml"))
    text = daemon.metrics()
    for name in (
        "appliance_policy_version",
        "appliance_apply_total",
        "appliance_apply_seconds_bucket",
        'appliance_rule_packets_total{rule="ssh"}',
        'appliance_rule_bytes_total{rule="drop-blocklist"}',
        'appliance_set_elements{set="blocklist"} 2.0',
        "appliance_autoblock_elements 0.0",
        "appliance_drift_repairs_total",
        "appliance_inspect_packets_total",
        "appliance_inspect_dropped_total",
        "appliance_hub_sync_total",
        "appliance_hub_last_success_timestamp_seconds",
        "appliance_segments_waiting 0.0",
    ):
        assert name in text, name
    assert "ap_autoblock" not in text  # built-in counters are not rules
    missing = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://127.0.0.1:9469/other",
        ],
        capture_output=True,
        text=True,
    )
    assert missing.stdout == "404"


def test_status_and_metrics_answer_while_a_100k_set_is_applied(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    profile = write_profile(tmp_path / "p.toml")
    daemon = start_daemon(netns, profile)
    big = tmp_path / "big.txt"
    big.write_text(  # every other address: adjacent ones would merge into one range
        "".join(f"10.{i >> 15 & 255}.{i >> 7 & 255}.{i << 1 & 255}\n" for i in range(100_000))
    )
    text = profile.read_text().replace(
        'elements = ["203.0.113.0/24", "198.51.100.1"]', f'elements_file = "{big}"'
    )
    profile.write_text(text)
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for("RELOADING=1")
    latencies: list[float] = []
    scrapes = 0
    ready = False
    while not ready:
        started = time.monotonic()
        daemon.status()
        latencies.append(time.monotonic() - started)
        if len(latencies) % 10 == 0:
            assert "appliance_policy_version" in daemon.metrics()
            scrapes += 1
        ready = daemon.receive(0.01) is not None and "READY=1" in daemon.messages[-1]
    status = daemon.status()
    assert status["sets"]["blocklist"] == 100_000
    assert status["last_error"] is None
    assert len(latencies) >= 3
    print(f"status: {len(latencies)} answers, max {max(latencies):.3f}s, {scrapes} scrapes")
    assert max(latencies) < 2.0, max(latencies)


def test_an_unconfirmed_reload_is_rolled_back(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    profile = write_profile(tmp_path / "p.toml")
    daemon = start_daemon(netns, profile, "--confirm", "1s")
    first = daemon.status()["table_hash"]
    write_profile(profile, extra=EXTRA_RULE)
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for("READY=1")
    assert "web" in rule_handles(netns)
    assert daemon.status()["confirm_pending_until"] is not None
    wait_until(lambda: daemon.status()["table_hash"] == first, timeout=10)
    assert "web" not in rule_handles(netns)
    status = daemon.status()
    assert "not confirmed" in status["last_error"]
    assert status["confirm_pending_until"] is None
    time.sleep(1)  # drift repair does not bring the unconfirmed policy back
    assert "web" not in rule_handles(netns)
    assert daemon.status()["drift_repairs"] == {}
    saved = json.loads((daemon.state_dir / "last-good.json").read_text())
    assert saved["table_hash"] == first


def test_a_confirmed_reload_stays_and_becomes_the_last_good(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    profile = write_profile(tmp_path / "p.toml")
    daemon = start_daemon(netns, profile, "--confirm", "2s")
    nothing = run_appliance(
        "confirm", "--control-socket", daemon.socket, "--state-dir", str(tmp_path / "other")
    )
    assert nothing.returncode == 1
    write_profile(profile, extra=EXTRA_RULE)
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for("READY=1")
    new = daemon.status()["table_hash"]
    result = run_appliance("confirm", "--control-socket", daemon.socket)
    assert result.returncode == 0, result.stderr
    time.sleep(2.5)
    assert "web" in rule_handles(netns)
    status = daemon.status()
    assert status["table_hash"] == new
    assert status["last_error"] is None
    saved = json.loads((daemon.state_dir / "last-good.json").read_text())
    assert saved["table_hash"] == new


def test_watchdog_pings_from_the_loop(netns: str, tmp_path: Path) -> None:
    daemon = Daemon(netns, tmp_path, write_profile(tmp_path / "p.toml"))
    try:
        daemon.start(env={"WATCHDOG_USEC": "200000"}).ready()
        daemon.wait_for("WATCHDOG=1", timeout=5)
        daemon.wait_for("WATCHDOG=1", timeout=5)
    finally:
        daemon.close()


def test_table_events_repair_drift_before_the_next_read_back(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    daemon = start_daemon(netns, write_profile(tmp_path / "p.toml"), "--resync-interval", "600")
    assert daemon.proc is not None
    pid = daemon.proc.pid
    wait_until(lambda: monitor_listening(pid))  # the table watch starts after READY
    handle = rule_handles(netns)["ssh"]
    nft_in(netns, "delete", "rule", "inet", "appliance", "input", "handle", str(handle))
    wait_until(lambda: daemon.status()["drift_repairs"].get("structure") == 1, timeout=5)
    assert "ssh" in rule_handles(netns)
    run_appliance("set", "add", "blocklist", "192.0.2.7", "--control-socket", daemon.socket)
    nft_in(netns, "add", "element", "inet", "appliance", "blocklist", "{ 192.0.2.8 }")
    time.sleep(1)
    assert daemon.status()["drift_repairs"] == {"structure": 1}


def test_sighup_with_a_set_only_change_keeps_counters_and_an_established_connection(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    with peer_namespace(netns, f"{netns}-peer") as link:
        profile = write_profile(tmp_path / "p.toml", extra=ECHO_RULE)
        daemon = start_daemon(netns, profile)
        with echo_flow(netns, link.outer, timeout=5) as flow:
            flow.echo("before")
            handles = rule_handles(netns)
            counted = _counter(netns, "echo")
            assert counted >= 1
            write_profile(profile, ["203.0.113.0/24", "198.51.100.9"], extra=ECHO_RULE)
            daemon.send_signal(signal.SIGHUP)
            daemon.wait_for("RELOADING=1")
            daemon.wait_for("READY=1")
            assert any("198.51.100.9" in e for e in set_elements(netns, "blocklist"))
            flow.echo("after")
            assert rule_handles(netns) == handles
            assert _counter(netns, "echo") == counted  # kept, not reset


def _counter(ns: str, name: str) -> int:
    listing = json.loads(nft_in(ns, "-j", "list", "counter", "inet", "appliance", name))
    return int(next(o["counter"]["packets"] for o in listing["nftables"] if "counter" in o))


def test_a_segment_link_removed_by_hand_is_put_back_and_counted(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    segment_ns = f"aps-{netns[4:]}"
    profile = _segment_profile(tmp_path / "p.toml", segment_ns)
    try:
        daemon = start_daemon(netns, profile, "--resync-interval", "1")
        assert "ap-mec1" in _links(netns)
        assert "ap-mec1" in _links(segment_ns)
        subprocess.run(["ip", "-n", netns, "link", "del", "ap-mec1"], check=True)
        wait_until(lambda: daemon.status()["drift_repairs"].get("segments", 0) >= 1)
        assert "ap-mec1" in _links(netns) and "ap-mec1" in _links(segment_ns)
        assert 'appliance_drift_repairs_total{kind="segments"} 1.0' in daemon.metrics()
        assert daemon.status()["segments"] == ["mec1"]
    finally:
        subprocess.run(["ip", "netns", "del", segment_ns], capture_output=True, check=False)


def _segment_profile(path: Path, segment_ns: str) -> Path:
    """A netns segment mec1 (10.50.0.1 here, 10.50.0.10 in ``segment_ns``), zone mec."""
    path.write_text(
        'version = 1\nname = "segments"\n\n[[isolation.segments]]\nname = "mec1"\n'
        f'kind = "netns"\nnetns = "{segment_ns}"\naddresses = ["10.50.0.1/24"]\n'
        'peer_addresses = ["10.50.0.10/24"]\nzone = "mec"\n\n'
        '[metrics]\nlisten = "127.0.0.1:9469"\n'
    )
    return path


def _links(ns: str) -> list[str]:
    out = subprocess.run(
        ["ip", "-n", ns, "-j", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    return [item["ifname"] for item in json.loads(out)]


def test_a_profile_the_kernel_refused_at_boot_is_enforced_once_it_can_be(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    """A link of someone else's stands under a segment's name at boot: the kernel side
    refuses the profile and the failsafe runs; once the link is gone, a read-back enforces
    the profile without a reload."""
    segment_ns = f"aps-{netns[4:]}"
    profile = _segment_profile(tmp_path / "p.toml", segment_ns)
    subprocess.run(
        ["ip", "-n", netns, "link", "add", "ap-mec1", "type", "veth", "peer", "name", "x1"],
        check=True,
    )
    try:
        daemon = start_daemon(netns, profile, "--resync-interval", "0.5")
        status = daemon.status()
        assert status["source"] == "failsafe", status
        assert "ap-mec1 exists and is not the appliance's" in status["last_error"]
        subprocess.run(["ip", "-n", netns, "link", "del", "ap-mec1"], check=True)
        # The event: logged once the profile is enforced, the error cleared and the policy
        # saved as the last good one (status may show the profile a moment before).
        wait_until(
            lambda: any(
                e["msg"] == "the profile refused at boot is enforced now"
                for e in daemon.log_entries()
            ),
            timeout=20,
        )
        status = daemon.status()
        assert status["source"] == "profile", status
        assert status["policy"] == "segments" and status["last_error"] is None
        assert status["segments"] == ["mec1"]
        assert "ap-mec1" in _links(segment_ns)
    finally:
        subprocess.run(["ip", "netns", "del", segment_ns], capture_output=True, check=False)


def _blocklist_reads(profile: Path, target: str) -> None:
    text = profile.read_text()
    profile.write_text(text.replace("[sets.ports]", f'elements_file = "{target}"\n[sets.ports]', 1))


def test_a_fifo_as_elements_file_never_stalls_the_daemon(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    """At boot the failsafe is enforced (a table, never none) and SIGTERM is honoured; at a
    reload the running policy stays, drift is still repaired and status names the key."""
    fifo = tmp_path / "elements.fifo"
    os.mkfifo(fifo)
    profile = write_profile(tmp_path / "p.toml")
    _blocklist_reads(profile, str(fifo))
    daemon = start_daemon(netns, profile)
    status = daemon.status()
    assert status["source"] == "failsafe", status
    assert "sets.blocklist.elements_file" in status["last_error"]
    assert nft_in(netns, "list", "table", "inet", "appliance")
    assert daemon.stop(signal.SIGTERM) == 0

    write_profile(profile)
    daemon = start_daemon(netns, profile)
    _blocklist_reads(profile, str(fifo))
    daemon.send_signal(signal.SIGHUP)
    wait_until(lambda: "elements_file" in (daemon.status()["last_error"] or ""))
    nft_in(
        netns,
        "delete",
        "rule",
        "inet",
        "appliance",
        "input",
        "handle",
        str(rule_handles(netns)["ssh"]),
    )
    wait_until(lambda: daemon.status()["drift_repairs"].get("structure", 0) >= 1)
    assert daemon.status()["source"] == "profile"
    assert daemon.stop(signal.SIGTERM) == 0
