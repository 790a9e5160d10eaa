"""Live inspection in the daemon: runs what the enforced policy's profile asks for (none
for a last good or failsafe policy), restarted only when what it depends on changed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from appliance.daemon.context import Context
from appliance.daemon.inspect import LIVE_MODES, LiveInspection, settings_key
from appliance.daemon.manager import Manager
from appliance.daemon.policies import Policy
from appliance.errors import ApplianceError


class Inspection(Manager):
    name = "inspection"

    def __init__(self, ctx: Context, block: Callable[[str], Awaitable[None]]) -> None:
        self.ctx = ctx
        self.block = block
        self.live: LiveInspection | None = None
        self.key: str | None = None
        self.error: str | None = None

    async def configure(self, old: Policy | None, new: Policy | None) -> None:
        profile = new.profile if new is not None else None
        mode = profile.inspect.mode if profile is not None else "off"
        if profile is None or mode not in LIVE_MODES:
            await self.close()
            return
        alerts = self.ctx.config.alerts
        key = await asyncio.get_running_loop().run_in_executor(None, settings_key, profile, alerts)
        if key == self.key and self.live is not None:
            return
        await self.close()
        live = LiveInspection(
            profile,
            metrics=self.ctx.metrics,
            block=self.block,
            logger=self.ctx.log,
            alerts=alerts,
            queue_size=self.ctx.config.inspect_queue,
        )
        try:
            live.start(asyncio.get_running_loop())
        except (ApplianceError, OSError) as exc:
            self.error = f"inspection not started: {exc}"
            self.ctx.log.error(self.error)
            return
        self.live, self.key, self.error = live, key, None

    async def close(self) -> None:
        live, self.live, self.key = self.live, None, None
        if live is not None:
            await live.stop()

    def status(self) -> dict[str, Any]:
        if self.live is not None:
            return self.live.status()
        profile = self.ctx.policy.profile if self.ctx.policy else None
        mode = profile.inspect.mode if profile is not None else "off"
        return {"mode": mode, "running": False, "error": self.error}
