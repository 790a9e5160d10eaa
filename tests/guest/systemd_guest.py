"""Guest side of tests/guest/test_systemd.py: the shipped unit under the guest's systemd.

Runs inside the guest (``qemu/run.sh --systemd``), after a boot that started
``appliance.service`` from the seeded profile. It records what the host test asserts in
``$GUEST_IO/results.json``, one section per step, written after each step:

``ready``     the unit's state once it is active (READY=1), the daemon's capabilities and
              RSS, its status, ``/metrics``, ``/healthz`` and ``/readyz``, and what the
              boot-order probes saw (after the restore unit; when the first NIC went up);
``reload``    a profile that does not parse, then ``systemctl reload``: the table, the
              process and the unit as they were, the error in the status;
``watchdog``  WatchdogSec shortened with a runtime drop-in, the daemon stopped with
              SIGSTOP: systemd kills it and starts a new one, which reaches READY.

After ``ready``, and again after the refused reload, it writes ``ready`` (``reloaded``)
and waits for the host's ``ready-done`` (``reloaded-done``): the host sends traffic
through the guest meanwhile. Every wait is bounded; the guest powers off when this ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

IO = Path(os.environ.get("GUEST_IO", "/run/guest-io"))
UNIT = "appliance.service"
PROFILE = Path("/etc/appliance/profile.toml")
CONTROL = "/run/appliance/control.sock"
METRICS = "http://127.0.0.1:9469"
DROPIN = Path("/run/systemd/system/appliance.service.d/guest-watchdog.conf")
# Short enough for a quick test, long enough that a busy emulated guest never misses it.
WATCHDOG_SEC = 10
UNIT_PROPERTIES = (
    "UnitFileState",
    "ActiveState",
    "SubState",
    "Result",
    "MainPID",
    "NRestarts",
    "WatchdogUSec",
    "ExecMainStartTimestampMonotonic",
    "ActiveEnterTimestampMonotonic",
    "FragmentPath",
    "DropInPaths",
)

results: dict[str, Any] = {}


def save() -> None:
    tmp = IO / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True))
    tmp.replace(IO / "results.json")


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def show(unit: str, *properties: str) -> dict[str, str]:
    args = ["systemctl", "show", unit]
    for name in properties:
        args += ["-p", name]
    values: dict[str, str] = {}
    for line in run(*args).stdout.splitlines():
        key, _, value = line.partition("=")
        values[key] = value
    return values


def wait_until(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Poll ``check`` (bounded); the seconds it took. RuntimeError when it never held."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"{what}: not within {timeout:g}s")
        time.sleep(0.2)
    return time.monotonic() - start


def daemon_status() -> dict[str, Any]:
    """``appliance status --json``: the daemon's status, plus the command's exit status
    (``exit``; non-zero also when the daemon runs another policy than the intended one)."""
    done = run("appliance", "status", "--json", "--control-socket", CONTROL)
    try:
        status: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        status = {"error": (done.stderr or done.stdout).strip()}
    status["exit"] = done.returncode
    return status


def table() -> str:
    """The table without its counters (-s): what the policy is, not what it counted."""
    return run("nft", "-s", "list", "table", "inet", "appliance").stdout


def proc_status(pid: int) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def http(path: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(METRICS + path, timeout=10) as answer:
            return {"code": answer.status, "body": answer.read(200_000).decode(errors="replace")}
    except urllib.error.HTTPError as exc:
        return {"code": exc.code, "body": exc.read(2000).decode(errors="replace")}
    except OSError as exc:
        return {"code": None, "body": str(exc)}


def active(restarts: int | None = None) -> bool:
    """Whether the unit is active (READY); RuntimeError when it failed, or (with
    ``restarts``) when it was restarted more often than that."""
    unit = show(UNIT, "ActiveState", "NRestarts")
    if unit["ActiveState"] == "failed" or (
        restarts is not None and int(unit["NRestarts"] or 0) > restarts
    ):
        raise RuntimeError(f"{UNIT} {unit}:\n{journal(UNIT)[-4000:]}")
    return unit["ActiveState"] == "active"


def journal(*units: str) -> str:
    args = ["journalctl", "-b", "--no-pager", "-o", "short-monotonic"]
    for unit in units:
        args += ["-u", unit]
    return run(*args).stdout[-20_000:]


def boot_probe(name: str) -> Any:
    path = IO / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def step_ready() -> None:
    enabled = show(UNIT, "UnitFileState")["UnitFileState"]
    if enabled != "enabled":
        raise RuntimeError(f"{UNIT} is {enabled or 'not installed'}: the boot does not start it")
    wait_until(f"{UNIT} active", lambda: active(restarts=0), 600)
    unit = show(UNIT, *UNIT_PROPERTIES)
    pid = int(unit["MainPID"])
    status = proc_status(pid)
    wait_until("/metrics answers", lambda: http("/metrics")["code"] is not None, 60)
    metrics = http("/metrics")
    results["ready"] = {
        "unit": unit,
        "restore": show(
            "appliance-restore.service",
            "LoadState",
            "ActiveState",
            "Result",
            "ExecMainStatus",
            "ActiveEnterTimestampMonotonic",
        ),
        "nics_unit": show("guest-nics.service", "ActiveState", "ExecMainStartTimestampMonotonic"),
        "proc": {key: status[key] for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
        | {"VmRSS": status["VmRSS"], "NoNewPrivs": status.get("NoNewPrivs", "")},
        "status": daemon_status(),
        "metrics": {"code": metrics["code"], "body": metrics["body"]},
        "healthz": http("/healthz"),
        "readyz": http("/readyz"),
        "after_restore": boot_probe("after-restore"),
        "nics_up": boot_probe("nics-up"),
        "uptime": float(Path("/proc/uptime").read_text().split()[0]),
        "journal": journal("appliance-restore.service", UNIT, "guest-nics.service"),
    }


def step_traffic() -> None:
    handshake("ready")


def handshake(name: str) -> None:
    """Tell the host (file ``name``); wait, bounded, until it has sent its traffic through
    the guest (file ``name-done``)."""
    (IO / name).touch()
    wait_until(f"the host's {name}-done", (IO / f"{name}-done").exists, 900)


def step_reload() -> None:
    before = table()
    pid = show(UNIT, "MainPID")["MainPID"]
    good = PROFILE.read_bytes()
    PROFILE.write_text('version = 1\nname = "broken"\n[defaults]\ninput = "sideways"\n')
    reload = run("systemctl", "reload", UNIT)
    try:
        wait_until("the reload's error in the status", lambda: bool(error()), 120)
    finally:
        after = table()
        status = daemon_status()
        unit = show(UNIT, "ActiveState", "SubState", "MainPID")
        results["reload"] = {
            "exit": reload.returncode,
            "stderr": reload.stderr,
            "pid_before": pid,
            "unit": unit,
            "status": status,
            "table_before": before,
            "table_after": after,
        }
        # The host sends its traffic again, the broken profile on disk.
        handshake("reloaded")
    # The good profile again, for the next step.
    PROFILE.write_bytes(good)
    run("systemctl", "reload", UNIT)
    wait_until("the good profile back", lambda: not error(), 120)


def error() -> str:
    return str(daemon_status().get("last_error") or "")


def step_watchdog() -> None:
    DROPIN.parent.mkdir(parents=True, exist_ok=True)
    DROPIN.write_text(
        f"[Service]\nWatchdogSec={WATCHDOG_SEC}s\nTimeoutAbortSec=10s\nRestartSec=1s\n"
    )
    run("systemctl", "daemon-reload")
    restart = run("systemctl", "restart", UNIT, timeout=300)
    wait_until(f"{UNIT} active after the restart", active, 300)
    unit = show(UNIT, "MainPID", "NRestarts", "WatchdogUSec")
    pid = int(unit["MainPID"])
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    table_while_hung = table()

    def replaced() -> bool:
        now = show(UNIT, "MainPID", "ActiveState")
        return now["MainPID"] not in ("0", str(pid)) and now["ActiveState"] == "active"

    try:
        wait_until("a new daemon after the watchdog", replaced, WATCHDOG_SEC * 3 + 120)
    finally:
        results["watchdog"] = {
            "restart_exit": restart.returncode,
            "before": unit,
            "after": show(UNIT, "MainPID", "NRestarts", "ActiveState", "SubState"),
            "seconds": round(time.monotonic() - stopped, 1),
            "table_while_hung": bool(table_while_hung),
            "table_after": bool(table()),
            "old_pid_alive": Path(f"/proc/{pid}").exists(),
            "journal": journal(UNIT),
        }


def main() -> int:
    steps: list[tuple[str, Callable[[], None]]] = [
        ("ready", step_ready),
        ("traffic", step_traffic),
        ("reload", step_reload),
        ("watchdog", step_watchdog),
    ]
    for name, step in steps:
        try:
            step()
        except Exception as exc:  # reported to the host, whose test fails
            results.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
            save()
            print(f"systemd_guest: step {name}: {exc}", file=sys.stderr)
            if name in ("ready", "traffic"):
                return 1
        save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
