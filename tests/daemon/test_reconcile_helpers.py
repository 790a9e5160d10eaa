"""The daemon's pure helpers: drift classification and set bookkeeping."""

from __future__ import annotations

from appliance.daemon.failsafe import failsafe_desired
from appliance.daemon.policies import drift_kind, set_counts
from appliance.reconcile.plan import Plan, make_plan
from appliance.reconcile.state import Element, Observed


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
