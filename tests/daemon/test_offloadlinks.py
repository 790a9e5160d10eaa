"""Links that appear after the policy loaded are hooked into its flowtable (the daemon on
the fake kernel, this kernel's flowtable and links stood in for). The guest, whose kernel
has flowtables, runs offloaded flows for real: tests/guest/test_offload.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance import probe
from appliance.compile.ruleset import FLOWTABLE
from appliance.daemon.offloadlinks import hook_command
from tests.daemon.test_decisions import Rig
from tests.routed import ROUTER_PROFILE

PROFILE = ROUTER_PROFILE.replace('interfaces = ["r1"]', 'interfaces = ["r1", "up*"]')


def _flowtable(rig: Rig) -> dict[str, object] | None:
    for obj in rig.kernel.list_table() or []:
        if "flowtable" in obj and obj["flowtable"]["name"] == FLOWTABLE:
            return dict(obj["flowtable"])
    return None


def _hooks(rig: Rig) -> list[list[str]]:
    """The devices of every ``add flowtable`` sent alone (a hook, not a whole table)."""
    return [
        batch[0]["add"]["flowtable"]["dev"]
        for batch in rig.kernel.batches
        if len(batch) == 1 and "flowtable" in batch[0].get("add", {})
    ]


@pytest.fixture
def links(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    present = ["lo", "r0", "r1"]
    monkeypatch.setattr(probe, "has_flowtable", lambda: True)
    monkeypatch.setattr(probe, "current_links", lambda: list(present))
    return present


def test_a_zone_link_that_appears_is_hooked_without_a_swap(
    tmp_path: Path, links: list[str]
) -> None:
    rig = Rig(tmp_path)
    rig.profile.write_text(PROFILE)

    async def scenario() -> None:
        await rig.daemon.boot()
        assert rig.status()["offload"]["devices"] == ["r0", "r1"]
        batches = len(rig.kernel.batches)
        await rig.tick()
        assert len(rig.kernel.batches) == batches  # nothing new: nothing sent
        links.extend(["uplink7", "eth9"])  # a zone's (up*) and a link of no zone
        await rig.tick()
        assert _hooks(rig) == [["uplink7"]]
        assert rig.status()["offload"]["devices"] == ["r0", "r1", "uplink7"]
        await rig.tick(resync=True)  # and the read-back sees no drift in it
        assert sum(rig.status()["drift_repairs"].values()) == 0
        assert len(_hooks(rig)) == 1
        links.remove("uplink7")  # gone (the kernel unhooks it), then made again
        await rig.tick()
        assert rig.status()["offload"]["devices"] == ["r0", "r1"]
        links.append("uplink7")
        await rig.tick()
        assert _hooks(rig) == [["uplink7"], ["uplink7"]]

    rig.run(scenario)


def test_without_a_flowtable_at_load_the_policy_is_compiled_again(
    tmp_path: Path, links: list[str]
) -> None:
    links[:] = ["lo"]  # at boot, none of the zones' interfaces exists yet
    rig = Rig(tmp_path)
    rig.profile.write_text(PROFILE)

    async def scenario() -> None:
        await rig.daemon.boot()
        assert _flowtable(rig) is None
        links.append("r0")
        await rig.tick()
        table = _flowtable(rig)
        assert table is not None and table["dev"] in ("r0", ["r0"])
        assert rig.status()["offload"]["devices"] == ["r0"]

    rig.run(scenario)


def test_a_refused_hook_is_logged_once_and_not_tried_again(
    tmp_path: Path, links: list[str]
) -> None:
    rig = Rig(tmp_path)
    rig.profile.write_text(PROFILE)

    async def scenario() -> None:
        await rig.daemon.boot()
        rig.kernel.refuse = lambda commands: (
            "Operation not supported" if "flowtable" in commands[0].get("add", {}) else None
        )
        links.append("uplink7")
        for _ in range(3):
            await rig.tick()
        said = [m for m in rig.records.messages if "new links not hooked" in m]
        assert len(said) == 1
        assert rig.status()["offload"]["devices"] == ["r0", "r1"]

    rig.run(scenario)


def test_the_hook_command_adds_only_the_new_devices() -> None:
    objects = [
        {"table": {"family": "inet", "name": "appliance"}},
        {"flowtable": {"family": "inet", "table": "appliance", "name": FLOWTABLE,
                       "hook": "ingress", "prio": 0, "dev": ["r0", "r1"]}},
    ]  # fmt: skip
    command = hook_command(objects, ["up2", "up1"])
    assert command == {
        "add": {"flowtable": {"family": "inet", "table": "appliance", "name": FLOWTABLE,
                              "hook": "ingress", "prio": 0, "dev": ["up1", "up2"]}}
    }  # fmt: skip
    assert hook_command(objects[:1], ["up1"]) is None
