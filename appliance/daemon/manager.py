"""The one interface of the daemon's managers.

The loop owns the tick and the order; each manager owns one concern. A newly enforced
policy is handed to every manager as the old and the new (``configure``), and each decides
what it must redo; what a reconcile found goes to ``observed``; work a manager defers runs
in ``complete`` at the end of a tick. A manager that raises from any of them does not stop
the others: the loop logs it and marks a resync, so the next tick reads the kernel back.
"""

from __future__ import annotations

from appliance.daemon.policies import Outcome, Policy


class Manager:
    name = "manager"

    async def configure(self, old: Policy | None, new: Policy | None) -> None:
        """A policy is enforced (``new``), replacing ``old``: redo what depends on it."""

    def observed(self, outcome: Outcome) -> None:
        """A reconcile ran: what it found and did."""

    async def complete(self) -> None:
        """Deferred work, at the end of a tick."""

    async def close(self) -> None:
        """The daemon stops: let go of sockets, tasks and threads."""
