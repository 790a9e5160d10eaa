"""The boot check: READY with the intended policy marks the slot good; a trial slot that
never gets there reboots; the good slot never does. systemd and the box stand in."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.firmware import commands, grubenv, system


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    env = tmp_path / "grubenv"
    seen: dict[str, object] = {"reboots": 0, "states": [], "intended": True}
    monkeypatch.setattr(system, "GRUBENV", env)
    monkeypatch.setattr(system, "running_version", lambda: 2)
    monkeypatch.setattr(commands, "_intended_policy", lambda: (seen["intended"], "failsafe"))
    monkeypatch.setattr("appliance.firmware.commands.time.sleep", lambda _s: None)

    def state() -> tuple[str, int]:
        states = seen["states"]
        assert isinstance(states, list)
        current: tuple[str, int] = states.pop(0) if len(states) > 1 else states[0]
        return current

    def run(argv: list[str], **_kw: object) -> object:
        assert argv == ["systemctl", "reboot"]
        seen["reboots"] = int(seen["reboots"]) + 1  # type: ignore[call-overload]
        return None

    monkeypatch.setattr(commands, "_service_state", state)
    monkeypatch.setattr("appliance.firmware.commands.subprocess.run", run)
    seen["env"] = env
    seen["monkeypatch"] = monkeypatch
    yield seen


def check(box: dict[str, object], running: str, env: dict[str, str], timeout: float = 5) -> int:
    path = box["env"]
    assert isinstance(path, Path)
    path.write_bytes(grubenv.encode(env))
    monkeypatch = box["monkeypatch"]
    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setattr(system, "running_slot", lambda: running)
    return commands.cmd_boot_check(argparse.Namespace(timeout=timeout, no_reboot=False))


def env_of(box: dict[str, object]) -> dict[str, str]:
    path = box["env"]
    assert isinstance(path, Path)
    return grubenv.parse(path.read_bytes())


def test_ready_trial_slot_becomes_the_good_one(box: dict[str, object]) -> None:
    box["states"] = [("activating", 0), ("active", 0)]
    assert check(box, "B", {"slot": "A", "try_slot": "B", "try_count": "0"}) == 0
    assert env_of(box) == {"slot": "B", "try_slot": "", "try_count": "", "failed_slot": ""}
    assert box["reboots"] == 0


def test_trial_slot_whose_service_keeps_failing_reboots(box: dict[str, object]) -> None:
    box["states"] = [("activating", 1), ("activating", 2), ("activating", 3)]
    before = {"slot": "A", "try_slot": "B", "try_count": "1"}
    assert check(box, "B", before) == 1
    assert box["reboots"] == 1
    assert env_of(box) == before


def test_trial_slot_stuck_on_the_failsafe_reboots_at_the_timeout(box: dict[str, object]) -> None:
    box["states"] = [("active", 0)]
    box["intended"] = False
    assert check(box, "B", {"slot": "A", "try_slot": "B", "try_count": "0"}, timeout=0) == 1
    assert box["reboots"] == 1


def test_good_slot_is_never_rebooted(box: dict[str, object]) -> None:
    box["states"] = [("failed", 5)]
    assert check(box, "A", {"slot": "A"}) == 1
    assert box["reboots"] == 0
