"""kill -9 at random points of a reload that applies 100k set elements and a new rule: the
kernel holds the old table or the new one, never a mix, never none (sampled every 10 ms),
and an established connection through the table loses nothing, and no child of the daemon
outlives it."""

from __future__ import annotations

import contextlib
import json
import random
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import nft_in
from tests.daemon.conftest import (
    ECHO_RULE,
    EXTRA_RULE,
    Daemon,
    echo_flow,
    rule_handles,
    wait_until,
    write_profile,
)
from tests.reliability.conftest import Link, TableSampler, trials

pytestmark = pytest.mark.root

Start = Callable[..., Daemon]

TRIALS = trials(ci=2, soak=50)
ELEMENTS = 100_000


def _address(i: int) -> str:
    return f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"


def _profiles(tmp: Path) -> tuple[str, str]:
    """The old profile (two elements, no web rule) and the new one (100k elements from a
    file and the web rule)."""
    big = tmp / "big.txt"
    big.write_text("".join(_address(2 * i) + "\n" for i in range(ELEMENTS)))  # none adjacent
    old = write_profile(tmp / "old.toml", extra=ECHO_RULE).read_text()
    new = (
        write_profile(tmp / "new.toml", extra=ECHO_RULE + EXTRA_RULE)
        .read_text()
        .replace('elements = ["203.0.113.0/24", "198.51.100.1"]', f'elements_file = "{big}"')
    )
    return old, new


def _children(daemon: Daemon) -> set[int]:
    """The daemon's child processes (of every thread)."""
    assert daemon.proc is not None
    found: set[int] = set()
    for task in Path(f"/proc/{daemon.proc.pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found |= {int(p) for p in (task / "children").read_text().split()}
    return found


def _gone(pids: set[int]) -> Callable[[], bool]:
    return lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids)


def _which(ns: str, base: set[str]) -> str:
    """'old' or 'new' when the kernel's table is wholly one of them (``base``: the old
    table's rule comments), else a description."""
    rules = set(rule_handles(ns))
    listing = json.loads(nft_in(ns, "-j", "list", "set", "inet", "appliance", "blocklist"))
    count = sum(len(o["set"].get("elem", [])) for o in listing["nftables"] if "set" in o)
    if rules == base and count == 2:
        return "old"
    if rules == base | {"web"} and count == ELEMENTS:
        return "new"
    return f"mixed: rules {sorted(rules)}, {count} elements"


def test_kill_9_during_a_100k_apply_leaves_old_or_new_and_the_flow_intact(
    netns: str, peer_link: Link, start_daemon: Start, tmp_path: Path
) -> None:
    old, new = _profiles(tmp_path)
    profile = tmp_path / "p.toml"
    profile.write_text(old)
    daemon = start_daemon(netns, profile)
    base = set(rule_handles(netns))
    rng = random.Random(12)
    seen: dict[str, int] = {"old": 0, "new": 0}
    reaped = 0
    with echo_flow(netns, peer_link.outer, timeout=10) as flow:
        echo = flow.echo
        echo("before")
        current = "old"
        with TableSampler(netns) as sampler:
            for trial in range(TRIALS):
                target = "new" if current == "old" else "old"
                profile.write_text(new if target == "new" else old)
                daemon.send_signal(signal.SIGHUP)
                daemon.wait_for("RELOADING=1")
                # a random point of the apply: from at once to well after it may be done
                pause = rng.uniform(0.0, 1.5)
                daemon.receive(pause)
                children = _children(daemon)
                reaped += len(children)
                daemon.kill()
                wait_until(_gone(children), timeout=30)  # no orphan outlives the daemon
                found = _which(netns, base)
                assert found in (current, target), f"trial {trial}: {found}"
                seen[found] += 1
                echo(f"trial-{trial}")
                daemon = start_daemon(netns, profile)
                assert _which(netns, base) == target, f"trial {trial}: restart did not apply"
                current = target
            sampler.wait_for(sampler.samples + 3)
        echo("after")
        assert sampler.missing == [], sampler.missing[:3]
        print(
            f"{TRIALS} trials, {sampler.samples} samples, outcomes {seen}, "
            f"{reaped} children gone with the daemon"
        )
