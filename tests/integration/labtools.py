"""Tools for the integration tests: a lab with the appliance command line bound to it.

Profiles are written as TOML text in the tests and applied with the real command line
inside the lab's appliance namespace; probes run from the lab's hosts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appliance.lab import netns, topology, traffic
from appliance.lab.topology import HostRole, Role
from tests.conftest import owned

REPO = Path(__file__).resolve().parents[2]

# How long a probe waits before calling a flow dropped. Rejections and answers come back
# in milliseconds; a drop is only ever seen as silence.
DROP_WAIT = 0.7
ANSWER_WAIT = 3.0


@dataclass
class Lab:
    """A running lab and the appliance command line bound to it."""

    topo: topology.Lab
    state_dir: Path
    profile_dir: Path
    applied: list[str] = field(default_factory=list)

    def ns(self, role: Role) -> str:
        return self.topo.ns(role)

    def addr(self, role: Role, family: int = 4, toward: HostRole | None = None) -> str:
        return self.topo.addr(role, family, toward)

    def appliance(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``appliance ARGS --netns <appliance namespace>`` with private state paths."""
        cmd = [
            sys.executable,
            "-m",
            "appliance",
            *args,
            "--netns",
            self.ns("appliance"),
            "--state-dir",
            str(self.state_dir),
            "--control-socket",
            str(self.state_dir / "control.sock"),
        ]
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=60, check=False, cwd=REPO
        )
        if check and done.returncode != 0:
            pytest.fail(
                f"{' '.join(args)}: exit {done.returncode}\n{done.stdout}{done.stderr}",
                pytrace=False,
            )
        return done

    def apply(self, profile: str, name: str | None = None) -> Path:
        """Write ``profile`` (TOML text) to a file and apply it; fails the test if refused."""
        name = name or f"p{len(self.applied)}"
        path = self.profile_dir / f"{name}.toml"
        path.write_text(textwrap.dedent(profile))
        self.appliance("apply", str(path))
        self.applied.append(name)
        return path

    def apply_file(self, path: Path | str) -> None:
        self.appliance("apply", str(path))

    def set_add(self, set_name: str, *elements: str, timeout: str | None = None) -> None:
        extra = ["--timeout", timeout] if timeout else []
        self.appliance("set", "add", set_name, *elements, *extra)

    def set_del(self, set_name: str, *elements: str) -> None:
        self.appliance("set", "del", set_name, *elements)

    def nft(self, *args: str) -> str:
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns("appliance"), "nft", *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    def counter(self, name: str) -> int:
        """Packets counted by the named counter ``name``."""
        out = self.nft("list", "counter", "inet", "appliance", name)
        for word, value in zip(out.split(), out.split()[1:], strict=False):
            if word == "packets":
                return int(value)
        raise AssertionError(f"no counter {name}: {out}")


def probe(
    lab: Lab,
    src: Role,
    dst: Role | str,
    proto: str,
    port: int = 0,
    family: int = 4,
    *,
    expect: str,
    toward: HostRole | None = None,
    source: str | None = None,
) -> str:
    """Run one probe and return its outcome; waits only ``DROP_WAIT`` when a drop is expected.

    ``dst`` is a role or a literal address.
    """
    if dst in topology.ROLES:
        role: Role = dst  # type: ignore[assignment]
        if role == "appliance":
            address = lab.addr("appliance", family, toward=toward or _host(src))
        else:
            address = lab.addr(role, family)
    else:
        address = dst
    wait = DROP_WAIT if expect == "timeout" else ANSWER_WAIT
    ns = lab.ns(src)
    if proto == "tcp":
        return traffic.tcp_connect(ns, address, port, wait, source=source)
    if proto == "udp":
        return traffic.udp_probe(ns, address, port, wait, source=source)
    if proto in ("icmp", "ping"):
        return traffic.ping(ns, address, wait)
    raise ValueError(proto)


def _host(role: Role) -> HostRole:
    if role == "appliance":
        return "lan"
    return role


def lab_fixture(tag: str) -> Iterator[Lab]:
    """Build a lab for a test module and remove it afterwards, whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    prefix = owned(f"i{tag[:6]}") + "-"
    import tempfile

    with tempfile.TemporaryDirectory(prefix="appliance-it-") as tmp:
        state = Path(tmp) / "state"
        profiles = Path(tmp) / "profiles"
        state.mkdir()
        profiles.mkdir()
        try:
            yield Lab(netns.up(prefix), state, profiles)
        finally:
            netns.down(prefix)


def wait_until(predicate: object, timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds pass."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# The zones most tests use: one per lab link.
ZONES = """
version = 1
name = "{name}"

[zones.wan]
interfaces = ["eth0"]

[zones.lan]
interfaces = ["eth1"]

[zones.mec]
interfaces = ["eth2"]
"""


def profile(name: str, body: str, zones: str = ZONES) -> str:
    """A profile: the standard zones (unless given) and ``body``."""
    return textwrap.dedent(zones).format(name=name) + textwrap.dedent(body)
