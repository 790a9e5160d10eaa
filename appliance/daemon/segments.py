"""Segments in the daemon: which segments wait for their parent link (status, metrics, a
log line when that changes). Their links are made and repaired with the table."""

from __future__ import annotations

from appliance.daemon.context import Context
from appliance.daemon.manager import Manager
from appliance.daemon.policies import Outcome


class Segments(Manager):
    name = "segments"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.waiting: list[str] = []  # segments whose parent link is not there yet

    def observed(self, outcome: Outcome) -> None:
        waiting = list(outcome.segments.waiting) if outcome.segments is not None else []
        if waiting == self.waiting:
            return
        for line in waiting:
            if line not in self.waiting:
                self.ctx.log.warning(line)
        self.waiting = waiting
        self.ctx.metrics.segments_waiting.set(len(waiting))

    def names(self) -> list[str] | None:
        """The enforced policy's segments (None: it leaves segment links as they are)."""
        policy = self.ctx.policy
        if policy is None or policy.desired.segments is None:
            return None
        return sorted(s.name for s in policy.desired.segments)
