"""The planner without a kernel: observed tables are built from what the compiler emits,
the way the kernel lists them (objects, tagged profile elements, run-time elements)."""

from __future__ import annotations

import copy
from typing import Any

from appliance.model.parse import parse_profile
from appliance.reconcile.plan import make_plan, swap_commands, transaction
from appliance.reconcile.state import Desired, desired_from_profile, observed_from_listing

BASE: dict[str, Any] = {
    "version": 1,
    "name": "plan-test",
    "zones": {"lan": {"interfaces": ["eth1"]}},
    "sets": {"bl": {"type": "ipv4_addr", "interval": True, "elements": ["192.0.2.0/24"]}},
    "rules": [{"name": "drop-bl", "from": "any", "to": "self", "saddr": ["@bl"], "action": "drop"}],
}


def desired(**changes: Any) -> Desired:
    data = copy.deepcopy(BASE)
    data.update(changes)
    from pathlib import Path

    return desired_from_profile(parse_profile(data, "test.toml", Path(".")))


def listing(d: Desired, runtime: dict[str, list[Any]] | None = None) -> list[dict[str, Any]]:
    """What the kernel would list after applying ``d`` and adding ``runtime`` elements."""
    objects = copy.deepcopy(d.objects)
    for obj in objects:
        body = obj.get("set")
        if body is None:
            continue
        elems: list[Any] = [
            {"elem": {"val": text, "comment": "profile"}}
            for text in sorted(d.elements[body["name"]])
        ]
        elems += (runtime or {}).get(body["name"], [])
        if elems:
            body["elem"] = elems
    return objects


def test_absent_table_is_created_with_its_elements() -> None:
    d = desired()
    plan = make_plan(d, observed_from_listing(None))
    assert plan.create and plan.changed
    assert plan.add["bl"] == ["192.0.2.0/24"]
    commands = transaction(plan, d, observed_from_listing(None))
    assert commands[0] == {"add": {"table": {"family": "inet", "name": "appliance"}}}
    assert not any("delete" in c for c in commands)


def test_same_table_is_no_change() -> None:
    d = desired()
    assert not make_plan(d, observed_from_listing(listing(d))).changed


def test_run_time_elements_are_not_changes() -> None:
    d = desired()
    observed = observed_from_listing(
        listing(
            d,
            {
                "bl": ["198.51.100.7"],
                "autoblock_v4": [{"elem": {"val": "203.0.113.9", "expires": 30}}],
            },
        )
    )
    assert not make_plan(d, observed).changed


def test_element_change_is_a_delta() -> None:
    old = desired()
    new_sets = {"bl": {"type": "ipv4_addr", "interval": True, "elements": ["198.18.0.0/15"]}}
    new = desired(sets=new_sets)
    observed = observed_from_listing(listing(old, {"bl": ["198.51.100.7"]}))
    plan = make_plan(new, observed)
    assert not plan.swap and not plan.create
    assert plan.add == {"bl": ["198.18.0.0/15"]}
    assert plan.delete == {"bl": ["192.0.2.0/24"]}  # the run-time element stays
    commands = transaction(plan, new, observed)
    assert [next(iter(c)) for c in commands] == ["delete", "add"]
    assert all("element" in next(iter(c.values())) for c in commands)


def test_structural_change_is_one_swap_that_keeps_run_time_elements() -> None:
    old = desired()
    rules = [{"name": "drop-bl2", "from": "lan", "to": "self", "saddr": ["@bl"], "action": "drop"}]
    new = desired(rules=rules)
    observed = observed_from_listing(
        listing(
            old,
            {
                "bl": ["198.51.100.7"],
                "autoblock_v4": [{"elem": {"val": "203.0.113.9", "timeout": 600, "expires": 30}}],
                "ap_syn_flood_v4": ["10.0.0.1"],
            },
        )
    )
    plan = make_plan(new, observed)
    assert plan.swap
    assert any("drop-bl2" in line for line in plan.structure_diff)
    commands = transaction(plan, new, observed)
    assert commands[0] == {"add": {"table": {"family": "inet", "name": "appliance"}}}
    assert commands[1] == {"delete": {"table": {"family": "inet", "name": "appliance"}}}
    added = {
        c["add"]["element"]["name"]: c["add"]["element"]["elem"]
        for c in commands
        if "element" in c.get("add", {})
    }
    assert "198.51.100.7" in added["bl"]
    assert {"elem": {"val": "203.0.113.9", "timeout": 600, "expires": 30}} in added["autoblock_v4"]


def test_swap_drops_elements_of_a_set_whose_type_changed() -> None:
    old = desired()
    sets = {"bl": {"type": "ipv6_addr", "interval": True, "elements": ["2001:db8::/32"]}}
    new = desired(sets=sets)
    observed = observed_from_listing(listing(old, {"bl": ["198.51.100.7"]}))
    commands = swap_commands(new, observed)
    text = str(commands)
    assert "198.51.100.7" not in text and "2001:db8::" in text


def test_table_hash_is_stable_and_sensitive() -> None:
    assert desired().table_hash == desired().table_hash
    other = desired(rules=[{"name": "x", "from": "any", "to": "self", "action": "accept"}])
    assert other.table_hash != desired().table_hash


def _hub(feed: list[str]) -> Desired:
    """A bundle's table: the profile's element tagged profile, ``feed`` tagged hub."""
    from pathlib import Path

    from appliance.reconcile.state import desired_with_hub

    own = parse_profile(copy.deepcopy(BASE), "bundle", Path("."))
    data = copy.deepcopy(BASE)
    data["sets"]["bl"]["elements"] = ["192.0.2.0/24", *feed]
    return desired_with_hub(own, parse_profile(data, "bundle", Path(".")))


def _hub_listing(d: Desired) -> list[dict[str, Any]]:
    hub = [{"elem": {"val": t, "comment": "hub"}} for t in sorted((d.hub or {}).get("bl", ()))]
    return listing(d, {"bl": hub})


def test_hub_elements_are_tagged_and_desired_by_the_bundle() -> None:
    d = _hub(["198.51.100.7", "203.0.113.1"])
    assert d.elements["bl"] == {"192.0.2.0/24"}
    assert d.hub is not None and d.hub["bl"] == {"198.51.100.7", "203.0.113.1"}
    commands = transaction(
        make_plan(d, observed_from_listing(None)), d, observed_from_listing(None)
    )
    tags = {
        e["elem"]["val"]["prefix"]["addr"]
        if isinstance(e["elem"]["val"], dict)
        else e["elem"]["val"]: e["elem"]["comment"]
        for c in commands
        if "element" in c.get("add", {})
        for e in c["add"]["element"]["elem"]
    }
    assert tags == {"192.0.2.0": "profile", "198.51.100.7": "hub", "203.0.113.1": "hub"}
    assert not make_plan(d, observed_from_listing(_hub_listing(d))).changed
    assert d.table_hash != _hub(["198.51.100.7"]).table_hash


def test_next_bundle_changes_hub_elements_as_deltas() -> None:
    old = _hub(["198.51.100.7", "203.0.113.1"])
    new = _hub(["198.51.100.7", "203.0.113.2"])
    plan = make_plan(new, observed_from_listing(_hub_listing(old)))
    assert not plan.swap and not plan.create
    assert plan.add == {"bl": ["203.0.113.2"]} and plan.delete == {"bl": ["203.0.113.1"]}


def test_profile_driven_apply_keeps_hub_elements() -> None:
    bundle = _hub(["198.51.100.7"])
    plan = make_plan(desired(), observed_from_listing(_hub_listing(bundle)))
    assert not plan.changed  # hub elements are run-time state for a profile's plan
    changed = desired(rules=BASE["rules"] * 1 + [{**BASE["rules"][0], "name": "other"}])
    observed = observed_from_listing(_hub_listing(bundle))
    commands = swap_commands(changed, observed)
    kept = [
        e
        for c in commands
        if "element" in c.get("add", {})
        for e in c["add"]["element"]["elem"]
        if isinstance(e, dict) and e["elem"].get("comment") == "hub"
    ]
    assert len(kept) == 1


def test_run_time_element_overlapping_a_profile_element_put_back_is_trimmed() -> None:
    """A run-time network inside a deleted profile network: the repair replaces it rather
    than fail on conflicting intervals."""
    d = desired()
    inside = {"elem": {"val": {"prefix": {"addr": "192.0.2.0", "len": 25}}}}
    observed_listing = listing(d, {"bl": [inside]})
    for obj in observed_listing:
        if obj.get("set", {}).get("name") == "bl":
            obj["set"]["elem"] = [inside]  # the profile's /24 was deleted
    observed = observed_from_listing(observed_listing)
    plan = make_plan(d, observed)
    assert plan.add["bl"] == ["192.0.2.0/24"]
    assert [e.text for e in plan.trim["bl"]] == ["192.0.2.0/25"]
    assert plan.trimmed["bl"] == []
    commands = transaction(plan, d, observed)
    assert "delete" in commands[0] and "add" in commands[1]


def test_swap_keeps_what_an_overlapping_run_time_element_covers_outside_the_policy() -> None:
    d = desired()
    wider = {"elem": {"val": {"prefix": {"addr": "192.0.2.0", "len": 23}}, "timeout": 60}}
    observed_listing = listing(d, {"bl": [wider]})
    for obj in observed_listing:
        if obj.get("set", {}).get("name") == "bl":
            obj["set"]["elem"] = [wider]
    observed_listing.append({"chain": {"family": "inet", "table": "appliance", "name": "x"}})
    observed = observed_from_listing(observed_listing)
    plan = make_plan(d, observed)
    assert plan.swap
    commands = swap_commands(d, observed)
    adds = [c["add"]["element"]["elem"] for c in commands if "element" in c.get("add", {})]
    assert adds == [
        [
            {"elem": {"val": {"prefix": {"addr": "192.0.2.0", "len": 24}}, "comment": "profile"}},
            {"elem": {"val": {"prefix": {"addr": "192.0.3.0", "len": 24}}, "timeout": 60}},
        ]
    ]
