"""The manifests and the Containerfile (no root): the DaemonSet and the compose file valid
and confined as the product promises, both alike, their profile valid, the Kubernetes
objects valid against Kubernetes' schemas (kubernetes-validate) and the Containerfile clean
for hadolint."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, run_appliance
from tests.containers.conftest import CONFINED, CONTAINERS

DAEMONSET = CONTAINERS / "daemonset.yaml"
COMPOSE = CONTAINERS / "compose.yaml"
CONTAINERFILE = CONTAINERS / "Containerfile"


def _tool(name: str) -> str:
    """A dev tool of the venv (setup.sh installs them), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        message = f"{name} is not installed (setup.sh installs it with the dev tools)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        _tool("kubernetes-validate")  # brings PyYAML: skips or fails the same way
        raise
    return yaml


def documents(path: Path) -> dict[str, dict[str, Any]]:
    """The YAML documents of ``path`` by kind."""
    return {doc["kind"]: doc for doc in _yaml().safe_load_all(path.read_text()) if doc}


def daemonset() -> tuple[dict[str, Any], dict[str, Any]]:
    """The DaemonSet's pod spec and its one container."""
    pod = documents(DAEMONSET)["DaemonSet"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def test_kubernetes_validates_the_daemonset_strictly() -> None:
    done = subprocess.run(
        [_tool("kubernetes-validate"), "--strict", "--no-warn", str(DAEMONSET)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "configmap/appliance-profile" in done.stdout
    assert "daemonset/appliance" in done.stdout


def test_hadolint_finds_nothing_in_the_containerfile() -> None:
    done = subprocess.run(
        [_tool("hadolint"), "--no-color", str(CONTAINERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, ""), done.stdout + done.stderr


def test_the_daemonset_is_confined_as_promised() -> None:
    pod, container = daemonset()
    assert pod["hostNetwork"] is True
    assert pod["priorityClassName"] == "system-node-critical"
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["privileged"] is False
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert mounts["/var/lib/appliance"]["hostPath"]["path"] == "/var/lib/appliance"
    assert mounts["/etc/appliance"]["configMap"]["name"] == "appliance-profile"
    assert "/etc/appliance" in [
        m["mountPath"] for m in container["volumeMounts"] if m.get("readOnly")
    ]


def test_the_tests_run_the_container_with_the_daemonsets_confinement() -> None:
    _pod, container = daemonset()
    caps = container["securityContext"]["capabilities"]
    flags = list(zip(CONFINED[::2], CONFINED[1::2], strict=False))
    assert [v for k, v in flags if k == "--cap-drop"] == caps["drop"]
    assert [v for k, v in flags if k == "--cap-add"] == caps["add"]
    assert "--read-only" in CONFINED


def test_compose_runs_the_same_container_as_the_daemonset() -> None:
    _pod, container = daemonset()
    (service,) = _yaml().safe_load(COMPOSE.read_text())["services"].values()
    assert service["image"] == container["image"]
    assert service["command"] == container["args"]
    assert service["network_mode"] == "host"
    caps = container["securityContext"]["capabilities"]
    assert (service["cap_drop"], service["cap_add"]) == (caps["drop"], caps["add"])
    assert service["read_only"] is True
    assert "no-new-privileges:true" in service["security_opt"]
    targets = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    for mount in container["volumeMounts"]:
        if mount["mountPath"] != "/tmp":
            assert mount["mountPath"] in targets
    assert targets["/var/lib/appliance"] == "/var/lib/appliance"
    assert service["stop_signal"] == "SIGTERM"


def test_the_configmaps_profile_is_valid_and_its_metrics_are_what_the_probes_ask(
    tmp_path: Path,
) -> None:
    _pod, container = daemonset()
    text = documents(DAEMONSET)["ConfigMap"]["data"]["profile.toml"]
    path = tmp_path / "profile.toml"
    path.write_text(text)
    done = run_appliance("check", str(path))
    assert done.returncode == 0, done.stderr
    import tomllib

    listen = tomllib.loads(text)["metrics"]["listen"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert f"{get['host']}:{get['port']}" == listen
