"""The planner without a kernel: observed tables are built from what the compiler emits,
the way the kernel lists them (objects, tagged profile elements, run-time elements)."""

from __future__ import annotations

import copy
from typing import Any

from appliance.compile.nftjson import element_command
from appliance.model.elements import Elements
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


def texts(changes: dict[str, Elements]) -> dict[str, list[str]]:
    return {name: list(items) for name, items in changes.items()}


def test_absent_table_is_created_with_its_elements() -> None:
    d = desired()
    plan = make_plan(d, observed_from_listing(None))
    assert plan.create and plan.changed
    assert list(plan.add["bl"]) == ["192.0.2.0/24"]
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
    assert texts(plan.add) == {"bl": ["198.18.0.0/15"]}
    assert texts(plan.delete) == {"bl": ["192.0.2.0/24"]}  # the run-time element stays
    commands = transaction(plan, new, observed)
    assert [next(iter(c)) for c in commands] == ["delete", "add"]
    assert all("element" in next(iter(c.values())) for c in commands)


def test_structural_change_keeps_the_table_and_the_unchanged_sets_with_their_elements() -> None:
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
    assert commands[0] == {"flush": {"table": {"family": "inet", "name": "appliance"}}}
    assert not any("table" in body for op, body in _ops(commands) if op != "flush")
    # bl, the autoblock and meter sets stay as they are: no command touches them
    assert not [c for op, c in _ops(commands) if "set" in c or "element" in c]
    # the chains stay (their rules were flushed); the old rule's counter goes, the new one
    # comes; every rule of the new table is added, last
    assert [c["chain"]["name"] for op, c in _ops(commands) if "chain" in c] == []
    assert ("delete", "counter", "drop-bl") in _names(commands)
    assert ("add", "counter", "drop-bl2") in _names(commands)
    rules_added = [c for op, c in _ops(commands) if "rule" in c]
    assert rules_added == [obj for obj in new.objects if "rule" in obj]
    assert all("rule" in c for _, c in _ops(commands)[-len(rules_added) :])


def _ops(commands: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [next(iter(c.items())) for c in commands]


def _names(commands: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(op, kind, name) of the commands on named objects."""
    found = []
    for op, body in _ops(commands):
        kind, obj = next(iter(body.items()))
        if kind not in ("rule", "table") and "name" in obj:
            found.append((op, kind, obj["name"]))
    return found


def test_a_swap_adds_and_deletes_in_an_order_the_kernel_takes() -> None:
    """Rules go first (flush), sets before chains and other objects; new sets are filled
    before the new chains and rules that use them; rules come last."""
    old = desired(
        sets={
            "bl": BASE["sets"]["bl"],
            "gone": {"type": "ipv4_addr", "elements": ["198.18.0.1"]},
        },
        rules=[*BASE["rules"], {**BASE["rules"][0], "name": "drop-gone", "saddr": ["@gone"]}],
    )
    new = desired(
        sets={
            "bl": {**BASE["sets"]["bl"], "size": 1000},  # redefined
            "fresh": {"type": "ipv6_addr", "interval": True, "elements": ["2001:db8::/32"]},
        },
        rules=[*BASE["rules"], {**BASE["rules"][0], "name": "drop-fresh", "saddr": ["@fresh"]}],
        defaults={"input": "accept"},
    )
    observed = observed_from_listing(listing(old, {"bl": ["198.51.100.7"], "gone": ["198.18.0.2"]}))
    commands = swap_commands(new, observed)
    names = _names(commands)
    position = {key: index for index, key in enumerate(names)}
    assert _ops(commands)[0][0] == "flush"
    assert position["delete", "set", "gone"] < position["delete", "chain", "input"]
    assert position["delete", "set", "bl"] < position["add", "set", "bl"]
    assert position["delete", "counter", "drop-gone"] < position["add", "counter", "drop-fresh"]
    assert position["add", "set", "fresh"] < position["add", "chain", "input"]
    assert ("add", "chain", "forward") not in position  # unchanged: kept
    filled = {n for op, kind, n in names if op == "add" and kind == "element"}
    assert filled == {"bl", "fresh"}  # the redefined set and the new one, nothing else
    last_fill = max(i for key, i in position.items() if key[1] == "element")
    assert last_fill < position["add", "chain", "input"]
    bl = next(c["add"]["element"]["elem"] for c in commands if _is_fill(c, "bl"))
    assert "198.51.100.7" in bl  # carried into the redefined set


def _is_fill(command: dict[str, Any], name: str | None = None) -> bool:
    """An add of elements (to set ``name``)."""
    element = command.get("add", {}).get("element")
    return element is not None and name in (None, element["name"])


def test_run_time_elements_a_redefined_set_cannot_take_are_left_out() -> None:
    """Timed elements into a set without timeouts, networks into a set without intervals:
    the kernel would refuse the whole swap. (More than the set's size is the kernel's to
    refuse, with "set is full": no run-time element is left out for it.)"""
    old = desired(
        sets={
            "bl": BASE["sets"]["bl"],
            "hosts": {"type": "ipv4_addr", "timeout": "10m", "elements": ["198.51.100.1"]},
        },
        rules=[*BASE["rules"], {**BASE["rules"][0], "name": "h", "saddr": ["@hosts"]}],
    )
    new = desired(
        sets={
            "bl": {"type": "ipv4_addr", "elements": ["192.0.2.1"]},
            "hosts": {"type": "ipv4_addr", "elements": ["198.51.100.1"]},
        },
        rules=[*BASE["rules"], {**BASE["rules"][0], "name": "h", "saddr": ["@hosts"]}],
    )
    runtime: dict[str, list[Any]] = {
        "bl": [
            "198.51.100.7",
            {"elem": {"val": "198.51.100.8", "timeout": 60, "expires": 50}},
            "198.51.100.9",
            {"elem": {"val": {"prefix": {"addr": "10.0.0.0", "len": 8}}}},
        ],
        "hosts": [{"elem": {"val": "198.51.100.2", "expires": 500}}],
    }
    observed = observed_from_listing(listing(old, runtime))
    commands = swap_commands(new, observed)
    fills = {
        c["add"]["element"]["name"]: c["add"]["element"]["elem"] for c in commands if _is_fill(c)
    }
    assert fills["bl"] == [
        {"elem": {"val": "192.0.2.1", "comment": "profile"}},
        "198.51.100.7",
        "198.51.100.9",
    ]
    assert fills["hosts"] == [{"elem": {"val": "198.51.100.1", "comment": "profile"}}]


def test_a_swap_on_the_fake_kernel_ends_as_the_new_policy_with_the_run_time_elements() -> None:
    """IPv4 and IPv6, interval and hash sets, sets with timeouts: after the swap the table
    is the new policy's, nothing is left to change, and the run-time elements are there."""
    from tests.fakekernel import FakeKernel

    sets = {
        **BASE["sets"],
        "bl6": {"type": "ipv6_addr", "interval": True, "elements": ["2001:db8:bad::/48"]},
        "hosts": {"type": "ipv4_addr", "timeout": "10m", "elements": ["198.51.100.1"]},
    }
    rules = [
        *BASE["rules"],
        {**BASE["rules"][0], "name": "drop-bl6", "saddr": ["@bl6"]},
        {**BASE["rules"][0], "name": "drop-hosts", "saddr": ["@hosts"]},
    ]
    old = desired(sets=sets, rules=rules)
    new = desired(
        sets=sets, rules=[*rules, {**BASE["rules"][0], "name": "more", "saddr": ["10.0.0.1"]}]
    )
    fake = FakeKernel()
    fake.run(
        transaction(make_plan(old, observed_from_listing(None)), old, observed_from_listing(None))
    )
    fake.run(
        [
            element_command("add", "bl", ["198.51.100.7"]),
            element_command("add", "bl6", [{"prefix": {"addr": "2001:db8:1::", "len": 64}}]),
            element_command("add", "hosts", [{"elem": {"val": "198.51.100.9", "timeout": 60}}]),
            element_command(
                "add", "autoblock_v6", [{"elem": {"val": "2001:db8::9", "timeout": 60}}]
            ),
        ]
    )
    observed = observed_from_listing(fake.list_table())
    plan = make_plan(new, observed)
    assert plan.swap
    fake.run(transaction(plan, new, observed))
    after = observed_from_listing(fake.list_table())
    assert not make_plan(new, after).changed
    assert "198.51.100.7" in after.elements["bl"]
    assert "2001:db8:1::/64" in after.elements["bl6"]
    assert after.elements["hosts"]["198.51.100.9"].timeout == 60
    assert "2001:db8::9" in after.elements["autoblock_v6"]
    assert len(fake.batches) == 3  # one transaction for the swap


def test_a_kept_interval_set_with_a_costly_delete_is_flushed_and_refilled(
    monkeypatch: Any,
) -> None:
    """libnftables deletes interval elements in time that grows with deletes times size:
    past REFILL_COST the swap flushes the kept set and adds what stays."""
    import appliance.reconcile.plan as plan_module

    many = desired(
        sets={"bl": {**BASE["sets"]["bl"], "elements": ["192.0.2.0/24", "10.0.0.1", "10.0.0.3"]}}
    )
    few = desired(rules=[*BASE["rules"], {**BASE["rules"][0], "name": "other"}])
    observed = observed_from_listing(listing(many, {"bl": ["198.51.100.7"]}))
    monkeypatch.setattr(plan_module, "REFILL_COST", 7)  # 2 deletes x 4 elements
    commands = swap_commands(few, observed)
    assert ("flush", "set", "bl") in _names(commands)
    assert not [c for op, c in _ops(commands) if op == "delete" and "element" in c]
    fill = next(c["add"]["element"]["elem"] for c in commands if _is_fill(c, "bl"))
    assert fill == [
        {"elem": {"val": {"prefix": {"addr": "192.0.2.0", "len": 24}}, "comment": "profile"}},
        "198.51.100.7",
    ]
    monkeypatch.setattr(plan_module, "REFILL_COST", 8)
    commands = swap_commands(few, observed)
    assert ("flush", "set", "bl") not in _names(commands)
    deleted = [
        c["element"]["elem"] for op, c in _ops(commands) if op == "delete" and "element" in c
    ]
    assert len(deleted[0]) == 2


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
    assert list(d.elements["bl"]) == ["192.0.2.0/24"]
    assert d.hub is not None and list(d.hub["bl"]) == ["198.51.100.7", "203.0.113.1"]
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
    assert texts(plan.add) == {"bl": ["203.0.113.2"]}
    assert texts(plan.delete) == {"bl": ["203.0.113.1"]}


def test_profile_driven_apply_keeps_hub_elements() -> None:
    bundle = _hub(["198.51.100.7"])
    plan = make_plan(desired(), observed_from_listing(_hub_listing(bundle)))
    assert not plan.changed  # hub elements are run-time state for a profile's plan
    changed = desired(rules=BASE["rules"] * 1 + [{**BASE["rules"][0], "name": "other"}])
    observed = observed_from_listing(_hub_listing(bundle))
    commands = swap_commands(changed, observed)
    assert not [c for _, c in _ops(commands) if "element" in c or "set" in c]  # bl stays


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
    assert list(plan.add["bl"]) == ["192.0.2.0/24"]
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
    changes = [(op, c["element"]["elem"]) for op, c in _ops(commands) if "element" in c]
    assert changes == [
        ("delete", [{"prefix": {"addr": "192.0.2.0", "len": 23}}]),
        (
            "add",
            [{"elem": {"val": {"prefix": {"addr": "192.0.2.0", "len": 24}}, "comment": "profile"}}],
        ),
        ("add", [{"elem": {"val": {"prefix": {"addr": "192.0.3.0", "len": 24}}, "timeout": 60}}]),
    ]
