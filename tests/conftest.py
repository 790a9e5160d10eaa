"""Shared test plumbing: privilege markers, throw-away namespaces, golden-file flag.

Tests marked ``root`` need root and the kernel; each works in network namespaces it
creates and removes. Without root they are skipped, except in CI (``CI=true``), where a
privileged test that cannot run is a failure.
"""

from __future__ import annotations

import atexit
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Property tests run to their example counts however busy the machine is: no per-example
# deadline, no health check on slow generation (both are timings, and a loaded CI machine
# makes any of them fail), none on how much data generation drew (it failed a test drawing
# three bounded integers once in a whole run: the examples still run, and still fail on
# what they assert).
settings.register_profile(
    "appliance",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("appliance")

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

if (Path(__file__).parent / "guest_plugin.py").exists():
    pytest_plugins = ["tests.guest_plugin"]


def owned(stem: str) -> str:
    """A name for a network namespace (or a lab's prefix) this test run makes: ``stem``,
    the run's process ID and a random part. A run killed before its cleanup leaves it
    behind; the next run tells it from a live run's by that ID and removes it
    (``sweep_orphans``)."""
    return f"{stem}.{os.getpid()}.{uuid.uuid4().hex[:3]}"


# Namespaces named after the process that made them: a test run's (``owned``), or the
# guest runner's (qemu/run.sh: aqPID-...)
_OWNED = re.compile(r"^(?:[a-z]+\.(\d+)\.|aq(\d+)-)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_orphans() -> list[str]:
    """Remove the namespaces of test runs (and guests) whose process is gone: killed
    before their own cleanup ran. The names removed."""
    removed = []
    for name in sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []:
        found = _OWNED.match(name)
        if found is not None and not _alive(int(found.group(1) or found.group(2))):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
            removed.append(name)
    return removed


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.geteuid() == 0:
        sweep_orphans()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite the golden files of the compiler tests from the current output",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    for item in items:
        if "root" in item.keywords:
            if IN_CI:
                item.add_marker(pytest.mark.usefixtures("_privileged_test_in_ci"))
            else:
                item.add_marker(pytest.mark.skip(reason="needs root (runs in CI as root)"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection made (the modules, the test items) lives for the whole run: it is
    kept out of the garbage collector's passes, so that a full collection (the daemon runs
    one at each policy load, to give memory back) looks only at what the tests make. In
    the whole run that was 0.1 to 0.2 s a collection."""
    gc.collect()
    gc.freeze()


@pytest.fixture
def _privileged_test_in_ci() -> None:
    pytest.fail("privileged test cannot run: CI must run the tests as root")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


def run_appliance(
    *args: str, check: bool = False, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        cwd=REPO,
    )


NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
_nobody_tree: list[Path] = []


def run_as_nobody(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the distribution's Python as user nobody (``python ARGS...``) with the
    appliance package importable. The checkout and its venv may sit in a directory only
    root can enter (a clone in ``mktemp -d``), so the package is copied once into a
    world-readable directory, removed when the test run ends."""
    if not _nobody_tree:
        tree = Path(tempfile.mkdtemp(prefix="appliance-nobody-"))
        tree.chmod(0o755)
        shutil.copytree(
            REPO / "appliance", tree / "appliance", ignore=shutil.ignore_patterns("__pycache__")
        )
        atexit.register(shutil.rmtree, tree, True)
        _nobody_tree.append(tree)
    tree = _nobody_tree[0]
    python = os.path.realpath(sys.executable)  # the venv's link resolves to /usr/bin
    return subprocess.run(
        [*NOBODY, "env", f"PYTHONPATH={tree}", python, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=tree,
    )


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh, empty network namespace, removed afterwards whatever happens."""
    name = owned("apt")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def nft_in(ns: str, *args: str, check: bool = True) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "nft", *args], capture_output=True, text=True, check=check
    ).stdout


SMALL_PROFILE = """
version = 1
name = "NAME"
[zones.lan]
interfaces = ["eth1"]
[sets.blocklist]
type = "ipv4_addr"
interval = true
elements = ELEMENTS
[sets.ports]
type = "inet_service"
elements = [22]
[[rules]]
name = "drop-blocklist"
from = "any"
to = "self"
saddr = ["@blocklist"]
action = "drop"
[[rules]]
name = "ssh"
from = "lan"
to = "self"
proto = "tcp"
dport = ["@ports"]
action = "accept"
"""


def small_profile(name: str, elements: list[str]) -> str:
    """A lan zone, a blocklist and a ports set, a drop and an accept rule: the profile the
    engine and daemon tests change step by step."""
    import json

    return SMALL_PROFILE.replace("NAME", name).replace("ELEMENTS", json.dumps(elements))
