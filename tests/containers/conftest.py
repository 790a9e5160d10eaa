"""The container tests' plumbing: podman as this machine runs it, the image (built once,
then reused while the .deb and the Containerfile are unchanged), a lab, containers that are
always removed."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import IN_CI, REPO
from tests.integration.labtools import Lab, lab_fixture

CONTAINERS = REPO / "containers"
IMAGE = "localhost/appliance:test"
# runc with cgroupfs: no unified cgroup v2 on the CI machines (crun fails there), and rlimits
# within what the machine allows.
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
ULIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
# Exactly what containers/daemonset.yaml grants.
CONFINED = [
    "--cap-drop",
    "ALL",
    "--cap-add",
    "NET_ADMIN",
    "--cap-add",
    "NET_RAW",
    "--security-opt",
    "no-new-privileges",
    "--read-only",
]


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        message = f"{tool} is not installed (setup.sh installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def podman(*args: str, timeout: float = 120, check: bool = True) -> str:
    done = subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {done.returncode}: {done.stderr}")
    return done.stdout


@pytest.fixture(scope="session")
def image() -> str:
    """The appliance image, built by containers/build.sh (a no-op when up to date)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for tool in ("podman", "runc", "mmdebstrap"):
        need(tool)
    done = subprocess.run(
        ["nice", "-n", "10", str(CONTAINERS / "build.sh"), "--tag", IMAGE],
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"containers/build.sh: exit {done.returncode}\n{done.stderr[-3000:]}")
    assert done.stdout.strip().splitlines()[-1] == IMAGE
    return IMAGE


@dataclass
class Node:
    """The host paths a node gives the container: the profile directory (the ConfigMap),
    the state directory and the directory of the control socket."""

    root: Path
    names: list[str] = field(default_factory=list)

    @property
    def profile_dir(self) -> Path:
        return self.root / "etc"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def control_socket(self) -> str:
        return str(self.run_dir / "control.sock")

    def write_profile(self, text: str) -> None:
        (self.profile_dir / "profile.toml").write_text(text)

    def run(self, image: str, netns: str, *args: str) -> str:
        """Start the container detached in ``netns``, confined as the DaemonSet's pod."""
        name = f"appliance-test-{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        podman(
            "run",
            "--detach",
            "--name",
            name,
            "--network",
            f"ns:/run/netns/{netns}",
            *CONFINED,
            *ULIMITS,
            "--volume",
            f"{self.profile_dir}:/etc/appliance:ro",
            "--volume",
            f"{self.state_dir}:/var/lib/appliance",
            "--volume",
            f"{self.run_dir}:/run/appliance",
            image,
            *args,
        )
        return name

    def remove_all(self) -> None:
        for name in self.names:
            podman("rm", "--force", "--time", "0", name, check=False)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    node = Node(tmp_path)
    for path in (node.profile_dir, node.state_dir, node.run_dir):
        path.mkdir()
    try:
        yield node
    finally:
        node.remove_all()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from lab_fixture("ctr")
