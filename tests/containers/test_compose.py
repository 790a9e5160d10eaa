"""containers/compose.yaml run for real with podman-compose (root), and the DaemonSet's pod
with `podman kube play`, each on a node that is a throw-away lab namespace: podman entered
into it with nsenter (which keeps the host's /sys/fs/cgroup in view, unlike `ip netns
exec`), so the host network is that namespace; the host paths moved into the test's
directory. Ready and enforcing as the profile says; stopped, the daemon exits 0; `down`
removes the container and leaves the table. Everything is removed whatever happens.

podman-compose 1.0.3 (Debian bookworm) cannot run the compose file: it adds
`--net <project>_default` to every container, and podman refuses it beside
`network_mode: host`; setup.sh installs a later one from PyPI.

The DaemonSet's pod: podman 4.3 (Debian bookworm) plays a Pod, not a DaemonSet, so the test
plays the ConfigMap (with the lab's profile) and the DaemonSet's pod template as a Pod,
without `ports` (a hostNetwork pod maps no port; podman 4.3 refuses port mappings outside a
bridge network), and the tests' rlimits as podman's defaults (`kube play` takes no --ulimit)."""

from __future__ import annotations

import copy
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.lab import traffic
from tests.conftest import IN_CI
from tests.containers.conftest import CONTAINERS, PODMAN, ULIMITS, Node, need, podman
from tests.containers.test_container import (
    assert_enforcing,
    exit_code,
    http_status,
    lab_profile,
    wait_status,
)
from tests.integration.labtools import Lab

pytestmark = pytest.mark.root

DAEMONSET = CONTAINERS / "daemonset.yaml"
COMPOSE = CONTAINERS / "compose.yaml"


@pytest.fixture(scope="module")
def servers(lab: Lab) -> Iterator[None]:
    with traffic.serve(lab.ns("wan"), "tcp", [5000, 5001]):
        yield


def pod_manifest(image: str, name: str, profile: str, node: Node) -> list[dict[str, Any]]:
    """The ConfigMap (holding ``profile``) and the DaemonSet's pod template as a Pod named
    ``name`` running ``image``, its hostPath volumes under the node's directory."""
    import yaml

    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(DAEMONSET.read_text()) if doc}
    configmap = copy.deepcopy(docs["ConfigMap"])
    configmap["metadata"].pop("namespace", None)
    configmap["data"] = {"profile.toml": profile}
    template = copy.deepcopy(docs["DaemonSet"]["spec"]["template"])
    spec = template["spec"]
    (container,) = spec["containers"]
    container["image"] = image
    container.pop("ports", None)
    hosts = {"state": node.state_dir, "run": node.run_dir, "alerts": node.root / "alerts"}
    for volume in spec["volumes"]:
        if "hostPath" in volume:
            volume["hostPath"]["path"] = str(hosts[volume["name"]])
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": template["metadata"]["labels"]},
        "spec": spec,
    }
    return [configmap, pod]


def containers_conf(path: Path) -> Path:
    """The tests' rlimits as podman's defaults (`kube play` takes no --ulimit)."""
    limits = [value for flag, value in zip(ULIMITS[::2], ULIMITS[1::2], strict=True)]
    quoted = ", ".join(f'"{limit}"' for limit in limits)
    path.write_text(f"[containers]\ndefault_ulimits = [{quoted}]\n")
    return path


def kube(netns: str, conf: Path, *args: str) -> str:
    """``podman kube ARGS`` with podman inside ``netns`` (the node's network)."""
    done = subprocess.run(
        ["nsenter", f"--net=/run/netns/{netns}", *PODMAN, "kube", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "CONTAINERS_CONF": str(conf)},
    )
    if done.returncode != 0:
        raise AssertionError(f"podman kube {' '.join(args)}: exit {done.returncode}: {done.stderr}")
    return done.stdout


@pytest.fixture
def pod_name() -> Iterator[str]:
    name = f"appliance-kube-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        podman("pod", "rm", "--force", "--time", "0", name, check=False)
        # The network kube play makes for its pods (unused by a hostNetwork pod; kept while
        # another pod uses it).
        podman("network", "rm", "podman-default-kube-network", check=False)


def test_the_daemonsets_pod_played_on_a_node_enforces_and_down_leaves_the_table(
    image: str, lab: Lab, servers: None, node: Node, pod_name: str
) -> None:
    need("nsenter")
    need("catatonit")  # podman builds the pod's pause image with it
    import yaml

    manifest = node.root / "pod.yaml"
    manifest.write_text(
        yaml.safe_dump_all(pod_manifest(image, pod_name, lab_profile("kube", 5000), node))
    )
    conf = containers_conf(node.root / "containers.conf")
    kube(lab.ns("appliance"), conf, "play", str(manifest))

    status = wait_status(node)
    assert (status["policy"], status["source"], status["last_error"]) == (
        "kube",
        "profile",
        None,
    )
    container = f"{pod_name}-appliance"
    proc = podman("exec", container, "cat", "/proc/1/status")
    assert "\nCapEff:\t0000000000003000\n" in proc
    assert http_status(lab, "/healthz") == 200
    assert http_status(lab, "/readyz") == 200
    assert_enforcing(lab, 5000, 5001)

    podman("pod", "stop", "--time", "30", pod_name)  # SIGTERM
    assert exit_code(container) == "0"
    kube(lab.ns("appliance"), conf, "down", str(manifest))
    exists = subprocess.run([*PODMAN, "pod", "exists", pod_name], timeout=60, check=False)
    assert exists.returncode == 1, "kube down removes the pod"
    assert container not in podman("ps", "--all", "--format", "{{.Names}}").split()
    assert "table inet appliance" in lab.nft("list", "tables")
    assert_enforcing(lab, 5000, 5001)


def compose_file(image: str, project: str, node: Node) -> dict[str, Any]:
    """containers/compose.yaml as project ``project`` running ``image``, its container named
    ``project``, its host paths under the node's directory."""
    import yaml

    compose = yaml.safe_load(COMPOSE.read_text())
    compose["name"] = project
    (service,) = compose["services"].values()
    service["image"] = image
    service["container_name"] = project
    hosts = {
        "/etc/appliance": node.profile_dir,
        "/var/lib/appliance": node.state_dir,
        "/run/appliance": node.run_dir,
        "/var/log/appliance": node.root / "alerts",
    }
    (node.root / "alerts").mkdir(exist_ok=True)
    volumes = []
    for volume in service["volumes"]:
        _host, target, *mode = volume.split(":")
        volumes.append(":".join([str(hosts[target]), target, *mode]))
    service["volumes"] = volumes
    return dict(compose)


def podman_compose() -> str:
    here = Path(sys.executable).parent / "podman-compose"
    found = str(here) if here.exists() else shutil.which("podman-compose")
    if found is None:
        message = "podman-compose is not installed (setup.sh installs it with the dev tools)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def compose(netns: str, path: Path, *args: str) -> str:
    """``podman-compose -f PATH ARGS`` with podman inside ``netns`` (the node's network) and
    the tests' podman flags."""
    done = subprocess.run(
        [
            "nsenter",
            f"--net=/run/netns/{netns}",
            podman_compose(),
            "--podman-args",
            shlex.join(PODMAN[1:]),
            "--podman-run-args",
            shlex.join(ULIMITS),
            "-f",
            str(path),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"podman-compose {' '.join(args)}: exit {done.returncode}: {done.stderr[-2000:]}"
        )
    return done.stdout


@pytest.fixture
def project() -> Iterator[str]:
    name = f"appliance-compose-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)
        podman("pod", "rm", "--force", "--time", "0", f"pod_{name}", check=False)


def test_the_compose_file_run_on_a_node_enforces_and_down_leaves_the_table(
    image: str, lab: Lab, servers: None, node: Node, project: str
) -> None:
    need("nsenter")
    import yaml

    node.write_profile(lab_profile("compose", 5001))
    path = node.root / "compose.yaml"
    path.write_text(yaml.safe_dump(compose_file(image, project, node)))
    compose(lab.ns("appliance"), path, "up", "--detach")

    status = wait_status(node, lambda status: status["policy"] == "compose")
    assert (status["source"], status["last_error"]) == ("profile", None)
    limits = podman(
        "inspect",
        "--format",
        "{{.HostConfig.NetworkMode}} {{.HostConfig.PidsLimit}} {{.HostConfig.Memory}}",
        project,
    )
    assert limits.split() == ["host", "128", str(512 * 1024 * 1024)]
    proc = podman("exec", project, "cat", "/proc/1/status")
    assert "\nCapEff:\t0000000000003000\n" in proc
    assert http_status(lab, "/healthz") == 200
    assert http_status(lab, "/readyz") == 200
    assert_enforcing(lab, 5001, 5000)

    compose(lab.ns("appliance"), path, "stop")  # SIGTERM
    assert exit_code(project) == "0"
    compose(lab.ns("appliance"), path, "down")
    assert project not in podman("ps", "--all", "--format", "{{.Names}}").split()
    assert "table inet appliance" in lab.nft("list", "tables")
    assert_enforcing(lab, 5001, 5000)
