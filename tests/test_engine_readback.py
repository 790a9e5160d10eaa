"""Read-backs spared by the ruleset generation, without root: the fake kernel with a
generation that every transaction (ours or another writer's) changes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from appliance.adapters.netlink import NLMSG_ERROR, nlattr, nlmsg
from appliance.adapters.nft import NFT_MSG_NEWGEN, parse_generation
from appliance.compile.nftjson import Json
from appliance.engine import QUIET_SECONDS, Engine
from appliance.model.parse import parse_profile
from appliance.reconcile.state import Desired, desired_from_profile
from tests.fakekernel import FakeKernel

PROFILE: dict[str, Any] = {
    "version": 1,
    "name": "readback",
    "zones": {"lan": {"interfaces": ["eth1"]}},
    "sets": {"bl": {"type": "ipv4_addr", "elements": ["192.0.2.1"], "timeout": "1h"}},
    "rules": [{"name": "drop-bl", "from": "any", "to": "self", "saddr": ["@bl"], "action": "drop"}],
}


class Generations(FakeKernel):
    def __init__(self) -> None:
        super().__init__()
        self.gen = 1
        self.listed = 0

    def run(self, commands: list[Json]) -> list[Json]:
        result = super().run(commands)
        self.gen += 1
        return result

    def list_table(self) -> list[Json] | None:
        self.listed += 1
        return super().list_table()

    def generation(self) -> int:
        return self.gen


def desired() -> Desired:
    return desired_from_profile(parse_profile(copy.deepcopy(PROFILE), "t.toml", Path(".")))


def test_same_generation_and_policy_is_not_listed_again() -> None:
    kernel, now = Generations(), [0.0]
    engine = Engine(kernel, clock=lambda: now[0])
    d = desired()
    assert engine.converge(d)[0].create
    assert not engine.converge(d)[0].changed
    listed = kernel.listed
    for _ in range(5):
        plan, observed, _ = engine.converge(d)
        assert not plan.changed and observed.holds("bl", "192.0.2.1")
    assert kernel.listed == listed

    kernel.run(
        [
            {
                "delete": {
                    "element": {
                        "family": "inet",
                        "table": "appliance",
                        "name": "bl",
                        "elem": ["192.0.2.1"],
                    }
                }
            }
        ]
    )
    assert list(engine.converge(d)[0].add["bl"]) == ["192.0.2.1"]  # another writer: listed
    assert kernel.listed == listed + 1

    engine.converge(d)
    listed = kernel.listed
    other = desired()  # another policy, the same kernel: planned on the last read-back
    assert not engine.converge(other)[0].changed
    assert kernel.listed == listed and engine.quiet is not None and engine.quiet.desired is other

    engine.converge(d)
    listed = kernel.listed
    now[0] += QUIET_SECONDS
    engine.converge(d)  # the read-back is old: listed
    assert kernel.listed == listed + 1


def test_a_backend_without_generation_lists_every_time() -> None:
    kernel = FakeKernel()
    engine = Engine(kernel)
    d = desired()
    for _ in range(3):
        engine.converge(d)
    assert engine.listings == 3 and engine.quiet is None


def test_generation_answer_is_parsed() -> None:
    body = b"\0\0\0\0" + nlattr(1, (4242).to_bytes(4, "big")) + nlattr(2, b"\0\0\0\1")
    assert parse_generation(nlmsg(NFT_MSG_NEWGEN, 0, 1, body)) == 4242
    error = nlmsg(NLMSG_ERROR, 0, 1, (-1).to_bytes(4, "little", signed=True) + b"\0" * 16)
    assert parse_generation(error) is None
    assert parse_generation(b"") is None


def test_after_our_own_delta_the_kernel_is_not_listed_again() -> None:
    kernel = Generations()
    engine = Engine(kernel)
    data = copy.deepcopy(PROFILE)
    del data["sets"]["bl"]["timeout"]
    first = desired_from_profile(parse_profile(data, "t.toml", Path(".")))
    data["sets"]["bl"]["elements"] = ["192.0.2.2", "192.0.2.3"]
    second = desired_from_profile(parse_profile(data, "t.toml", Path(".")))
    engine.converge(first)
    engine.converge(first)
    plan = engine.converge(second)[0]
    assert list(plan.add["bl"]) == ["192.0.2.2", "192.0.2.3"]
    assert list(plan.delete["bl"]) == ["192.0.2.1"]
    listed = kernel.listed
    plan, observed, _ = engine.converge(second)
    assert not plan.changed and kernel.listed == listed
    assert sorted(observed.texts("bl")) == sorted(kernel.element_texts("bl"))
    assert set(observed.tagged["bl"]) == {"profile"} and not observed.elements["bl"]

    ours = kernel.run

    def and_another_writer(commands: list[Json]) -> list[Json]:
        kernel.gen += 1  # another transaction committed next to ours
        return ours(commands)

    kernel.run = and_another_writer  # type: ignore[method-assign]
    assert engine.converge(first)[0].changed
    assert engine.quiet is None


def test_a_sets_shape_is_read_once_until_the_structure_changes() -> None:
    kernel = Generations()
    shapes: list[str] = []
    list_set = kernel.list_set

    def counted(name: str, elements: bool = True) -> Json | None:
        shapes.append(name)
        return list_set(name, elements)

    kernel.list_set = counted  # type: ignore[method-assign]
    engine = Engine(kernel)
    engine.converge(desired())
    for i in range(3):
        engine.set_add("autoblock_v4", [f"198.51.100.{i + 1}"], 60)
    assert shapes == ["autoblock_v4"]
    assert {"198.51.100.1", "198.51.100.3"} <= kernel.element_texts("autoblock_v4")
    kernel.table = None  # the table deleted by hand: the repair creates it again
    engine.converge(desired())
    engine.set_add("autoblock_v4", ["198.51.100.9"], 60)
    assert shapes == ["autoblock_v4", "autoblock_v4"]
