"""Fixtures for the guest tests.

``guest`` tests run inside the QEMU guest and use the ordinary fixtures
(``netns`` from tests/conftest.py). ``qemu`` tests run on the host: ``booted_guest``
starts ``qemu/run.sh`` with its NICs in host namespaces the test owns, and always
stops it, and removes what it made, when the test ends; ``start_guest`` is the same
for fixtures of a wider scope (one boot for a module's tests).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import owned
from tests.guest_plugin import REPO, RUN_SH


@dataclass
class BootedGuest:
    """A guest booted by qemu/run.sh, running one command, with files in ``io``."""

    arch: str
    io: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def wait_for(self, name: str, timeout: float) -> None:
        """Wait until the guest writes ``name`` in the io folder; fail if it ends first."""
        deadline = time.monotonic() + timeout
        while not (self.io / name).exists():
            if self.proc.poll() is not None:
                pytest.fail(
                    f"the guest ended (status {self.proc.returncode}) before writing {name}:\n"
                    + self.output(),
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                pytest.fail(f"the guest wrote no {name} within {timeout:g}s:\n" + self.output())
            time.sleep(0.2)

    def wait_for_or_end(self, name: str, timeout: float) -> bool:
        """Wait until the guest writes ``name`` (True) or ends (False); fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not (self.io / name).exists():
            if self.proc.poll() is not None:
                return (self.io / name).exists()
            if time.monotonic() > deadline:
                pytest.fail(f"the guest wrote no {name} within {timeout:g}s:\n" + self.output())
            time.sleep(0.2)
        return True

    def finish(self, timeout: float) -> int:
        """Wait for the guest to end by itself; its command's exit status."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the guest did not end within {timeout:g}s:\n" + self.output())

    def output(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Make sure nothing of this guest is left: qemu, taps, run.sh's namespaces."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # run.sh cleans up on TERM
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        tag = f"aq{self.proc.pid}-"
        for ns in os.listdir("/run/netns") if os.path.isdir("/run/netns") else []:
            if ns.startswith(tag):
                subprocess.run(["ip", "netns", "del", ns], check=False)


def make_netns(name: str) -> str:
    """A fresh host network namespace with its loopback up."""
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    return name


def delete_netns(names: list[str]) -> None:
    for name in names:
        subprocess.run(["ip", "netns", "del", name], check=False)


def start_guest(
    arch: str,
    io: Path,
    log: Path,
    command: list[str],
    nic_netns: list[str],
    timeout: int = 900,
    options: tuple[str, ...] = (),
) -> BootedGuest:
    """Start qemu/run.sh ARCH (``options``: more of its options, e.g. --systemd)."""
    image = REPO / "qemu" / "out" / arch / "rootfs.img"
    if not image.exists():
        pytest.fail(f"no {arch} guest image: run qemu/build-image.sh {arch}", pytrace=False)
    io.mkdir(parents=True, exist_ok=True)
    args = [str(RUN_SH), arch, "--timeout", str(timeout), "--io-dir", str(io), *options]
    for ns in nic_netns:
        args += ["--nic-netns", ns]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*args, "--", *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return BootedGuest(arch, io, proc, log)


@pytest.fixture
def host_netns() -> Iterator[Callable[[str], str]]:
    """``make(role)``: a fresh host network namespace, removed when the test ends."""
    made: list[str] = []
    tag = owned("aql")

    def make(role: str) -> str:
        made.append(make_netns(f"{tag}-{role}"))
        return made[-1]

    try:
        yield make
    finally:
        delete_netns(made)


@pytest.fixture
def boot_guest(guest_arch: str, tmp_path: Path) -> Iterator[Callable[..., BootedGuest]]:
    """``boot(command, nic_netns=[...], timeout=...)``: start the guest running ``command``."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    booted: list[BootedGuest] = []

    def boot(command: list[str], nic_netns: list[str], timeout: int = 900) -> BootedGuest:
        n = len(booted)
        guest = start_guest(
            guest_arch, tmp_path / f"io{n}", tmp_path / f"run{n}.log", command, nic_netns, timeout
        )
        booted.append(guest)
        return guest

    try:
        yield boot
    finally:
        for guest in booted:
            guest.stop()
