"""Floods against a daemon that samples traffic for inspection: a SYN flood from random
source addresses (100k in the default run, a million with APPLIANCE_SOAK=1) sent as fast as
a raw socket allows. Status and metrics keep answering, the daemon's memory plateaus, the
samples it could not take are counted, and enforcement is unaffected (a blocklisted sender
never reaches its receiver, an allowed one does)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon.conftest import Daemon, write_profile
from tests.reliability.conftest import Link, trials
from tests.reliability.test_replace_under_flood import RECEIVER, SENDER, UDP_RULE, stop_receiver

pytestmark = pytest.mark.root

Start = Callable[..., Daemon]

SOURCES = trials(ci=100_000, soak=1_000_000)
IN_SET = "10.77.0.3"

INSPECT = """
[inspect]
mode = "sample"
"""

# Random-source SYNs to 10.77.0.1:80 from a raw socket: IPv4 header filled in by the kernel's
# checksum, the TCP checksum updated per source (the pseudo-header sum plus the address).
SYN_FLOOD = r"""
import random, socket, struct, sys, time
count = int(sys.argv[1])
dst = socket.inet_aton("10.77.0.1")
tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
base = 6 + len(tcp)
for i in range(0, len(tcp), 2):
    base += (tcp[i] << 8) | tcp[i + 1]
base += (dst[0] << 8 | dst[1]) + (dst[2] << 8 | dst[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
rng = random.Random(5)
sent = 0
deadline = time.monotonic() + 600
print("flooding", flush=True)
while sent < count and time.monotonic() < deadline:
    src = rng.getrandbits(32) | 0x01000000
    total = base + (src >> 16) + (src & 0xFFFF)
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    csum = ~total & 0xFFFF
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, struct.pack("!I", src), dst)
    try:
        s.sendto(ip + tcp[:16] + struct.pack("!H", csum) + tcp[18:], ("10.77.0.1", 0))
    except OSError:  # a full transmit queue: send on
        pass
    sent += 1
print(sent, flush=True)
"""


def _rss(daemon: Daemon) -> int:
    assert daemon.proc is not None
    for line in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _metrics_seconds(ns: str) -> float:
    result = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{time_total}",
            "--max-time",
            "10",
            "http://127.0.0.1:9469/metrics",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def test_a_random_source_syn_flood_leaves_status_metrics_memory_and_enforcement_intact(
    netns: str, peer_link: Link, start_daemon: Start, tmp_path: Path
) -> None:
    subprocess.run(
        ["ip", "-n", peer_link.outer, "addr", "add", f"{IN_SET}/24", "dev", "eth0"], check=True
    )
    profile = write_profile(
        tmp_path / "p.toml", ["203.0.113.0/24", IN_SET], extra=UDP_RULE + INSPECT
    )
    daemon = start_daemon(netns, profile)
    rss_before = _rss(daemon)
    procs: list[subprocess.Popen[str]] = []

    def spawn(ns: str, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    try:
        receiver = spawn(netns, RECEIVER)
        assert receiver.stdout is not None and receiver.stdout.readline().strip() == "listening"
        sender = spawn(peer_link.outer, SENDER, peer_link.outer_addr, IN_SET)
        assert sender.stdout is not None and sender.stdout.readline().strip() == "sending"
        flood = spawn(peer_link.outer, SYN_FLOOD, str(SOURCES))
        assert flood.stdout is not None and flood.stdout.readline().strip() == "flooding"

        status_s: list[float] = []
        metrics_s: list[float] = []
        rss: list[int] = []
        done = threading.Event()
        sent: list[int] = []

        def wait_flood() -> None:
            assert flood.stdout is not None
            sent.append(int(flood.stdout.readline()))
            done.set()

        threading.Thread(target=wait_flood, daemon=True).start()
        while not done.is_set() or len(status_s) < 3:
            started = time.monotonic()
            daemon.status()
            status_s.append(time.monotonic() - started)
            metrics_s.append(_metrics_seconds(netns))
            rss.append(_rss(daemon))
            done.wait(0.2)
        status = daemon.status()
        assert sender.stdin is not None
        sender.stdin.write("stop\n")
        sender.stdin.close()
        sender.wait(30)
        stop_receiver(netns)
        assert receiver.stdout is not None
        counts = json.loads(receiver.stdout.readline())
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    inspect = status["inspect"]
    half = len(rss) // 2
    print(
        f"{sent[0]} SYNs from random sources; status p99 {_p99(status_s):.3f}s "
        f"({len(status_s)} answers), metrics p99 {_p99(metrics_s):.3f}s; RSS "
        f"{min(rss) >> 20}..{max(rss) >> 20} MiB (second half max {max(rss[half:]) >> 20} MiB); "
        f"inspect received {inspect['received']} inspected {inspect['inspected']} "
        f"dropped {inspect['dropped']}; receiver {counts}"
    )
    assert sent[0] == SOURCES
    assert counts.get(IN_SET, 0) == 0  # enforcement unaffected
    assert counts.get(peer_link.outer_addr, 0) > 0
    assert inspect["received"] > 0
    # every packet the kernel offered was inspected or counted as dropped
    assert (
        inspect["inspected"] + inspect["dropped"]
        >= inspect["received"] - inspect["queue"]["queued"]
    )
    assert status["last_error"] is None
    assert len(status_s) >= 3
    # memory is bounded (the engine's queue holds at most 8192 samples) and plateaus: with
    # samples enough, the last quarter adds little to the peak before it
    assert max(rss) - rss_before < 256 << 20, rss
    if len(rss) >= 8:
        quarter = len(rss) // 4
        assert max(rss[-quarter:]) <= max(rss[:-quarter]) + (32 << 20), rss
