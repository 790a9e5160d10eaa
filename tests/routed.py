"""A router between two hosts, in three network namespaces of the test's own, and one TCP
echo flow through it: for the flow offload tests (host and guest) and bench/forwarding.py.

    client (eth0 10.88.1.2) -- (r0 10.88.1.1) router (r1 10.88.2.1) -- (eth0 10.88.2.2) server

The router's links are ``r0`` (the client's side) and ``r1`` (the server's). Everything is
removed afterwards, whatever happens.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

CLIENT_ADDR = "10.88.1.2"
SERVER_ADDR = "10.88.2.2"
ECHO_PORT = 9000

# A profile for the router: client (r0) to server (r1) on the echo port, nothing else.
ROUTER_PROFILE = """
version = 1
name = "router"

[defaults]
offload = true

[zones.client]
interfaces = ["r0"]

[zones.server]
interfaces = ["r1"]

[[rules]]
name = "echo"
from = "client"
to = "server"
proto = "tcp"
dport = [9000]
action = "accept"
"""


@dataclass(frozen=True)
class Routed:
    client: str
    router: str
    server: str


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def routed(tag: str = "") -> Iterator[Routed]:
    """client -- router -- server, three fresh namespaces (unique names)."""
    base = f"aprt-{tag}{uuid.uuid4().hex[:6]}"
    names = Routed(f"{base}-c", f"{base}-r", f"{base}-s")
    made: list[str] = []
    try:
        for ns in (names.client, names.router, names.server):
            ip("netns", "add", ns)
            made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        for ns, link, net in ((names.client, "r0", "10.88.1"), (names.server, "r1", "10.88.2")):
            ip("-n", names.router, "link", "add", link, "type", "veth", "peer", "eth0", "netns", ns)
            ip("-n", names.router, "addr", "add", f"{net}.1/24", "dev", link)
            ip("-n", names.router, "link", "set", link, "up")
            ip("-n", ns, "addr", "add", f"{net}.2/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "route", "add", "default", "via", f"{net}.1")
        subprocess.run(
            ["ip", "netns", "exec", names.router, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
            check=True,
        )
        yield names
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False)


ECHO_SERVER = f"""
import socket
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("{SERVER_ADDR}", {ECHO_PORT}))
srv.listen(1)
srv.settimeout(120)
print("listening", flush=True)
conn, _ = srv.accept()
conn.settimeout(120)
while data := conn.recv(100):
    conn.sendall(data)
"""

# One line in, one line out: the echo, or TIMEOUT when none came within the timeout.
ECHO_CLIENT = f"""
import socket, sys
timeout = float(sys.argv[1])
c = socket.create_connection(("{SERVER_ADDR}", {ECHO_PORT}), timeout=timeout)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
print("connected", flush=True)
for line in sys.stdin:
    try:
        c.sendall(line.encode())
        print(c.recv(100).decode().strip() or "CLOSED", flush=True)
    except OSError:
        print("TIMEOUT", flush=True)
"""


@dataclass
class EchoFlow:
    """One TCP connection from the client to the echo server, through the router."""

    client: subprocess.Popen[str]

    def echo(self, word: str) -> bool:
        """Send ``word``: True when it came back, False when nothing did in time."""
        assert self.client.stdin is not None and self.client.stdout is not None
        self.client.stdin.write(word + "\n")
        self.client.stdin.flush()
        answer = self.client.stdout.readline().strip()
        if answer == word:
            return True
        assert answer in ("TIMEOUT", "CLOSED", ""), answer
        return False


@contextlib.contextmanager
def echo_flow(net: Routed, timeout: float) -> Iterator[EchoFlow]:
    """An echo server in ``net.server`` and a client connected to it from ``net.client``
    (``timeout``: of the connect and of each answer); both killed afterwards."""
    server = client = None
    try:
        server = subprocess.Popen(
            ["ip", "netns", "exec", net.server, sys.executable, "-c", ECHO_SERVER],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        client = subprocess.Popen(
            ["ip", "netns", "exec", net.client, sys.executable, "-c", ECHO_CLIENT, str(timeout)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdout is not None and client.stdout.readline().strip() == "connected"
        yield EchoFlow(client)
    finally:
        for proc in (client, server):
            if proc is not None:
                proc.kill()
                proc.wait()
