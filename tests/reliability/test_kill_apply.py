"""kill -9 at random points of a reload that applies 100k set elements and a new rule: the
kernel holds the old table or the new one, never a mix, never none (sampled every 10 ms),
and an established connection through the table loses nothing, and no child of the daemon
outlives it.

A process killed inside uninterruptible kernel work goes only when that work ends: the
nf_tables commit of a batch (its elements are inserted whatever happens to the sender),
the fsync of the last good policy's copies (a writeback queue full of what other
processes wrote, as after a 1,000,000-element soak, holds it for seconds). On a busy
machine that has taken longer than 10 s, so the daemon's end is awaited with a bound
that holds there, and a daemon that outlives it is reported with where it waits in the
kernel.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import time
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
KILLED_WITHIN = 120.0  # seconds from SIGKILL to the daemon reaped, on a busy machine


def _kernel_wait(pid: int) -> str:
    """Where each thread of ``pid`` waits in the kernel: state, wchan, the stack's top."""
    found = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        with contextlib.suppress(OSError):
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
            stack = (task / "stack").read_text().split()[1::2][:4]
            found.append(f"{task.name} {state} {(task / 'wchan').read_text()} {stack}")
    return "; ".join(found) or "gone"


def _kill(daemon: Daemon) -> float:
    """SIGKILL the daemon and wait until it is reaped; the seconds it took."""
    proc = daemon.proc
    assert proc is not None
    begun = time.monotonic()
    proc.kill()
    try:
        proc.wait(KILLED_WITHIN)
    except subprocess.TimeoutExpired:
        pytest.fail(f"killed daemon alive after {KILLED_WITHIN:.0f} s: {_kernel_wait(proc.pid)}")
    return time.monotonic() - begun


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
    kills: list[float] = []
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
                kills.append(_kill(daemon))
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
            f"{reaped} children gone with the daemon; SIGKILL to reaped at most "
            f"{max(kills):.2f} s"
        )
