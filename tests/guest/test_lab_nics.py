"""Traffic from host network namespaces through the guest's NICs.

The guest routes between its eth0 (a client namespace on the host) and eth1 (a
server namespace on the host) with tests/guest/lab.toml applied by the appliance:
TCP 8080 is accepted, 8081 dropped. The host connects to both through the guest.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest

from tests.guest.conftest import BootedGuest

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]

CLIENT_ADDR, CLIENT_GW = "198.18.1.2/24", "198.18.1.1"
SERVER_ADDR, SERVER_GW = "198.18.2.2/24", "198.18.2.1"
SERVER_IP = SERVER_ADDR.split("/")[0]

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


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True)


def _connect(ns: str, port: int, wait: float) -> dict[str, str]:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, SERVER_IP, str(port), str(wait)],
        capture_output=True,
        text=True,
        timeout=wait * 2 + 30,
        check=True,
    )
    result: dict[str, str] = json.loads(done.stdout)
    return result


@pytest.fixture
def server(host_netns: Callable[[str], str]) -> Iterator[tuple[str, str]]:
    client_ns = host_netns("client")
    server_ns = host_netns("server")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, sys.executable, "-c", SERVER, "1200"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "listening"
        yield client_ns, server_ns
    finally:
        proc.kill()
        proc.wait(10)


def _counter(counters: dict[str, object], name: str) -> int:
    for entry in counters.get("nftables", []):  # type: ignore[attr-defined]
        counter = entry.get("counter") if isinstance(entry, dict) else None
        if counter and counter.get("name") == name:
            return int(counter["packets"])
    raise AssertionError(f"no counter {name} in the guest's table")


def test_guest_forwards_open_port_and_drops_closed_one(
    boot_guest: Callable[..., BootedGuest], server: tuple[str, str]
) -> None:
    client_ns, server_ns = server
    guest = boot_guest(["bash", "tests/guest/lab_router.sh", "600"], [client_ns, server_ns])
    # The guest made tap0 (to its eth0) in client_ns and tap1 (eth1) in server_ns.
    guest.wait_for("ready", timeout=600)
    _ip(client_ns, "addr", "add", CLIENT_ADDR, "dev", "tap0")
    _ip(client_ns, "route", "add", "default", "via", CLIENT_GW)
    _ip(server_ns, "addr", "add", SERVER_ADDR, "dev", "tap1")
    _ip(server_ns, "route", "add", "default", "via", SERVER_GW)

    opened = _connect(client_ns, 8080, wait=30)
    closed = _connect(client_ns, 8081, wait=5)
    (guest.io / "stop").touch()
    status = guest.finish(timeout=120)

    assert opened == {"result": "answer", "data": "ok\n"}, guest.output()
    assert closed == {"result": "timeout"}, guest.output()
    assert status == 0, guest.output()
    counters = json.loads((guest.io / "counters.json").read_text())
    assert _counter(counters, "client-server-open") >= 1
    assert _counter(counters, "client-server-closed") >= 1
