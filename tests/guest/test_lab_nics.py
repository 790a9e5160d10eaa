"""Traffic from host network namespaces through the guest's NICs.

The guest routes between its eth0 (a client namespace on the host) and eth1 (a
server namespace on the host) with tests/guest/lab.toml applied by the appliance:
TCP 8080 is accepted, 8081 dropped. The host connects to both through the guest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from tests.guest.conftest import BootedGuest
from tests.guest.lab import CLOSED_PORT, OPEN_PORT, address_host_sides, connect, serving

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def server(host_netns: Callable[[str], str]) -> Iterator[tuple[str, str]]:
    client_ns = host_netns("client")
    server_ns = host_netns("server")
    with serving(server_ns):
        yield client_ns, server_ns


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
    address_host_sides(client_ns, server_ns)

    opened = connect(client_ns, OPEN_PORT, wait=30)
    closed = connect(client_ns, CLOSED_PORT, wait=5)
    (guest.io / "stop").touch()
    status = guest.finish(timeout=120)

    assert opened == {"result": "answer", "data": "ok\n"}, guest.output()
    assert closed == {"result": "timeout"}, guest.output()
    assert status == 0, guest.output()
    counters = json.loads((guest.io / "counters.json").read_text())
    assert _counter(counters, "client-server-open") >= 1
    assert _counter(counters, "client-server-closed") >= 1
