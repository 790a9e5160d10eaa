"""The decoders' regression corpus (frames that break naive decoders: GTP extension loops,
DNS pointer loops, truncated IPv6 chains, deep VLAN and GTP nesting, cut ClientHellos)
replayed on the wire as a flood into a daemon that mirrors the interface for inspection:
every kind is decoded and counted as the error it is, status keeps answering, memory is
bounded, the daemon's table is untouched."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon.conftest import Daemon, rule_handles, wait_until, write_profile
from tests.inspect.test_robustness import CORPUS, nested_gtp, nested_vlan
from tests.reliability.conftest import Link, trials

pytestmark = pytest.mark.root

Start = Callable[..., Daemon]

ROUNDS = trials(ci=200, soak=20_000)
MTU = 9000

MIRROR = """
[inspect]
mode = "mirror"
interfaces = ["eth1"]
"""

# Sends the frames of a file (4-byte length, frame) ROUNDS times on eth0 with AF_PACKET.
REPLAY = r"""
import socket, struct, sys
frames, data = [], open(sys.argv[1], "rb").read()
while data:
    (n,) = struct.unpack_from("!I", data)
    frames.append(data[4:4 + n])
    data = data[4 + n:]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
sent = 0
for _ in range(int(sys.argv[2])):
    for frame in frames:
        try:
            s.send(frame)
            sent += 1
        except OSError:
            pass
print(sent, flush=True)
"""


def _frames() -> dict[str, bytes]:
    """The corpus, its deep nestings cut to what fits one jumbo frame (still past the
    decoders' depth limits)."""
    frames = {name: build() for name, (build, _) in CORPUS.items()}
    frames["deeply nested VLAN"] = nested_vlan(2000)
    frames["deeply nested GTP"] = nested_gtp(200)
    assert all(len(f) <= MTU + 14 for f in frames.values()), {n: len(f) for n, f in frames.items()}
    return frames


def test_the_decoder_corpus_as_a_flood_is_counted_and_changes_nothing(
    netns: str, peer_link: Link, start_daemon: Start, tmp_path: Path
) -> None:
    for ns, dev in ((netns, "eth1"), (peer_link.outer, "eth0")):
        subprocess.run(["ip", "-n", ns, "link", "set", dev, "mtu", str(MTU)], check=True)
    daemon = start_daemon(netns, write_profile(tmp_path / "p.toml", extra=MIRROR))
    handles = rule_handles(netns)
    assert daemon.proc is not None
    frames = _frames()
    corpus = tmp_path / "corpus.bin"
    corpus.write_bytes(b"".join(len(f).to_bytes(4, "big") + f for f in frames.values()))
    replay = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            peer_link.outer,
            sys.executable,
            "-c",
            REPLAY,
            str(corpus),
            str(ROUNDS),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    latencies: list[float] = []
    try:
        while replay.poll() is None or len(latencies) < 3:
            started = time.monotonic()
            daemon.status()
            latencies.append(time.monotonic() - started)
            time.sleep(0.1)  # pacing of the status probes, not a wait for an event
        assert replay.stdout is not None
        sent = int(replay.stdout.read())
    finally:
        if replay.poll() is None:
            replay.kill()
        replay.wait()
    expected = {reason for _, reason in CORPUS.values()}

    def all_counted() -> bool:  # every frame sent was decoded or counted as dropped
        inspect = daemon.status()["inspect"]
        return bool(inspect["received"] + inspect["dropped"] >= sent)

    wait_until(all_counted, timeout=60)
    status = daemon.status()
    inspect = status["inspect"]
    print(
        f"{sent} corpus frames ({len(frames)} kinds x {ROUNDS}); status slowest "
        f"{max(latencies):.3f}s; received {inspect['received']} dropped {inspect['dropped']}; "
        f"decode errors {inspect['decode_errors']}; RSS {status['rss_bytes'] >> 20} MiB"
    )
    assert sent == len(frames) * ROUNDS
    assert expected <= set(inspect["decode_errors"]), inspect["decode_errors"]
    assert status["last_error"] is None
    assert rule_handles(netns) == handles
    assert status["rss_bytes"] < 512 << 20
