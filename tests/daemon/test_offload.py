"""``[defaults].offload`` on a kernel without flowtables (this host): the daemon says so
once, in the log, in status and in ``appliance_flow_offload``, enforces the table without
the fast path, and a block still cuts an established flow through the router (the block
rule comes before ``ct state established accept``). The guest, whose kernel has
flowtables, runs the offloaded case: tests/guest/test_offload.py."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.daemon.control import request
from appliance.probe import NO_FLOWTABLE
from tests.conftest import nft_in
from tests.daemon.conftest import Daemon
from tests.guest_plugin import in_guest
from tests.routed import CLIENT_ADDR, ROUTER_PROFILE, echo_flow, routed

METRICS = '\n[metrics]\nlisten = "127.0.0.1:9469"\n'


@pytest.mark.root
def test_without_a_flowtable_the_daemon_says_so_once_and_a_block_cuts_the_flow(
    tmp_path: Path, start_daemon: Callable[..., Daemon]
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if in_guest():
        pytest.skip("the guest's kernel has flowtables: tests/guest/test_offload.py")
    profile = tmp_path / "router.toml"
    profile.write_text(ROUTER_PROFILE + METRICS)
    with routed("d") as net:
        daemon = start_daemon(net.router, profile)
        status = daemon.status()
        assert status["offload"] == {"devices": [], "reason": NO_FLOWTABLE}
        assert "flowtable" not in nft_in(net.router, "list", "table", "inet", "appliance")
        assert "appliance_flow_offload 0.0" in daemon.metrics()
        with echo_flow(net, timeout=5) as flow:
            for i in range(10):
                assert flow.echo(f"before-{i}")
            answer = request(
                daemon.socket,
                {"op": "set_add", "set": "autoblock_v4", "elements": [CLIENT_ADDR]},
                timeout=10,
            )
            assert answer["ok"], answer
            assert not flow.echo("after")  # the established flow is cut
        said = [e for e in daemon.log_entries() if "flow offload" in str(e.get("msg", ""))]
        assert len(said) == 1 and NO_FLOWTABLE in said[0]["msg"], said


# --- without root: the daemon's decisions on the fake kernel -----------------------------


@pytest.mark.parametrize("flowtable", [True, False])
def test_blocks_end_the_sources_flows_only_while_the_table_offloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flowtable: bool
) -> None:
    from appliance import probe
    from appliance.daemon import sets
    from tests.daemon.test_decisions import Rig

    ended: list[list[str]] = []
    monkeypatch.setattr(probe, "has_flowtable", lambda: flowtable)
    monkeypatch.setattr(probe, "current_links", lambda: ["lo", "r0", "r1", "r7"])
    monkeypatch.setattr(sets, "end_flows", lambda values, log: ended.append(list(values)))
    rig = Rig(tmp_path)
    rig.profile.write_text(ROUTER_PROFILE)

    async def scenario() -> None:
        await rig.daemon.boot()
        offload = rig.status()["offload"]
        if flowtable:
            assert offload == {"devices": ["r0", "r1"], "reason": None}
        else:
            assert offload == {"devices": [], "reason": NO_FLOWTABLE}
        assert rig.daemon.ctx.metrics.flow_offload._value.get() == (1 if flowtable else 0)
        for name, value in (("autoblock_v4", "192.0.2.9"), ("autoblock_v6", "2001:db8::9")):
            await rig.daemon.control.handle({"op": "set_add", "set": name, "elements": [value]})
        # Read back: the fake kernel lists the table as the real one does, no drift.
        await rig.tick(resync=True)
        assert sum(rig.status()["drift_repairs"].values()) == 0

    rig.run(scenario)
    assert ended == ([["192.0.2.9"], ["2001:db8::9"]] if flowtable else [])


def test_the_flowtable_devices_are_read_once_per_policy_not_per_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance import probe
    from appliance.compile import ruleset
    from appliance.daemon import policies, sets
    from tests.daemon.test_decisions import Rig

    monkeypatch.setattr(probe, "has_flowtable", lambda: True)
    monkeypatch.setattr(probe, "current_links", lambda: ["lo", "r0", "r1"])
    monkeypatch.setattr(sets, "end_flows", lambda values, log: None)
    reads: list[int] = []

    def counted(objects: object) -> tuple[str, ...]:
        reads.append(1)
        return ruleset.offloaded_devices(objects)  # type: ignore[arg-type]

    monkeypatch.setattr(policies, "offloaded_devices", counted)
    rig = Rig(tmp_path)
    rig.profile.write_text(ROUTER_PROFILE)

    async def scenario() -> None:
        await rig.daemon.boot()
        assert rig.daemon.ctx.policy is not None
        assert rig.daemon.ctx.policy.offloaded == ("r0", "r1")
        loaded = len(reads)
        for i in range(20):
            await rig.daemon.control.handle(
                {"op": "set_add", "set": "autoblock_v4", "elements": [f"192.0.2.{i + 1}"]}
            )
        assert len(reads) == loaded  # no scan of the table per block
        assert rig.status()["offload"]["devices"] == ["r0", "r1"]

    rig.run(scenario)
