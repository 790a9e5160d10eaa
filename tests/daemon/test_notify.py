"""sd_notify: datagrams to NOTIFY_SOCKET (path and abstract), a no-op without it."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.daemon.notify import Notifier, watchdog_interval


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    try:
        yield sock, path
    finally:
        sock.close()


def test_without_notify_socket_is_a_no_op() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False


def test_ready_with_status(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert Notifier.from_env({"NOTIFY_SOCKET": path}).ready("enforcing edge")
    assert sock.recv(4096).decode().split("\n") == ["READY=1", "STATUS=enforcing edge"]


def test_reloading_carries_monotonic_usec(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    Notifier(path).reloading()
    fields = sock.recv(4096).decode().split("\n")
    assert fields[0] == "RELOADING=1"
    assert fields[1].startswith("MONOTONIC_USEC=")
    assert int(fields[1].split("=", 1)[1]) > 0


@pytest.mark.parametrize(
    ("method", "expected"),
    [("stopping", "STOPPING=1"), ("watchdog", "WATCHDOG=1")],
)
def test_single_messages(listener: tuple[socket.socket, str], method: str, expected: str) -> None:
    sock, path = listener
    getattr(Notifier(path), method)()
    assert sock.recv(4096).decode() == expected


def test_status_is_one_line(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    Notifier(path).status("two\nlines")
    assert sock.recv(4096).decode() == "STATUS=two lines"


def test_abstract_socket() -> None:
    name = f"appliance-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert Notifier("@" + name).ready()
        assert sock.recv(4096) == b"READY=1"


def test_unreachable_socket_does_not_raise(tmp_path: Path) -> None:
    assert Notifier(str(tmp_path / "absent.sock")).ready() is False


def test_watchdog_interval() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "bad"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "20000000"}) == 10.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) in (
        None if os.getpid() != 1 else 1.0,
    )
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}) == 1.0


def test_a_full_queue_drops_and_counts_instead_of_blocking(
    listener: tuple[socket.socket, str],
) -> None:
    """A service manager that does not read: its datagram queue fills, and every further
    message is dropped and counted; the sender never waits (it runs in a thread that must
    finish, a blocking send would hang it)."""
    _, path = listener
    notifier = Notifier(path)
    results: list[bool] = []

    def flood() -> None:
        for _ in range(2000):  # far above any datagram queue length (10 by default)
            results.append(notifier.watchdog())

    worker = threading.Thread(target=flood, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "a notify send blocked on a full queue"
    assert results.count(False) == notifier.dropped > 0
    assert results[0] is True
