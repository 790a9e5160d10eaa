"""A hub pushes a blocklist to the lab appliance, and a wan flow to the mec host stops.

The reference hub (``appliance hub serve``) runs on the appliance namespace's loopback; the
daemon runs a hub-only local profile there and takes its policy from the bundles."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.lab import topology, traffic
from appliance.lab.daemon import LabDaemon
from appliance.storage import atomic_write
from appliance.sync import bundle as B
from appliance.sync import keys

REPO = Path(__file__).resolve().parents[2]
HUB_PORT = 8089
APP_PORT = 7443
PATH = "site-a/edge-01"

PROFILE: dict[str, Any] = {
    "version": 1,
    "name": "hub-lab",
    "zones": {"wan": {"interfaces": ["eth0"]}, "mec": {"interfaces": ["eth2"]}},
    "sets": {"blocklist": {"type": "ipv4_addr", "interval": True}},
    "rules": [
        {
            "name": "blocklist-in",
            "from": "wan",
            "to": "any",
            "saddr": ["@blocklist"],
            "action": "drop",
        },
        {
            "name": "wan-to-mec-app",
            "from": "wan",
            "to": "mec",
            "proto": "tcp",
            "dport": [APP_PORT],
            "action": "accept",
        },
    ],
}


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"condition not met in {timeout}s")


@pytest.fixture
def hub_dir(lab: topology.Lab, tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "bundles"
    (root / PATH).mkdir(parents=True)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns("appliance"), sys.executable, "-m", "appliance", "hub",
         "serve", str(root), "--listen", f"127.0.0.1:{HUB_PORT}"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield root / PATH
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def publish(directory: Path, key: keys.PrivateKey, version: int, blocklist: list[str]) -> None:
    data = B.build_bundle(PROFILE, {"blocklist": blocklist}, version, time.time() + 3600, Path("/"))
    atomic_write(directory / B.BUNDLE_FILE, data, 0o644)  # build, then sign
    atomic_write(directory / B.SIG_FILE, B.sign_text("", key, data).encode(), 0o644)


@pytest.mark.root
def test_hub_pushes_a_blocklist_and_a_wan_flow_stops(
    lab: topology.Lab, tmp_path: Path, hub_dir: Path
) -> None:
    key = keys.generate()
    pub = tmp_path / "hub.pub"
    pub.write_text(key.public.encode() + "\n")
    profile = tmp_path / "profile.toml"
    profile.write_text(
        f'version = 1\nname = "edge-01"\n\n[hub]\n'
        f'url = "http://127.0.0.1:{HUB_PORT}/{PATH}/"\ntrust = ["{pub}"]\npoll = "30s"\n\n'
        '[metrics]\nlisten = "127.0.0.1:9469"\n'
    )
    wan, mec = lab.ns("wan"), lab.ns("mec")
    mec_addr, wan_addr = lab.addr("mec"), lab.addr("wan")
    publish(hub_dir, key, 1, ["203.0.113.0/24"])
    with (
        traffic.serve(mec, "tcp", APP_PORT),
        LabDaemon(lab.ns("appliance"), str(profile), tmp_path / "daemon") as daemon,
    ):
        daemon.workdir.mkdir(exist_ok=True)
        daemon.start(timeout=30)
        wait_for(lambda: (daemon.status()["hub"] or {}).get("version") == 1)
        assert daemon.status()["source"] == "hub"
        assert traffic.tcp_connect(wan, mec_addr, APP_PORT, 2.0) == "open"

        publish(hub_dir, key, 2, ["203.0.113.0/24", wan_addr])  # the wan host is listed
        wait_for(lambda: daemon.status()["hub"]["version"] == 2)
        assert traffic.tcp_connect(wan, mec_addr, APP_PORT, 2.0) == "timeout"
        status = daemon.status()
        assert status["hub"]["result"] == "applied" and status["sets"]["blocklist"] == 2
        assert daemon.stop() == 0
