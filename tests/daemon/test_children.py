"""A child started with die_with_parent() dies when its parent is killed with SIGKILL."""

from __future__ import annotations

import subprocess
import sys

from tests.daemon.conftest import alive, wait_until

PARENT = """
import subprocess, sys, time
from appliance.daemon.children import die_with_parent
child = subprocess.Popen(["sleep", "600"], preexec_fn=die_with_parent())
print(child.pid, flush=True)
time.sleep(600)
"""


def test_a_child_dies_with_its_parent_killed_with_sigkill() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child)
        parent.kill()
        parent.wait(30)
        wait_until(lambda: not alive(child), timeout=30)
    finally:
        parent.kill()
        parent.wait(30)
        if child and alive(child):
            subprocess.run(["kill", "-9", str(child)], check=False)
