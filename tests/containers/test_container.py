"""The appliance image run as the DaemonSet runs it (root, podman): inside a lab namespace
(the node's network), with CAP_NET_ADMIN and CAP_NET_RAW only, a read-only root, the profile,
the state and the control socket on host paths. Ready and enforcing; healthy; SIGHUP reloads
a changed profile; stopped with SIGTERM it exits 0 and the table stays; started again on a
node whose kernel lost the table and whose profile is broken, it enforces the last good
policy from the host path; the same image's `appliance uninstall --yes` takes it all out."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from appliance.adapters.nsexec import run_in_netns
from appliance.daemon.control import NoDaemon, request
from appliance.lab import traffic
from tests.containers.conftest import CONFINED, ULIMITS, Node, podman
from tests.integration.labtools import Lab, probe, profile

pytestmark = pytest.mark.root

METRICS = "127.0.0.1:9469"


def lab_profile(name: str, port: int) -> str:
    """The lab's zones, the metrics listener, and lan -> wan open on ``port`` only."""
    return profile(
        name,
        f"""
        [metrics]
        listen = "{METRICS}"

        [[rules]]
        name = "lan-to-wan"
        from = "lan"
        to = "wan"
        proto = "tcp"
        dport = [{port}]
        action = "accept"
        """,
    )


PROFILE = lab_profile("container", 5000)
BROKEN = 'version = 1\nname = "container"\n[[rules]]\nname = "x"\naction = "maybe"\n'


@pytest.fixture(scope="module")
def servers(lab: Lab) -> Iterator[None]:
    with traffic.serve(lab.ns("wan"), "tcp", [5000, 5001]):
        yield


def enforcing(status: dict[str, Any]) -> bool:
    """The daemon has enforced a policy: its control socket answers from the start, while
    it boots, with no policy yet."""
    return status["policy"] is not None


def wait_status(
    node: Node, until: Callable[[dict[str, Any]], bool] = enforcing, timeout: float = 60
) -> dict[str, Any]:
    """The daemon's status once it answers on the control socket and ``until`` holds (by
    default: a policy is enforced); fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status: dict[str, Any] = request(node.control_socket, {"op": "status"})["status"]
            if until(status):
                return status
        except NoDaemon:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no daemon answered as expected in {timeout:.0f} s")
        time.sleep(0.2)


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def http_status(lab: Lab, path: str) -> int:
    """The status of GET ``path`` on the metrics listener, from the node's network."""
    return run_in_netns(lab.ns("appliance"), _http_status, f"http://{METRICS}{path}", timeout=15)


def assert_enforcing(lab: Lab, open_port: int, dropped_port: int) -> None:
    assert probe(lab, "lan", "wan", "tcp", open_port, expect="open") == "open"
    assert probe(lab, "lan", "wan", "tcp", dropped_port, expect="timeout") == "timeout"


def exit_code(name: str) -> str:
    return podman("inspect", "--format", "{{.State.ExitCode}}", name).strip()


def test_runs_confined_reloads_restarts_from_host_state_and_leaves_the_table_on_sigterm(
    image: str, lab: Lab, servers: None, node: Node
) -> None:
    node.write_profile(PROFILE)
    name = node.run(image, lab.ns("appliance"))
    status = wait_status(node)
    assert (status["policy"], status["source"], status["last_error"]) == (
        "container",
        "profile",
        None,
    )
    # PID 1 is the daemon, with CAP_NET_ADMIN and CAP_NET_RAW and nothing else.
    proc = podman("exec", name, "cat", "/proc/1/status", "/proc/1/cmdline")
    assert "\nCapEff:\t0000000000003000\n" in proc
    assert "\nCapBnd:\t0000000000003000\n" in proc
    assert "appliance\0run\0" in proc
    assert_enforcing(lab, 5000, 5001)
    # nft inside the image lists the table as the host does (protocol names included), so
    # the daemon's read-back of its own table matches what it applied.
    table = ("nft", "-s", "list", "table", "inet", "appliance")
    assert podman("exec", name, *table) == lab.nft(*table[1:])
    assert http_status(lab, "/metrics") == 200
    assert http_status(lab, "/healthz") == 200
    assert http_status(lab, "/readyz") == 200
    assert list(node.state_dir.iterdir()), "the last good policy is on the host path"

    # A new profile (a ConfigMap update) and SIGHUP to PID 1: reloaded.
    node.write_profile(lab_profile("container-b", 5001))
    podman("kill", "--signal", "HUP", name)
    status = wait_status(node, lambda status: status["policy"] == "container-b")
    reloaded_hash = status["table_hash"]
    assert (status["source"], status["last_error"]) == ("profile", None)
    assert_enforcing(lab, 5001, 5000)

    podman("stop", "--time", "30", name)  # SIGTERM
    assert exit_code(name) == "0"
    assert "table inet appliance" in lab.nft("list", "tables")
    assert_enforcing(lab, 5001, 5000)

    # A node that rebooted (the kernel lost the table) and a broken ConfigMap: the container
    # starts again and enforces the last good policy from the host path.
    lab.nft("delete", "table", "inet", "appliance")
    assert probe(lab, "lan", "wan", "tcp", 5000, expect="open") == "open"
    node.write_profile(BROKEN)
    podman("start", name)
    status = wait_status(node)
    assert (status["policy"], status["source"], status["table_hash"]) == (
        "container-b",
        "last_good",
        reloaded_hash,
    )
    assert "rules[0].action" in (status["last_error"] or "")
    assert_enforcing(lab, 5001, 5000)
    assert http_status(lab, "/healthz") == 200
    assert http_status(lab, "/readyz") == 503  # running, but not the intended policy

    podman("stop", "--time", "30", name)
    assert exit_code(name) == "0"
    assert "table inet appliance" in lab.nft("list", "tables")


def test_uninstall_from_the_image_removes_the_table(image: str, lab: Lab, node: Node) -> None:
    lab.apply(PROFILE)
    assert "table inet appliance" in lab.nft("list", "tables")
    common = [
        "run",
        "--rm",
        "--network",
        f"ns:/run/netns/{lab.ns('appliance')}",
        *CONFINED,
        *ULIMITS,
        image,
        "uninstall",
    ]
    dry = podman(*common)
    assert "- table inet appliance" in dry
    assert "table inet appliance" in lab.nft("list", "tables")
    done = podman(*common, "--yes")
    assert "removed table inet appliance" in done
    assert "table inet appliance" not in lab.nft("list", "tables")
