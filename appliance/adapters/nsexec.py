"""Run Python code inside a named network namespace, in a forked child.

A process can only enter a network namespace for itself, and /proc/sys/net shows the
namespace of the reading process, so everything done inside a namespace (by the segment
adapter, the lab, the benchmarks) happens in a short-lived child: it enters the namespace,
does the work and sends the result back over a socket pair. The child dies with its parent
(PR_SET_PDEATHSIG), carries an alarm that bounds its life, and is always reaped: nothing is
ever left running.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from appliance.errors import ApplianceError

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1


class ChildError(ApplianceError):
    """A namespace is missing, or a child failed or timed out."""


class WorkerTimeout(ChildError):
    """A child did not answer in time (it has been killed)."""


def enter(ns: str) -> None:
    """Move the calling process into the network namespace ``ns`` (under /run/netns). Plain
    setns(2): the daemon forks children through here, and must not load pyroute2 for it."""
    from appliance.adapters.netns import NETNS_RUN_DIR, enter_netns

    if not os.path.exists(os.path.join(NETNS_RUN_DIR, ns)):
        raise ChildError(f"network namespace {ns!r} does not exist")
    enter_netns(ns)


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass


class Worker:
    """A forked child inside ``ns`` running ``target(conn, *args)``.

    ``conn`` is a message channel to the parent (``send``/``recv``/``poll``). The child lives
    at most ``lifetime`` seconds; ``close`` stops it (SIGTERM, then SIGKILL) and reaps it.
    Errors in the child come back as ``("error", text)`` and are raised as :class:`ChildError`.
    """

    def __init__(
        self,
        ns: str | None,
        target: Callable[..., None],
        *args: Any,
        lifetime: float = 60.0,
    ) -> None:
        parent_sock, child_sock = socket.socketpair()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            status = 0
            try:
                parent_sock.close()
                conn = Connection(child_sock.detach())
                try:
                    _die_with_parent()
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides
                    signal.alarm(max(1, math.ceil(lifetime)))
                    if ns is not None:
                        enter(ns)
                    target(conn, *args)
                except BaseException as exc:
                    status = 1
                    text = f"{type(exc).__name__}: {exc}"
                    if not isinstance(exc, (ChildError, OSError)):
                        text += "\n" + traceback.format_exc()
                    with contextlib.suppress(OSError):
                        conn.send(("error", text))
            finally:
                os._exit(status)
        child_sock.close()
        self.pid = pid
        self.ns = ns
        self.conn = Connection(parent_sock.detach())
        self._closed = False

    def recv(self, timeout: float) -> Any:
        """The child's next message; raises :class:`WorkerTimeout` (and kills it) on timeout."""
        try:
            ready = self.conn.poll(max(0.0, timeout))
        except OSError as exc:
            raise ChildError(f"child in {self.ns}: {exc}") from exc
        if not ready:
            self.close()
            raise WorkerTimeout(f"no answer from the child in {self.ns} within {timeout:.1f}s")
        try:
            msg = self.conn.recv()
        except (EOFError, OSError) as exc:
            self.close()
            raise ChildError(f"the child in {self.ns} exited without an answer") from exc
        if isinstance(msg, tuple) and len(msg) == 2 and msg[0] == "error":
            self.close()
            raise ChildError(f"in namespace {self.ns}: {msg[1]}")
        return msg

    def request(self, msg: Any, timeout: float) -> Any:
        """Send ``msg`` to the child and return its answer."""
        try:
            self.conn.send(msg)
        except OSError as exc:
            self.close()
            raise ChildError(f"the child in {self.ns} is gone") from exc
        return self.recv(timeout)

    def close(self, grace: float = 1.0) -> None:
        """Stop the child (if still running) and reap it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self.conn.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while True:
            done, _ = os.waitpid(self.pid, os.WNOHANG)
            if done:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _call(conn: Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    conn.send(("ok", fn(*args)))


def run_in_netns(ns: str | None, fn: Callable[..., T], *args: Any, timeout: float = 30.0) -> T:
    """Run ``fn(*args)`` inside the namespace ``ns`` and return its (picklable) result.

    ``ns=None`` runs it in a child in the caller's own namespace.
    """
    with Worker(ns, _call, fn, args, lifetime=timeout + 1.0) as worker:
        _, result = worker.recv(timeout)
        return result  # type: ignore[no-any-return]
