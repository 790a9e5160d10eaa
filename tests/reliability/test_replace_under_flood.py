"""Structural changes under a flood: one sender sends traffic the policy allows and traffic
it must drop (a source in the blocklist interval set, a source a rule names, a source added
at run time to the autoblock set, a hash set with timeouts), while the daemon changes the
structure again and again (a rule comes and goes); the receiver never sees one must-drop
packet. A swap keeps the table and every set whose definition is unchanged, with its
elements: only the chains and rules are replaced.

A set whose definition changes with the swap (here the blocklist's size, every swap) is
made anew in the transaction, and the kernel makes its elements visible only when the
transaction ends, after the new rules are live: a source dropped through it can pass for
that moment (docs/threat-model.md). That case is kept, measured, and expected to fail
while it does."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import nft_in, run_appliance
from tests.daemon.conftest import EXTRA_RULE, Daemon, rule_handles, write_profile
from tests.reliability.conftest import Link, trials

pytestmark = pytest.mark.root

Start = Callable[..., Daemon]

SWAPS = trials(ci=10, soak=100)
IN_SET = "10.77.0.3"  # in the blocklist of both profiles
BY_RULE = "10.77.0.4"  # dropped by a rule that names it
RUN_TIME = "10.77.0.5"  # added at run time to autoblock_v4
SOURCES = (IN_SET, BY_RULE, RUN_TIME)

UDP_RULE = """
[[rules]]
name = "drop-literal"
from = "any"
to = "self"
saddr = ["10.77.0.4"]
action = "drop"
[[rules]]
name = "flood-port"
from = "lan"
to = "self"
proto = "udp"
dport = [6000]
action = "accept"
"""

RECEIVER = """
import json, socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.77.0.1", 6000))
s.settimeout(1.0)
print("listening", flush=True)
counts = {}
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    try:
        data, (src, _) = s.recvfrom(2048)
    except TimeoutError:
        continue
    if data == b"stop":
        break
    counts[src] = counts.get(src, 0) + 1
print(json.dumps(counts), flush=True)
"""

SENDER = """
import select, socket, sys, time
sockets = []
for src in sys.argv[1:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    sockets.append(s)
deadline = time.monotonic() + 600
sent = 0
print("sending", flush=True)
while time.monotonic() < deadline:
    for s in sockets:
        s.sendto(b"x" * 64, ("10.77.0.1", 6000))
    sent += 1
    if sent % 200 == 0:
        if select.select([sys.stdin], [], [], 0)[0]:
            break
        time.sleep(0.001)
print(sent, flush=True)
"""


def stop_receiver(ns: str) -> None:
    """Ends ``RECEIVER`` in ``ns``: it prints its counts and exits."""
    subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            sys.executable,
            "-c",
            "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
            ".sendto(b'stop', ('10.77.0.1', 6000))",
        ],
        check=True,
    )


@pytest.mark.parametrize(
    ("must_drop", "redefine"),
    [
        pytest.param(BY_RULE, False, id="dropped-by-rule"),
        pytest.param(IN_SET, False, id="dropped-by-set"),
        pytest.param(RUN_TIME, False, id="dropped-by-run-time-element"),
        pytest.param(
            IN_SET,
            True,
            id="dropped-by-redefined-set",
            marks=pytest.mark.xfail(
                reason="a set made anew in the swap shows its elements only once the "
                "transaction ends, after the new rules are live (timing-dependent)",
                strict=False,
            ),
        ),
    ],
)
def test_the_must_drop_counter_stays_0_through_table_swaps_under_a_flood(
    netns: str,
    peer_link: Link,
    start_daemon: Start,
    tmp_path: Path,
    must_drop: str,
    redefine: bool,
) -> None:
    for address in SOURCES:
        subprocess.run(
            ["ip", "-n", peer_link.outer, "addr", "add", f"{address}/24", "dev", "eth0"],
            check=True,
        )
    elements = ["203.0.113.0/24", IN_SET]
    profile = write_profile(tmp_path / "p.toml", elements, extra=UDP_RULE)
    daemon = start_daemon(netns, profile)
    added = run_appliance(
        "set", "add", "autoblock_v4", RUN_TIME, "--timeout", "1h", "--control-socket", daemon.socket
    )
    assert added.returncode == 0, added.stderr
    receiver = sender = None
    try:
        receiver = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", RECEIVER],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert receiver.stdout is not None and receiver.stdout.readline().strip() == "listening"
        sender = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                peer_link.outer,
                sys.executable,
                "-c",
                SENDER,
                peer_link.outer_addr,
                *SOURCES,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert sender.stdout is not None and sender.stdout.readline().strip() == "sending"
        for swap in range(SWAPS):
            extra = UDP_RULE + (EXTRA_RULE if swap % 2 == 0 else "")
            write_profile(profile, elements, extra=extra)
            if redefine and swap % 2 == 0:
                text = profile.read_text().replace(
                    "interval = true\n", "interval = true\nsize = 4096\n", 1
                )
                profile.write_text(text)
            daemon.send_signal(signal.SIGHUP)
            daemon.wait_for("RELOADING=1")
            daemon.wait_for("READY=1")
            assert ("web" in rule_handles(netns)) == (swap % 2 == 0)
        assert sender.stdin is not None
        sender.stdin.write("stop\n")
        sender.stdin.close()
        sent = int(sender.stdout.readline())
        sender.wait(30)
        stop_receiver(netns)
        counts = json.loads(receiver.stdout.readline())
        receiver.wait(30)
        dropped = _counter_packets(netns, "drop-literal") + _counter_packets(
            netns, "drop-blocklist"
        )
        print(f"{SWAPS} swaps, {sent} rounds sent, received {counts}, dropped {dropped}")
        assert counts.get(must_drop, 0) == 0
        assert counts.get(peer_link.outer_addr, 0) > 0
        assert dropped > 0
        assert daemon.status()["generation"] == SWAPS + 1
    finally:
        for proc in (sender, receiver):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def _counter_packets(ns: str, name: str) -> int:
    """Packets the named counter of a rule has seen."""
    listing = json.loads(nft_in(ns, "-j", "list", "counter", "inet", "appliance", name))
    return int(next(o["counter"]["packets"] for o in listing["nftables"] if "counter" in o))
