"""The shipped units booted for real: the guest's systemd starts the installed appliance.

One boot of the guest (``qemu/run.sh --systemd``) serves every test here. Before it
boots, the host seeds it (``qemu/guest/guest-seed``): the profile (tests/guest/lab.toml
with a metrics listener) in /etc/appliance, the same policy as the last good state in
/var/lib/appliance, and the NICs' addresses. Its eth0 and eth1 are wired to a client and
a server namespace on the host; the guest's own unit ``guest-nics.service`` brings them up
after network-pre.target, as a network manager would, and records whether the appliance's
table was in the kernel at that moment. Inside, tests/guest/systemd_guest.py waits for
READY, records the unit and the daemon, lets the host send traffic, then reloads a broken
profile (the host sends its traffic again) and hangs the daemon with SIGSTOP; each test
asserts on what it recorded.

Figures (boot to READY, the daemon's RSS, the watchdog's restart) are written to
qemu/out/ARCH/systemd-figures.txt; no test depends on a timing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.cli import EXIT_NOT_INTENDED
from appliance.daemon.state import StateStore
from appliance.model.parse import load_profile
from appliance.reconcile.state import desired_from_profile
from tests.conftest import owned
from tests.guest.conftest import BootedGuest, delete_netns, make_netns, start_guest
from tests.guest.lab import (
    CLOSED_PORT,
    GUEST_NICS,
    OPEN_PORT,
    address_host_sides,
    connect,
    serving,
)
from tests.guest_plugin import REPO

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]

LAB = Path(__file__).with_name("lab.toml")
METRICS_LISTEN = "127.0.0.1:9469"
# Capability numbers (linux/capability.h) of the ones the daemon may hold.
CAP_NET_ADMIN, CAP_NET_RAW = 12, 13
CAP_NAMES = {0: "CHOWN", 1: "DAC_OVERRIDE", 10: "NET_BIND_SERVICE", 12: "NET_ADMIN", 13: "NET_RAW"}
CAP_NAMES |= {21: "SYS_ADMIN", 16: "SYS_MODULE", 19: "SYS_PTRACE", 7: "SETUID", 6: "SETGID"}


@dataclass
class SystemdBoot:
    arch: str
    guest: BootedGuest
    status: int
    results: dict[str, Any]
    traffic: dict[str, dict[str, dict[str, str]]]  # when: port: what happened

    def section(self, name: str) -> dict[str, Any]:
        error = self.results.get("errors", {}).get(name)
        if error or name not in self.results:
            recorded = json.dumps(self.results.get(name), indent=1)[:6000]
            pytest.fail(
                f"the guest's step {name!r} did not complete: {error}\n"
                f"{self.guest.output(80)}\nrecorded: {recorded}",
                pytrace=False,
            )
        section: dict[str, Any] = self.results[name]
        return section


def seed(io: Path) -> None:
    """What the guest boots with: profile, last good state, the NICs' addresses."""
    profile_path = io / "seed" / "etc" / "appliance" / "profile.toml"
    profile_path.parent.mkdir(parents=True)
    profile_path.write_text(LAB.read_text() + f'\n[metrics]\nlisten = "{METRICS_LISTEN}"\n')
    desired = desired_from_profile(load_profile(profile_path))
    state = io / "seed" / "var" / "lib" / "appliance"
    state.mkdir(parents=True)
    # As the daemon saves it (last-good.json, and last-good.nft for the restore unit).
    StateStore(state).save_last_good(desired, METRICS_LISTEN, "/etc/appliance/profile.toml")
    (io / "nics.conf").write_text(GUEST_NICS)


@pytest.fixture(scope="module")
def booted(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SystemdBoot]:
    arch = request.config.getoption("--guest")
    if arch is None:
        pytest.skip("needs --guest=ARCH")
    if os.geteuid() != 0:
        pytest.skip("needs root")
    (REPO / "qemu" / "out" / arch / "systemd-figures.txt").unlink(missing_ok=True)
    tmp = tmp_path_factory.mktemp("systemd")
    io = tmp / "io"
    io.mkdir()
    seed(io)
    tag = owned("aqs")
    made: list[str] = []
    guest: BootedGuest | None = None
    try:
        client_ns = make_netns(f"{tag}-client")
        made.append(client_ns)
        server_ns = make_netns(f"{tag}-server")
        made.append(server_ns)
        with serving(server_ns):
            guest = start_guest(
                arch,
                io,
                tmp / "run.log",
                ["python3", "tests/guest/systemd_guest.py"],
                [client_ns, server_ns],
                timeout=1500,
                options=("--systemd",),
            )
            guest.wait_for("ready", timeout=900)
            address_host_sides(client_ns, server_ns)
            traffic = {"ready": both_ports(client_ns)}
            (io / "ready-done").touch()
            if guest.wait_for_or_end("reloaded", timeout=600):
                traffic["reloaded"] = both_ports(client_ns)
                (io / "reloaded-done").touch()
            status = guest.finish(timeout=600)
        path = io / "results.json"
        results = json.loads(path.read_text()) if path.exists() else {}
        boot = SystemdBoot(arch, guest, status, results, traffic)
        write_figures(boot)
        yield boot
    finally:
        if guest is not None:
            guest.stop()
        delete_netns(made)


def both_ports(client_ns: str) -> dict[str, dict[str, str]]:
    return {
        "open": connect(client_ns, OPEN_PORT, wait=30),
        "closed": connect(client_ns, CLOSED_PORT, wait=5),
    }


def caps(mask: str) -> set[str]:
    value = int(mask, 16)
    return {CAP_NAMES.get(bit, str(bit)) for bit in range(64) if value >> bit & 1}


def write_figures(boot: SystemdBoot) -> None:
    ready = boot.results.get("ready")
    if not ready:
        return
    unit = ready["unit"]
    at_ready = int(unit["ActiveEnterTimestampMonotonic"]) / 1e6
    started = int(unit["ExecMainStartTimestampMonotonic"]) / 1e6
    lines = [
        f"boot to READY under systemd: {at_ready:.1f}s (daemon start to READY "
        f"{at_ready - started:.1f}s)",
        f"daemon RSS at READY: {ready['proc']['VmRSS']}",
    ]
    watchdog = boot.results.get("watchdog")
    if watchdog:
        lines.append(f"watchdog: SIGSTOP to a new daemon READY: {watchdog['seconds']}s")
    out = REPO / "qemu" / "out" / boot.arch / "systemd-figures.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def test_the_guest_ran_every_step(booted: SystemdBoot) -> None:
    assert booted.results.get("errors", {}) == {}, booted.guest.output(80)
    assert booted.status == 0, booted.guest.output(80)


def test_unit_reaches_ready_with_the_profile(booted: SystemdBoot) -> None:
    ready = booted.section("ready")
    assert ready["unit"]["UnitFileState"] == "enabled"  # by the package
    assert ready["unit"]["FragmentPath"] == "/lib/systemd/system/appliance.service"
    assert ready["unit"]["ActiveState"] == "active"
    assert ready["unit"]["SubState"] == "running"
    assert ready["unit"]["NRestarts"] == "0", ready["journal"]
    status = ready["status"]
    assert status["exit"] == 0, status
    assert (status["policy"], status["source"]) == ("guest-lab", "profile"), status
    assert not status.get("last_error"), status


def test_daemon_holds_only_net_admin_and_net_raw(booted: SystemdBoot) -> None:
    proc = booted.section("ready")["proc"]
    wanted = {"NET_ADMIN", "NET_RAW"}
    assert caps(proc["CapEff"]) == wanted, proc
    assert caps(proc["CapPrm"]) == wanted, proc
    assert caps(proc["CapBnd"]) == wanted, proc
    assert proc["NoNewPrivs"] == "1", proc


ANSWERED = {"result": "answer", "data": "ok\n"}
TIMED_OUT = {"result": "timeout"}


def test_traffic_through_the_guest_follows_the_profile(booted: SystemdBoot) -> None:
    assert booted.traffic["ready"] == {"open": ANSWERED, "closed": TIMED_OUT}, booted.traffic


def _counters(probe: dict[str, Any]) -> set[str]:
    entries = (probe.get("counters") or {}).get("nftables", [])
    return {e["counter"]["name"] for e in entries if "counter" in e}


def test_ruleset_is_in_the_kernel_before_the_nics_come_up(booted: SystemdBoot) -> None:
    ready = booted.section("ready")
    restore = ready["restore"]
    assert restore["LoadState"] == "loaded", restore
    assert (restore["Result"], restore["ExecMainStatus"]) == ("success", "0"), ready["journal"]
    # Right after the restore unit, before the daemon started: the last good policy.
    after_restore = ready["after_restore"]
    assert after_restore is not None and after_restore["table"], after_restore
    assert {"client-server-open", "client-server-closed"} <= _counters(after_restore)
    # When the first NIC went up, the table was there and every NIC was still down.
    nics_up = ready["nics_up"]
    assert nics_up is not None and nics_up["table"], nics_up
    down = {link["ifname"]: "UP" not in link["flags"] for link in nics_up["links"]}
    assert down["eth0"] and down["eth1"], nics_up["links"]
    assert int(restore["ActiveEnterTimestampMonotonic"]) < int(
        ready["nics_unit"]["ExecMainStartTimestampMonotonic"]
    )


def test_daemon_takes_the_restored_table_over_without_a_change(booted: SystemdBoot) -> None:
    ready = booted.section("ready")
    enforced = [e for e in _daemon_log(ready["journal"]) if e.get("msg") == "policy enforced"]
    assert enforced, ready["journal"]
    # The restored table is the profile's: the daemon's first apply had nothing to change.
    assert enforced[0]["changed"] is False, enforced[0]


def _daemon_log(journal: str) -> list[dict[str, Any]]:
    """The daemon's JSON log lines in a journal excerpt."""
    entries = []
    for line in journal.splitlines():
        _, brace, rest = line.partition(": {")
        if brace:
            try:
                entries.append(json.loads("{" + rest))
            except ValueError:
                continue
    return entries


def test_metrics_answer(booted: SystemdBoot) -> None:
    ready = booted.section("ready")
    metrics = ready["metrics"]
    assert metrics["code"] == 200, metrics
    assert "appliance_" in metrics["body"], metrics["body"][:2000]


def test_health_endpoints_answer(booted: SystemdBoot) -> None:
    ready = booted.section("ready")
    assert ready["healthz"]["code"] == 200, ready["healthz"]
    assert ready["readyz"]["code"] == 200, ready["readyz"]


def test_reload_with_a_broken_profile_keeps_the_running_policy(booted: SystemdBoot) -> None:
    reload = booted.section("reload")
    assert reload["exit"] == 0, reload["stderr"]
    assert reload["unit"]["ActiveState"] == "active", reload["unit"]
    assert reload["unit"]["MainPID"] == reload["pid_before"]
    assert "profile.toml" in reload["status"]["last_error"], reload["status"]
    # The policy running is no longer the intended one: status says so to scripts.
    assert reload["status"]["exit"] == EXIT_NOT_INTENDED, reload["status"]
    assert reload["status"]["policy"] == "guest-lab", reload["status"]
    assert reload["table_after"] == reload["table_before"]
    assert "client-server-open" in reload["table_after"]
    # Traffic through the guest, the broken profile on disk: as before.
    assert booted.traffic.get("reloaded") == {"open": ANSWERED, "closed": TIMED_OUT}


def test_hung_daemon_is_restarted_by_the_watchdog(booted: SystemdBoot) -> None:
    watchdog = booted.section("watchdog")
    before, after = watchdog["before"], watchdog["after"]
    assert before["WatchdogUSec"] in ("10s", "10000000"), before
    assert after["ActiveState"] == "active", watchdog["journal"]
    assert after["MainPID"] != before["MainPID"]
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1, watchdog["journal"]
    assert "watchdog timeout" in watchdog["journal"].lower(), watchdog["journal"]
    assert not watchdog["old_pid_alive"]
    # Fail closed: the table stayed while the daemon hung and after it was replaced.
    assert watchdog["table_while_hung"] and watchdog["table_after"]
