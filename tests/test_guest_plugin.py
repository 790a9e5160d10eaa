"""The guest marker plumbing (tests/guest_plugin.py), driven as a user would: pytest
runs on a small test tree in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.guest_plugin import REPO

TESTS = """
import pytest

def test_plain():
    pass

@pytest.mark.guest
def test_needs_guest():
    pass

@pytest.mark.guest
def test_fails_in_guest():
    assert 1 == 2, "guest says no"

@pytest.mark.guest
def test_skips_in_guest():
    pytest.skip("no such device")

@pytest.mark.qemu
def test_boots_guest(guest_arch):
    assert guest_arch == "amd64"
"""

# Stands in for qemu/run.sh: runs the command here as if in the guest, with the
# io folder where the guest would have it.
FAKE_RUNNER = """#!{python}
import os, subprocess, sys
args = sys.argv[1:]
io = args[args.index("--io-dir") + 1]
cmd = [a.replace("/run/guest-io", io) for a in args[args.index("--") + 1:]]
cmd[0] = sys.executable if cmd[0] == "python3" else cmd[0]
env = dict(os.environ, APPLIANCE_GUEST="1")
sys.exit(subprocess.run(cmd, env=env).returncode)
"""


def run_pytest(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(TESTS)
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.guest_plugin"]\n')
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    guest: in the guest\n")
    environ = {k: v for k, v in os.environ.items() if k not in ("CI", "APPLIANCE_GUEST")}
    environ.update(PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-ra", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )


def outcomes(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """test name -> PASSED/FAILED/SKIPPED/ERROR, from the -v lines."""
    found = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and "::" in parts[0] and parts[1] in ("PASSED", "FAILED", "SKIPPED"):
            found[parts[0].split("::")[-1]] = parts[1]
    return found


def test_on_the_host_guest_tests_are_deselected_and_named(tmp_path: Path) -> None:
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout
    assert outcomes(result) == {"test_plain": "PASSED"}
    assert "1 passed, 4 deselected" in result.stdout
    assert "4 test(s) need the QEMU guest and were deselected" in result.stdout


def test_in_ci_a_guest_test_that_ran_nowhere_fails(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, CI="true")
    assert result.returncode == 1
    got = outcomes(result)
    assert got.pop("test_plain") == "PASSED"
    assert set(got.values()) == {"FAILED"}
    assert "ran nowhere" in result.stdout


def test_inside_the_guest_guest_tests_run_and_qemu_tests_do_not(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = run_pytest(tmp_path, f"--guest-report={report}", APPLIANCE_GUEST="1")
    assert result.returncode == 1
    assert outcomes(result) == {
        "test_plain": "PASSED",
        "test_needs_guest": "PASSED",
        "test_fails_in_guest": "FAILED",
        "test_skips_in_guest": "SKIPPED",
    }
    written = {k.split("::")[-1]: v for k, v in json.loads(report.read_text()).items()}
    assert written["test_needs_guest"]["outcome"] == "passed"
    assert written["test_fails_in_guest"]["outcome"] == "failed"
    assert "guest says no" in written["test_fails_in_guest"]["longrepr"]
    skipped = written["test_skips_in_guest"]
    assert (skipped["outcome"], skipped["longrepr"]) == ("skipped", "no such device")


def test_with_guest_the_guest_outcomes_are_reported_on_the_host(tmp_path: Path) -> None:
    runner = tmp_path / "runner"
    runner.write_text(FAKE_RUNNER.format(python=sys.executable))
    runner.chmod(0o755)
    result = run_pytest(tmp_path, "--guest=amd64", APPLIANCE_GUEST_RUNNER=str(runner))
    assert result.returncode == 1, result.stdout
    assert outcomes(result) == {
        "test_plain": "PASSED",
        "test_needs_guest": "PASSED",
        "test_fails_in_guest": "FAILED",
        "test_skips_in_guest": "SKIPPED",
        "test_boots_guest": "PASSED",
    }
    assert "[amd64 guest] failed in the guest" in result.stdout
    assert "guest says no" in result.stdout
    assert "[amd64 guest] no such device" in result.stdout
    assert "3 test(s) ran in the amd64 guest" in result.stdout


def test_a_guest_that_runs_nothing_fails_every_guest_test(tmp_path: Path) -> None:
    runner = tmp_path / "runner"
    runner.write_text("#!/bin/sh\necho 'boot failed'\nexit 125\n")
    runner.chmod(0o755)
    result = run_pytest(
        tmp_path, "--guest=arm64", "-k", "guest and not boots", APPLIANCE_GUEST_RUNNER=str(runner)
    )
    got = outcomes(result)
    assert got == {
        n: "FAILED" for n in ("test_needs_guest", "test_fails_in_guest", "test_skips_in_guest")
    }
    assert "did not boot or did not run pytest" in result.stdout


@pytest.mark.parametrize("arch", ["i386", ""])
def test_a_bad_arch_is_a_usage_error(tmp_path: Path, arch: str) -> None:
    result = run_pytest(tmp_path, f"--guest={arch}")
    assert result.returncode == 4
    assert "invalid choice" in result.stderr
    assert "Traceback" not in result.stderr
