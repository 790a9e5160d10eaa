"""Links that appear after the policy loaded, hooked into its flowtable.

The flowtable (``[defaults].offload``) hooks the zones' interfaces that exist when the
policy is compiled. At the end of every tick (the resync timer's, or any event's) this
manager looks at the links (one ``if_nameindex`` call, nothing when offload is off) and,
for a zone interface that has appeared since:

- the table has its flowtable: the new links are added to it, one ``add flowtable`` of
  those devices (the kernel hooks them besides the others; nothing else changes);
- it has none (none of the zones' interfaces existed when it loaded, as at boot): the
  policy is compiled again from its profile and enforced, a structural change that adds
  the flowtable and its rule. A hub's policy gets it with the next bundle or reload.

A refused hook is logged once per link and policy (the link stays on the forward path). A
link that goes away leaves the flowtable by itself (the kernel removes it) and the list
of hooked links (status); made again, it is hooked again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from appliance.compile.nftjson import Json
from appliance.compile.ruleset import FLOWTABLE
from appliance.daemon.context import Context
from appliance.daemon.manager import Manager
from appliance.daemon.policies import SOURCE_PROFILE, Policy, policy_from_profile
from appliance.errors import ApplianceError


def hook_command(objects: list[Json], devices: list[str]) -> Json | None:
    """The command that adds ``devices`` to the table's flowtable (None: it has none)."""
    for obj in objects:
        body = obj.get("flowtable")
        if body is not None and body.get("name") == FLOWTABLE:
            return {"add": {"flowtable": {**body, "dev": sorted(devices)}}}
    return None


class OffloadLinks(Manager):
    name = "offload-links"

    def __init__(self, ctx: Context, enforce: Callable[[Policy], Awaitable[bool]]) -> None:
        self.ctx = ctx
        self.enforce = enforce
        self.tried: set[str] = set()  # links this policy could not hook: not tried again

    async def configure(self, old: Policy | None, new: Policy | None) -> None:
        self.tried = set()

    async def complete(self) -> None:
        from appliance.probe import offload_for

        policy = self.ctx.policy
        if policy is None or policy.profile is None or not policy.profile.defaults.offload:
            return
        found = offload_for(policy.profile).devices
        if any(d not in found for d in policy.offloaded):  # gone: the kernel unhooked them
            policy.offloaded = tuple(d for d in policy.offloaded if d in found)
            self.ctx.metrics.flow_offload.set(1 if policy.offloaded else 0)
        new = [d for d in found if d not in policy.offloaded and d not in self.tried]
        if not new:
            return
        command = hook_command(policy.desired.objects, new)
        if command is not None:
            try:
                await self.ctx.kernel(self.ctx.engine.backend.run, [command])
            except ApplianceError as exc:
                self.tried.update(new)
                self.ctx.log.warning(
                    "flow offload: new links not hooked", extra={"links": new, "error": str(exc)}
                )
                return
            policy.offloaded = tuple(sorted({*policy.offloaded, *new}))
            self.ctx.metrics.flow_offload.set(1)
            self.ctx.log.info("flow offload: new links hooked", extra={"links": new})
            return
        if policy.source != SOURCE_PROFILE:
            self.tried.update(new)
            return
        try:
            fresh = await self.ctx.kernel(
                policy_from_profile, self.ctx.config.profile, policy.profile
            )
        except ApplianceError as exc:
            self.tried.update(new)
            self.ctx.log.warning(
                "flow offload: new links not hooked", extra={"links": new, "error": str(exc)}
            )
            return
        fresh.metrics_listen = policy.metrics_listen
        if await self.enforce(fresh):
            self.ctx.log.info(
                "flow offload: the flowtable added for new links", extra={"links": new}
            )
        else:
            self.tried.update(new)
