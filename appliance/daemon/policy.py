"""The policy manager: which policy the kernel holds, and bringing it there.

Boot: with a ``[hub]`` in the local profile, the last good bundle is enforced first (see
:mod:`appliance.daemon.hub`). Else a valid profile is applied and saved as the last good
policy; an invalid or missing profile (or a hub-only one) leaves the last good policy
enforced (else the built-in failsafe) and the error in status and metrics. A profile the
kernel refused at boot (a transient failure: a link in the way, a module that failed to
load) is tried again at read-backs, backing off. A reload with ``--confirm`` is rolled back
unless confirmed in time. Read-backs repair drift and count it by kind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from appliance.daemon import heap
from appliance.daemon.context import Context
from appliance.daemon.failsafe import DEFAULT_METRICS_PORT, failsafe_desired
from appliance.daemon.manager import Manager
from appliance.daemon.policies import (
    SOURCE_FAILSAFE,
    SOURCE_HUB,
    SOURCE_LAST_GOOD,
    SOURCE_PROFILE,
    DriftKind,
    Outcome,
    Policy,
    drift_kind,
    hub_only,
    listen_port,
    load_local,
    load_policy,
    policy_from_profile,
    set_counts,
)
from appliance.errors import ApplianceError
from appliance.model.profile import Profile
from appliance.reconcile.state import Desired

if TYPE_CHECKING:
    from appliance.daemon.hub import HubSync

RETRY_MAX_SECONDS = 300.0  # a profile the kernel refused at boot: tried again at least this often
PARK_SPANS = 1 << 16  # a set of this many spans is held compressed while a reload parses


def park_large_sets(*policies: Policy | None) -> None:
    """Hold the large sets of ``policies`` compressed (read in order, as the next plan reads
    them, they stay so; read by index, they unpack), and give the memory back: a reload's
    parse of the next list does not come on top of the running policy's spans."""
    for policy in policies:
        if policy is None:
            continue
        for items in policy.desired.elements.values():
            if items.spans is not None and len(items.spans) >= PARK_SPANS:
                items.park()
    heap.release()


@dataclass
class PendingConfirm:
    previous: Policy
    deadline: float
    handle: asyncio.TimerHandle | None = None


class PolicyManager(Manager):
    name = "policy"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        heap.configure()  # a large set's arrays go back to the system once freed
        self.hub: HubSync | None = None  # set at boot when the local profile has a [hub]
        self.pending: PendingConfirm | None = None
        self.drift_repairs: dict[DriftKind, int] = {}
        self.refused: Policy | None = None
        self.refused_tries = 0
        self.refused_next = 0.0
        self.revert_requested = False
        self.repair_error: str | None = None  # the last error, while it is a failed repair

    # ---- bringing the kernel to a policy ---------------------------------------------

    def _reconcile(self, desired: Desired) -> Outcome:
        """Observe, plan and run the one transaction, segments' links around it (in the
        kernel worker). Where the read-back now stands for the kernel, the table watch's
        journal drops the element changes up to it (no later read-back follows them)."""
        engine = self.ctx.engine
        plan, observed, segments = engine.converge(desired)
        if engine.journal is not None and engine.quiet is not None:
            engine.journal.settle(engine.quiet.generation)
        return Outcome(plan, observed, set_counts(desired, observed, plan), segments)

    async def enforce(self, policy: Policy) -> bool:
        """Bring the kernel to ``policy``. False (and the error recorded) if refused. The
        last error stays as it is on success: the caller clears it when it should."""
        ctx = self.ctx
        started = ctx.clock()
        try:
            outcome = await ctx.kernel(self._reconcile, policy.desired)
        except ApplianceError as exc:
            ctx.metrics.apply_total.labels(result="failed").inc()
            ctx.fail(f"apply of {policy.desired.name} ({policy.source}) refused: {exc}")
            await ctx.kernel(heap.release)
            return False
        elapsed = ctx.clock() - started
        # what loading it left behind (a large set's parse) goes back to the system, before
        # anything says the policy is enforced (the previous one's arrays, freed when it is
        # replaced, are mappings of their own: they go back at once)
        await ctx.kernel(heap.release)
        ctx.metrics.apply_seconds.observe(elapsed)
        ctx.metrics.apply_total.labels(result="ok").inc()
        if ctx.policy is None or ctx.policy.table_hash != policy.table_hash:
            ctx.generation += 1
        ctx.on_outcome(outcome)
        segments_changed = outcome.segments is not None and outcome.segments.changed
        if outcome.plan.changed or segments_changed or ctx.applied_at is None:
            ctx.applied_at = ctx.wall_clock()
        ctx.metrics.set_policy(
            policy.desired.name, policy.table_hash, policy.source, ctx.generation
        )
        if policy.bundle_version is not None:
            ctx.metrics.policy_version.set(policy.bundle_version)
        await ctx.set_policy(policy)
        ctx.log.info(
            "policy enforced",
            extra={
                **ctx.policy_fields(),
                "changed": outcome.plan.changed,
                "swap": outcome.plan.swap or outcome.plan.create,
                "seconds": round(elapsed, 4),
            },
        )
        return True

    # ---- boot ---------------------------------------------------------------------------

    async def boot(self, start_hub: HubStarter) -> None:
        ctx = self.ctx
        local: Profile | None = None
        try:
            local = await ctx.kernel(load_local, ctx.config.profile)
        except ApplianceError as exc:
            ctx.fail(f"profile not enforced: {exc}")
        if local is not None and local.hub is not None:
            self.hub = await start_hub(local)
            if self.hub is not None and await self.hub.enforce_last_bundle(local):
                return
        if local is not None and not hub_only(local):
            try:
                policy = await ctx.kernel(policy_from_profile, ctx.config.profile, local)
            except ApplianceError as exc:
                ctx.fail(f"profile not enforced: {exc}")
            else:
                if await self.enforce(policy):
                    ctx.clear_error()
                    await self.save_last_good()
                    return
                self.refused = policy
                self.refused_next = ctx.clock() + ctx.config.resync_interval
        if await self._enforce_last_good():
            return
        # With a [hub], the failsafe serves the local [metrics] while it waits for a bundle.
        hub_listen = None
        if local is not None and local.hub is not None and local.metrics is not None:
            hub_listen = local.metrics.listen
        listen = ctx.config.metrics_listen or hub_listen
        port = listen_port(listen) if listen else DEFAULT_METRICS_PORT
        failsafe = Policy(failsafe_desired(port), SOURCE_FAILSAFE, hub_listen)
        if not await self.enforce(failsafe):
            ctx.log.critical("even the failsafe policy was refused; the kernel keeps its table")

    async def _enforce_last_good(self) -> bool:
        ctx = self.ctx
        try:
            last_good = await ctx.kernel(ctx.store.load_last_good)
        except ValueError as exc:
            ctx.log.error("last good state unusable", extra={"error": str(exc)})
            return False
        if last_good is None:
            return False
        policy = await ctx.kernel(
            Policy, last_good.desired, SOURCE_LAST_GOOD, last_good.metrics_listen
        )
        return await self.enforce(policy)

    # ---- reload, confirm, rollback -------------------------------------------------------

    async def reload(self) -> None:
        ctx = self.ctx
        ctx.notifier.reloading("reloading the profile")
        ctx.log.info("reloading", extra={"profile": ctx.config.profile})
        self.refused = None  # the profile as it is now supersedes the one refused at boot
        try:
            if ctx.policy is not None and ctx.policy.source == SOURCE_HUB:
                await self._reload_under_hub()
                return
            pending = self.pending.previous if self.pending is not None else None
            await ctx.kernel(park_large_sets, ctx.policy, pending)
            try:
                policy = await ctx.kernel(load_policy, ctx.config.profile)
            except ApplianceError as exc:
                ctx.fail(f"reload refused, the running policy stays: {exc}")
                await ctx.kernel(heap.release)
                return
            if policy.profile is not None and hub_only(policy.profile):
                ctx.log.info("reload: a hub-only profile; the running policy stays")
                return
            previous = ctx.policy
            if not await self.enforce(policy):
                return
            ctx.clear_error()
            changed = previous is None or previous.table_hash != policy.table_hash
            if ctx.config.confirm_seconds and previous is not None and changed:
                self._arm_confirm(previous)
            # the previous policy's elements go before the new one is saved (a pending
            # confirm keeps its own reference)
            previous = None
            if self.pending is None:
                await self.save_last_good()
            await ctx.kernel(heap.release)
        finally:
            ctx.notifier.ready(self.status_line())

    async def _reload_under_hub(self) -> None:
        """A bundle is enforced: it stays. The local profile is checked, and its
        ``[metrics]`` taken (its ``[hub]`` is read at start)."""
        ctx = self.ctx
        try:
            local = await ctx.kernel(load_local, ctx.config.profile)
        except ApplianceError as exc:
            ctx.fail(f"reload refused, the hub's bundle stays: {exc}")
            return
        listen = local.metrics.listen if local.metrics else None
        if ctx.policy is not None and listen != ctx.policy.metrics_listen:
            await ctx.set_policy(dataclasses.replace(ctx.policy, metrics_listen=listen))
        ctx.log.info("reload: the hub's bundle stays enforced", extra=ctx.policy_fields())

    def _arm_confirm(self, previous: Policy) -> None:
        seconds = self.ctx.config.confirm_seconds
        assert seconds is not None
        if self.pending is not None:  # a second reload keeps the first rollback target
            previous = self.pending.previous
            if self.pending.handle:
                self.pending.handle.cancel()
        handle = asyncio.get_running_loop().call_later(seconds, self._request_revert)
        self.pending = PendingConfirm(previous, self.ctx.wall_clock() + seconds, handle)
        self.ctx.log.warning(
            "reload applied; rolls back unless confirmed", extra={"confirm_seconds": seconds}
        )

    def _request_revert(self) -> None:
        self.revert_requested = True
        self.ctx.wake()

    async def confirm(self) -> bool:
        if self.pending is None:
            return False
        if self.pending.handle:
            self.pending.handle.cancel()
        self.pending = None
        await self.save_last_good()
        self.ctx.log.info("reload confirmed", extra=self.ctx.policy_fields())
        return True

    async def revert_unconfirmed(self) -> None:
        self.revert_requested = False
        if self.pending is None:
            return
        previous = self.pending.previous
        self.pending = None
        if await self.enforce(previous):
            self.ctx.fail(
                f"reload not confirmed in {self.ctx.config.confirm_seconds:g}s: "
                f"rolled back to {previous.desired.name} ({previous.table_hash})"
            )

    async def close(self) -> None:
        if self.pending and self.pending.handle:
            self.pending.handle.cancel()

    # ---- read-backs: drift, and the profile refused at boot --------------------------

    async def resync(self) -> None:
        """Read the table back; repair whatever someone else changed. A profile the kernel
        refused at boot is tried again first (at read-backs 1, 2, 4, ... apart, at most
        every 5 minutes)."""
        ctx = self.ctx
        retry = self.refused is not None and ctx.clock() >= self.refused_next
        if retry and await self._retry_refused():
            return
        if ctx.policy is None:
            return
        desired = ctx.policy.desired
        table_hash = ctx.policy.table_hash
        try:
            outcome = await ctx.kernel(self._reconcile, desired)
        except ApplianceError as exc:
            ctx.metrics.apply_total.labels(result="failed").inc()
            self.repair_error = f"drift repair refused: {exc}"
            ctx.fail(self.repair_error)
            return
        if self.repair_error is not None and ctx.last_error == self.repair_error:
            ctx.clear_error()  # the repair that failed went through now
        self.repair_error = None
        ctx.on_outcome(outcome)
        kind = drift_kind(outcome.plan, outcome.segments)
        if kind is None:
            return
        self.drift_repairs[kind] = self.drift_repairs.get(kind, 0) + 1
        ctx.metrics.drift_repairs.labels(kind=kind).inc()
        ctx.metrics.apply_total.labels(result="ok").inc()
        ctx.log.warning(
            "drift repaired",
            extra={
                "kind": kind,
                "policy": desired.name,
                "table_hash": table_hash,
                "changes": (
                    outcome.plan.describe()
                    + (outcome.segments.describe() if outcome.segments else [])
                )[:20],
            },
        )

    async def _retry_refused(self) -> bool:
        policy = self.refused
        assert policy is not None
        self.refused_tries += 1
        delay = min(RETRY_MAX_SECONDS, self.ctx.config.resync_interval * 2**self.refused_tries)
        self.refused_next = self.ctx.clock() + delay
        if not await self.enforce(policy):
            return False
        self.refused = None
        self.refused_tries = 0
        self.ctx.clear_error()
        await self.save_last_good()
        self.ctx.log.info(
            "the profile refused at boot is enforced now", extra=self.ctx.policy_fields()
        )
        return True

    # ---- what status says, what is kept ------------------------------------------------

    def status_line(self) -> str:
        policy = self.ctx.policy
        if policy is None:
            return "no policy enforced"
        line = f"enforcing {policy.desired.name} ({policy.source})"
        if self.ctx.last_error:
            line += f"; error: {self.ctx.last_error}"
        return line

    async def save_last_good(self) -> None:
        policy = self.ctx.policy
        if policy is None or policy.source != SOURCE_PROFILE:
            return
        try:
            await self.ctx.kernel(
                functools.partial(
                    self.ctx.store.save_last_good,
                    policy.desired,
                    policy.metrics_listen,
                    self.ctx.config.profile,
                    table_hash=policy.table_hash,
                )
            )
        except OSError as exc:
            self.ctx.log.error("cannot save the last good policy", extra={"error": str(exc)})


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    HubStarter = Callable[[Profile], Awaitable["HubSync | None"]]
