"""Hub sync in the daemon: the last good bundle at boot, then polling the hub from the loop.

A verified bundle is applied and kept only if the hub is still reachable afterwards (else
rolled back); a refused one changes nothing. A hub outage never changes what is enforced,
and the polling never flushes anything.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from appliance.daemon.context import Context
from appliance.daemon.manager import Manager
from appliance.daemon.policies import HUB_POLL, SOURCE_HUB, Policy, bundle_policy, load_local
from appliance.errors import ApplianceError
from appliance.model.profile import Profile

if TYPE_CHECKING:  # the hub's modules (and cryptography) load only with a [hub]
    from appliance.daemon.policy import PolicyManager
    from appliance.sync.client import HubClient, SyncResult


class HubSync(Manager):
    name = "hub"

    def __init__(self, ctx: Context, policy: PolicyManager) -> None:
        self.ctx = ctx
        self.policy = policy
        self.client: HubClient | None = None
        self.poll = HUB_POLL
        self.error: str | None = None  # the client could not be set up
        self.last: SyncResult | None = None
        self.last_success: float | None = None
        self.syncs: dict[str, int] = {}
        self.next_poll: float | None = None  # wall time of the next poll; None while one runs

    def start(self, local: Profile) -> None:
        from appliance.sync.client import HubClient
        from appliance.sync.keys import KeyFileError

        assert local.hub is not None
        try:
            self.client = HubClient.from_profile(
                local, self.ctx.config.state_dir, clock=self.ctx.wall_clock
            )
        except (KeyFileError, OSError, ValueError) as exc:
            self.error = f"hub client not started: {exc}"
            self.ctx.fail(self.error)
            return
        self.poll = local.hub.poll

    async def configure(self, old: Policy | None, new: Policy | None) -> None:
        if self.client is None:
            return
        self.ctx.metrics.hub_stale.set(1 if self.client.stale else 0)
        if new is not None and new.bundle_version is not None:
            self.ctx.metrics.policy_version.set(new.bundle_version)

    async def close(self) -> None:
        if self.client is not None:
            self.client.close()

    async def enforce_last_bundle(self, local: Profile) -> bool:
        """Boot: enforce the last good bundle, stale or not. False if there is none (or it
        no longer verifies, or the kernel refuses it)."""
        ctx, hub = self.ctx, self.client
        if hub is None:
            return False
        stored = await ctx.kernel(hub.load_last_good)
        if stored is None:
            if hub.last_error:
                ctx.fail(f"last good bundle not enforced: {hub.last_error}")
            return False
        listen = local.metrics.listen if local.metrics else None
        try:
            policy = await ctx.kernel(bundle_policy, stored.bundle, listen)
        except ApplianceError as exc:
            ctx.fail(f"last good bundle not enforced: {exc}")
            return False
        if not await self.policy.enforce(policy):
            return False
        ctx.clear_error()
        return True

    async def run(self) -> None:
        """Poll at start, then every ``[hub].poll`` (right away again after a long poll;
        backoff after transport failures). Never raises; never flushes anything."""
        hub = self.client
        assert hub is not None
        while True:
            self.next_poll = None
            try:
                sync = await hub.poll_once()
                if sync.pending and sync.bundle is not None:
                    async with self.ctx.policy_lock:
                        sync = await self._apply_bundle(sync)
                else:
                    await hub.report(sync, self.ctx.table_hash)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not stop the polling
                self.ctx.log.exception("hub sync failed", extra={"error": repr(exc)})
                await self._sleep(self.poll)
                continue
            self._record(sync)
            await self._sleep(hub.next_delay(sync, self.poll))

    async def _sleep(self, delay: float) -> None:
        self.next_poll = self.ctx.wall_clock() + delay
        await asyncio.sleep(delay)

    async def _apply_bundle(self, sync: SyncResult) -> SyncResult:
        """Apply a verified bundle; keep it only if the hub is still reachable afterwards."""
        ctx, hub, bundle = self.ctx, self.client, sync.bundle
        assert hub is not None and bundle is not None
        previous = ctx.policy
        listen = previous.metrics_listen if previous else None
        if previous is not None and previous.source != SOURCE_HUB:
            listen = await self._local_metrics_listen()
        try:
            policy = await ctx.kernel(bundle_policy, bundle, listen)
        except ApplianceError as exc:
            return await hub.apply_failed(sync, str(exc), ctx.table_hash)
        if not await self.policy.enforce(policy):
            return await hub.apply_failed(sync, ctx.last_error or "refused", ctx.table_hash)
        if not await hub.check_reachable():
            error = f"hub unreachable after applying version {bundle.version}: rolled back"
            if previous is not None:
                await self.policy.enforce(previous)
            ctx.log.warning(error, extra=ctx.policy_fields())
            return await hub.rolled_back(sync, error, ctx.table_hash)
        ctx.clear_error()
        ctx.log.info("hub bundle applied", extra={**ctx.policy_fields(), "bundle": bundle.version})
        return await hub.applied(sync, policy.table_hash)

    async def _local_metrics_listen(self) -> str | None:
        try:
            local = await self.ctx.kernel(load_local, self.ctx.config.profile)
        except ApplianceError:
            return self.ctx.policy.metrics_listen if self.ctx.policy else None
        return local.metrics.listen if local.metrics else None

    def _record(self, sync: SyncResult) -> None:
        metrics = self.ctx.metrics
        self.last = sync
        self.syncs[sync.result] = self.syncs.get(sync.result, 0) + 1
        metrics.hub_sync.labels(result=sync.result).inc()
        if sync.ok:
            self.last_success = self.ctx.wall_clock()
            metrics.hub_last_success.set(self.last_success)
        elif not sync.repeated or self.syncs[sync.result] == 1:
            self.ctx.log.warning(
                "hub sync: nothing changed",
                extra={"result": sync.result, "error": sync.error, "bundle": sync.version},
            )
        if self.client is not None:
            metrics.hub_stale.set(1 if self.client.stale else 0)

    def status(self) -> dict[str, Any]:
        hub, last, policy = self.client, self.last, self.ctx.policy
        if hub is None:
            return {"error": self.error}
        return {
            "url": hub.url,
            "version": hub.running_version,
            "enforced": policy is not None and policy.source == SOURCE_HUB,
            "stale": hub.stale,
            "expires": hub.running.bundle.expires_text if hub.running else None,
            "result": last.result if last else None,
            "error": (last.error or None) if last else (hub.last_error or None),
            "offered": last.offered if last else None,
            "last_sync": last.time if last else None,
            "last_success": self.last_success,
            "next_poll": self.next_poll,
            "syncs": dict(sorted(self.syncs.items())),
            "poll_seconds": self.poll,
            "long_poll": hub.long_poll_max > 0,
        }
