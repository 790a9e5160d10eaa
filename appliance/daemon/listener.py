"""The metrics listener: ``/metrics``, ``/healthz`` and ``/readyz`` on the address the
enforced policy names (``[metrics].listen``; ``--metrics-listen`` overrides it). It moves
only when that address changes."""

from __future__ import annotations

from appliance.daemon.context import Context
from appliance.daemon.health import not_alive, not_ready
from appliance.daemon.manager import Manager
from appliance.daemon.metrics import MetricsServer
from appliance.daemon.policies import Policy


class MetricsListener(Manager):
    name = "metrics listener"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.server = MetricsServer(
            ctx.metrics, {"/healthz": self.not_alive, "/readyz": self.not_ready}
        )
        self.listen: str | None = None
        self.address: tuple[str, int] | None = None

    def not_alive(self) -> str | None:
        return not_alive(self.ctx.tick_started, self.ctx.clock())

    def not_ready(self) -> str | None:
        policy = self.ctx.policy
        return not_ready(policy.source if policy else None, self.ctx.last_error)

    async def configure(self, old: Policy | None, new: Policy | None) -> None:
        listen = self.ctx.config.metrics_listen or (new.metrics_listen if new else None)
        if listen == self.listen:
            return
        await self.server.close()
        self.listen = listen
        self.address = None
        if not listen:
            return
        host, _, port = listen.rpartition(":")
        try:
            self.address = await self.server.start(host.strip("[]"), int(port))
        except (OSError, ValueError) as exc:
            self.ctx.log.error(
                "metrics: cannot listen", extra={"listen": listen, "error": str(exc)}
            )
            self.listen = None
            return
        self.ctx.log.info("metrics listening", extra={"listen": listen})

    async def close(self) -> None:
        await self.server.close()

    @property
    def address_text(self) -> str | None:
        return f"{self.address[0]}:{self.address[1]}" if self.address else None
