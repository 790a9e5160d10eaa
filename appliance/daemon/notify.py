"""sd_notify without a dependency: a datagram to ``$NOTIFY_SOCKET``, a no-op without it.

A socket name starting with ``@`` is in the abstract namespace (a leading NUL byte).
A send never blocks the daemon: when the service manager reads slowly and its datagram
queue is full, the message is dropped and counted (``dropped``, and ``on_drop`` is called:
the daemon counts it in ``appliance_notify_dropped_total``).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping


class Notifier:
    """Sends service-manager notifications (``READY=1``, ``WATCHDOG=1``, ...)."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address or None
        self.dropped = 0  # messages not sent because the peer's queue was full
        self.on_drop: Callable[[], None] = lambda: None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``fields`` as one message (newline-separated). False if it did not go out."""
        if not self.address or not fields:
            return False
        target = self.address
        if target.startswith("@"):
            target = "\0" + target[1:]
        try:
            kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            with socket.socket(socket.AF_UNIX, kind) as sock:
                sock.sendto("\n".join(fields).encode(), target)
        except BlockingIOError:
            self.dropped += 1
            self.on_drop()
            return False
        except OSError:
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *_status(status))

    def reloading(self, status: str | None = None) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *_status(status))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.send(*_status(text))


def _status(text: str | None) -> list[str]:
    if text is None:
        return []
    return ["STATUS=" + " ".join(text.splitlines())]


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of ``$WATCHDOG_USEC``, None when not asked for.

    ``$WATCHDOG_PID``, when set, must name this process.
    """
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000
