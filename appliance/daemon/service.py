"""The daemon's loop: events mark state dirty, one reconcile brings the kernel to it.

Events are a profile change (SIGHUP), a request on the control socket, the resync timer and
the confirm deadline. Signal handlers and timers only set flags and wake the loop; the loop
runs one tick at a time. Every kernel call goes through one worker thread (a libnftables
context is not shared between threads), so the event loop keeps answering the control
socket and metrics while a large table is loaded.

Boot: with a ``[hub]`` in the local profile, the last good bundle from the state directory
is enforced first (even if it has expired since: status and metrics then say it is stale).
Else a valid profile is applied and saved as the last good policy; an invalid or missing
profile (or a hub-only one) leaves the last good policy enforced (else the built-in
failsafe) and the error in status and metrics. The hub client then polls from the loop
(see :meth:`Daemon._hub_loop`); a hub outage never changes what is enforced. The daemon
never runs with an empty ruleset, and on SIGTERM it leaves the table in the kernel (fail
closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import resource
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry

from appliance import __version__
from appliance.daemon.control import ControlServer
from appliance.daemon.failsafe import DEFAULT_METRICS_PORT, failsafe_desired
from appliance.daemon.inspect import LIVE_MODES, LiveInspection, settings_key
from appliance.daemon.metrics import Metrics, MetricsServer
from appliance.daemon.monitor import TableMonitor
from appliance.daemon.notify import Notifier, watchdog_interval
from appliance.daemon.state import StateStore
from appliance.engine import Backend, Engine, LinkBackend
from appliance.errors import ApplianceError, ProfileError, UsageError
from appliance.model.profile import Profile
from appliance.reconcile.plan import Plan, kept_runtime_elements
from appliance.reconcile.segments import SegmentPlan
from appliance.reconcile.state import (
    DYNAMIC_SETS,
    Desired,
    Observed,
    managed_tags,
    wanted_elements,
)
from appliance.units import parse_duration

if TYPE_CHECKING:  # the hub's modules (and cryptography) load only with a [hub]
    from appliance.sync.bundle import Bundle
    from appliance.sync.client import HubClient, SyncResult

T = TypeVar("T")

SOURCE_PROFILE = "profile"
SOURCE_LAST_GOOD = "last_good"
SOURCE_FAILSAFE = "failsafe"
SOURCE_HUB = "hub"
RETRY_MAX_SECONDS = 300.0  # a profile the kernel refused at boot: tried again at least this often


class DaemonBackend(Backend, Protocol):
    def list_counters(self) -> dict[str, tuple[int, int]]: ...


@dataclass
class DaemonConfig:
    profile: str
    state_dir: str
    control_socket: str
    resync_interval: float = 10.0
    confirm_seconds: float | None = None  # a reload not confirmed in time is rolled back
    metrics_listen: str | None = None  # overrides [metrics].listen
    monitor: bool = True  # also watch `nft monitor` for changes by other processes
    alerts: str | None = None  # overrides [inspect].alerts
    inspect_queue: int = 8192  # packets between capture and the inspection engine


@dataclass
class Policy:
    """What the daemon enforces and where it came from."""

    desired: Desired
    source: str
    metrics_listen: str | None
    table_hash: str = ""  # computed once, in the kernel worker (large sets take a while)
    profile: Profile | None = None  # the profile it was compiled from (drives inspection)
    bundle_version: int | None = None  # the hub bundle it came in

    def __post_init__(self) -> None:
        if not self.table_hash:
            self.table_hash = self.desired.table_hash


@dataclass
class PendingConfirm:
    previous: Policy
    deadline: float
    handle: asyncio.TimerHandle | None = None


@dataclass
class Outcome:
    """What one reconcile found and did (computed in the kernel worker)."""

    plan: Plan
    observed: Observed
    counts: dict[str, int] = field(default_factory=dict)
    segments: SegmentPlan | None = None  # the segments' links: what was changed


def load_policy(path: str) -> Policy:
    """Profile file -> the policy to enforce (compiled, hashed). ProfileError if invalid;
    KernelError if it needs a kernel feature this kernel lacks (inline inspection)."""
    from appliance.model.parse import load_profile

    return policy_from_profile(path, load_profile(path))


def policy_from_profile(path: str, profile: Profile) -> Policy:
    """A parsed profile -> the policy to enforce (as :func:`load_policy`)."""
    from appliance.probe import require_kernel_support

    desired, listen = _compile(path, profile)
    require_kernel_support(profile, path)
    return Policy(desired, SOURCE_PROFILE, listen, profile=profile)


def hub_only(profile: Profile) -> bool:
    """A local profile that leaves the policy to the hub (``version``, ``name``, ``[hub]``,
    ``[metrics]``): nothing of its own to enforce."""
    return profile.hub is not None and not profile.has_policy


def load_local(path: str) -> Profile:
    """The local profile, parsed and validated (ProfileError if invalid)."""
    from appliance.model.parse import load_profile

    return load_profile(path)


def bundle_policy(bundle: Bundle, metrics_listen: str | None) -> Policy:
    """A verified bundle -> the policy to enforce: its profile's table, the profile's set
    elements tagged ``profile`` and the hub's tagged ``hub`` (KernelError if it needs a
    kernel feature this kernel lacks; CompileError as ProfileError)."""
    from appliance.compile.ruleset import CompileError
    from appliance.probe import require_kernel_support
    from appliance.reconcile.state import desired_with_hub

    where = f"bundle version {bundle.version}"
    try:
        desired = desired_with_hub(bundle.profile, bundle.effective_profile())
    except CompileError as exc:
        raise ProfileError(where, exc.key, str(exc)) from None
    require_kernel_support(bundle.profile, where)
    return Policy(
        desired, SOURCE_HUB, metrics_listen, profile=bundle.profile, bundle_version=bundle.version
    )


def load_desired(path: str) -> tuple[Desired, str | None]:
    """Profile file -> compiled table and its metrics address. ProfileError if invalid."""
    from appliance.model.parse import load_profile

    return _compile(path, load_profile(path))


def _compile(path: str, profile: Profile) -> tuple[Desired, str | None]:
    from appliance.compile.ruleset import CompileError
    from appliance.reconcile.state import desired_from_profile

    try:
        desired = desired_from_profile(profile)
    except CompileError as exc:
        raise ProfileError(path, exc.key, str(exc)) from None
    return desired, profile.metrics.listen if profile.metrics else None


def drift_kind(plan: Plan, segments: SegmentPlan | None = None) -> str | None:
    if plan.create:
        return "table_missing"
    if plan.swap:
        return "structure"
    if plan.changed:
        return "elements"
    if segments is not None and segments.changed:
        return "segments"
    return None


def set_counts(desired: Desired, observed: Observed, plan: Plan) -> dict[str, int]:
    """Element counts per set once ``plan`` is carried out: profile elements plus the
    run-time elements the kernel held (those a swap carries across)."""
    counts: dict[str, int] = {}
    tags = managed_tags(desired)
    for name in desired.types:
        if name in DYNAMIC_SETS:
            continue
        wanted = wanted_elements(desired, name)
        if plan.create:
            runtime = 0
        elif plan.swap:
            runtime = len(kept_runtime_elements(desired, observed, name))
        else:
            have = observed.elements.get(name, {})
            runtime = sum(
                1 for text, elem in have.items() if text not in wanted and elem.comment not in tags
            )
        counts[name] = len(wanted) + runtime
    return counts


class Daemon:
    def __init__(
        self,
        config: DaemonConfig,
        backend: DaemonBackend,
        *,
        notifier: Notifier | None = None,
        registry: CollectorRegistry | None = None,
        logger: logging.Logger | None = None,
        store: StateStore | None = None,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
        links: LinkBackend | None = None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.engine = Engine(backend, links)
        self.notifier = notifier or Notifier()
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.log = logger or logging.getLogger("appliance.daemon")
        self.store = store or StateStore(config.state_dir)
        self.wall_clock = wall_clock
        self.clock = clock
        self.started = clock()

        self.policy: Policy | None = None
        self.applied_at: float | None = None
        self.last_error: str | None = None
        self.generation = 0
        self.counts: dict[str, int] = {}
        # set -> element -> when its timeout ends (monotonic; None: no timeout)
        self.runtime_added: dict[str, dict[str, float | None]] = {}
        self.drift_repairs: dict[str, int] = {}
        self.segments_waiting: list[str] = []  # segments whose parent link is not there yet
        self.pending: PendingConfirm | None = None
        # The profile's policy when the kernel refused it at boot (a transient failure: a
        # link in the way, a module that failed to load): retried at read-backs, backing off.
        self._refused: Policy | None = None
        self._refused_tries = 0
        self._refused_next = 0.0
        self.metrics_address: tuple[str, int] | None = None

        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel")
        self._wake = asyncio.Event()
        self._stop = False
        self._reload = False
        self._resync = False
        self._revert = False
        self._control = ControlServer(self.handle_request)
        self.metrics = Metrics(
            self.registry,
            read_counters=lambda: self._kernel(self.backend.list_counters),
            set_counts=self.current_counts,
            clock=clock,
        )
        self._metrics_server = MetricsServer(self.metrics)
        self._metrics_listen: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._monitor = TableMonitor(self._foreign_change, os.getpid(), self.log)
        self._monitor_hint: asyncio.TimerHandle | None = None
        self.inspection: LiveInspection | None = None
        self._inspection_key: str | None = None
        self.inspection_error: str | None = None
        # The hub: the client (None without a [hub] in the local profile), its poll interval,
        # and what status shows of the last sync.
        self.hub: HubClient | None = None
        self.hub_poll = 30.0
        self.hub_error: str | None = None  # the client could not be set up
        self.hub_last: SyncResult | None = None
        self.hub_last_success: float | None = None
        self.hub_syncs: dict[str, int] = {}
        self._policy_lock = asyncio.Lock()  # a tick and a bundle apply, one at a time

    # ---- events: they only set flags and wake the loop ------------------------------

    def request_stop(self) -> None:
        self._stop = True
        self._wake.set()

    def request_reload(self) -> None:
        self._reload = True
        self._wake.set()

    def request_resync(self) -> None:
        self._resync = True
        self._wake.set()

    def _foreign_change(self) -> None:
        """Another process changed the table: read it back soon (at most 5 times a second)."""
        if self._monitor_hint is None:
            self._monitor_hint = asyncio.get_running_loop().call_later(0.2, self._hinted_resync)

    def _hinted_resync(self) -> None:
        self._monitor_hint = None
        self.request_resync()

    def _request_revert(self) -> None:
        self._revert = True
        self._wake.set()

    # ---- the loop ----------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            await self._control.start(self.config.control_socket)
            await self.boot()
            self.notifier.ready(self.status_line())
            self.log.info("ready", extra=self._policy_fields())
            self._tasks.append(asyncio.create_task(self._resync_timer()))
            if self.config.monitor:
                await self._monitor.start()
            interval = watchdog_interval()
            if interval:
                self._tasks.append(asyncio.create_task(self._watchdog(interval)))
            if self.hub is not None:
                self._tasks.append(asyncio.create_task(self._hub_loop()))
            while not self._stop:
                await self._wake.wait()
                self._wake.clear()
                try:
                    async with self._policy_lock:
                        await self.tick()
                except Exception as exc:  # a bug must not take enforcement's keeper down
                    self.log.exception("tick failed", extra={"error": repr(exc)})
        finally:
            self.notifier.stopping("stopping; the table stays enforced")
            self.log.info("stopping; the table stays in the kernel", extra=self._policy_fields())
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self.pending and self.pending.handle:
                self.pending.handle.cancel()
            if self._monitor_hint is not None:
                self._monitor_hint.cancel()
            await self._monitor.stop()
            await self._stop_inspection()
            if self.hub is not None:
                self.hub.close()
            await self._control.close()
            await self._metrics_server.close()
            self._executor.shutdown(wait=True)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        return 0

    async def tick(self) -> None:
        """One pass over what is dirty, in a fixed order."""
        if self._stop:
            return
        if self._reload:
            self._reload = False
            await self.reload()
        if self._revert:
            self._revert = False
            await self.revert_unconfirmed()
        if self._resync:
            self._resync = False
            await self.resync()

    async def _resync_timer(self) -> None:
        while True:
            await asyncio.sleep(self.config.resync_interval)
            self.request_resync()

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def _kernel(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func`` in the kernel worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    # ---- boot, reload, confirm ------------------------------------------------------

    async def boot(self) -> None:
        local: Profile | None = None
        try:
            local = await self._kernel(load_local, self.config.profile)
        except ApplianceError as exc:
            self._error(f"profile not enforced: {exc}")
        if local is not None and local.hub is not None:
            await self._start_hub(local)
            if await self._enforce_last_bundle(local):
                await self._update_metrics_listener()
                return
        if local is not None and not hub_only(local):
            try:
                policy = await self._kernel(policy_from_profile, self.config.profile, local)
            except ApplianceError as exc:
                self._error(f"profile not enforced: {exc}")
            else:
                if await self.enforce(policy):
                    self.last_error = None
                    await self._save_last_good()
                    await self._update_metrics_listener()
                    return
                self._refused = policy
                self._refused_next = self.clock() + self.config.resync_interval
        try:
            last_good = await self._kernel(self.store.load_last_good)
        except ValueError as exc:
            self.log.error("last good state unusable", extra={"error": str(exc)})
            last_good = None
        if last_good is not None:
            policy = await self._kernel(
                Policy, last_good.desired, SOURCE_LAST_GOOD, last_good.metrics_listen
            )
            if await self.enforce(policy, keep_error=True):
                await self._update_metrics_listener()
                return
        # With a [hub], the failsafe serves the local [metrics] while it waits for a bundle.
        hub_listen = None
        if local is not None and local.hub is not None and local.metrics is not None:
            hub_listen = local.metrics.listen
        listen = self.config.metrics_listen or hub_listen
        port = _port(listen) if listen else DEFAULT_METRICS_PORT
        if not await self.enforce(
            Policy(failsafe_desired(port), SOURCE_FAILSAFE, hub_listen), keep_error=True
        ):
            self.log.critical("even the failsafe policy was refused; the kernel keeps its table")
        await self._update_metrics_listener()

    async def reload(self) -> None:
        self.notifier.reloading("reloading the profile")
        self.log.info("reloading", extra={"profile": self.config.profile})
        self._refused = None  # the profile as it is now supersedes the one refused at boot
        try:
            if self.policy is not None and self.policy.source == SOURCE_HUB:
                await self._reload_under_hub()
                return
            try:
                policy = await self._kernel(load_policy, self.config.profile)
            except ApplianceError as exc:
                self._error(f"reload refused, the running policy stays: {exc}")
                return
            if policy.profile is not None and hub_only(policy.profile):
                self.log.info("reload: a hub-only profile; the running policy stays")
                return
            previous = self.policy
            if not await self.enforce(policy):
                return
            self.last_error = None
            self.metrics.last_error.set(0)
            changed = previous is None or previous.table_hash != policy.table_hash
            if self.config.confirm_seconds and previous is not None and changed:
                self._arm_confirm(previous)
            elif self.pending is None:
                await self._save_last_good()
            await self._update_metrics_listener()
        finally:
            self.notifier.ready(self.status_line())

    def _arm_confirm(self, previous: Policy) -> None:
        assert self.config.confirm_seconds is not None
        if self.pending is not None:  # a second reload keeps the first rollback target
            previous = self.pending.previous
            if self.pending.handle:
                self.pending.handle.cancel()
        seconds = self.config.confirm_seconds
        handle = asyncio.get_running_loop().call_later(seconds, self._request_revert)
        self.pending = PendingConfirm(previous, self.wall_clock() + seconds, handle)
        self.log.warning(
            "reload applied; rolls back unless confirmed", extra={"confirm_seconds": seconds}
        )

    async def confirm(self) -> bool:
        if self.pending is None:
            return False
        if self.pending.handle:
            self.pending.handle.cancel()
        self.pending = None
        await self._save_last_good()
        self.log.info("reload confirmed", extra=self._policy_fields())
        return True

    async def revert_unconfirmed(self) -> None:
        if self.pending is None:
            return
        previous = self.pending.previous
        self.pending = None
        if await self.enforce(previous):
            self._error(
                f"reload not confirmed in {self.config.confirm_seconds:g}s: "
                f"rolled back to {previous.desired.name} ({previous.table_hash})"
            )
            await self._update_metrics_listener()

    async def _reload_under_hub(self) -> None:
        """A bundle is enforced: it stays. The local profile is checked, and its
        ``[metrics]`` taken (its ``[hub]`` is read at start)."""
        try:
            local = await self._kernel(load_local, self.config.profile)
        except ApplianceError as exc:
            self._error(f"reload refused, the hub's bundle stays: {exc}")
            return
        listen = local.metrics.listen if local.metrics else None
        if self.policy is not None and listen != self.policy.metrics_listen:
            self.policy = dataclasses.replace(self.policy, metrics_listen=listen)
            await self._update_metrics_listener()
        self.log.info("reload: the hub's bundle stays enforced", extra=self._policy_fields())

    # ---- the hub -------------------------------------------------------------------

    async def _start_hub(self, local: Profile) -> None:
        from appliance.sync.client import HubClient
        from appliance.sync.keys import KeyFileError

        assert local.hub is not None
        try:
            self.hub = HubClient.from_profile(local, self.config.state_dir, clock=self.wall_clock)
        except (KeyFileError, OSError, ValueError) as exc:
            self.hub_error = f"hub client not started: {exc}"
            self._error(self.hub_error)
            return
        self.hub_poll = local.hub.poll

    async def _enforce_last_bundle(self, local: Profile) -> bool:
        """Boot: enforce the last good bundle, stale or not. False if there is none (or it
        no longer verifies, or the kernel refuses it)."""
        hub = self.hub
        if hub is None:
            return False
        stored = await self._kernel(hub.load_last_good)
        if stored is None:
            if hub.last_error:
                self._error(f"last good bundle not enforced: {hub.last_error}")
            return False
        listen = local.metrics.listen if local.metrics else None
        try:
            policy = await self._kernel(bundle_policy, stored.bundle, listen)
        except ApplianceError as exc:
            self._error(f"last good bundle not enforced: {exc}")
            return False
        if not await self.enforce(policy):
            return False
        self.last_error = None
        self.metrics.last_error.set(0)
        self._hub_gauges()
        return True

    async def _hub_loop(self) -> None:
        """Poll at start, then every ``[hub].poll`` (right away again after a long poll;
        backoff after transport failures). Never raises; never flushes anything."""
        hub = self.hub
        assert hub is not None
        while True:
            try:
                sync = await hub.poll_once()
                if sync.pending and sync.bundle is not None:
                    async with self._policy_lock:
                        sync = await self._apply_bundle(sync)
                else:
                    await hub.report(sync, self._table_hash())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not stop the polling
                self.log.exception("hub sync failed", extra={"error": repr(exc)})
                await asyncio.sleep(self.hub_poll)
                continue
            self._record_sync(sync)
            await asyncio.sleep(hub.next_delay(sync, self.hub_poll))

    async def _apply_bundle(self, sync: SyncResult) -> SyncResult:
        """Apply a verified bundle; keep it only if the hub is still reachable afterwards."""
        hub = self.hub
        bundle = sync.bundle
        assert hub is not None and bundle is not None
        previous = self.policy
        listen = previous.metrics_listen if previous else None
        if previous is not None and previous.source != SOURCE_HUB:
            listen = await self._local_metrics_listen()
        try:
            policy = await self._kernel(bundle_policy, bundle, listen)
        except ApplianceError as exc:
            return await hub.apply_failed(sync, str(exc), self._table_hash())
        if not await self.enforce(policy, keep_error=True):
            return await hub.apply_failed(sync, self.last_error or "refused", self._table_hash())
        if not await hub.check_reachable():
            error = f"hub unreachable after applying version {bundle.version}: rolled back"
            if previous is not None:
                await self.enforce(previous, keep_error=True)
            self.log.warning(error, extra=self._policy_fields())
            return await hub.rolled_back(sync, error, self._table_hash())
        self.last_error = None
        self.metrics.last_error.set(0)
        await self._update_metrics_listener()
        self.log.info(
            "hub bundle applied", extra={**self._policy_fields(), "bundle": bundle.version}
        )
        return await hub.applied(sync, policy.table_hash)

    async def _local_metrics_listen(self) -> str | None:
        try:
            local = await self._kernel(load_local, self.config.profile)
        except ApplianceError:
            return self.policy.metrics_listen if self.policy else None
        return local.metrics.listen if local.metrics else None

    def _record_sync(self, sync: SyncResult) -> None:
        self.hub_last = sync
        self.hub_syncs[sync.result] = self.hub_syncs.get(sync.result, 0) + 1
        self.metrics.hub_sync.labels(result=sync.result).inc()
        if sync.ok:
            self.hub_last_success = self.wall_clock()
            self.metrics.hub_last_success.set(self.hub_last_success)
        elif not sync.repeated or self.hub_syncs[sync.result] == 1:
            self.log.warning(
                "hub sync: nothing changed",
                extra={"result": sync.result, "error": sync.error, "bundle": sync.version},
            )
        self._hub_gauges()

    def _hub_gauges(self) -> None:
        hub = self.hub
        if hub is None:
            return
        self.metrics.hub_stale.set(1 if hub.stale else 0)
        if self.policy is not None and self.policy.bundle_version is not None:
            self.metrics.policy_version.set(self.policy.bundle_version)

    def _table_hash(self) -> str:
        return self.policy.table_hash if self.policy else ""

    def hub_status(self) -> dict[str, Any] | None:
        hub = self.hub
        if hub is None:
            return {"error": self.hub_error} if self.hub_error else None
        last = self.hub_last
        return {
            "url": hub.url,
            "version": hub.running_version,
            "enforced": self.policy is not None and self.policy.source == SOURCE_HUB,
            "stale": hub.stale,
            "expires": hub.running.bundle.expires_text if hub.running else None,
            "result": last.result if last else None,
            "error": (last.error or None) if last else (hub.last_error or None),
            "offered": last.offered if last else None,
            "last_sync": last.time if last else None,
            "last_success": self.hub_last_success,
            "syncs": dict(sorted(self.hub_syncs.items())),
            "poll_seconds": self.hub_poll,
            "long_poll": hub.long_poll_max > 0,
        }

    # ---- applying and repairing ----------------------------------------------------

    def _reconcile(self, desired: Desired) -> Outcome:
        """Observe, plan and run the one transaction, segments' links around it (in the
        kernel worker)."""
        plan, observed, segments = self.engine.converge(desired)
        return Outcome(plan, observed, set_counts(desired, observed, plan), segments)

    async def enforce(self, policy: Policy, keep_error: bool = False) -> bool:
        """Bring the kernel to ``policy``. False (and the error recorded) if refused."""
        started = self.clock()
        try:
            outcome = await self._kernel(self._reconcile, policy.desired)
        except ApplianceError as exc:
            self.metrics.apply_total.labels(result="failed").inc()
            self._error(f"apply of {policy.desired.name} ({policy.source}) refused: {exc}")
            return False
        elapsed = self.clock() - started
        self.metrics.apply_seconds.observe(elapsed)
        self.metrics.apply_total.labels(result="ok").inc()
        changed_policy = self.policy is None or self.policy.table_hash != policy.table_hash
        if changed_policy:
            self.generation += 1
        self.policy = policy
        self._forget_expired()
        self.counts = outcome.counts
        self._note_waiting(outcome.segments)
        segments_changed = outcome.segments is not None and outcome.segments.changed
        if outcome.plan.changed or segments_changed or self.applied_at is None:
            self.applied_at = self.wall_clock()
        self.metrics.set_policy(
            policy.desired.name, policy.table_hash, policy.source, self.generation
        )
        if policy.bundle_version is not None:
            self.metrics.policy_version.set(policy.bundle_version)
        if not keep_error:
            self.metrics.last_error.set(0)
        await self._update_inspection(policy)
        self.log.info(
            "policy enforced",
            extra={
                **self._policy_fields(),
                "changed": outcome.plan.changed,
                "swap": outcome.plan.swap or outcome.plan.create,
                "seconds": round(elapsed, 4),
            },
        )
        return True

    async def resync(self) -> None:
        """Read the table back; repair whatever someone else changed. A profile the kernel
        refused at boot is tried again first (at read-backs 1, 2, 4, ... apart, at most
        every 5 minutes)."""
        retry = self._refused is not None and self.clock() >= self._refused_next
        if retry and await self._retry_refused():
            return
        if self.policy is None:
            return
        desired = self.policy.desired
        table_hash = self.policy.table_hash
        try:
            outcome = await self._kernel(self._reconcile, desired)
        except ApplianceError as exc:
            self.metrics.apply_total.labels(result="failed").inc()
            self._error(f"drift repair refused: {exc}")
            return
        self._forget_expired()
        self.counts = outcome.counts
        self._note_waiting(outcome.segments)
        kind = drift_kind(outcome.plan, outcome.segments)
        if kind is None:
            return
        self.drift_repairs[kind] = self.drift_repairs.get(kind, 0) + 1
        self.metrics.drift_repairs.labels(kind=kind).inc()
        self.metrics.apply_total.labels(result="ok").inc()
        self.log.warning(
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
        policy = self._refused
        assert policy is not None
        self._refused_tries += 1
        delay = min(RETRY_MAX_SECONDS, self.config.resync_interval * 2**self._refused_tries)
        self._refused_next = self.clock() + delay
        if not await self.enforce(policy):
            return False
        self._refused = None
        self._refused_tries = 0
        self.last_error = None
        self.metrics.last_error.set(0)
        await self._save_last_good()
        await self._update_metrics_listener()
        self.log.info("the profile refused at boot is enforced now", extra=self._policy_fields())
        return True

    def _note_waiting(self, segments: SegmentPlan | None) -> None:
        """Segments that wait for their parent link: in status, and logged when it changes."""
        waiting = list(segments.waiting) if segments is not None else []
        if waiting != self.segments_waiting:
            for line in waiting:
                if line not in self.segments_waiting:
                    self.log.warning(line)
            self.segments_waiting = waiting
            self.metrics.segments_waiting.set(len(waiting))

    # ---- live inspection ------------------------------------------------------------

    async def _update_inspection(self, policy: Policy) -> None:
        """Run the inspection the enforced policy's profile asks for (none for a last good
        or failsafe policy); restart it only when what it depends on changed."""
        profile = policy.profile
        mode = profile.inspect.mode if profile is not None else "off"
        if profile is None or mode not in LIVE_MODES:
            await self._stop_inspection()
            return
        key = await asyncio.get_running_loop().run_in_executor(
            None, settings_key, profile, self.config.alerts
        )
        if key == self._inspection_key and self.inspection is not None:
            return
        await self._stop_inspection()
        live = LiveInspection(
            profile,
            metrics=self.metrics,
            block=self.autoblock,
            logger=self.log,
            alerts=self.config.alerts,
            queue_size=self.config.inspect_queue,
        )
        try:
            live.start(asyncio.get_running_loop())
        except (ApplianceError, OSError) as exc:
            self.inspection_error = f"inspection not started: {exc}"
            self.log.error(self.inspection_error)
            return
        self.inspection = live
        self._inspection_key = key
        self.inspection_error = None

    async def _stop_inspection(self) -> None:
        live, self.inspection, self._inspection_key = self.inspection, None, None
        if live is not None:
            await live.stop()

    async def autoblock(self, source: str) -> None:
        """Block ``source`` for ``[protect].block_timeout``: the answer to a detection, through
        the same path as ``appliance set add``."""
        name = "autoblock_v6" if ":" in source else "autoblock_v4"
        profile = self.policy.profile if self.policy else None
        timeout = profile.protect.block_timeout if profile is not None else None
        await self.set_add(name, [source], timeout)

    # ---- run-time sets -------------------------------------------------------------

    async def set_add(self, name: str, values: list[str], timeout: float | None) -> None:
        await self._kernel(self.engine.set_add, name, values, timeout)
        added = self.runtime_added.setdefault(name, {})
        fresh = [v for v in values if v not in added]
        until = None if timeout is None else self.clock() + timeout
        for value in values:
            added[value] = until
        self.counts[name] = self.counts.get(name, 0) + len(fresh)
        self.log.info("set add", extra={"set": name, "elements": len(values)})

    async def set_del(self, name: str, values: list[str]) -> None:
        await self._kernel(self.engine.set_del, name, values)
        added = self.runtime_added.get(name, {})
        for value in values:
            added.pop(value, None)
        self.counts[name] = max(0, self.counts.get(name, 0) - len(values))
        self.log.info("set del", extra={"set": name, "elements": len(values)})

    def _forget_expired(self) -> None:
        """Drop run-time elements whose timeout has passed from the bookkeeping, and from
        the element counts (the kernel has removed them; the next read-back confirms it)."""
        now = self.clock()
        for name, added in list(self.runtime_added.items()):
            expired = [v for v, until in added.items() if until is not None and until <= now]
            for value in expired:
                del added[value]
            if expired and name in self.counts:
                self.counts[name] = max(0, self.counts[name] - len(expired))
            if not added:
                del self.runtime_added[name]

    def current_counts(self) -> dict[str, int]:
        """Element counts per set as of now (expired run-time elements taken off)."""
        self._forget_expired()
        return self.counts

    # ---- the control socket ----------------------------------------------------------

    async def handle_request(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "status":
            return {"ok": True, "status": self.status()}
        if op in ("set_add", "set_del", "set_list"):
            name = request.get("set")
            if not isinstance(name, str):
                raise UsageError("set: a set name is required")
            if op == "set_list":
                info = await self._kernel(self.engine.set_info, name)
                elements = [
                    {"text": e.text, "expires": e.expires}
                    for e in sorted(info.elements, key=lambda e: e.text)
                ]
                return {"ok": True, "set": name, "type": info.type, "elements": elements}
            values = request.get("elements")
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise UsageError("set: elements must be a list of strings")
            if op == "set_del":
                await self.set_del(name, values)
                return {"ok": True}
            timeout = request.get("timeout")
            if isinstance(timeout, str):
                try:
                    timeout = parse_duration(timeout)
                except ValueError as exc:
                    raise UsageError(f"--timeout: {exc}") from None
            if timeout is not None and not isinstance(timeout, (int, float)):
                raise UsageError("set: timeout must be a duration")
            await self.set_add(name, values, float(timeout) if timeout is not None else None)
            return {"ok": True}
        if op == "confirm":
            if await self.confirm():
                return {"ok": True}
            return {"ok": False, "error": "nothing to confirm", "exit": 1}
        if op == "resync":
            self.request_resync()
            return {"ok": True}
        raise UsageError(f"unknown request {op!r}")

    def status(self) -> dict[str, Any]:
        policy = self.policy
        return {
            "version": __version__,
            "pid": os.getpid(),
            "policy": policy.desired.name if policy else None,
            "table_hash": policy.table_hash if policy else None,
            "source": policy.source if policy else None,
            "generation": self.generation,
            "profile": self.config.profile,
            "applied_at": self.applied_at,
            "last_error": self.last_error,
            "sets": {
                name: count
                for name, count in sorted(self.current_counts().items())
                if not name.startswith("ap_")
            },
            "runtime_elements": {
                name: len(items) for name, items in sorted(self.runtime_added.items()) if items
            },
            "drift_repairs": dict(sorted(self.drift_repairs.items())),
            "segments": (
                sorted(s.name for s in policy.desired.segments)
                if policy and policy.desired.segments is not None
                else None
            ),
            "segments_waiting": list(self.segments_waiting),
            "inspect": self._inspection_status(),
            "confirm_pending_until": self.pending.deadline if self.pending else None,
            "hub": self.hub_status(),
            "metrics_listen": (
                f"{self.metrics_address[0]}:{self.metrics_address[1]}"
                if self.metrics_address
                else None
            ),
            "uptime_seconds": round(self.clock() - self.started, 3),
            "rss_bytes": rss_bytes(),
        }

    def _inspection_status(self) -> dict[str, Any]:
        if self.inspection is not None:
            return self.inspection.status()
        profile = self.policy.profile if self.policy else None
        mode = profile.inspect.mode if profile is not None else "off"
        return {"mode": mode, "running": False, "error": self.inspection_error}

    def status_line(self) -> str:
        if self.policy is None:
            return "no policy enforced"
        line = f"enforcing {self.policy.desired.name} ({self.policy.source})"
        if self.last_error:
            line += f"; error: {self.last_error}"
        return line

    # ---- helpers -----------------------------------------------------------------------

    def _error(self, message: str) -> None:
        self.last_error = message
        self.metrics.last_error.set(1)
        self.log.error(message, extra=self._policy_fields())

    def _policy_fields(self) -> dict[str, object]:
        if self.policy is None:
            return {}
        return {
            "policy": self.policy.desired.name,
            "table_hash": self.policy.table_hash,
            "source": self.policy.source,
        }

    async def _save_last_good(self) -> None:
        policy = self.policy
        if policy is None or policy.source != SOURCE_PROFILE:
            return
        try:
            await self._kernel(
                functools.partial(
                    self.store.save_last_good,
                    policy.desired,
                    policy.metrics_listen,
                    self.config.profile,
                    table_hash=policy.table_hash,
                )
            )
        except OSError as exc:
            self.log.error("cannot save the last good policy", extra={"error": str(exc)})

    async def _update_metrics_listener(self) -> None:
        listen = self.config.metrics_listen or (self.policy.metrics_listen if self.policy else None)
        if listen == self._metrics_listen:
            return
        await self._metrics_server.close()
        self._metrics_listen = listen
        self.metrics_address = None
        if not listen:
            return
        host, _, port = listen.rpartition(":")
        try:
            self.metrics_address = await self._metrics_server.start(host.strip("[]"), int(port))
        except (OSError, ValueError) as exc:
            self.log.error("metrics: cannot listen", extra={"listen": listen, "error": str(exc)})
            self._metrics_listen = None
            return
        self.log.info("metrics listening", extra={"listen": listen})


def _port(listen: str) -> int | None:
    try:
        return int(listen.rpartition(":")[2])
    except ValueError:
        return None


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def run_daemon(config: DaemonConfig) -> int:
    """``appliance run``: JSON logs on stderr, the kernel backend, notify from the env."""
    from appliance.adapters.links import LinkBackend
    from appliance.adapters.nft import NftBackend
    from appliance.daemon.jsonlog import setup_logging

    logger = setup_logging()
    daemon = Daemon(
        config,
        NftBackend(),
        notifier=Notifier.from_env(),
        registry=CollectorRegistry(auto_describe=True),
        logger=logger,
        links=LinkBackend(),
    )
    return asyncio.run(daemon.run())
