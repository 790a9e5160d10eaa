"""Abuse of the control socket and the metrics port: garbage and hostile requests are
answered with a one-line error (never an internal error), an oversized request is refused
without the daemon's memory following it, half-sent requests hold nothing, other users are
refused, and no request or scrape adds a metrics series."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.daemon.control import READ_SECONDS
from tests.conftest import run_as_nobody
from tests.daemon.conftest import Daemon, write_profile
from tests.reliability.conftest import trials

pytestmark = pytest.mark.root

Start = Callable[..., Daemon]

REQUESTS = trials(ci=300, soak=20_000)
SLOW_CLIENTS = 200


def _ask(path: str, line: bytes, timeout: float = 30) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(line)
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    result: dict[str, Any] = json.loads(answer)
    return result


def _hostile(rng: random.Random) -> bytes:
    """One request line: random bytes, JSON of the wrong shape, or a set request with
    values of every wrong kind."""
    kind = rng.randrange(4)
    if kind == 0:
        return (
            bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).replace(b"\n", b" ")
            + b"\n"
        )
    junk: list[Any] = [
        None,
        True,
        -5,
        0,
        1e30,
        "Infinity",
        float("nan"),
        "",
        "x" * 300,
        [],
        {},
        [1, [2]],
        {"op": "status"},
        "203.0.113.0/33",
        "::/0",
        "0.0.0.0/0",
        "1e30s",
        "-1s",
    ]
    if kind == 1:
        return json.dumps(rng.choice(junk)).encode() + b"\n"
    if kind == 2:
        return (
            json.dumps({"op": rng.choice([*junk[:3], "status2", "", "set_add"])}).encode() + b"\n"
        )
    request: dict[str, Any] = {"op": rng.choice(["set_add", "set_del", "set_list"])}
    for key in ("set", "elements", "timeout"):
        if rng.random() < 0.8:
            request[key] = rng.choice([*junk, "blocklist", "ports", ["x", 1], ["1.2.3.4/40"]])
    return json.dumps(request).encode() + b"\n"


def _rss_kib(daemon: Daemon) -> int:
    assert daemon.proc is not None
    for line in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _series(daemon: Daemon) -> set[str]:
    return {
        line.split(" ")[0]
        for line in daemon.metrics().splitlines()
        if line and not line.startswith("#")
    }


def test_garbage_and_hostile_requests_get_one_line_errors_and_add_no_series(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    daemon = start_daemon(netns, write_profile(tmp_path / "p.toml"))
    series = _series(daemon)
    rng = random.Random(1212)
    answered = 0
    for _ in range(REQUESTS):
        line = _hostile(rng)
        answer = _ask(daemon.socket, line)
        assert isinstance(answer.get("ok"), bool), (line, answer)
        if not answer["ok"]:
            error = answer["error"]
            assert "\n" not in error and "internal error" not in error, (line, answer)
            assert answer["exit"] in (1, 2), (line, answer)
        answered += 1
    # scrapes of odd paths and queries add nothing either
    for path in ("/metrics?x=1", "/metrics/../metrics", "/nope", "/%00", "/metrics?" + "a" * 4000):
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                netns,
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "--max-time",
                "5",
                f"http://127.0.0.1:9469{path}",
            ],
            check=False,
        )
    assert daemon.status()["last_error"] is None
    assert _series(daemon) == series
    print(f"{answered} hostile requests answered; {len(series)} metrics series before and after")


def test_an_oversized_request_is_refused_and_memory_does_not_follow(
    netns: str, start_daemon: Start, tmp_path: Path
) -> None:
    daemon = start_daemon(netns, write_profile(tmp_path / "p.toml"))
    before = _rss_kib(daemon)
    huge = b'{"op": "set_add", "set": "blocklist", "elements": ["' + b"1" * (16 << 20) + b'"]}\n'
    try:
        answer = _ask(daemon.socket, huge)
    except (BrokenPipeError, ConnectionResetError):
        answer = {"ok": False, "error": "connection closed", "exit": 2}
    assert answer["ok"] is False and answer["exit"] == 2, answer
    after = _rss_kib(daemon)
    assert daemon.status()["last_error"] is None
    print(f"16 MiB request: {answer['error']!r}; RSS {before} -> {after} KiB")
    assert after - before < 256 * 1024, (before, after)


def test_half_sent_requests_hold_nothing(netns: str, start_daemon: Start, tmp_path: Path) -> None:
    daemon = start_daemon(netns, write_profile(tmp_path / "p.toml"))
    slow: list[socket.socket] = []
    try:
        for _ in range(SLOW_CLIENTS):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(daemon.socket)
            sock.sendall(b'{"op": "sta')
            slow.append(sock)
        latencies = []
        for _ in range(20):
            started = time.monotonic()
            assert daemon.status()["source"] == "profile"
            latencies.append(time.monotonic() - started)
        # each is closed unanswered once the read deadline passes, its buffer freed
        started = time.monotonic()
        for sock in slow:
            sock.settimeout(READ_SECONDS + 60)  # bounds the wait; the deadline ends it
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1024) == b""
        closed = time.monotonic() - started
        assert daemon.status()["source"] == "profile"
        print(
            f"{SLOW_CLIENTS} half-sent requests: status slowest {max(latencies):.3f}s; "
            f"all closed {closed:.1f}s later (read deadline {READ_SECONDS:g}s)"
        )
    finally:
        for sock in slow:
            sock.close()


def test_other_users_are_refused(netns: str, start_daemon: Start, tmp_path: Path) -> None:
    daemon = start_daemon(netns, write_profile(tmp_path / "p.toml"))
    tmp_path.chmod(0o755)  # the directory is not what refuses: the socket is
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "except PermissionError:\n"
        "    print('refused')\n"
        "else:\n"
        "    print('connected')\n"
    )
    result = run_as_nobody("-c", probe, daemon.socket, timeout=30)
    assert result.stdout.strip() == "refused", result
    cli = run_as_nobody("-m", "appliance", "status", "--control-socket", daemon.socket)
    assert cli.returncode != 0
    assert "permission denied" in cli.stderr.lower(), cli.stderr
    assert "Traceback" not in cli.stderr
