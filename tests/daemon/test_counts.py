"""Set sizes from the daemon's bookkeeping: an expired run-time element is not counted (no root)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

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
