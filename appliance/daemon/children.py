"""Children of the daemon die with it: ``PR_SET_PDEATHSIG`` set in the child before exec.

A daemon killed with SIGKILL runs no cleanup; without this a child it started would run
for ever, one more after each restart. The signal goes out when the thread that started
the child ends, so children are started from the event loop's (main) thread.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``sig`` when the daemon dies (Linux). A daemon
    that died between fork and prctl is noticed by the parent pid having changed."""
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent:
            os._exit(1)

    return preexec
