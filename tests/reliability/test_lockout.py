"""The lock-out guard: a policy pushed by the hub that would cut the appliance off from the
hub and from its management path is rolled back by commit-confirm (the hub must still be
reachable after the apply), and management connects again."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appliance.sync import bundle as B
from appliance.sync import keys
from tests.conftest import REPO
from tests.daemon.conftest import Daemon, table_listing, wait_until
from tests.daemon.test_hub import BUNDLE_PROFILE, FEED, PATH, Hub, hub_status
from tests.reliability.conftest import Link

pytestmark = pytest.mark.root

Start = Callable[..., Daemon]

HUB_PORT = 8089
MANAGEMENT_PORT = 22

MANAGEMENT = """
import socket
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("10.77.0.1", 22))
srv.listen(16)
print("listening", flush=True)
while True:
    conn, _ = srv.accept()
    conn.sendall(b"hello")
    conn.close()
"""

CUT_HUB = {"name": "cut-hub", "from": "self", "to": "lan", "daddr": ["10.77.0.2"], "action": "drop"}


def _bundle(version: int, lock_out: bool) -> bytes:
    doc = json.loads(json.dumps(BUNDLE_PROFILE))
    if lock_out:  # management (ssh from lan) gone, and the hub's address dropped
        doc["rules"] = [r for r in doc["rules"] if r["name"] != "ssh"] + [CUT_HUB]
    return B.build_bundle(doc, {"blocklist": FEED}, version, time.time() + 3600, Path("/"))


def _manage(peer: str) -> bool:
    """A new management connection from the peer gets the banner."""
    result = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            peer,
            sys.executable,
            "-c",
            "import socket; c = socket.create_connection(('10.77.0.1', 22), timeout=2);"
            "print(c.recv(5).decode())",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.stdout.strip() == "hello"


def rules(ns: str) -> dict[str, str]:
    """Rule comment -> the rule's statements (handles left out: a swap renumbers them)."""
    return {
        obj["rule"]["comment"]: json.dumps(obj["rule"]["expr"], sort_keys=True)
        for obj in table_listing(ns)
        if "rule" in obj and obj["rule"].get("comment")
    }


@pytest.fixture
def remote_hub(peer_link: Link, tmp_path: Path) -> Iterator[Hub]:
    """The reference hub in the peer namespace, reached over the veth (10.77.0.2)."""
    hub = Hub(peer_link.outer, tmp_path / "bundles", keys.generate())
    hub.url = f"http://10.77.0.2:{HUB_PORT}/{PATH}/"
    hub.proc = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            peer_link.outer,
            sys.executable,
            "-m",
            "appliance",
            "hub",
            "serve",
            str(hub.root),
            "--listen",
            f"10.77.0.2:{HUB_PORT}",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield hub
    finally:
        hub.stop()


def test_a_pushed_policy_that_cuts_hub_and_management_is_rolled_back(
    netns: str, peer_link: Link, remote_hub: Hub, start_daemon: Start, tmp_path: Path
) -> None:
    pub = tmp_path / "hub.pub"
    pub.write_text(remote_hub.key.public.encode() + "\n")
    profile = tmp_path / "profile.toml"
    profile.write_text(
        f'version = 1\nname = "edge-1"\n\n[hub]\nurl = "{remote_hub.url}"\n'
        f'trust = ["{pub}"]\npoll = "1s"\ntimeout = "3s"\n'
    )
    remote_hub.publish(_bundle(5, lock_out=False))
    server = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-c", MANAGEMENT],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        daemon = start_daemon(netns, profile)
        wait_until(lambda: hub_status(daemon)["version"] == 5, timeout=30)
        assert _manage(peer_link.outer)
        before = rules(netns)
        remote_hub.publish(_bundle(6, lock_out=True))
        wait_until(lambda: "rolled back" in (hub_status(daemon)["error"] or ""), timeout=60)
        status = daemon.status()
        assert status["hub"]["version"] == 5
        assert rules(netns) == before
        assert _manage(peer_link.outer)
        print(f"lock-out: rolled back, hub error {status['hub']['error']!r}")
    finally:
        server.kill()
        server.wait()
