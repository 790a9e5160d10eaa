"""Run-time set counts stay exact: a value given twice is one element, a refused delete
changes nothing (no root)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from appliance.compile.nftjson import element_text
from appliance.daemon.service import Daemon, DaemonConfig
from appliance.errors import KernelError


class OneSet:
    """A kernel with the autoblock_v4 set that refuses, as nftables does, to delete an
    element it does not hold (the whole change then)."""

    def __init__(self) -> None:
        self.held: set[str] = set()

    def run(self, commands: list[Any]) -> list[Any]:
        held = set(self.held)
        for command in commands:
            ((op, obj),) = command.items()
            for elem in obj["element"]["elem"]:
                text = element_text(elem)
                if op == "add":
                    held.add(text)
                elif text in held:
                    held.discard(text)
                else:
                    raise KernelError("the kernel refused the change: No such file or directory")
        self.held = held
        return []

    def list_table(self) -> None:
        return None

    def list_set(self, name: str, elements: bool = True) -> dict[str, Any] | None:
        if name != "autoblock_v4":
            return None
        return {"name": name, "type": "ipv4_addr", "flags": ["timeout"]}

    def list_counters(self) -> dict[str, tuple[int, int]]:
        return {}


def test_counts_follow_what_the_kernel_holds(tmp_path: Path) -> None:
    config = DaemonConfig(
        profile=str(tmp_path / "none.toml"),
        state_dir=str(tmp_path / "state"),
        control_socket=str(tmp_path / "control.sock"),
    )
    kernel = OneSet()
    daemon = Daemon(config, kernel)

    async def scenario() -> None:
        sets = daemon.sets
        await sets.add("autoblock_v4", ["192.0.2.1", "192.0.2.2", "192.0.2.1"], None)
        assert sets.current_counts()["autoblock_v4"] == len(kernel.held) == 2
        await sets.delete("autoblock_v4", ["192.0.2.1", "192.0.2.1"])
        assert sets.current_counts()["autoblock_v4"] == len(kernel.held) == 1
        with pytest.raises(KernelError):
            await sets.delete("autoblock_v4", ["192.0.2.9"])
        assert sets.current_counts()["autoblock_v4"] == len(kernel.held) == 1
        await sets.add("autoblock_v4", ["192.0.2.2"], None)  # already there
        assert sets.current_counts()["autoblock_v4"] == len(kernel.held) == 1

    asyncio.run(scenario())
