"""The shipped systemd unit and its opt-in drop-ins: the settings that matter (parsed, no
root), its exposure score, and the daemon running with only the capabilities the unit
grants (root)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "appliance.service"
NETNS = REPO / "systemd" / "appliance.service.d" / "netns.conf"
LOW_PORT = REPO / "systemd" / "appliance.service.d" / "low-port.conf"
PIP_INSTALL = REPO / "systemd" / "appliance.service.d" / "pip-install.conf"
MAX_EXPOSURE = 2.5


def parse(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Section -> (key, value) in file order, repeated keys kept (systemd's own model)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: {line!r} is not KEY=VALUE"
        current.append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def one(section: list[tuple[str, str]], key: str) -> str:
    found = values(section, key)
    assert len(found) == 1, (key, found)
    return found[0]


def words(section: list[tuple[str, str]], key: str) -> set[str]:
    return {word for value in values(section, key) for word in value.split()}


def test_service_type_and_lifecycle() -> None:
    service = parse(UNIT)["Service"]
    assert one(service, "Type") == "notify"
    assert one(service, "NotifyAccess") == "main"
    assert one(service, "WatchdogSec") == "30s"
    assert one(service, "Restart") == "on-failure"
    assert one(service, "ExecReload") == "/bin/kill -HUP $MAINPID"
    start = one(service, "ExecStart").split()
    assert start[0] == "/usr/bin/appliance" and start[1] == "run"  # the package's
    assert start[start.index("--profile") + 1] == "/etc/appliance/profile.toml"
    assert start[start.index("--state-dir") + 1] == "/var/lib/appliance"
    assert start[start.index("--control-socket") + 1] == "/run/appliance/control.sock"
    assert "--netns" not in start


def test_directories() -> None:
    service = parse(UNIT)["Service"]
    assert one(service, "StateDirectory") == "appliance"
    assert one(service, "RuntimeDirectory") == "appliance"
    assert one(service, "RuntimeDirectoryMode") == "0750"
    assert one(service, "RuntimeDirectoryPreserve") == "restart"  # the socket path stays
    assert one(service, "LogsDirectory") == "appliance"


def test_capabilities_net_admin_and_net_raw_only() -> None:
    service = parse(UNIT)["Service"]
    assert words(service, "CapabilityBoundingSet") == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert values(service, "AmbientCapabilities") == []  # root: the bounding set is all
    assert one(service, "NoNewPrivileges") == "yes"


def test_low_port_drop_in_adds_net_bind_service_only() -> None:
    drop_in = parse(LOW_PORT)
    assert set(drop_in) == {"Service"}
    assert words(drop_in["Service"], "CapabilityBoundingSet") == {"CAP_NET_BIND_SERVICE"}
    assert [k for k, _ in drop_in["Service"]] == ["CapabilityBoundingSet"]


def test_pip_install_drop_in_runs_the_same_command_from_usr_local() -> None:
    shipped = one(parse(UNIT)["Service"], "ExecStart")
    assert values(parse(PIP_INSTALL)["Service"], "ExecStart") == [
        "",  # resets the package's command
        shipped.replace("/usr/bin/appliance", "/usr/local/bin/appliance", 1),
    ]


def test_hardening() -> None:
    service = parse(UNIT)["Service"]
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictRealtime": "yes",
        "SystemCallArchitectures": "native",
    }
    for key, value in expected.items():
        assert one(service, key) == value, key
    assert words(service, "RestrictAddressFamilies") == {
        "AF_UNIX",
        "AF_NETLINK",
        "AF_INET",
        "AF_INET6",
        "AF_PACKET",
    }
    assert values(service, "SystemCallFilter") == [
        "@system-service @network-io",
        "~@privileged @resources",
    ]
    assert one(service, "PrivateMounts") == "yes"
    # /proc/sys is read-only except the network sysctls.
    assert one(service, "ProtectKernelTunables") == "no"
    assert "/proc/sys" in words(service, "ReadOnlyPaths")
    assert words(service, "ReadWritePaths") == {"/proc/sys/net"}
    assert one(service, "MemoryMax").endswith(("M", "G"))
    assert int(one(service, "TasksMax")) > 0


def test_unit_ordering_and_install() -> None:
    unit = parse(UNIT)
    assert "network-pre.target" in words(unit["Unit"], "Before")
    assert "network-pre.target" in words(unit["Unit"], "Wants")
    assert "appliance-restore.service" in words(unit["Unit"], "After")
    assert one(unit["Install"], "WantedBy") == "multi-user.target"


def test_netns_drop_in_grants_sys_admin_and_net_namespaces() -> None:
    drop_in = parse(NETNS)
    assert set(drop_in) == {"Service"}
    service = drop_in["Service"]
    assert words(service, "CapabilityBoundingSet") == {"CAP_SYS_ADMIN"}
    assert one(service, "RestrictNamespaces") == "net"
    assert "@mount" in words(service, "SystemCallFilter")
    assert "/run/netns" in words(service, "ReadWritePaths")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """The unit and the drop-in parse cleanly (the console script path is swapped for one
    that exists here, since this checkout is not installed system-wide)."""
    unit = tmp_path / "appliance.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/appliance", "/bin/true"))
    (tmp_path / "appliance.service.d").mkdir()
    for drop_in in (NETNS, LOW_PORT):
        (tmp_path / "appliance.service.d" / drop_in.name).write_text(drop_in.read_text())
    analyze_verify(tmp_path, unit)


def analyze_verify(unit_path: Path, *units: Path) -> None:
    """``systemd-analyze verify`` of ``units`` with ``unit_path`` first in the unit search
    path: exit 0 and not one warning."""
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"SYSTEMD_UNIT_PATH": f"{unit_path}:", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr.strip() == "", done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_exposure_score(tmp_path: Path) -> None:
    """`systemd-analyze security --offline=yes` on the shipped unit alone (no drop-in)."""
    (tmp_path / UNIT.name).write_text(UNIT.read_text())
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(tmp_path / UNIT.name)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    found = re.search(r"Overall exposure level for appliance\.service: ([0-9.]+)", done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, done.stdout


@pytest.mark.root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="no setpriv")
def test_the_daemon_works_with_the_units_capabilities(netns: str, tmp_path: Path) -> None:
    """With only the unit's capability bounding set (no CAP_SYS_ADMIN, no DAC override), the
    daemon enforces the profile, answers on its socket, serves metrics and stops with 0."""
    from appliance.lab.daemon import LabDaemon, metric_value, scrape

    caps = words(parse(UNIT)["Service"], "CapabilityBoundingSet")
    bounding = ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in sorted(caps))])
    command = [
        *("ip", "netns", "exec", netns),  # entering needs CAP_SYS_ADMIN: done before
        *("setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", "--"),
        *(sys.executable, "-m", "appliance"),
    ]
    profile = REPO / "profiles" / "edge-gateway.toml"
    with LabDaemon(None, str(profile), tmp_path, appliance_cmd=command) as daemon:
        daemon.start(timeout=30)
        status = daemon.status()
        assert status["source"] == "profile", status
        python = [  # the daemon itself, below ip and setpriv
            line
            for line in Path(f"/proc/{status['pid']}/status").read_text().splitlines()
            if line.startswith("CapBnd:")
        ]
        bits = int(python[0].split()[1], 16)
        assert bits == (1 << 12) | (1 << 13)  # CAP_NET_ADMIN, CAP_NET_RAW
        daemon.request({"op": "set_add", "set": "blocklist", "elements": ["192.0.2.99"]})
        text = scrape(netns, status["metrics_listen"])
        assert metric_value(text, "appliance_set_elements", {"set": "blocklist"}) == 3.0
        assert daemon.stop() == 0
