"""Commit-confirm for one-shot applies: roll back unless ``appliance confirm`` comes in time.

``apply --confirm DUR`` saves the table it replaces in the state directory and starts a
detached watcher process; ``confirm`` removes the pending record; the watcher, woken at the
deadline, restores the saved table if the record is still there.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from appliance.compile.nftjson import Json
from appliance.compile.ruleset import table_object
from appliance.storage import atomic_write

PENDING = "confirm-pending.json"


def pending_path(state_dir: str) -> Path:
    return Path(state_dir) / PENDING


def arm(state_dir: str, previous: list[Json] | None, seconds: float, netns: str | None) -> None:
    """Record the table to restore and start the watcher."""
    token = f"{os.getpid()}-{time.time_ns()}"
    record = {"token": token, "deadline": time.time() + seconds, "previous": previous}
    atomic_write(pending_path(state_dir), json.dumps(record).encode())
    command = [
        sys.executable,
        "-m",
        "appliance",
        "_rollback-watch",
        "--state-dir",
        state_dir,
        "--token",
        token,
    ]
    if netns:
        command += ["--netns", netns]
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    record["watcher"] = proc.pid
    atomic_write(pending_path(state_dir), json.dumps(record).encode())


def confirm(state_dir: str) -> bool:
    """Keep the applied table. False if nothing was waiting for confirmation."""
    path = pending_path(state_dir)
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return False
    path.unlink(missing_ok=True)
    watcher = record.get("watcher")
    if isinstance(watcher, int):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(watcher, signal.SIGTERM)
    return True


def wait_and_rollback(state_dir: str, token: str, run: object) -> bool:
    """The watcher: sleep until the deadline, then restore if still unconfirmed.

    ``run`` executes a libnftables command batch. Returns True if it rolled back.
    """
    path = pending_path(state_dir)
    while True:
        try:
            record = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return False
        if record.get("token") != token:
            return False
        left = float(record["deadline"]) - time.time()
        if left <= 0:
            break
        time.sleep(min(left, 1.0))
    assert callable(run)
    run(restore_commands(record.get("previous")))
    path.unlink(missing_ok=True)
    return True


def restore_commands(previous: list[Json] | None) -> list[Json]:
    """Replace whatever table is there with ``previous`` (as listed), or remove it."""
    commands: list[Json] = [{"add": table_object()}, {"delete": table_object()}]
    for obj in previous or []:
        kind, body = next(iter(obj.items()))
        if kind == "metainfo":
            continue
        clean = {k: v for k, v in body.items() if k != "handle"}
        commands.append({"add": {kind: clean}})
    return commands
