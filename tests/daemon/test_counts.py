"""Set sizes from the daemon's bookkeeping: an expired run-time element is not counted (no root)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from appliance.daemon.service import Daemon, DaemonConfig


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SetsOnly:
    """A kernel that knows one timeout set and takes every element change."""

    def __init__(self) -> None:
        self.commands: list[Any] = []

    def run(self, commands: list[Any]) -> list[Any]:
        self.commands += commands
        return []

    def list_table(self) -> None:
        return None

    def list_set(self, name: str, elements: bool = True) -> dict[str, Any] | None:
        if name != "autoblock_v4":
            return None
        return {"name": name, "type": "ipv4_addr", "flags": ["interval", "timeout"]}

    def list_counters(self) -> dict[str, tuple[int, int]]:
        return {}


def test_expired_runtime_elements_leave_the_counts(tmp_path: Path) -> None:
    clock = Clock()
    config = DaemonConfig(
        profile=str(tmp_path / "none.toml"),
        state_dir=str(tmp_path / "state"),
        control_socket=str(tmp_path / "control.sock"),
    )
    daemon = Daemon(config, SetsOnly(), clock=clock)

    async def scenario() -> None:
        await daemon.sets.add("autoblock_v4", ["192.0.2.1"], 3.0)
        await daemon.sets.add("autoblock_v4", ["192.0.2.2"], None)
        assert daemon.sets.current_counts()["autoblock_v4"] == 2
        clock.now += 2.5
        assert daemon.control.status()["sets"]["autoblock_v4"] == 2
        clock.now += 1.0  # the first one's timeout has passed: the kernel dropped it
        assert daemon.sets.current_counts()["autoblock_v4"] == 1
        assert daemon.control.status()["sets"]["autoblock_v4"] == 1
        assert daemon.control.status()["runtime_elements"] == {"autoblock_v4": 1}
        clock.now += 3600
        assert daemon.sets.current_counts()["autoblock_v4"] == 1  # no timeout: stays

    try:
        asyncio.run(scenario())
    finally:
        daemon.ctx.executor.shutdown(wait=True)


def test_a_read_back_does_not_count_the_policys_own_elements_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every read-back works out the sets' counts; the policy's own elements are counted
    once per policy (a pass over a million spans otherwise, every ten seconds)."""
    from appliance.daemon.policies import policy_from_profile, set_counts
    from appliance.model.elements import Elements
    from appliance.model.intervals import Spans
    from appliance.model.parse import load_profile
    from appliance.reconcile.plan import Plan
    from appliance.reconcile.state import Element, Observed
    from tests.conftest import small_profile

    path = tmp_path / "profile.toml"
    path.write_text(small_profile("counts", ["203.0.113.0/24", "198.51.100.7"]))
    desired = policy_from_profile(str(path), load_profile(str(path))).desired
    observed = Observed(objects=[], types=dict(desired.types))

    def counts() -> dict[str, int]:
        found = set_counts(desired, observed, Plan())
        return {name: found[name] for name in ("blocklist", "ports")}

    assert counts() == {"blocklist": 2, "ports": 1}

    def walked(*_args: object) -> None:
        raise AssertionError("the policy's elements were walked")

    for cls, names in (
        (Elements, ("__iter__", "__len__", "bounds")),
        (Spans, ("__iter__", "count", "values")),
    ):
        for name in names:
            monkeypatch.setattr(cls, name, walked)
    assert counts() == {"blocklist": 2, "ports": 1}
    observed.elements["ports"] = {"8080": Element("8080")}  # one added at run time
    assert counts() == {"blocklist": 2, "ports": 2}
