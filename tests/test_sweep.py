"""The namespaces a killed test run leaves are removed by the next run, never a live one's."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import owned, sweep_orphans

pytestmark = pytest.mark.root


def test_a_dead_run_s_namespaces_go_and_a_live_run_s_stay() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()  # its process ID is now free: a run that died
    orphans = [f"apt.{dead.pid}.0aa", f"iprote.{dead.pid}.0ab-wan", f"aq{dead.pid}-q"]
    mine = owned("apt")
    made = [*orphans, mine]
    try:
        for name in made:
            subprocess.run(["ip", "netns", "add", name], check=True)
        removed = sweep_orphans()
        present = set(os.listdir("/run/netns"))
        assert set(orphans) <= set(removed) and not set(orphans) & present
        assert mine in present and mine not in removed
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
