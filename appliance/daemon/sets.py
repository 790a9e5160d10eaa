"""Run-time sets: elements added and removed while the daemon runs (``appliance set``,
automatic blocks), and the element counts per set that status and metrics show."""

from __future__ import annotations

from appliance.adapters.conntrack import end_flows
from appliance.daemon.context import Context
from appliance.daemon.manager import Manager
from appliance.daemon.policies import Outcome
from appliance.model.profile import AUTOBLOCK_SETS


class RuntimeSets(Manager):
    name = "sets"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.counts: dict[str, int] = {}
        # set -> element -> when its timeout ends (monotonic; None: no timeout)
        self.added: dict[str, dict[str, float | None]] = {}

    def observed(self, outcome: Outcome) -> None:
        self.forget_expired()
        self.counts = outcome.counts

    async def add(self, name: str, values: list[str], timeout: float | None) -> None:
        await self.ctx.kernel(self.ctx.engine.set_add, name, values, timeout)
        if name in AUTOBLOCK_SETS and self.ctx.policy and self.ctx.policy.offloaded:
            # An offloaded flow skips the forward hook and the block: end the source's flows.
            await self.ctx.kernel(end_flows, values, self.ctx.log)
        added = self.added.setdefault(name, {})
        fresh = [v for v in dict.fromkeys(values) if v not in added]
        until = None if timeout is None else self.ctx.clock() + timeout
        for value in values:
            added[value] = until
        self.counts[name] = self.counts.get(name, 0) + len(fresh)
        self.ctx.log.info("set add", extra={"set": name, "elements": len(values)})

    async def delete(self, name: str, values: list[str]) -> None:
        await self.ctx.kernel(self.ctx.engine.set_del, name, values)
        # The kernel refuses to delete an element it does not hold (nothing changes then):
        # once it has deleted them, each distinct value was one element.
        added = self.added.get(name, {})
        gone = dict.fromkeys(values)
        for value in gone:
            added.pop(value, None)
        self.counts[name] = max(0, self.counts.get(name, 0) - len(gone))
        self.ctx.log.info("set del", extra={"set": name, "elements": len(values)})

    async def autoblock(self, source: str) -> None:
        """Block ``source`` for ``[protect].block_timeout``: the answer to a detection, through
        the same path as ``appliance set add``."""
        name = "autoblock_v6" if ":" in source else "autoblock_v4"
        profile = self.ctx.policy.profile if self.ctx.policy else None
        timeout = profile.protect.block_timeout if profile is not None else None
        await self.add(name, [source], timeout)

    def forget_expired(self) -> None:
        """Drop run-time elements whose timeout has passed from the bookkeeping, and from
        the element counts (the kernel has removed them; the next read-back confirms it)."""
        now = self.ctx.clock()
        for name, added in list(self.added.items()):
            expired = [v for v, until in added.items() if until is not None and until <= now]
            for value in expired:
                del added[value]
            if expired and name in self.counts:
                self.counts[name] = max(0, self.counts[name] - len(expired))
            if not added:
                del self.added[name]

    def current_counts(self) -> dict[str, int]:
        """Element counts per set as of now (expired run-time elements taken off)."""
        self.forget_expired()
        return self.counts

    def status(self) -> tuple[dict[str, int], dict[str, int]]:
        """Element counts of the sets a user sees, and run-time elements per set."""
        sets = {
            name: count
            for name, count in sorted(self.current_counts().items())
            if not name.startswith("ap_")
        }
        runtime = {name: len(items) for name, items in sorted(self.added.items()) if items}
        return sets, runtime
