"""What the daemon's managers share: the configuration, the kernel worker, the clocks, the
metrics, and the facts every manager reads (the policy enforced, its generation, the last
error). Each fact has one place; the last error and its gauge change together."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from appliance.daemon.defaults import INSPECT_QUEUE, RESYNC_INTERVAL
from appliance.daemon.metrics import Metrics
from appliance.daemon.notify import Notifier
from appliance.daemon.policies import DaemonBackend, Outcome, Policy
from appliance.daemon.state import StateStore
from appliance.engine import Engine

T = TypeVar("T")


@dataclass
class DaemonConfig:
    profile: str
    state_dir: str
    control_socket: str
    resync_interval: float = RESYNC_INTERVAL
    confirm_seconds: float | None = None  # a reload not confirmed in time is rolled back
    metrics_listen: str | None = None  # overrides [metrics].listen
    monitor: bool = True  # also watch the kernel's nf_tables events for changes by others
    alerts: str | None = None  # overrides [inspect].alerts
    inspect_queue: int = INSPECT_QUEUE  # packets between capture and the inspection engine


PolicyListener = Callable[[Policy | None, Policy], Awaitable[None]]


class Context:
    """The daemon's shared state; the loop and every manager hold the same one."""

    def __init__(
        self,
        config: DaemonConfig,
        backend: DaemonBackend,
        engine: Engine,
        metrics: Metrics,
        log: logging.Logger,
        store: StateStore,
        notifier: Notifier,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.backend = backend
        self.engine = engine
        self.metrics = metrics
        self.log = log
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self.wall_clock = wall_clock
        self.started = clock()
        self.policy: Policy | None = None
        self.applied_at: float | None = None
        self.generation = 0
        self.last_error: str | None = None
        self.tick_started: float | None = None  # a tick under way since (monotonic)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel")
        self.policy_lock = asyncio.Lock()  # a tick and a bundle apply, one at a time
        self.on_policy: PolicyListener | None = None  # the loop hands new policies around
        self.on_outcome: Callable[[Outcome], None] = lambda outcome: None  # and reconciles
        self.request_resync: Callable[[], None] = lambda: None  # read the kernel back soon
        self.wake: Callable[[], None] = lambda: None  # run a tick

    async def kernel(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func`` in the kernel worker thread (a libnftables context is not shared
        between threads)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    def fail(self, message: str) -> None:
        """Record ``message`` as the last error (status, the gauge, the log)."""
        self.last_error = message
        self.metrics.last_error.set(1)
        self.log.error(message, extra=self.policy_fields())

    def clear_error(self) -> None:
        self.last_error = None
        self.metrics.last_error.set(0)

    async def set_policy(self, policy: Policy) -> None:
        """``policy`` is what the kernel holds now: every manager hears of it."""
        old, self.policy = self.policy, policy
        self.metrics.flow_offload.set(1 if policy.offloaded else 0)
        if self.on_policy is not None:
            await self.on_policy(old, policy)

    @property
    def table_hash(self) -> str:
        return self.policy.table_hash if self.policy else ""

    def policy_fields(self) -> dict[str, object]:
        if self.policy is None:
            return {}
        return {
            "policy": self.policy.desired.name,
            "table_hash": self.policy.table_hash,
            "source": self.policy.source,
        }
