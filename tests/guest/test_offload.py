"""Flow offload on a kernel with flowtables (the guest's): a flow through the router the
daemon guards leaves the forward path once inspection has its sample (``[OFFLOAD]`` in
conntrack), inspection still gets the flow's first packets, the daemon reads its own table
back without drift, a zone's link that appears later is hooked, and a block of the flow's
source stops it.

It runs in namespaces of its own inside the guest; a few seconds of traffic.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.adapters.conntrack import Conntrack
from appliance.adapters.nsexec import run_in_netns
from appliance.daemon.control import request
from tests.conftest import nft_in
from tests.daemon.conftest import Daemon
from tests.routed import CLIENT_ADDR, ECHO_PORT, ROUTER_PROFILE, echo_flow, routed

pytestmark = [pytest.mark.guest, pytest.mark.root]

SAMPLE = 4
PROFILE = ROUTER_PROFILE.replace('interfaces = ["r1"]', 'interfaces = ["r1", "up*"]') + (
    f'\n[inspect]\nmode = "sample"\nsample_packets = {SAMPLE}\n'
)
ROUNDS = 30  # request/answer pairs through the router before the block


def echo_flow_entries() -> list[dict[str, object]]:
    """This namespace's conntrack entries of the echo flow (run in the router)."""
    with Conntrack() as ct:
        return [
            {"src": e.orig.src, "offloaded": e.offloaded}
            for e in ct.entries()
            if e.orig.proto == 6 and e.orig.dport == ECHO_PORT
        ]


def echo_entries(router: str) -> list[dict[str, object]]:
    """The router's conntrack entries of the echo flow."""
    return run_in_netns(router, echo_flow_entries, timeout=60)


def appliance_set(router: str, tmp_path: Path, action: str) -> None:
    """``appliance set ACTION autoblock_v4 CLIENT`` with no daemon on the control socket."""
    options = ["--netns", router, "--control-socket", str(tmp_path / "none.sock")]
    command = ["set", action, "autoblock_v4", CLIENT_ADDR]
    subprocess.run([sys.executable, "-m", "appliance", *options, *command], check=True, timeout=120)


def wait_for(what: str, predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g}s")
        time.sleep(0.1)


def test_an_offloaded_flow_is_sampled_first_and_stopped_by_a_block(tmp_path: Path) -> None:
    profile = tmp_path / "router.toml"
    profile.write_text(PROFILE)
    with routed("g") as net:
        daemon = Daemon(net.router, tmp_path, profile, "--alerts", str(tmp_path / "eve.json"))
        try:
            daemon.start().ready()
            status = daemon.status()
            assert status["offload"] == {"devices": ["r0", "r1"], "reason": None}, status
            assert "flowtable ap_fastpath" in nft_in(
                net.router, "list", "table", "inet", "appliance"
            )
            # a zone's link that appears later is hooked too (no reload)
            subprocess.run(
                ["ip", "-n", net.router, "link", "add", "up7", "type", "dummy"], check=True
            )
            wait_for(
                "the new link hooked",
                lambda: "up7" in daemon.status()["offload"]["devices"],
                timeout=30,
            )
            hooked = nft_in(net.router, "list", "flowtable", "inet", "appliance", "ap_fastpath")
            assert "up7" in hooked and "r0" in hooked, hooked
            with echo_flow(net, timeout=10) as flow:
                for i in range(ROUNDS):
                    assert flow.echo(f"ping-{i}")
                entries = echo_entries(net.router)
                assert entries == [{"src": CLIENT_ADDR, "offloaded": True}], entries
                if shutil.which("conntrack"):
                    listing = subprocess.run(
                        ["ip", "netns", "exec", net.router, "conntrack", "-L", "-p", "tcp"],
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                    assert "[OFFLOAD]" in listing, listing
                # Inspection had the flow's first packets, not the offloaded rest.
                wait_for(
                    "the sampled packets counted",
                    lambda: daemon.status()["inspect"].get("received", 0) >= SAMPLE,
                    timeout=20,
                )
                received = daemon.status()["inspect"]["received"]
                assert SAMPLE <= received < 2 * ROUNDS, daemon.status()["inspect"]
                answer = request(
                    daemon.socket,
                    {"op": "set_add", "set": "autoblock_v4", "elements": [CLIENT_ADDR]},
                    timeout=10,
                )
                assert answer["ok"], answer
                assert echo_entries(net.router) == [], "the blocked source's flow kept its entry"
                # The receiver stops receiving: no answer comes back any more.
                assert not flow.echo("after-block")
                assert not flow.echo("after-block-again")
            # Read back every half second, the table with its flowtable was never drift.
            repairs = daemon.status()["drift_repairs"]
            assert sum(repairs.values()) == 0, (repairs, daemon.log())
        finally:
            daemon.close()
        # Without a daemon (its table stays in the kernel): `appliance set` goes straight
        # to the kernel, and a block there ends an offloaded flow the same way.
        appliance_set(net.router, tmp_path, "del")
        with echo_flow(net, timeout=10) as flow:
            for i in range(ROUNDS):
                assert flow.echo(f"again-{i}")
            assert echo_entries(net.router) == [{"src": CLIENT_ADDR, "offloaded": True}]
            appliance_set(net.router, tmp_path, "add")
            assert echo_entries(net.router) == []
            assert not flow.echo("after-the-cli-block")
