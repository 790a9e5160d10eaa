"""Corrupt state: the last good state truncated, bit-flipped, or written on a full disk. A
boot with an unusable profile enforces the last good policy when it is intact, else the
failsafe; never an empty ruleset, never a half-read policy."""

from __future__ import annotations

import json
import random
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import nft_in
from tests.daemon.conftest import EXTRA_RULE, Daemon, rule_handles, write_profile
from tests.reliability.conftest import trials

pytestmark = pytest.mark.root

Start = Callable[..., Daemon]

FLIPS = trials(ci=6, soak=60)
BROKEN = "version = 1\nname = 'broken'\n[zones.lan]\ninterfaces = 42\n"


def _saved(netns: str, start_daemon: Start, tmp_path: Path) -> tuple[Path, str]:
    """A daemon that saved its policy and stopped; the profile is then made unusable and the
    table removed (as after a reboot). Returns the profile and the saved table's hash."""
    profile = write_profile(tmp_path / "p.toml")
    daemon = start_daemon(netns, profile)
    good = str(daemon.status()["table_hash"])
    assert daemon.stop() == 0
    profile.write_text(BROKEN)
    nft_in(netns, "delete", "table", "inet", "appliance")
    return profile, good


def _boot(netns: str, start_daemon: Start, profile: Path) -> dict[str, object]:
    daemon = start_daemon(netns, profile)
    status = daemon.status()
    table = nft_in(netns, "list", "table", "inet", "appliance")  # never empty: it exists
    assert "policy drop" in table
    daemon.stop()
    nft_in(netns, "delete", "table", "inet", "appliance")
    return status


@pytest.mark.parametrize("keep", [0, 1, 40, -1], ids=["empty", "one-byte", "head", "no-tail"])
def test_a_truncated_last_good_boots_the_failsafe(
    netns: str, start_daemon: Start, tmp_path: Path, keep: int
) -> None:
    profile, _ = _saved(netns, start_daemon, tmp_path)
    path = tmp_path / "state" / "last-good.json"
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    status = _boot(netns, start_daemon, profile)
    assert status["source"] == "failsafe"
    assert "last-good.json" in str(status["last_error"]) or "zones.lan" in str(status["last_error"])


def test_bit_flips_in_the_last_good_boot_it_intact_or_the_failsafe(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    profile, good = _saved(netns, start_daemon, tmp_path)
    path = tmp_path / "state" / "last-good.json"
    original = path.read_bytes()
    rng = random.Random(7)
    outcomes: dict[str, int] = {}
    for trial in range(FLIPS):
        data = bytearray(original)
        at = rng.randrange(len(data))
        data[at] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        status = _boot(netns, start_daemon, profile)
        source = str(status["source"])
        outcomes[source] = outcomes.get(source, 0) + 1
        if source == "last_good":  # then it is the saved policy, whole
            assert status["table_hash"] == good, f"trial {trial}: flipped byte {at}"
        else:
            assert source == "failsafe", f"trial {trial}: {source}"
    print(f"{FLIPS} bit flips: {outcomes}")


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """The daemon's state directory on a 256 KiB tmpfs, unmounted afterwards."""
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(state)], check=True)
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


def _fill(directory: Path) -> None:
    with open(directory / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass


def test_a_full_disk_keeps_the_previous_good_state_whole(
    netns: str, start_daemon: Start, tmp_path: Path, small_tmpfs: Path
) -> None:
    profile = write_profile(tmp_path / "p.toml")
    daemon = start_daemon(netns, profile)
    first = str(daemon.status()["table_hash"])
    saved = (small_tmpfs / "last-good.json").read_bytes()
    _fill(small_tmpfs)
    write_profile(profile, extra=EXTRA_RULE)
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for("RELOADING=1")
    daemon.wait_for("READY=1")
    assert "web" in rule_handles(netns)  # enforced, though it could not be saved
    status = daemon.status()
    assert status["generation"] == 2
    # the previous copy is untouched, and no half-written file is left beside it
    assert (small_tmpfs / "last-good.json").read_bytes() == saved
    assert sorted(p.name for p in small_tmpfs.iterdir()) == sorted(
        ["filler", "last-good.json", "last-good.nft"]
    )
    nft_in(netns, "-c", "-f", str(small_tmpfs / "last-good.nft"))  # the boot script loads
    daemon.kill()
    nft_in(netns, "delete", "table", "inet", "appliance")
    profile.write_text(BROKEN)
    status = _boot(netns, start_daemon, profile)
    assert status["source"] == "last_good"
    assert status["table_hash"] == first
    assert json.loads(saved)["table_hash"] == first
