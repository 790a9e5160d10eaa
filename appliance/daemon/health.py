"""Health for supervisors. Pure.

Alive (``/healthz``): the event loop answers, and no tick has been stuck longer than
:data:`TICK_STUCK_SECONDS` (a kernel call that never returns). Ready (``/readyz``, and the
exit status of ``appliance status``): the intended policy is enforced, that is the profile's
or the hub's, not the failsafe, not the last good policy in place of the profile, and no
error since.
"""

from __future__ import annotations

TICK_STUCK_SECONDS = 120.0

NOT_READY_SOURCES = {
    "failsafe": "the failsafe policy is enforced",
    "last_good": "the last good policy is enforced instead of the profile",
}


def not_alive(tick_started: float | None, now: float) -> str | None:
    """None while the loop turns; else why not."""
    if tick_started is not None and now - tick_started > TICK_STUCK_SECONDS:
        return f"a policy change has been under way for {now - tick_started:.0f} s"
    return None


def not_ready(source: str | None, last_error: str | None) -> str | None:
    """None when the intended policy is enforced; else a one-line reason."""
    if source is None:
        return "no policy enforced"
    if source in NOT_READY_SOURCES:
        return NOT_READY_SOURCES[source]
    if last_error:
        return f"error: {last_error}"
    return None
