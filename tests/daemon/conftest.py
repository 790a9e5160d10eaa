"""A daemon under test: ``appliance run`` in a namespace, with a notify socket of our own."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.daemon.control import NoDaemon, request
from tests.conftest import REPO, nft_in, small_profile

EXTRA_RULE = """
[[rules]]
name = "web"
from = "lan"
to = "self"
proto = "tcp"
dport = [80, 443]
action = "accept"
"""

METRICS = """
[metrics]
listen = "127.0.0.1:9469"
"""


def write_profile(
    path: Path, elements: list[str] | None = None, extra: str = "", metrics: bool = True
) -> Path:
    elements = ["203.0.113.0/24", "198.51.100.1"] if elements is None else elements
    text = small_profile("daemon-test", elements) + extra
    path.write_text(text + (METRICS if metrics else ""))
    return path


class Daemon:
    """One ``appliance run`` child process and its notify socket."""

    def __init__(self, ns: str, tmp: Path, profile: Path, *extra: str) -> None:
        self.ns = ns
        self.tmp = tmp
        self.profile = profile
        self.extra = extra
        self.state_dir = tmp / "state"
        self.socket = str(tmp / "control.sock")
        self.notify_path = str(tmp / f"notify-{time.monotonic_ns()}.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.messages: list[str] = []
        self.log_path = tmp / f"daemon-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> Daemon:
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_path, **(env or {}))
        command = [
            sys.executable,
            "-m",
            "appliance",
            "run",
            "--netns",
            self.ns,
            "--profile",
            str(self.profile),
            "--state-dir",
            str(self.state_dir),
            "--control-socket",
            self.socket,
            "--resync-interval",
            "0.5",
            *self.extra,
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log
            )
        return self

    def receive(self, timeout: float) -> str | None:
        self.notify.settimeout(max(timeout, 0.001))
        try:
            message = self.notify.recv(4096).decode()
        except TimeoutError:
            return None
        self.messages.append(message)
        return message

    def wait_for(self, field: str, timeout: float = 30.0) -> str:
        """The next notify message holding ``field`` (``READY=1``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            message = self.receive(min(0.5, deadline - time.monotonic()))
            if message and field in message.split("\n"):
                return message
        pytest.fail(f"no {field} from the daemon in {timeout}s:\n{self.log()}")

    def ready(self) -> Daemon:
        # Under emulation (the arm64 QEMU guest runs without KVM) start-up takes many times
        # longer than on the host.
        self.wait_for("READY=1", timeout=120.0 if os.environ.get("APPLIANCE_GUEST") else 30.0)
        return self

    def status(self) -> dict[str, Any]:
        answer = request(self.socket, {"op": "status"}, timeout=10)
        assert answer["ok"], answer
        status: dict[str, Any] = answer["status"]
        return status

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        self.notify.close()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def log_entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]

    def metrics(self) -> str:
        return nft_in_curl(self.ns, "http://127.0.0.1:9469/metrics")


def nft_in_curl(ns: str, url: str) -> str:
    result = subprocess.run(
        ["ip", "netns", "exec", ns, "curl", "-sS", "--max-time", "10", url],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def wait_until(predicate: Callable[[], object], timeout: float = 15.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"condition not met in {timeout}s")


def table_listing(ns: str) -> list[dict[str, Any]]:
    listing = json.loads(nft_in(ns, "-j", "-a", "list", "table", "inet", "appliance"))
    objects: list[dict[str, Any]] = listing["nftables"]
    return objects


def rule_handles(ns: str) -> dict[str, int]:
    """Rule comment -> handle, for the profile's rules."""
    return {
        obj["rule"]["comment"]: obj["rule"]["handle"]
        for obj in table_listing(ns)
        if "rule" in obj and obj["rule"].get("comment")
    }


def set_elements(ns: str, name: str) -> list[str]:
    listing = json.loads(nft_in(ns, "-j", "list", "set", "inet", "appliance", name))
    for obj in listing["nftables"]:
        if "set" in obj:
            return [json.dumps(e) for e in obj["set"].get("elem", [])]
    return []


def children(pid: int, name: str) -> list[int]:
    """The pids of the processes called ``name`` whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == pid and comm == name:
            found.append(int(entry.name))
    return found


def monitor_listening(daemon_pid: int) -> bool:
    """Whether the daemon holds a NETLINK_NETFILTER socket that joined an event group (its
    table watch): from then on it sees changes."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{daemon_pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{daemon_pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    try:
        lines = Path(f"/proc/{daemon_pid}/net/netlink").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if fields[1] == "12" and int(fields[3], 16) and fields[-1] in inodes:
            return True
    return False


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def no_daemon(path: str) -> bool:
    try:
        request(path, {"op": "status"}, timeout=2)
    except NoDaemon:
        return True
    return False


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    daemons: list[Daemon] = []

    def start(ns: str, profile: Path, *extra: str, ready: bool = True) -> Daemon:
        daemon = Daemon(ns, tmp_path, profile, *extra)
        daemons.append(daemon)
        daemon.start()
        return daemon.ready() if ready else daemon

    try:
        yield start
    finally:
        for daemon in daemons:
            daemon.close()


@dataclass
class Link:
    """A veth pair between the daemon's namespace (``inner``, eth1) and a peer namespace
    (``outer``, eth0), with one /24 between them."""

    inner: str
    outer: str
    inner_addr: str
    outer_addr: str


@contextlib.contextmanager
def peer_namespace(netns: str, peer: str) -> Iterator[Link]:
    """A new namespace ``peer`` wired to ``netns`` by a veth pair: 10.77.0.1 (netns, eth1)
    and 10.77.0.2 (peer, eth0). Removed afterwards whatever happens."""
    subprocess.run(["ip", "netns", "add", peer], check=True)
    try:
        veth = ["ip", "-n", netns, "link", "add", "eth1", "type", "veth"]
        subprocess.run([*veth, "peer", "name", "eth0", "netns", peer], check=True)
        for ns, dev, addr in ((netns, "eth1", "10.77.0.1/24"), (peer, "eth0", "10.77.0.2/24")):
            subprocess.run(["ip", "-n", ns, "addr", "add", addr, "dev", dev], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
        subprocess.run(["ip", "-n", peer, "link", "set", "lo", "up"], check=True)
        yield Link(netns, peer, "10.77.0.1", "10.77.0.2")
    finally:
        subprocess.run(["ip", "netns", "del", peer], check=False)


ECHO_RULE = """
[[rules]]
name = "echo"
from = "lan"
to = "self"
proto = "tcp"
dport = [5555]
action = "accept"
"""

ECHO_SERVER = """
import socket
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("10.77.0.1", 5555))
srv.listen(1)
print("listening", flush=True)
conn, _ = srv.accept()
while data := conn.recv(100):
    conn.sendall(data)
"""

ECHO_CLIENT = """
import socket, sys
c = socket.create_connection(("10.77.0.1", 5555), timeout=float(sys.argv[1]))
for line in sys.stdin:
    c.sendall(line.encode())
    print(c.recv(100).decode().strip(), flush=True)
"""


@dataclass
class EchoFlow:
    """One established TCP connection to the echo server (see ``echo_flow``)."""

    client: subprocess.Popen[str]

    def echo(self, word: str) -> None:
        """Sends ``word`` and asserts it comes back."""
        assert self.client.stdin is not None and self.client.stdout is not None
        self.client.stdin.write(word + "\n")
        self.client.stdin.flush()
        assert self.client.stdout.readline().strip() == word


@contextlib.contextmanager
def echo_flow(server_ns: str, client_ns: str, timeout: float) -> Iterator[EchoFlow]:
    """An echo server on 10.77.0.1:5555 in ``server_ns`` and a client connected to it from
    ``client_ns`` (``timeout``: of the connect and of each read); both killed afterwards."""
    server = client = None
    try:
        server = subprocess.Popen(
            ["ip", "netns", "exec", server_ns, sys.executable, "-c", ECHO_SERVER],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        client = subprocess.Popen(
            ["ip", "netns", "exec", client_ns, sys.executable, "-c", ECHO_CLIENT, str(timeout)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdin is not None and client.stdout is not None
        yield EchoFlow(client)
    finally:
        for proc in (client, server):
            if proc is not None:
                proc.kill()
                proc.wait()
