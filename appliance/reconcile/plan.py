"""Desired vs observed -> what to change, and the one transaction that changes it. Pure.

Set-only differences become element deltas (the table, its rule handles and counters
stay); any structural difference becomes one table swap in one transaction that carries
the run-time elements (``set add``, automatic blocks, the hub) across.

In an interval set, a run-time element that overlaps an element the policy puts back would
make the kernel refuse the whole transaction, and with it every repair: such an element is
replaced, in the same transaction, by what it covers outside the policy's elements.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from appliance.compile.nftjson import TABLE_FAMILY, TABLE_NAME, Json, element_command
from appliance.compile.render import render_rule
from appliance.compile.ruleset import element_json, table_object
from appliance.model.elements import Elements
from appliance.model.intervals import Spans, span_text, width_of
from appliance.model.values import element_bounds
from appliance.reconcile.state import (
    DYNAMIC_SETS,
    HUB_TAG,
    PROFILE_TAG,
    Desired,
    Element,
    Observed,
    managed_tags,
    runtime_elements,
    wanted_elements,
)

ELEMENTS_SHOWN = 20  # per set and direction in describe(); a feed can hold millions


@dataclass
class Plan:
    """What one apply changes in the kernel: the table, and elements added and deleted."""

    create: bool = False  # the table is absent
    swap: bool = False  # the structure differs: replace the table
    structure_diff: list[str] = field(default_factory=list)
    add: dict[str, Elements] = field(default_factory=dict)  # profile (or hub) elements to add
    delete: dict[str, Elements] = field(default_factory=dict)  # stale profile (or hub) elements
    # run-time elements that overlap policy elements being added, and what replaces them
    trim: dict[str, list[Element]] = field(default_factory=dict)
    trimmed: dict[str, list[Element]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return (
            self.create
            or self.swap
            or any(self.add.values())
            or any(self.delete.values())
            or any(self.trim.values())
        )

    def describe(self) -> list[str]:
        """Human-readable lines: what applying would change."""
        lines: list[str] = []
        if self.create:
            lines.append(f"+ table {TABLE_FAMILY} {TABLE_NAME} (absent: it will be created)")
        elif self.swap:
            lines.append(f"~ table {TABLE_FAMILY} {TABLE_NAME}: structure changes (atomic swap)")
            lines += [f"  {line}" for line in self.structure_diff]
        for sign, changes in (("+", self.add), ("-", self.delete)):
            for name in sorted(changes):
                items = changes[name]
                lines += [f"{sign} element {name} {text}" for text in items.first(ELEMENTS_SHOWN)]
                if len(items) > ELEMENTS_SHOWN:
                    more = len(items) - ELEMENTS_SHOWN
                    lines.append(f"{sign} element {name} ... and {more} more ({len(items)} in all)")
        for name in sorted(self.trim):
            for elem in self.trim[name][:ELEMENTS_SHOWN]:
                lines.append(f"~ element {name} {elem.text} (overlaps the policy's elements)")
            for elem in self.trimmed.get(name, [])[:ELEMENTS_SHOWN]:
                lines.append(f"+ element {name} {elem.text} (what it keeps outside them)")
        return lines


def make_plan(desired: Desired, observed: Observed) -> Plan:
    plan = Plan()
    names = sorted(set(desired.elements) | set(desired.hub or ()))
    share_wanted(desired, observed, names)
    if not observed.present:
        plan.create = True
        for name in names:
            items = wanted_elements(desired, name)
            if items:
                plan.add[name] = items
        return plan
    if canonical(desired.structure) != canonical(observed.structure):
        plan.swap = True
        plan.structure_diff = structure_diff(desired.structure, observed.structure)
    for name in names:
        wanted = wanted_elements(desired, name)
        if observed.types.get(name) != desired.types.get(name):
            if wanted:
                plan.add[name] = wanted
            continue
        # Deltas on the packed elements (a million elements: one merge pass, no texts).
        have = owned_elements(desired, observed, name)
        runtime = runtime_elements(desired, observed, name)
        missing = wanted.minus(have)
        if missing and runtime:  # a run-time element equal to the policy's stands for it
            missing = missing.minus(Elements.of(wanted.set_type, wanted.interval, runtime))
        if missing:
            plan.add[name] = missing
        stale = have.minus(wanted)
        if stale:
            plan.delete[name] = stale
        if missing and runtime:
            others = [elem for text, elem in runtime.items() if text not in wanted]
            trim, trimmed = trim_overlaps(desired, name, missing, others)
            if trim:
                plan.trim[name], plan.trimmed[name] = trim, trimmed
    return plan


def share_wanted(desired: Desired, observed: Observed, names: Iterable[str]) -> None:
    """Where a read-back's tagged elements of a set equal what ``desired`` puts there under
    that tag, the read-back holds the policy's object instead (equal content: one copy of
    a large set, not two)."""
    for name in names:
        tags = observed.tagged.get(name)
        if not tags:
            continue
        for tag, mine in (
            (PROFILE_TAG, desired.elements.get(name)),
            (HUB_TAG, (desired.hub or {}).get(name)),
        ):
            theirs = tags.get(tag)
            if (
                mine is not None
                and theirs is not None
                and theirs is not mine
                and theirs.nbytes() == mine.nbytes()
                and theirs == mine
            ):
                tags[tag] = mine


def owned_elements(desired: Desired, observed: Observed, name: str) -> Elements:
    """The elements of set ``name`` in the kernel that carry a tag ``desired`` owns."""
    have = desired.empty(name)
    for tag in managed_tags(desired):
        items = observed.with_tag(name, tag)
        if items is not None and items.set_type == have.set_type:
            have = have.join(items) if have else items  # no pass over a lone tag's elements
    return have


def interval_type(desired: Desired, name: str) -> str | None:
    """The type of set ``name`` if it is an interval set of addresses or ports."""
    for obj in desired.objects:
        body = obj.get("set")
        if body and body["name"] == name:
            if "interval" in body.get("flags", []) and width_of(body["type"]) is not None:
                return str(body["type"])
            return None
    return None


def trim_overlaps(
    desired: Desired, name: str, texts: Iterable[str] | Elements, runtime: list[Element]
) -> tuple[list[Element], list[Element]]:
    """Run-time elements of interval set ``name`` that overlap ``texts`` (the policy's
    elements about to be added), and the elements that keep what they cover outside
    ``texts`` (same comment and timeout). ([], []) when nothing overlaps."""
    set_type = interval_type(desired, name)
    if set_type is None or not runtime or not texts:
        return [], []
    width = width_of(set_type)
    assert width is not None
    if isinstance(texts, Elements) and texts.spans is not None:
        policy = texts.spans
    else:
        policy = Spans.of(width, (element_bounds(set_type, t) for t in texts))
    trim: list[Element] = []
    kept: list[Element] = []
    for elem in runtime:
        first, last = element_bounds(set_type, elem.text)
        if not policy.overlapping(first, last):
            continue
        trim.append(elem)
        for a, b in Spans.of(width, [(first, last)]).difference(policy):
            kept.append(
                Element(span_text(set_type, a, b), elem.comment, elem.timeout, elem.expires)
            )
    return trim, kept


def transaction(plan: Plan, desired: Desired, observed: Observed) -> list[Json]:
    """The commands that carry out ``plan``, as one libnftables batch."""
    if plan.create or plan.swap:
        return swap_commands(desired, observed, plan)
    commands: list[Json] = []
    for name, overlapping in sorted(plan.trim.items()):
        values = [element_json(desired.types[name], e.text) for e in overlapping]
        commands.append(element_command("delete", name, values))
    for name, items in sorted(plan.delete.items()):
        commands.append(element_command("delete", name, tagged_elems(desired, name, items)))
    for name, items in sorted(plan.add.items()):
        commands.append(element_command("add", name, tagged_elems(desired, name, items)))
    for name, kept in sorted(plan.trimmed.items()):
        if kept:
            runtime = [_runtime_elem(desired, name, e) for e in kept]
            commands.append(element_command("add", name, runtime))
    return commands


def swap_commands(desired: Desired, observed: Observed, plan: Plan | None = None) -> list[Json]:
    """The structural change as one transaction. The table stays, and so does every set,
    counter and limit whose definition is unchanged, with its elements and values; every
    rule goes (``flush table``), then what is no longer wanted as it was (sets and maps
    first, then chains and named objects); then the new objects, the elements of the new
    sets (the policy's and the run-time ones carried across), the element delta of the
    kept sets, the new chains, and last all the rules. A set both policies use keeps its
    elements live through the commit: no packet it drops slips through. (A kept interval
    set whose delta would delete many elements is flushed and refilled instead: see
    ``REFILL_COST``.)"""
    if not observed.present:
        commands: list[Json] = [{"add": obj} for obj in desired.objects]
        return commands + _set_fills(desired, observed, sorted(desired.types))
    if plan is None:
        plan = make_plan(desired, observed)
    kept = kept_objects(desired, observed)
    commands = [{"flush": table_object()}]
    gone = [key for key in _keyed(observed.structure) if key not in kept]
    for first in (True, False):  # sets and maps first: a verdict map holds its chains
        commands += [
            {"delete": {kind: {"family": TABLE_FAMILY, "table": TABLE_NAME, "name": name}}}
            for kind, name in gone
            if (kind in ("set", "map")) == first
        ]
    objects = [obj for obj in desired.objects if not {"table", "rule"} & obj.keys()]
    new = [obj for obj in objects if _key(obj) not in kept]
    commands += [{"add": obj} for obj in new if "chain" not in obj]
    refill = {name for name in desired.types if _costly_delete(desired, observed, plan, name)}
    commands += [
        {"flush": {"set": {"family": TABLE_FAMILY, "table": TABLE_NAME, "name": name}}}
        for name in sorted(refill & {name for kind, name in kept if kind == "set"})
    ]
    commands += _set_fills(
        desired,
        observed,
        [name for name in sorted(desired.types) if ("set", name) not in kept or name in refill],
    )
    delta_sets = {name for kind, name in kept if kind == "set"} - refill
    delta = Plan(
        add={n: v for n, v in plan.add.items() if n in delta_sets},
        delete={n: v for n, v in plan.delete.items() if n in delta_sets},
        trim={n: v for n, v in plan.trim.items() if n in delta_sets},
        trimmed={n: v for n, v in plan.trimmed.items() if n in delta_sets},
    )
    commands += transaction(delta, desired, observed)
    commands += [{"add": obj} for obj in new if "chain" in obj]
    return commands + [{"add": obj} for obj in desired.objects if "rule" in obj]


# libnftables (1.0.6) deletes interval elements in time that grows with the deletes times
# the set's size (200 of 100,000 took minutes): past this product a kept interval set is
# flushed and refilled in the swap instead (time in the set's size).
REFILL_COST = 1_000_000


def _costly_delete(desired: Desired, observed: Observed, plan: Plan, name: str) -> bool:
    if interval_type(desired, name) is None:
        return False
    deletes = len(plan.delete.get(name, ())) + len(plan.trim.get(name, ()))
    return deletes * observed.count(name) > REFILL_COST


def kept_objects(desired: Desired, observed: Observed) -> set[tuple[str, str]]:
    """(kind, name) of the sets, chains and named objects a swap keeps: both tables have
    them with the same definition."""
    have = _keyed(observed.structure)
    return {key for key, body in _keyed(desired.structure).items() if have.get(key) == body}


def _keyed(structure: list[Json]) -> dict[tuple[str, str], Json]:
    """Named objects of a normalized structure (no table, no rules) by (kind, name)."""
    return {_key(obj): obj for obj in structure if not {"table", "rule"} & obj.keys()}


def _key(obj: Json) -> tuple[str, str]:
    kind, body = next(iter(obj.items()))
    return kind, str(body["name"])


def _set_fills(desired: Desired, observed: Observed, names: list[str]) -> list[Json]:
    """The elements of sets a transaction creates: the policy's, then the run-time ones
    carried across from the set of the same name."""
    commands: list[Json] = []
    for name in names:
        elems: list[object] = [
            _profile_elem(desired, name, t) for t in sorted(wanted_elements(desired, name))
        ]
        elems += [
            _runtime_elem(desired, name, elem)
            for elem in sorted(kept_runtime_elements(desired, observed, name), key=lambda e: e.text)
        ]
        if elems:
            commands.append(element_command("add", name, elems))
    return commands


def kept_runtime_elements(desired: Desired, observed: Observed, name: str) -> list[Element]:
    """Elements of ``name`` added at run time that survive a swap (same set, same type, and
    only those the set's definition can hold: no timed element in a set without timeouts,
    no network or range in a set without intervals); in an interval set, those overlapping
    the policy's elements keep only what they cover outside them. More than the set's
    ``size`` is for the kernel to refuse ("set is full"): none is left out for it."""
    if name in DYNAMIC_SETS or observed.types.get(name) != desired.types.get(name):
        return []
    wanted = wanted_elements(desired, name)
    tags = managed_tags(desired)
    kept = _fitting(
        desired,
        name,
        [
            elem
            for text, elem in runtime_elements(desired, observed, name).items()
            if elem.comment not in tags and text not in wanted and elem.expires != 0
        ],
    )
    trim, trimmed = trim_overlaps(desired, name, wanted, kept)
    if not trim:
        return kept
    gone = {id(e) for e in trim}
    return [e for e in kept if id(e) not in gone] + trimmed


def _fitting(desired: Desired, name: str, elems: list[Element]) -> list[Element]:
    """The run-time elements set ``name``, as ``desired`` defines it, can hold."""
    sets: list[Json] = [obj["set"] for obj in desired.objects if "set" in obj]
    body = next((s for s in sets if s["name"] == name), {})
    flags = body.get("flags", [])
    if "timeout" not in flags:
        elems = [e for e in elems if e.timeout is None and e.expires is None]
    if "interval" not in flags:
        elems = [e for e in elems if "/" not in e.text and "-" not in e.text]
    return elems


def canonical(structure: list[Json]) -> list[Json]:
    """``structure`` in an order of its own: the table, the named objects by kind and name,
    the rules by chain (in their order within it). The kernel lists objects in the order
    they were added, and a swap keeps some and adds others after them."""

    def rank(obj: Json) -> tuple[int, str, str]:
        kind, body = next(iter(obj.items()))
        if kind == "table":
            return 0, "", ""
        if kind == "rule":
            return 2, str(body.get("chain", "")), ""
        return 1, kind, str(body.get("name", ""))

    return sorted(structure, key=rank)


def structure_diff(desired: list[Json], observed: list[Json]) -> list[str]:
    """A unified diff of the two structures, one object or rule a line (``+`` would be added)."""
    diff = difflib.unified_diff(
        [_describe(obj) for obj in canonical(observed)],
        [_describe(obj) for obj in canonical(desired)],
        lineterm="",
        n=0,
    )
    return [line for line in diff if not line.startswith(("---", "+++", "@@"))]


def _describe(obj: Json) -> str:
    kind, body = next(iter(obj.items()))
    if kind == "rule":
        return f"rule {body['chain']}: {render_rule(body)}"
    if kind in ("set", "chain", "counter", "limit"):
        details = {k: v for k, v in body.items() if k not in ("family", "table", "name")}
        return f"{kind} {body['name']} {json.dumps(details, sort_keys=True)}"
    return f"{kind} {json.dumps(body, sort_keys=True)}"


def tagged_elems(desired: Desired, name: str, items: Elements) -> list[object]:
    """Element JSON for ``items``, each tagged with where it comes from (the profile or
    the hub)."""
    own, hub = split_tags(desired, name, items)
    set_type = desired.types[name]
    return [
        {"elem": {"val": element_json(set_type, text), "comment": tag}}
        for tag, part in ((PROFILE_TAG, own), (HUB_TAG, hub))
        for text in part
    ]


def split_tags(desired: Desired, name: str, items: Elements) -> tuple[Elements, Elements]:
    """``items`` parted into the profile's elements and the hub's."""
    if desired.hub is None:
        return items, items.minus(items)
    own = desired.elements.get(name)
    mine = items.common(own) if own is not None else items.minus(items)
    return mine, items.minus(mine)


def _profile_elem(desired: Desired, name: str, text: str) -> object:
    """An element of the policy, tagged with where it comes from (the profile or the hub)."""
    value = element_json(desired.types[name], text)
    own = desired.elements.get(name)
    tag = PROFILE_TAG if desired.hub is None or (own is not None and text in own) else HUB_TAG
    return {"elem": {"val": value, "comment": tag}}


def _runtime_elem(desired: Desired, name: str, elem: Element) -> object:
    value = element_json(desired.types[name], elem.text)
    body: dict[str, object] = {"val": value}
    if elem.timeout is not None:
        body["timeout"] = elem.timeout
    if elem.expires is not None:
        body["expires"] = elem.expires
        body.setdefault("timeout", _set_timeout(desired, name) or elem.expires)
    if elem.comment:
        body["comment"] = elem.comment
    return {"elem": body} if len(body) > 1 else value


def _set_timeout(desired: Desired, name: str) -> int | None:
    for obj in desired.objects:
        body = obj.get("set")
        if body and body["name"] == name:
            timeout = body.get("timeout")
            return int(timeout) if timeout is not None else None
    return None
