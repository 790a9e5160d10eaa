"""An in-memory nftables: the same libnftables JSON batches the engine sends, the same
``list`` answers the kernel gives for what the compiler emits.

It holds one ``inet appliance`` table. A batch is one transaction: it goes in whole or not
at all (KernelError, the table as it was). What it refuses, the kernel refuses too: an
object in a missing table or set, deleting what is not there, a set over its ``size``, an
element of the wrong shape for its set. ``tests/test_fakekernel.py`` runs the same
batches against the kernel in a throw-away namespace and compares, so the two cannot drift
apart. A test can also make it refuse (``refuse``) to stand for a transient failure.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from appliance.compile.nftjson import TABLE_FAMILY, TABLE_NAME, Json, element_text
from appliance.errors import KernelError
from appliance.reconcile.segments import (
    DesiredSegment,
    LinkState,
    ObservedLinks,
    PeerState,
    SegmentStepError,
    Step,
)

# The order in which the kernel lists a table's objects (rules last, chain by chain).
LIST_ORDER = ("counter", "quota", "limit", "ct helper", "set", "map", "flowtable", "chain")


@dataclass
class Table:
    objects: dict[tuple[str, str], Json] = field(default_factory=dict)  # (kind, name) -> body
    elements: dict[str, dict[str, Json]] = field(default_factory=dict)  # set -> text -> elem
    rules: list[Json] = field(default_factory=list)
    handle: int = 0

    def next_handle(self) -> int:
        self.handle += 1
        return self.handle


class FakeKernel:
    """A :class:`~appliance.engine.Backend` (and the daemon's) over an in-memory table."""

    def __init__(self) -> None:
        self.table: Table | None = None
        self.batches: list[list[Json]] = []  # every batch that went in
        # A test's stand-in for a transient refusal: a one-line reason refuses the batch.
        self.refuse: Callable[[list[Json]], str | None] = lambda commands: None

    # ---- the Backend interface ----------------------------------------------------------

    def run(self, commands: list[Json]) -> list[Json]:
        if not commands:
            return []
        reason = self.refuse(commands)
        if reason is not None:
            raise KernelError(f"the kernel refused the change: {reason}")
        table = copy.deepcopy(self.table)
        for command in commands:
            ((op, obj),) = command.items()
            table = _apply(table, op, obj)
        self.table = table
        self.batches.append(commands)
        return []

    def list_table(self) -> list[Json] | None:
        table = self.table
        if table is None:
            return None
        listing: list[Json] = [{"table": {"family": TABLE_FAMILY, "name": TABLE_NAME, "handle": 1}}]
        for kind in LIST_ORDER:
            for (k, name), body in table.objects.items():
                if k == kind:
                    listing.append({kind: self._listed(table, kind, name, body)})
        chains = [name for (k, name) in table.objects if k == "chain"]
        for chain in chains:
            listing += [{"rule": dict(r)} for r in table.rules if r["chain"] == chain]
        return listing

    def list_structure(self) -> list[Json] | None:
        listing = self.list_table()
        for obj in listing or []:
            obj.get("set", {}).pop("elem", None)
        return listing

    def list_set(self, name: str, elements: bool = True) -> Json | None:
        if self.table is None or ("set", name) not in self.table.objects:
            return None
        body = self._listed(self.table, "set", name, self.table.objects[("set", name)])
        if not elements:
            body.pop("elem", None)
        return body

    def list_counters(self) -> dict[str, tuple[int, int]]:
        if self.table is None:
            return {}
        return {name: (0, 0) for (kind, name) in self.table.objects if kind == "counter"}

    # ---- what tests read ---------------------------------------------------------------

    def element_texts(self, name: str) -> set[str]:
        if self.table is None:
            return set()
        return set(self.table.elements.get(name, {}))

    @staticmethod
    def _listed(table: Table, kind: str, name: str, body: Json) -> Json:
        listed = dict(body)
        if kind == "set" and table.elements.get(name):
            listed["elem"] = [_listed_elem(body, e) for e in table.elements[name].values()]
        return listed


def _apply(table: Table | None, op: str, obj: Json) -> Table | None:
    ((kind, body),) = obj.items()
    if body.get("family", TABLE_FAMILY) != TABLE_FAMILY:
        raise _refused("Operation not supported")
    if kind == "table":
        if op == "add":
            return table or Table()
        if table is None:
            raise _refused("No such file or directory")
        if op == "delete":
            return None
        if op == "flush":
            table.rules.clear()  # rules only: sets keep their elements, as in the kernel
            return table
        raise _refused(f"unsupported {op} table")
    if table is None:
        raise _refused("No such file or directory")
    if kind == "element":
        _elements(table, op, body)
    elif kind == "rule":
        _rule(table, op, body)
    else:
        _object(table, op, kind, body)
    return table


def _object(table: Table, op: str, kind: str, body: Json) -> None:
    key = (kind, body["name"])
    if op == "add":
        have = table.objects.get(key)
        if have is None:
            table.objects[key] = {**body, "handle": table.next_handle()}
            if kind == "set":
                table.elements[body["name"]] = {}
        elif kind == "set" and any(have.get(k) != body.get(k) for k in ("type", "flags")):
            raise _refused("File exists")  # a set's type and flags are not changed in place
        elif kind in ("set", "chain"):
            # a chain's policy, a set's timeout and size, are (size and timeout only on
            # newer kernels: 6.1 takes the add and keeps the old values)
            table.objects[key] = {**body, "handle": have["handle"]}
        # else: the object stays as it was (a limit keeps its old rate, as in the kernel)
        return
    if key not in table.objects:
        raise _refused("No such file or directory")
    if op == "delete":
        if key in _references(r for r in table.rules if r["chain"] != body["name"]):
            raise _refused("Device or resource busy")
        del table.objects[key]
        table.elements.pop(body["name"], None)
        if kind == "chain":  # its own rules go with it
            table.rules[:] = [r for r in table.rules if r["chain"] != body["name"]]
    elif op == "flush" and kind == "set":
        table.elements[body["name"]].clear()
    elif op == "flush" and kind == "chain":
        table.rules[:] = [r for r in table.rules if r["chain"] != body["name"]]
    else:
        raise _refused(f"unsupported {op} {kind}")


def _references(rules: Iterable[Json]) -> set[tuple[str, str]]:
    """(kind, name) of the sets, named objects and chains ``rules`` use: the kernel refuses
    to delete them while a rule does."""
    found: set[tuple[str, str]] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str) and value.startswith("@"):
            found.add(("set", value[1:]))
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for key, item in value.items():
                if key in ("counter", "limit", "quota") and isinstance(item, str):
                    found.add((key, item))
                elif key in ("jump", "goto") and isinstance(item, dict):
                    found.add(("chain", str(item.get("target"))))
                else:
                    walk(item)

    for rule in rules:
        walk(rule.get("expr", []))
    return found


def _rule(table: Table, op: str, body: Json) -> None:
    if ("chain", body["chain"]) not in table.objects:
        raise _refused("No such file or directory")
    if op == "add":
        table.rules.append({**body, "handle": table.next_handle()})
        return
    if op == "delete":
        kept = [r for r in table.rules if r.get("handle") != body.get("handle")]
        if len(kept) == len(table.rules):
            raise _refused("No such file or directory")
        table.rules[:] = kept
        return
    raise _refused(f"unsupported {op} rule")


def _elements(table: Table, op: str, body: Json) -> None:
    name = body["name"]
    if ("set", name) not in table.objects:
        raise _refused("No such file or directory")
    spec = table.objects[("set", name)]
    have = table.elements[name]
    for elem in body.get("elem", []):
        text = _text(spec, elem)
        if op == "add":
            have.setdefault(text, elem)  # an element already there keeps what it had
        elif op == "delete":
            if text not in have:
                raise _refused("No such file or directory")
            del have[text]
        else:
            raise _refused(f"unsupported {op} element")
    if "size" in spec and len(have) > int(spec["size"]):
        raise _refused("No space left on device")


def _text(spec: Json, elem: Any) -> str:
    value = elem["elem"]["val"] if isinstance(elem, dict) and "elem" in elem else elem
    flags = spec.get("flags", [])
    timed = isinstance(elem, dict) and "elem" in elem and "timeout" in elem["elem"]
    interval = isinstance(value, dict) and ("prefix" in value or "range" in value)
    if (timed and "timeout" not in flags) or (interval and "interval" not in flags):
        raise _refused("Invalid argument")
    _check_type(spec["type"], value)
    return element_text(value)


def _check_type(set_type: str, value: Any) -> None:
    """The kernel checks an element against its set's type (the parser before it does)."""
    if isinstance(value, dict):
        inner = value.get("prefix", {}).get("addr") if "prefix" in value else None
        values = [inner] if inner is not None else list(value.get("range", []))
    else:
        values = [value]
    for item in values:
        if set_type == "inet_service" and not isinstance(item, int):
            raise _refused("Invalid argument")
        if set_type == "ipv4_addr" and (not isinstance(item, str) or ":" in item):
            raise _refused("Invalid argument")
        if set_type == "ipv6_addr" and (not isinstance(item, str) or ":" not in item):
            raise _refused("Invalid argument")


def _listed_elem(spec: Json, elem: Any) -> Any:
    """An element as the kernel lists it: a timeout set adds the time left (here, never
    counting down: time does not pass in memory)."""
    if not isinstance(elem, dict) or "elem" not in elem:
        if "timeout" in spec.get("flags", []) and "timeout" in spec:
            return {"elem": {"val": elem, "expires": spec["timeout"]}}
        return elem
    body = dict(elem["elem"])
    if "timeout" in spec.get("flags", []):
        body.setdefault("expires", body.get("timeout", spec.get("timeout")))
        if body["expires"] is None:
            del body["expires"]
    return {"elem": body}


def _refused(reason: str) -> KernelError:
    return KernelError(f"the kernel refused the change: {reason}")


class FakeLinks:
    """The segments' links in memory: a :class:`~appliance.engine.LinkBackend` that carries
    out the planner's steps on an :class:`ObservedLinks` and observes it back. ``foreign``
    stands for links of someone else's; ``fail`` makes the next ``run`` refuse."""

    def __init__(self) -> None:
        self.state = ObservedLinks()
        self.runs: list[list[Step]] = []
        self.fail: str | None = None

    def observe(self, wanted: Iterable[DesiredSegment] = ()) -> ObservedLinks:
        return copy.deepcopy(self.state)

    def run(self, steps: list[Step]) -> list[Step]:
        if self.fail is not None:
            raise SegmentStepError(self.fail, [])
        for step in steps:
            self._step(step)
        self.runs.append(steps)
        return steps

    def _step(self, step: Step) -> None:
        state = self.state
        if step.op == "create_netns":
            state.namespaces = state.namespaces | {step.netns or ""}
        elif step.op == "delete_netns":
            state.namespaces = state.namespaces - {step.netns or ""}
            state.peers.pop(step.netns or "", None)
        elif step.op == "create_link":
            assert step.state is not None
            link = replace(step.state, master=None, addresses=frozenset(), up=False)
            state.links[step.link] = link
            if step.peer is not None:
                peer = replace(step.peer, addresses=frozenset(), gateways=frozenset(), up=False)
                state.peers[step.peer.netns] = peer
        elif step.op == "delete_link":
            link = state.links.pop(step.link)
            if link.netns is not None:
                state.peers[link.netns] = None
        elif step.netns is not None:
            far_end = state.peers[step.netns]
            assert far_end is not None
            state.peers[step.netns] = _changed(far_end, step)
        else:
            state.links[step.link] = _changed(state.links[step.link], step)


# step -> (the field it changes, whether it adds to it)
_SET_FIELDS = {
    "add_address": ("addresses", True),
    "del_address": ("addresses", False),
    "add_route": ("gateways", True),
    "del_route": ("gateways", False),
}
Changed = TypeVar("Changed", LinkState, PeerState)


def _changed(item: Changed, step: Step) -> Changed:
    """A link or a far end after one step."""
    changes: dict[str, Any]
    if step.op == "set_master":
        changes = {"master": step.value or None}
    elif step.op == "set_up":
        changes = {"up": True}
    else:
        name, add = _SET_FIELDS[step.op]
        have: frozenset[str] = getattr(item, name)
        changes = {name: have | {step.value} if add else have - {step.value}}
    return replace(item, **changes)
