"""appliance-restore.service, the fail-closed boot unit: its ordering (parsed, no root), and
its exact ExecStart command line loading the last good ruleset, or else the failsafe, in a
throw-away network namespace (root)."""

from __future__ import annotations

import contextlib
import queue
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.systemd.test_unit import UNIT, analyze_verify, one, parse, values, words

REPO = Path(__file__).resolve().parents[2]
RESTORE = REPO / "systemd" / "appliance-restore.service"
FAILSAFE_SCRIPT = REPO / "packaging" / "failsafe-nft.sh"


def test_ordered_before_the_network_and_the_daemon() -> None:
    unit = parse(RESTORE)
    head = unit["Unit"]
    assert one(head, "DefaultDependencies") == "no"
    assert {"network-pre.target", "appliance.service"} <= words(head, "Before")
    assert "network-pre.target" in words(head, "Wants")
    assert "network-pre.target" not in words(head, "After")
    service = unit["Service"]
    assert one(service, "Type") == "oneshot"
    assert one(service, "RemainAfterExit") == "yes"
    assert words(service, "CapabilityBoundingSet") == {"CAP_NET_ADMIN"}
    assert one(unit["Install"], "WantedBy") == "sysinit.target"
    # and the daemon waits for it
    assert "appliance-restore.service" in words(parse(UNIT)["Unit"], "After")


def environment() -> dict[str, str]:
    found: dict[str, str] = {}
    for value in values(parse(RESTORE)["Service"], "Environment"):
        for word in shlex.split(value):
            key, _, val = word.partition("=")
            found[key] = val
    return found


def test_loads_the_state_directorys_file_else_the_shipped_failsafe() -> None:
    assert environment() == {
        "LAST_GOOD": "/var/lib/appliance/last-good.nft",
        "FAILSAFE": "/usr/share/appliance/failsafe.nft",
    }


def exec_start() -> list[str]:
    """ExecStart= as systemd passes it to the program: words split as systemd does (shell
    quoting), `$$` unescaped; no variable is left for systemd itself to expand."""
    line = one(parse(RESTORE)["Service"], "ExecStart")
    argv = shlex.split(line)
    assert all("$" not in arg.replace("$$", "") for arg in argv), argv
    return [arg.replace("$$", "$") for arg in argv]


def test_exec_start_is_sh_running_nft() -> None:
    argv = exec_start()
    assert argv[:2] == ["/bin/sh", "-c"]
    assert "/usr/sbin/nft -f" in argv[2]


def failsafe(tmp_path: Path) -> Path:
    path = tmp_path / "failsafe.nft"
    done = subprocess.run(
        [str(FAILSAFE_SCRIPT)], capture_output=True, text=True, timeout=60, check=True
    )
    path.write_text(done.stdout)
    return path


def last_good(tmp_path: Path) -> Path:
    """A last good ruleset as the daemon writes it: it replaces the table in one go."""
    done = subprocess.run(
        [sys.executable, "-m", "appliance", "compile", "profiles/edge-gateway.toml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=True,
    )
    path = tmp_path / "last-good.nft"
    path.write_text("table inet appliance\ndelete table inet appliance\n" + done.stdout)
    return path


def restore(netns: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
        + [f"{k}={v}" for k, v in env.items()]
        + exec_start(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def table(netns: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "table", "inet", "appliance"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout if done.returncode == 0 else ""


@pytest.mark.root
@pytest.mark.skipif(shutil.which("nft") is None, reason="no nft")
def test_without_a_last_good_file_the_failsafe_is_loaded(netns: str, tmp_path: Path) -> None:
    env = {"LAST_GOOD": str(tmp_path / "missing.nft"), "FAILSAFE": str(failsafe(tmp_path))}
    done = restore(netns, env)
    assert done.returncode == 0, done.stderr
    listed = table(netns)
    assert "failsafe-management" in listed
    assert "policy drop" in listed


@pytest.mark.root
@pytest.mark.skipif(shutil.which("nft") is None, reason="no nft")
def test_the_last_good_file_is_loaded_and_replaces_a_table(netns: str, tmp_path: Path) -> None:
    env = {"LAST_GOOD": str(last_good(tmp_path)), "FAILSAFE": str(failsafe(tmp_path))}
    listings = []
    for _ in range(2):  # a second run replaces the table: no rule twice
        done = restore(netns, env)
        assert done.returncode == 0, done.stderr
        listings.append(table(netns))
    assert "failsafe-management" not in listings[1]
    assert "blocklist-in" in listings[1]
    assert listings[1].count("\n") == listings[0].count("\n")


@pytest.mark.root
@pytest.mark.skipif(shutil.which("nft") is None, reason="no nft")
def test_a_last_good_file_the_kernel_refuses_falls_back_to_the_failsafe(
    netns: str, tmp_path: Path
) -> None:
    broken = tmp_path / "last-good.nft"
    broken.write_text("table inet appliance {\n\tchain input {\n\t\tnot nft syntax\n")
    env = {"LAST_GOOD": str(broken), "FAILSAFE": str(failsafe(tmp_path))}
    done = restore(netns, env)
    assert done.returncode == 0, done.stderr
    assert "failsafe-management" in table(netns)


@pytest.mark.root
@pytest.mark.skipif(shutil.which("nft") is None, reason="no nft")
def test_nothing_loadable_fails_the_unit(netns: str, tmp_path: Path) -> None:
    env = {"LAST_GOOD": str(tmp_path / "missing.nft"), "FAILSAFE": str(tmp_path / "gone.nft")}
    assert restore(netns, env).returncode != 0
    assert table(netns) == ""


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify_both_units(tmp_path: Path) -> None:
    """The restore unit and the daemon's unit it is ordered before parse cleanly together
    (the daemon's command swapped for one that exists here)."""
    (tmp_path / RESTORE.name).write_text(RESTORE.read_text())
    (tmp_path / UNIT.name).write_text(UNIT.read_text().replace("/usr/bin/appliance", "/bin/true"))
    analyze_verify(tmp_path, tmp_path / RESTORE.name, tmp_path / UNIT.name)


class Monitor:
    """`nft monitor ruleset` in the namespace, read by a thread; ``until_marker`` returns
    the events up to a table this test adds as a marker, so every earlier event is in."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, "nft", "monitor", "ruleset"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.markers = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def until_marker(self, timeout: float = 30) -> list[str]:
        self.markers += 1
        name = f"marker{self.markers}"
        subprocess.run(
            ["ip", "netns", "exec", self.netns, "nft", "add", "table", "inet", name], check=True
        )
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            if line == f"add table inet {name}":
                return seen
            seen.append(line)
        raise AssertionError(f"nft monitor did not show {name} within {timeout}s: {seen}")

    def subscribed(self, timeout: float = 30) -> None:
        """Wait until the monitor hears events: markers until one shows (the first ones
        may come before it listens)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(AssertionError):
                self.until_marker(timeout=0.5)
                return
        raise AssertionError(f"nft monitor heard nothing within {timeout}s")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.reader.join(10)


@pytest.mark.root
@pytest.mark.skipif(shutil.which("nft") is None, reason="no nft")
def test_the_daemon_takes_the_restored_table_over_as_it_is(netns: str, tmp_path: Path) -> None:
    """Boot, as the units run it: the daemon's last-good.nft from an earlier run is loaded
    into an empty kernel by the restore command line; the daemon started next enforces the
    same policy from it without one change to the ruleset (no swap, no gap)."""
    from appliance.lab.daemon import LabDaemon

    profile = str(REPO / "profiles" / "edge-gateway.toml")
    with LabDaemon(netns, profile, tmp_path / "run") as daemon:
        daemon.start(timeout=60)
        assert daemon.stop() == 0
    saved = tmp_path / "run" / "state" / "last-good.nft"
    assert saved.is_file()

    subprocess.run(["ip", "netns", "exec", netns, "nft", "flush", "ruleset"], check=True)
    assert table(netns) == ""  # the kernel after a reboot
    done = restore(netns, {"LAST_GOOD": str(saved), "FAILSAFE": str(failsafe(tmp_path))})
    assert done.returncode == 0, done.stderr
    assert "blocklist-in" in table(netns)
    assert "failsafe-management" not in table(netns)

    monitor = Monitor(netns)
    try:
        monitor.subscribed()
        with LabDaemon(netns, profile, tmp_path / "run") as daemon:
            daemon.start(timeout=60)
            status = daemon.status()
            assert status["source"] == "profile", status
            changes = monitor.until_marker()
            assert daemon.stop() == 0
    finally:
        monitor.close()
    assert [line for line in changes if "inet appliance" in line] == []
