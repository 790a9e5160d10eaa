"""The daemon's pure helpers: drift classification and set bookkeeping."""

from __future__ import annotations

import json
from pathlib import Path

from appliance.compile.nftjson import Json
from appliance.daemon.failsafe import failsafe_desired
from appliance.daemon.policies import drift_kind, policy_from_profile, set_counts
from appliance.model.parse import load_profile
from appliance.reconcile.plan import Plan, make_plan
from appliance.reconcile.state import Desired, Element, Observed, observed_from_listing
from tests.conftest import small_profile


def test_drift_kinds() -> None:
    assert drift_kind(Plan()) is None
    assert drift_kind(Plan(create=True)) == "table_missing"
    assert drift_kind(Plan(swap=True, add={"s": ["1"]})) == "structure"
    assert drift_kind(Plan(add={"s": ["1"]})) == "elements"
    assert drift_kind(Plan(delete={"s": ["1"]})) == "elements"


def observed_like(
    desired_objects: list[dict[str, object]],
    elements: dict[str, dict[str, Element]],
    types: dict[str, str],
) -> Observed:
    return Observed(objects=list(desired_objects), elements=elements, types=types)


def test_run_time_elements_are_counted_and_are_not_drift() -> None:
    desired = failsafe_desired()
    observed = observed_like(
        desired.objects,
        {"autoblock_v4": {"192.0.2.1": Element("192.0.2.1", expires=30)}},
        dict(desired.types),
    )
    plan = make_plan(desired, observed)
    assert drift_kind(plan) is None
    counts = set_counts(desired, observed, plan)
    assert counts["autoblock_v4"] == 1
    assert counts["autoblock_v6"] == 0


def test_a_missing_table_counts_profile_elements_only() -> None:
    desired = failsafe_desired()
    observed = Observed(objects=None)
    plan = make_plan(desired, observed)
    assert drift_kind(plan) == "table_missing"
    assert set(set_counts(desired, observed, plan).values()) == {0}


def test_hub_elements_count_after_a_profile_only_apply(tmp_path: Path) -> None:
    """A profile-only policy leaves the hub's elements as run-time elements: they are in
    the set, so in its count (with or without a swap)."""
    path = tmp_path / "p.toml"
    path.write_text(small_profile("local", ["192.0.2.0/24"]))
    desired = policy_from_profile(str(path), load_profile(path)).desired
    assert desired.hub is None
    hub = ["198.51.100.0/24", "203.0.113.0/24"]
    listing: list[Json] = json.loads(json.dumps(desired.objects))
    for obj in listing:
        body = obj.get("set")
        if body is not None and body["name"] == "blocklist":
            body["elem"] = [
                {
                    "elem": {
                        "val": {"prefix": {"addr": text.split("/")[0], "len": 24}},
                        "comment": tag,
                    }
                }
                for text, tag in [("192.0.2.0/24", "profile")] + [(t, "hub") for t in hub]
            ]
    observed = observed_from_listing(listing)
    plan = make_plan(desired, observed)
    assert not plan.swap and "blocklist" not in plan.add
    assert set_counts(desired, observed, plan)["blocklist"] == 3
    swapped = Desired(
        [*desired.objects, {"counter": {"family": "inet", "table": "appliance", "name": "x"}}],
        desired.elements,
        desired.types,
    )
    swap = make_plan(swapped, observed)
    assert swap.swap
    assert set_counts(swapped, observed, swap)["blocklist"] == 3
