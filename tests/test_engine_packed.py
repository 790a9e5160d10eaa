"""The engine with set elements over netlink (no root: the fake kernel and its fake
nf_tables element path). Address and port elements never travel as JSON: the table is
listed without them, read back by dumps into packed spans, changed by chunked deltas."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from appliance.compile.nftjson import Json
from appliance.engine import QUIET_SECONDS, Engine
from appliance.model.parse import parse_profile
from appliance.reconcile.state import Desired, desired_from_profile, desired_with_hub
from tests.fakekernel import FakeKernel
from tests.fakenfsets import FakeNfSets

N = 5000


def addresses(start: int, count: int, step: int = 2) -> list[str]:
    """``count`` IPv4 addresses of 10.0.0.0/8, ``step`` apart (none adjacent with step 2)."""
    out = []
    for i in range(start, start + count * step, step):
        out.append(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    return out


def profile(elements: list[str], extra_rule: bool = False, interval: bool = False) -> Any:
    rules = [{"name": "drop-bl", "from": "any", "to": "self", "saddr": ["@bl"], "action": "drop"}]
    if extra_rule:
        rules.append({"name": "web", "from": "any", "to": "self", "action": "accept"})
    return {
        "version": 1,
        "name": "packed",
        "zones": {"lan": {"interfaces": ["eth1"]}},
        "sets": {
            "bl": {"type": "ipv4_addr", "interval": interval, "elements": elements},
            "ports": {"type": "inet_service", "elements": [22]},
        },
        "rules": rules,
    }


def desired(elements: list[str], **options: Any) -> Desired:
    data = profile(elements, **options)
    return desired_from_profile(parse_profile(copy.deepcopy(data), "t.toml", Path(".")))


class Kernel(FakeKernel):
    """Counts the listings that carry set elements (JSON) and what each batch holds."""

    def __init__(self) -> None:
        super().__init__()
        self.element_listings = 0

    def list_table(self) -> list[Json] | None:
        self.element_listings += 1
        return super().list_table()

    def list_structure(self) -> list[Json] | None:
        listing = super().list_table()
        for obj in listing or []:
            obj.get("set", {}).pop("elem", None)
        return listing


def json_elements(batch: list[Json], name: str) -> int:
    """How many elements of set ``name`` a batch carries through JSON."""
    count = 0
    for command in batch:
        ((_op, obj),) = command.items()
        body = obj.get("element")
        if body is not None and body["name"] == name:
            count += len(body["elem"])
    return count


def rig() -> tuple[Kernel, FakeNfSets, Engine]:
    kernel = Kernel()
    sets = FakeNfSets(kernel)
    return kernel, sets, Engine(kernel, sets=sets)


def test_first_load_sends_the_table_without_elements_then_fills_the_set() -> None:
    kernel, sets, engine = rig()
    wanted = addresses(0, N)
    plan, _segments = engine.apply(desired(wanted))
    assert plan.create
    assert json_elements(kernel.batches[0], "bl") == 0
    assert kernel.element_texts("bl") == set(wanted)
    assert {e["elem"]["comment"] for e in kernel.table.elements["bl"].values()} == {"profile"}
    assert sets.applied[0] == ("bl", N, 0, "profile")
    assert engine.transactions == 1 + (N + sets.chunk - 1) // sets.chunk + 1  # ports too
    assert kernel.element_listings == 0


def test_a_delta_goes_by_netlink_and_the_read_back_by_dumps() -> None:
    kernel, sets, engine = rig()
    old = addresses(0, N)
    engine.apply(desired(old))
    batches = len(kernel.batches)
    new = old[N // 10 :] + addresses(2 * N + 1, N // 10)
    plan, observed, _ = engine.converge(desired(new))
    assert len(plan.add["bl"]) == N // 10 and len(plan.delete["bl"]) == N // 10
    assert observed.count("bl") == N and not observed.elements["bl"]
    assert all(json_elements(batch, "bl") <= sets.chunk for batch in kernel.batches[batches:])
    assert kernel.element_texts("bl") == set(new)
    again, observed, _ = engine.converge(desired(new))
    assert not again.changed and observed.count("bl") == N
    assert kernel.element_listings == 0 and sets.dumps > 0


def test_drift_is_repaired_through_the_same_path() -> None:
    kernel, _sets, engine = rig()
    wanted = addresses(0, 300)
    d = desired(wanted)
    engine.apply(d)
    other = {"family": "inet", "table": "appliance", "name": "bl", "elem": wanted[:7]}
    kernel.run([{"delete": {"element": other}}])
    kernel.run([{"add": {"element": {**other, "elem": ["10.200.0.1"]}}}])  # run-time
    plan, _observed, _ = engine.converge(d)
    assert list(plan.add["bl"]) == wanted[:7] and "bl" not in plan.delete
    assert kernel.element_texts("bl") == set(wanted) | {"10.200.0.1"}


def test_a_structural_change_is_one_transaction_with_the_kept_sets_delta() -> None:
    kernel, sets, engine = rig()
    old = addresses(0, N)
    engine.apply(desired(old))
    batches, applied = len(kernel.batches), len(sets.applied)
    new = old[100:] + addresses(2 * N + 1, 100)
    plan, _segments = engine.apply(desired(new, extra_rule=True))
    assert plan.swap
    assert len(kernel.batches) == batches + 1 and len(sets.applied) == applied  # old or new
    swap = kernel.batches[batches]
    assert json_elements(swap, "bl") == 200  # the delta, not the set
    assert not any(
        "set" in body and body["set"]["name"] == "bl"
        for command in swap
        for op, body in command.items()
        if op == "delete"
    )  # the set and its elements stay through the swap
    assert kernel.element_texts("bl") == set(new)


def test_a_redefined_set_gets_its_elements_in_the_same_transaction() -> None:
    kernel, _sets, engine = rig()
    engine.apply(desired(addresses(0, 50)))
    batches = len(kernel.batches)
    plan, _segments = engine.apply(desired(addresses(0, 60), interval=True))
    assert plan.swap
    assert json_elements(kernel.batches[batches], "bl") == 60  # never empty in between
    assert len(kernel.element_texts("bl")) == 60


def test_hub_elements_keep_their_tag() -> None:
    kernel, sets, engine = rig()
    own = parse_profile(copy.deepcopy(profile(addresses(0, 10))), "b", Path("."))
    both = parse_profile(copy.deepcopy(profile(addresses(0, 30))), "b", Path("."))
    engine.apply(desired_with_hub(own, both))
    tags = [e["elem"]["comment"] for e in kernel.table.elements["bl"].values()]
    assert tags.count("profile") == 10 and tags.count("hub") == 20
    assert not engine.converge(desired_with_hub(own, both))[0].changed
    assert {(name, tag) for name, _a, _d, tag in sets.applied} >= {
        ("bl", "profile"),
        ("bl", "hub"),
    }


class Counted(Kernel):
    """A kernel with a ruleset generation that each transaction moves."""

    def __init__(self) -> None:
        super().__init__()
        self.gen = 1
        self.structures = 0

    def run(self, commands: list[Json]) -> list[Json]:
        result = super().run(commands)
        if commands:
            self.gen += 1
        return result

    def generation(self) -> int:
        return self.gen

    def list_structure(self) -> list[Json] | None:
        self.structures += 1
        return super().list_structure()


def test_after_a_load_nothing_is_read_back_again_while_only_we_wrote() -> None:
    kernel = Counted()
    sets = FakeNfSets(kernel)
    engine = Engine(kernel, sets=sets)
    d = desired(addresses(0, N))
    assert engine.apply(d)[0].create
    read = (kernel.structures, sets.dumps)
    assert kernel.element_texts("bl") == set(addresses(0, N))
    plan, observed, _ = engine.converge(d)
    assert not plan.changed and observed.count("bl") == N
    assert (kernel.structures, sets.dumps) == read  # the load's own read-back stands
    d2 = desired(addresses(0, N - 10))
    assert len(engine.converge(d2)[0].delete["bl"]) == 10
    assert not engine.converge(d2)[0].changed
    assert (kernel.structures, sets.dumps) == read
    kernel.run(
        [
            {
                "delete": {
                    "element": {
                        "family": "inet",
                        "table": "appliance",
                        "name": "bl",
                        "elem": [addresses(0, 1)[0]],
                    }
                }
            }
        ]
    )
    assert list(engine.converge(d2)[0].add["bl"]) == addresses(0, 1)  # another writer: read
    assert kernel.structures == read[0] + 1


def test_when_the_quiet_read_back_ends_only_the_elements_are_read_again() -> None:
    kernel = Counted()
    sets = FakeNfSets(kernel)
    now = [0.0]
    engine = Engine(kernel, clock=lambda: now[0], sets=sets)
    d = desired(addresses(0, 100))
    engine.apply(d)
    structures, dumps = kernel.structures, sets.dumps
    now[0] += QUIET_SECONDS + 1
    plan, observed, _ = engine.converge(d)
    assert not plan.changed and observed.count("bl") == 100
    assert kernel.structures == structures and sets.dumps > dumps
