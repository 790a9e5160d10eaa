"""Health for supervisors against a running daemon in a namespace: ``/healthz``, ``/readyz``,
the exit status of ``appliance status``, and the boot script ``last-good.nft``."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.reconcile.state import observed_from_listing
from tests.conftest import nft_in, owned, run_appliance
from tests.daemon.conftest import Daemon, wait_until, write_profile

pytestmark = pytest.mark.root

Start = Callable[..., Daemon]
METRICS = "http://127.0.0.1:9469"


def get(ns: str, path: str, max_time: float = 10) -> tuple[int, str]:
    """HTTP status and body of GET ``path`` on the daemon's metrics listener (0: no answer)."""
    curl = ["curl", "-sS", "--max-time", str(max_time), "-w", "\n%{http_code}", METRICS + path]
    result = subprocess.run(
        ["ip", "netns", "exec", ns, *curl],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        return 0, result.stderr
    body, _, code = result.stdout.rpartition("\n")
    return int(code), body.rstrip("\n")


def status_exit(daemon: Daemon) -> subprocess.CompletedProcess[str]:
    return run_appliance("status", "--control-socket", daemon.socket)


def test_healthy_and_ready_on_the_profile_then_not_ready_after_a_refused_reload(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    profile = write_profile(tmp_path / "p.toml")
    daemon = start_daemon(netns, profile)
    assert get(netns, "/healthz") == (200, "ok")
    assert get(netns, "/readyz") == (200, "ok")
    assert status_exit(daemon).returncode == 0
    profile.write_text("version = 1\nname = 'broken'\n[zones.lan]\ninterfaces = 42\n")
    daemon.send_signal(signal.SIGHUP)
    wait_until(lambda: daemon.status()["last_error"] is not None)
    code, reason = get(netns, "/readyz")
    assert code == 503 and reason.startswith("error: reload refused")
    assert get(netns, "/healthz") == (200, "ok")  # the loop still turns
    result = status_exit(daemon)
    assert result.returncode == 4
    assert "daemon-test" in result.stdout  # status is printed all the same
    assert result.stderr.strip().startswith("appliance: not the intended policy: error:")
    result = run_appliance("status", "--json", "--control-socket", daemon.socket)
    assert result.returncode == 4 and json.loads(result.stdout)["last_error"]


def test_the_failsafe_is_alive_but_not_ready(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    daemon = start_daemon(netns, tmp_path / "absent.toml", "--metrics-listen", "127.0.0.1:9469")
    assert daemon.status()["source"] == "failsafe"
    assert get(netns, "/healthz") == (200, "ok")
    assert get(netns, "/readyz") == (503, "the failsafe policy is enforced")
    assert status_exit(daemon).returncode == 4


def test_a_stalled_loop_fails_healthz(netns: str, start_daemon: Start, tmp_path: Path) -> None:
    daemon = start_daemon(netns, write_profile(tmp_path / "p.toml"))
    assert get(netns, "/healthz")[0] == 200
    daemon.send_signal(signal.SIGSTOP)
    try:
        assert get(netns, "/healthz", max_time=2)[0] == 0  # no answer from a stopped loop
    finally:
        daemon.send_signal(signal.SIGCONT)
    assert get(netns, "/healthz") == (200, "ok")


@pytest.fixture
def other_netns() -> Iterator[str]:
    name = owned("apt")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def table(ns: str) -> dict[str, Any]:
    listing = json.loads(nft_in(ns, "-j", "list", "table", "inet", "appliance"))["nftables"]
    observed = observed_from_listing([o for o in listing if "metainfo" not in o])
    return {
        "structure": observed.structure,
        "elements": {
            name: sorted((e.text, e.comment) for e in elems.values())
            for name, elems in observed.elements.items()
        },
    }


def test_the_boot_script_loads_the_daemons_table(
    netns: str, other_netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    daemon = start_daemon(netns, write_profile(tmp_path / "p.toml"))
    script = daemon.state_dir / "last-good.nft"
    assert script.stat().st_mode & 0o777 == 0o600
    subprocess.run(["ip", "netns", "exec", other_netns, "nft", "-f", str(script)], check=True)
    assert table(other_netns) == table(netns)
    # over a table that is there already (a restart): replaced in one transaction
    nft_in(other_netns, "add", "element", "inet", "appliance", "blocklist", "{ 192.0.2.1 }")
    subprocess.run(["ip", "netns", "exec", other_netns, "nft", "-f", str(script)], check=True)
    assert table(other_netns) == table(netns)
    failsafe = run_appliance("compile", "--failsafe", check=True).stdout
    subprocess.run(
        ["ip", "netns", "exec", other_netns, "nft", "-f", "-"],
        input=failsafe,
        text=True,
        check=True,
    )
    assert "failsafe-management" in nft_in(other_netns, "list", "table", "inet", "appliance")
