"""The metrics listener: ``/metrics``, ``/healthz`` and ``/readyz`` on the address the
enforced policy names (``[metrics].listen``; ``--metrics-listen`` overrides it). It moves
only when that address changes; an address it cannot listen on is tried again each tick."""

from __future__ import annotations

from appliance.daemon.context import Context
from appliance.daemon.health import not_alive, not_ready
from appliance.daemon.manager import Manager
from appliance.daemon.metrics import MetricsServer
from appliance.daemon.policies import Policy
from appliance.model.values import HostPort, parse_host_port


class MetricsListener(Manager):
    name = "metrics listener"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.server = MetricsServer(
            ctx.metrics, {"/healthz": self.not_alive, "/readyz": self.not_ready}
        )
        self.wanted: str | None = None  # the address to listen on
        self.address: HostPort | None = None  # where it listens (None: it does not)
        self.failed: str | None = None  # why it could not

    def not_alive(self) -> str | None:
        return not_alive(self.ctx.tick_started, self.ctx.clock())

    def not_ready(self) -> str | None:
        policy = self.ctx.policy
        return not_ready(policy.source if policy else None, self.ctx.last_error)

    async def configure(self, old: Policy | None, new: Policy | None) -> None:
        listen = self.ctx.config.metrics_listen or (new.metrics_listen if new else None)
        if listen == self.wanted:
            return
        await self.server.close()
        self.wanted, self.address, self.failed = listen, None, None
        await self._listen()

    async def complete(self) -> None:
        """An address it could not listen on (in use, not there yet) is tried again."""
        if self.wanted and self.address is None:
            await self._listen()

    async def _listen(self) -> None:
        listen = self.wanted
        if not listen:
            return
        try:
            address = parse_host_port(listen, any_host=True, any_port=True)
            self.address = HostPort(*await self.server.start(address.host, address.port))
        except (OSError, ValueError) as exc:
            if str(exc) != self.failed:  # once per reason, not at every tick
                self.ctx.log.error(
                    "metrics: cannot listen", extra={"listen": listen, "error": str(exc)}
                )
            self.failed = str(exc)
            return
        self.failed = None
        self.ctx.log.info("metrics listening", extra={"listen": listen})

    async def close(self) -> None:
        await self.server.close()

    @property
    def address_text(self) -> str | None:
        """Where it listens as ``HOST:PORT`` (``[IPv6]:PORT``), None when it does not."""
        return str(self.address) if self.address else None
