"""The control socket and status: requests from the CLI (``status``, ``set``, ``confirm``,
``resync``) answered from the managers' state."""

from __future__ import annotations

import os
import resource
from typing import Any, TypedDict

from appliance import __version__
from appliance.daemon.context import Context
from appliance.daemon.control import ControlServer
from appliance.daemon.inspection import Inspection
from appliance.daemon.listener import MetricsListener
from appliance.daemon.manager import Manager
from appliance.daemon.policies import Policy
from appliance.daemon.policy import PolicyManager
from appliance.daemon.segments import Segments
from appliance.daemon.sets import RuntimeSets
from appliance.errors import UsageError
from appliance.units import parse_timeout

# Elements one ``set add`` or ``set del`` may carry: one kernel transaction each, well
# inside what the kernel takes at once (a million were refused after 11 s) and within the
# control socket's 8 MiB request bound for the longest IPv6 prefixes.
MAX_ELEMENTS_PER_REQUEST = 100_000


class Status(TypedDict):
    """The reply to ``status`` (``appliance status --json``)."""

    version: str
    pid: int
    policy: str | None
    table_hash: str | None
    source: str | None
    generation: int
    profile: str
    applied_at: float | None
    last_error: str | None
    sets: dict[str, int]
    runtime_elements: dict[str, int]
    drift_repairs: dict[str, int]
    segments: list[str] | None
    segments_waiting: list[str]
    inspect: dict[str, Any]
    confirm_pending_until: float | None
    hub: dict[str, Any] | None
    metrics_listen: str | None
    uptime_seconds: float
    rss_bytes: int
    notify_dropped: int  # notifications dropped: the service manager's queue was full
    offload: dict[str, Any]  # the flowtable's devices, or why there is none


class Control(Manager):
    name = "control socket"

    def __init__(
        self,
        ctx: Context,
        policy: PolicyManager,
        sets: RuntimeSets,
        segments: Segments,
        inspection: Inspection,
        listener: MetricsListener,
    ) -> None:
        self.ctx = ctx
        self.policy = policy
        self.sets = sets
        self.segments = segments
        self.inspection = inspection
        ctx.notifier.on_drop = ctx.metrics.notify_dropped.inc  # status and metrics agree
        self.listener = listener
        self.server = ControlServer(self.handle)

    async def start(self) -> None:
        await self.server.start(self.ctx.config.control_socket)

    async def close(self) -> None:
        await self.server.close()

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "status":
            return {"ok": True, "status": self.status()}
        if op in ("set_add", "set_del", "set_list"):
            return await self._set(op, request)
        if op == "confirm":
            if await self.policy.confirm():
                return {"ok": True}
            return {"ok": False, "error": "nothing to confirm", "exit": 1}
        if op == "resync":
            self.ctx.request_resync()
            return {"ok": True}
        raise UsageError(f"unknown request {op!r}")

    async def _set(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        name = request.get("set")
        if not isinstance(name, str):
            raise UsageError("set: a set name is required")
        if op == "set_list":
            info = await self.ctx.kernel(self.ctx.engine.set_info, name)
            elements = [
                {"text": e.text, "expires": e.expires}
                for e in sorted(info.elements, key=lambda e: e.text)
            ]
            return {"ok": True, "set": name, "type": info.type, "elements": elements}
        values = request.get("elements")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise UsageError("set: elements must be a list of strings")
        if len(values) > MAX_ELEMENTS_PER_REQUEST:
            raise UsageError(
                f"set: {len(values)} elements in one request; at most"
                f" {MAX_ELEMENTS_PER_REQUEST} (split the list)"
            )
        if op == "set_del":
            await self.sets.delete(name, values)
            return {"ok": True}
        timeout = request.get("timeout")
        if timeout is not None:
            try:
                timeout = parse_timeout(timeout)
            except ValueError as exc:
                raise UsageError(f"--timeout: {exc}") from None
        await self.sets.add(name, values, timeout)
        return {"ok": True}

    def status(self) -> Status:
        ctx, policy = self.ctx, self.ctx.policy
        sets, runtime = self.sets.status()
        hub = self.policy.hub
        pending = self.policy.pending
        return {
            "version": __version__,
            "pid": os.getpid(),
            "policy": policy.desired.name if policy else None,
            "table_hash": policy.table_hash if policy else None,
            "source": policy.source if policy else None,
            "generation": ctx.generation,
            "profile": ctx.config.profile,
            "applied_at": ctx.applied_at,
            "last_error": ctx.last_error,
            "sets": sets,
            "runtime_elements": runtime,
            "drift_repairs": dict(sorted(self.policy.drift_repairs.items())),
            "segments": self.segments.names(),
            "segments_waiting": list(self.segments.waiting),
            "inspect": self.inspection.status(),
            "confirm_pending_until": pending.deadline if pending else None,
            "hub": hub.status() if hub is not None else None,
            "metrics_listen": self.listener.address_text,
            "uptime_seconds": round(ctx.clock() - ctx.started, 3),
            "rss_bytes": rss_bytes(),
            "notify_dropped": ctx.notifier.dropped,
            "offload": offload_status(policy),
        }


def offload_status(policy: Policy | None) -> dict[str, Any]:
    """``{"devices": [...], "reason": ...}``: the links whose flows the enforced table
    offloads, or why it offloads none."""
    from appliance.probe import offload_for

    devices = list(policy.offloaded) if policy else []
    reason = None
    if not devices:
        reason = "no policy" if policy is None or policy.profile is None else None
        if policy is not None and policy.profile is not None:
            reason = offload_for(policy.profile).reason or "no flowtable in the enforced table"
    return {"devices": devices, "reason": reason}


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0
