"""Every shipped profile passes `appliance check` (no kernel needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.labtools import REPO

PROFILES = REPO / "profiles"


@pytest.mark.parametrize(
    "path",
    sorted(p.relative_to(PROFILES).as_posix() for p in PROFILES.rglob("*.toml")),
)
def test_every_profile_passes_check(path: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "appliance", "check", str(PROFILES / path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr
