"""What the daemon enforces, where it came from, and what one reconcile found. Pure.

A :class:`Policy` is built from the local profile, a hub bundle, the last good state or the
built-in failsafe; a compile error becomes a profile error naming the key in one place
(:func:`compiled`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from appliance.compile.ruleset import offloaded_devices
from appliance.engine import Backend
from appliance.model.profile import Hub, Profile
from appliance.model.values import parse_host_port
from appliance.reconcile.plan import Plan, kept_runtime_elements
from appliance.reconcile.segments import SegmentPlan
from appliance.reconcile.state import DYNAMIC_SETS, Desired, Observed, managed_tags, wanted_elements

if TYPE_CHECKING:  # the hub's modules (and cryptography) load only with a [hub]
    from appliance.sync.bundle import Bundle

Source = Literal["profile", "last_good", "failsafe", "hub"]
SOURCE_PROFILE: Source = "profile"
SOURCE_LAST_GOOD: Source = "last_good"
SOURCE_FAILSAFE: Source = "failsafe"
SOURCE_HUB: Source = "hub"

DriftKind = Literal["table_missing", "structure", "elements", "segments"]

HUB_POLL = Hub(url="", trust=()).poll  # the model's default poll interval


class DaemonBackend(Backend, Protocol):
    def list_counters(self) -> dict[str, tuple[int, int]]: ...


@dataclass
class Policy:
    """What the daemon enforces and where it came from."""

    desired: Desired
    source: Source
    metrics_listen: str | None
    table_hash: str = ""  # computed once, in the kernel worker (large sets take a while)
    profile: Profile | None = None  # the profile it was compiled from (drives inspection)
    bundle_version: int | None = None  # the hub bundle it came in
    # the links its flowtable hooks, read once when the policy is loaded (empty: no offload)
    offloaded: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        if not self.table_hash:
            self.table_hash = self.desired.table_hash
        self.offloaded = offloaded_devices(self.desired.objects)


@dataclass
class Outcome:
    """What one reconcile found and did (computed in the kernel worker)."""

    plan: Plan
    observed: Observed
    counts: dict[str, int] = field(default_factory=dict)
    segments: SegmentPlan | None = None  # the segments' links: what was changed


def compiled(where: str, profile: Profile, effective: Profile | None = None) -> Desired:
    """The table of ``profile`` (with ``effective``: a bundle's, the hub's elements in it);
    a CompileError becomes a ProfileError at ``where``."""
    from appliance.compile.ruleset import as_profile_error
    from appliance.probe import offload_for
    from appliance.reconcile.state import desired_from_profile, desired_with_hub

    devices = offload_for(profile).devices  # [defaults].offload, where the kernel can
    with as_profile_error(where):
        if effective is None:
            return desired_from_profile(profile, devices)
        return desired_with_hub(profile, effective, devices)


def load_local(path: str) -> Profile:
    """The local profile, parsed and validated (ProfileError if invalid)."""
    from appliance.model.parse import load_profile

    return load_profile(path)


def load_policy(path: str) -> Policy:
    """Profile file -> the policy to enforce (compiled, hashed). ProfileError if invalid;
    KernelError if it needs a kernel feature this kernel lacks (inline inspection)."""
    return policy_from_profile(path, load_local(path))


def policy_from_profile(path: str, profile: Profile) -> Policy:
    """A parsed profile -> the policy to enforce (as :func:`load_policy`)."""
    from appliance.probe import require_kernel_support

    desired = compiled(path, profile)
    require_kernel_support(profile, path)
    listen = profile.metrics.listen if profile.metrics else None
    return Policy(desired, SOURCE_PROFILE, listen, profile=profile)


def hub_only(profile: Profile) -> bool:
    """A local profile that leaves the policy to the hub (``version``, ``name``, ``[hub]``,
    ``[metrics]``): nothing of its own to enforce."""
    return profile.hub is not None and not profile.has_policy


def bundle_policy(bundle: Bundle, metrics_listen: str | None) -> Policy:
    """A verified bundle -> the policy to enforce: its profile's table, the profile's set
    elements tagged ``profile`` and the hub's tagged ``hub`` (KernelError if it needs a
    kernel feature this kernel lacks; CompileError as ProfileError)."""
    from appliance.probe import require_kernel_support

    where = f"bundle version {bundle.version}"
    desired = compiled(where, bundle.profile, bundle.effective_profile())
    require_kernel_support(bundle.profile, where)
    return Policy(
        desired, SOURCE_HUB, metrics_listen, profile=bundle.profile, bundle_version=bundle.version
    )


def drift_kind(plan: Plan, segments: SegmentPlan | None = None) -> DriftKind | None:
    if plan.create:
        return "table_missing"
    if plan.swap:
        return "structure"
    if plan.changed:
        return "elements"
    if segments is not None and segments.changed:
        return "segments"
    return None


# The last policies' own element counts (see wanted_counts), without keeping them alive.
_COUNTED: list[tuple[weakref.ref[Desired], dict[str, int]]] = []


def wanted_counts(desired: Desired) -> dict[str, int]:
    """How many elements ``desired`` itself puts in each set (the profile's and the
    hub's), counted once per policy: a hash set's count is a pass over its spans (0.3 s at
    1,000,000 scattered addresses), and every read-back asks again."""
    for known, counts in _COUNTED:
        if known() is desired:
            return counts
    counts = {
        name: len(wanted_elements(desired, name))
        for name in desired.types
        if name not in DYNAMIC_SETS
    }
    _COUNTED[:] = [(weakref.ref(desired), counts)] + [
        entry for entry in _COUNTED[:3] if entry[0]() is not None
    ]
    return counts


def set_counts(desired: Desired, observed: Observed, plan: Plan) -> dict[str, int]:
    """Element counts per set once ``plan`` is carried out: profile elements plus the
    run-time elements the kernel held (those a swap carries across). No pass over the
    policy's own elements unless the kernel holds others in the set."""
    counts: dict[str, int] = {}
    tags = managed_tags(desired)
    own = wanted_counts(desired)
    for name in desired.types:
        if name in DYNAMIC_SETS:
            continue
        if plan.create:
            runtime = 0
        elif plan.swap:
            runtime = len(kept_runtime_elements(desired, observed, name))
        else:
            have = observed.elements.get(name, {})
            # tagged elements this policy does not own (the hub's after a profile-only
            # apply) stay as run-time elements
            others = [
                items
                for tag, items in observed.tagged.get(name, {}).items()
                if tag not in tags and items
            ]
            runtime = 0
            if have or others:
                wanted = wanted_elements(desired, name)
                runtime = sum(
                    1
                    for text, elem in have.items()
                    if text not in wanted and elem.comment not in tags
                )
                for items in others:
                    runtime += len(items.minus(wanted)) if items.set_type == wanted.set_type else 0
            runtime += len(plan.trimmed.get(name, ())) - len(plan.trim.get(name, ()))
        counts[name] = own[name] + runtime
    return counts


def listen_port(listen: str) -> int | None:
    try:
        return parse_host_port(listen, any_host=True, any_port=True).port
    except ValueError:
        return None
