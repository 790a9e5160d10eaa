"""Bring the kernel to a desired table: plan, apply, run-time set changes.

The pure parts decide (``reconcile``); this module reads the kernel through the backend,
asks them, and runs the one transaction they return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from appliance.compile.nftjson import TABLE_FAMILY, TABLE_NAME, Json
from appliance.compile.ruleset import element_json
from appliance.errors import UsageError
from appliance.model.values import canonical_element
from appliance.reconcile.plan import Plan, make_plan, transaction
from appliance.reconcile.state import (
    Desired,
    Element,
    Observed,
    observed_from_listing,
    parse_element,
)


class Backend(Protocol):
    def run(self, commands: list[Json]) -> list[Json]: ...
    def list_table(self) -> list[Json] | None: ...
    def list_set(self, name: str, elements: bool = True) -> Json | None: ...


@dataclass
class SetInfo:
    name: str
    type: str
    flags: list[str]
    elements: list[Element]


class Engine:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def observe(self) -> Observed:
        return observed_from_listing(self.backend.list_table())

    def plan(self, desired: Desired) -> Plan:
        return make_plan(desired, self.observe())

    def apply(self, desired: Desired) -> Plan:
        """Apply ``desired`` in one transaction. On KernelError the kernel keeps what it had."""
        observed = self.observe()
        plan = make_plan(desired, observed)
        if plan.changed:
            self.backend.run(transaction(plan, desired, observed))
        return plan

    # ---- run-time set changes ---------------------------------------------------------

    def set_info(self, name: str, elements: bool = True) -> SetInfo:
        """A set's type and flags, and its elements unless ``elements`` is False (which
        costs the same whatever the set's size)."""
        body = self.backend.list_set(name, elements)
        if body is None:
            raise UsageError(f"set {name!r}: no such set in table {TABLE_FAMILY} {TABLE_NAME}")
        return SetInfo(
            name=name,
            type=body["type"],
            flags=list(body.get("flags", [])),
            elements=[parse_element(e) for e in body.get("elem", [])],
        )

    def set_elements(self, name: str, values: list[str], timeout: float | None) -> list[object]:
        """The JSON elements for ``values``, checked against the set's type read back."""
        info = self.set_info(name, elements=False)
        if not values:
            raise UsageError(f"set {name!r}: no element given")
        if timeout is not None and "timeout" not in info.flags:
            raise UsageError(f"set {name!r} has no timeout flag: --timeout is not possible")
        elements: list[object] = []
        for value in values:
            try:
                text = canonical_element(info.type, "interval" in info.flags, value)
            except ValueError as exc:
                raise UsageError(f"set {name!r} ({info.type}): {exc}") from None
            elements.append(element_json(info.type, text, timeout))
        return elements

    def set_add(self, name: str, values: list[str], timeout: float | None = None) -> None:
        elements = self.set_elements(name, values, timeout)
        self.backend.run([_element_cmd("add", name, elements)])

    def set_del(self, name: str, values: list[str]) -> None:
        elements = self.set_elements(name, values, None)
        self.backend.run([_element_cmd("delete", name, elements)])


def _element_cmd(op: str, name: str, elems: list[object]) -> Json:
    return {
        op: {"element": {"family": TABLE_FAMILY, "table": TABLE_NAME, "name": name, "elem": elems}}
    }
