"""``appliance run`` as a child process inside a lab namespace, for the demo and benchmarks.

The child gets a ``NOTIFY_SOCKET`` bound here, so start-up is awaited on its ``READY=1``
(with a bound timeout), the way systemd waits for it. It dies with its parent
(PR_SET_PDEATHSIG), and :meth:`LabDaemon.close` always stops and reaps it: nothing is left
running, whatever happens to the caller.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from appliance.adapters.nsexec import run_in_netns
from appliance.daemon.control import checked, request
from appliance.errors import ApplianceError
from appliance.lab.runner import appliance_command
from appliance.model.values import parse_host_port

_PR_SET_PDEATHSIG = 1


class DaemonFailed(ApplianceError):
    """The daemon exited or did not report ready in time."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class LabDaemon:
    """One ``appliance run --netns NS`` child with private state, socket and log paths.

    ``ns=None`` leaves ``--netns`` out (``appliance_cmd`` may then enter a namespace itself).
    """

    def __init__(
        self,
        ns: str | None,
        profile: str,
        workdir: str | os.PathLike[str],
        appliance_cmd: Sequence[str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.ns = ns
        self.profile = os.path.abspath(profile)
        self.workdir = Path(workdir)
        self.state_dir = self.workdir / "state"
        self.control_socket = str(self.workdir / "control.sock")
        self.log_path = self.workdir / "daemon.log"
        self.notify_path = str(self.workdir / "notify.sock")
        self.command = [
            *appliance_command(appliance_cmd),
            "run",
            *(["--netns", ns] if ns else []),
            "--profile",
            self.profile,
            "--state-dir",
            str(self.state_dir),
            "--control-socket",
            self.control_socket,
            *extra_args,
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self._notify: socket.socket | None = None
        self.messages: list[str] = []

    # ---- start and stop ------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> float:
        """Start the daemon and wait for ``READY=1``; the seconds it took."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.notify_path)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._notify.bind(self.notify_path)
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_path)
        env.pop("WATCHDOG_USEC", None)
        env.pop("WATCHDOG_PID", None)
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
        self.wait_for("READY=1", timeout)
        return time.monotonic() - started

    def wait_for(self, field: str, timeout: float) -> str:
        """The next notify message that holds ``field``; DaemonFailed if none in time."""
        assert self.proc is not None and self._notify is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise DaemonFailed(f"the daemon exited with status {self.proc.returncode}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise DaemonFailed(f"no {field} from the daemon within {timeout:g}s")
            self._notify.settimeout(min(0.2, left))
            try:
                message = self._notify.recv(4096).decode(errors="replace")
            except TimeoutError:
                continue
            self.messages.append(message)
            if field in message.split("\n"):
                return message

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for the exit status (SIGKILL if it does not come in time)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise DaemonFailed(f"the daemon did not stop within {timeout:g}s of SIGTERM") from None

    def close(self) -> None:
        """Kill the daemon if it still runs, reap it, release the notify socket. Idempotent."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        if self._notify is not None:
            self._notify.close()
            self._notify = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.notify_path)

    def __enter__(self) -> LabDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- talking to it -----------------------------------------------------------------

    def request(self, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        return checked(request(self.control_socket, message, timeout=timeout))

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.request({"op": "status"})["status"]
        return status

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []


def http_get(url: str, timeout: float = 5.0) -> str:
    """GET ``url`` and return the body (in whatever namespace the caller is)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
    return body.decode()


def scrape(ns: str, listen: str, timeout: float = 10.0) -> str:
    """The daemon's ``/metrics`` fetched from inside ``ns`` (``listen`` is ADDR:PORT there)."""
    url = f"http://{parse_host_port(listen)}/metrics"
    return run_in_netns(ns, http_get, url, timeout, timeout=timeout)


def metric_lines(text: str, names: Sequence[str]) -> list[str]:
    """The sample lines of ``text`` whose metric name is one of ``names`` (no comments)."""
    found: list[str] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in names:
            found.append(line)
    return found


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The value of the sample ``name{labels}`` in an exposition, None if absent."""
    wanted = name
    if labels:
        wanted += "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return None
