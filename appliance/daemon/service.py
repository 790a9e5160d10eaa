"""The daemon's loop: events mark work dirty, one tick at a time does it in a fixed order.

Events are a profile change (SIGHUP), a request on the control socket, the resync timer, a
change to the table by another process and the confirm deadline. Signal handlers and timers
only set flags and wake the loop. Every kernel call goes through one worker thread (see
:class:`~appliance.daemon.context.Context`), so the event loop keeps answering the control
socket and metrics while a large table is loaded.

Everything else is a manager (:mod:`appliance.daemon.manager`): the policy (boot, reload,
confirm, drift), run-time sets, segments, inspection, the hub, the control socket and the
metrics listener. Each newly enforced policy is handed to every manager as the old and the
new. The daemon never runs with an empty ruleset, and on SIGTERM it leaves the table in the
kernel (fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from appliance.daemon.context import Context, DaemonConfig
from appliance.daemon.hub import HubSync
from appliance.daemon.inspection import Inspection
from appliance.daemon.listener import MetricsListener
from appliance.daemon.manager import Manager
from appliance.daemon.metrics import Metrics, counter_reader
from appliance.daemon.monitor import TableMonitor
from appliance.daemon.notify import Notifier, watchdog_interval
from appliance.daemon.offloadlinks import OffloadLinks
from appliance.daemon.policies import DaemonBackend, Outcome, Policy
from appliance.daemon.policy import PolicyManager
from appliance.daemon.segments import Segments
from appliance.daemon.sets import RuntimeSets
from appliance.daemon.state import StateStore
from appliance.daemon.status import Control
from appliance.engine import Engine, LinkBackend
from appliance.model.profile import Profile

__all__ = ["Daemon", "DaemonConfig", "run_daemon"]

# How long the kernel worker may hold the interpreter while the loop waits for it (Python's
# default is 5 ms): a scrape or a control request needs it several times, and while a large
# set is parsed or read back a scrape took 11.5 ms at p50 with 5 ms, 2.9 ms with this.
SWITCH_SECONDS = 0.0005


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
        registry = registry or CollectorRegistry(auto_describe=True)
        sets: list[RuntimeSets] = []  # made once the context is; metrics read it from then on
        metrics = Metrics(
            registry,
            read_counters=counter_reader(backend, lambda read: self.ctx.kernel(read)),
            set_counts=lambda: sets[0].current_counts() if sets else {},
            clock=clock,
        )
        self.ctx = ctx = Context(
            config,
            backend,
            Engine(backend, links),
            metrics,
            logger or logging.getLogger("appliance.daemon"),
            store or StateStore(config.state_dir),
            notifier or Notifier(),
            clock=clock,
            wall_clock=wall_clock,
        )
        ctx.on_policy = self._configure
        ctx.on_outcome = self._observed
        ctx.request_resync = self.request_resync
        ctx.wake = self._wake_up
        self.policy = PolicyManager(ctx)
        self.sets = RuntimeSets(ctx)
        sets.append(self.sets)
        self.segments = Segments(ctx)
        self.inspection = Inspection(ctx, self.sets.autoblock)
        self.listener = MetricsListener(ctx)
        self.control = Control(
            ctx, self.policy, self.sets, self.segments, self.inspection, self.listener
        )
        self.hub: HubSync | None = None
        # The order in which a new policy is handed around, and work completed.
        self.managers: list[Manager] = [
            self.policy,
            self.sets,
            self.segments,
            OffloadLinks(ctx, self.policy.enforce),
            self.inspection,
            self.listener,
            self.control,
        ]
        self._wake = asyncio.Event()
        self._stop = False
        self._reload = False
        self._resync = False
        self._tasks: list[asyncio.Task[None]] = []
        self._monitor = TableMonitor(
            self._foreign_change,
            os.getpid(),
            ctx.log,
            on_error=lambda _reason: ctx.metrics.table_watch_errors.inc(),
            journal=ctx.engine.follow_events(),
        )
        self._monitor_hint: asyncio.TimerHandle | None = None

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

    def _wake_up(self) -> None:
        self._wake.set()

    def _foreign_change(self) -> None:
        """Another process changed the table: read it back soon (at most 5 times a second)."""
        if self._monitor_hint is None:
            self._monitor_hint = asyncio.get_running_loop().call_later(0.2, self._hinted_resync)

    def _hinted_resync(self) -> None:
        self._monitor_hint = None
        self.request_resync()

    # ---- what managers hear ------------------------------------------------------------

    async def _configure(self, old: Policy | None, new: Policy | None) -> None:
        for manager in self.managers:
            try:
                await manager.configure(old, new)
            except Exception as exc:  # one manager's bug must not stop the others
                self._manager_failed(manager, "configure", exc)

    def _observed(self, outcome: Outcome) -> None:
        for manager in self.managers:
            try:
                manager.observed(outcome)
            except Exception as exc:
                self._manager_failed(manager, "observed", exc)

    def _manager_failed(self, manager: Manager, step: str, exc: Exception) -> None:
        """A failure marks a resync: the next tick reads the kernel back."""
        self.ctx.log.exception(f"{manager.name}: {step} failed", extra={"error": repr(exc)})
        self.request_resync()

    async def _start_hub(self, local: Profile) -> HubSync:
        hub = HubSync(self.ctx, self.policy)
        hub.start(local)
        self.hub = hub
        self.managers.append(hub)
        return hub

    # ---- the loop ----------------------------------------------------------------------

    async def run(self) -> int:
        ctx = self.ctx
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            await self.control.start()
            await self.boot()
            ctx.notifier.ready(self.policy.status_line())
            ctx.log.info("ready", extra=ctx.policy_fields())
            self._tasks.append(asyncio.create_task(self._resync_timer()))
            if ctx.config.monitor:
                await self._monitor.start()
            interval = watchdog_interval()
            if interval:
                self._tasks.append(asyncio.create_task(self._watchdog(interval)))
            if self.hub is not None and self.hub.client is not None:
                self._tasks.append(asyncio.create_task(self.hub.run()))
            while not self._stop:
                await self._wake.wait()
                self._wake.clear()
                try:
                    async with ctx.policy_lock:
                        await self.tick()
                except Exception as exc:  # a bug must not take enforcement's keeper down
                    ctx.log.exception("tick failed", extra={"error": repr(exc)})
        finally:
            ctx.notifier.stopping("stopping; the table stays enforced")
            ctx.log.info("stopping; the table stays in the kernel", extra=ctx.policy_fields())
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self._monitor_hint is not None:
                self._monitor_hint.cancel()
            await self._monitor.stop()
            for manager in reversed(self.managers):
                await manager.close()
            ctx.executor.shutdown(wait=True)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        return 0

    async def boot(self) -> None:
        await self.policy.boot(self._start_hub)
        if self.ctx.policy is None:  # not even the failsafe: --metrics-listen still listens
            await self._configure(None, None)

    async def tick(self) -> None:
        """One pass over what is dirty, in a fixed order: reload, rollback, read-back, then
        the managers' deferred work."""
        if self._stop:
            return
        self.ctx.tick_started = self.ctx.clock()
        try:
            if self._reload:
                self._reload = False
                await self.policy.reload()
            if self.policy.revert_requested:
                await self.policy.revert_unconfirmed()
            if self._resync:
                self._resync = False
                await self.policy.resync()
            for manager in self.managers:
                try:
                    await manager.complete()
                except Exception as exc:
                    self._manager_failed(manager, "complete", exc)
        finally:
            self.ctx.tick_started = None

    async def _resync_timer(self) -> None:
        while True:
            await asyncio.sleep(self.ctx.config.resync_interval)
            self.request_resync()

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.ctx.notifier.watchdog()
            await asyncio.sleep(interval)


def run_daemon(config: DaemonConfig) -> int:
    """``appliance run``: JSON logs on stderr, the kernel backend, notify from the env."""
    from appliance.adapters.links import LinkBackend
    from appliance.adapters.nft import NftBackend
    from appliance.daemon.jsonlog import setup_logging

    logger = setup_logging()
    sys.setswitchinterval(SWITCH_SECONDS)
    daemon = Daemon(
        config,
        NftBackend(),
        notifier=Notifier.from_env(),
        registry=CollectorRegistry(auto_describe=True),
        logger=logger,
        links=LinkBackend(),
    )
    return asyncio.run(daemon.run())
