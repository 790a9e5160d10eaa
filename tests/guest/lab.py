"""Host side of the NIC lab: a server namespace and a client namespace on the host,
each wired to one of the guest's NICs, and TCP between them through the guest.

The guest forwards between its eth0 (the client's side, 198.18.1.0/24) and eth1 (the
server's side, 198.18.2.0/24); the server answers "ok" on 8080 and 8081.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager

CLIENT_ADDR, CLIENT_GW = "198.18.1.2/24", "198.18.1.1"
SERVER_ADDR, SERVER_GW = "198.18.2.2/24", "198.18.2.1"
SERVER_IP = SERVER_ADDR.split("/")[0]
# The guest's side: DEVICE ADDRESS lines (qemu/guest/guest-nics reads this format).
GUEST_NICS = f"eth0 {CLIENT_GW}/24\neth1 {SERVER_GW}/24\n"
OPEN_PORT, CLOSED_PORT = 8080, 8081

# Answers "ok" on both ports; ends by itself after a while.
SERVER = textwrap.dedent(
    """
    import selectors, socket, sys, time
    sel = selectors.DefaultSelector()
    for port in (8080, 8081):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen()
        sel.register(s, selectors.EVENT_READ)
    print("listening", flush=True)
    end = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=0.5):
            conn, _ = key.fileobj.accept()
            conn.sendall(b"ok\\n")
            conn.close()
    """
)

# Connects to HOST:PORT; prints one JSON line: what happened.
CLIENT = textwrap.dedent(
    """
    import json, socket, sys
    host, port, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    try:
        with socket.create_connection((host, port), timeout=wait) as s:
            s.settimeout(wait)
            result = {"result": "answer", "data": s.recv(16).decode()}
    except TimeoutError:
        result = {"result": "timeout"}
    except ConnectionRefusedError:
        result = {"result": "refused"}
    except OSError as exc:
        result = {"result": "error", "data": str(exc)}
    print(json.dumps(result))
    """
)


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True)


def address_host_sides(client_ns: str, server_ns: str) -> None:
    """Addresses and routes on the taps (tap0: client, tap1: server) run.sh put there."""
    ip(client_ns, "addr", "add", CLIENT_ADDR, "dev", "tap0")
    ip(client_ns, "route", "add", "default", "via", CLIENT_GW)
    ip(server_ns, "addr", "add", SERVER_ADDR, "dev", "tap1")
    ip(server_ns, "route", "add", "default", "via", SERVER_GW)


def connect(ns: str, port: int, wait: float) -> dict[str, str]:
    """TCP from namespace ``ns`` to the server through the guest: what happened."""
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, SERVER_IP, str(port), str(wait)],
        capture_output=True,
        text=True,
        timeout=wait * 2 + 30,
        check=True,
    )
    result: dict[str, str] = json.loads(done.stdout)
    return result


@contextmanager
def serving(server_ns: str, seconds: int = 1200) -> Iterator[None]:
    """The server in ``server_ns``, listening when this enters, killed when it exits."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, sys.executable, "-c", SERVER, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "listening"
        yield
    finally:
        proc.kill()
        proc.wait(10)
