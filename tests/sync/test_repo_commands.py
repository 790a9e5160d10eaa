"""The TUF repository commands, run as a publisher would (keys on different machines)."""

from __future__ import annotations

import json
from pathlib import Path

from appliance.sync import bundle as B
from tests.conftest import run_appliance
from tests.sync.conftest import build


def test_init_sign_publish_timestamp_and_rotate(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    names = ("root1", "root2", "online", "new")
    for name in names:
        r = run_appliance("bundle", "keygen", str(tmp_path / f"{name}.key"))
        assert r.returncode == 0, r.stderr
    pub = {name: str(tmp_path / f"{name}.key.pub") for name in names}
    key = {name: str(tmp_path / f"{name}.key") for name in names}
    r = run_appliance(
        "bundle", "repo-init", str(hub),
        "--root-key", pub["root1"], "--root-key", pub["root2"], "--root-threshold", "2",
        "--targets-key", pub["root1"], "--targets-key", pub["root2"],
        "--snapshot-key", pub["online"], "--timestamp-key", pub["online"],
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run_appliance("bundle", "repo-sign", str(hub), "--role", "root", "--key", key["root1"])
    assert r.returncode == 0 and "1 of the 2" in r.stdout, r.stderr
    r = run_appliance("bundle", "repo-sign", str(hub), "--role", "root", "--key", key["root2"])
    assert "2 of the 2" in r.stdout, r.stderr
    (hub / B.BUNDLE_FILE).write_bytes(build(1))
    assert run_appliance("bundle", "repo-targets", str(hub)).returncode == 0
    r = run_appliance("bundle", "repo-sign", str(hub), "--role", "targets", "--key", key["root2"])
    assert "1 of the 1" in r.stdout, r.stdout
    publish = ("bundle", "repo-publish", str(hub), "--snapshot-key", key["online"])
    r = run_appliance(*publish, "--timestamp-key", key["online"])
    assert r.returncode == 0, r.stderr
    assert "1.root.json" in r.stdout and "timestamp.json" in r.stdout
    r = run_appliance("bundle", "repo-timestamp", str(hub), "--key", key["online"])
    assert r.returncode == 0, r.stderr
    assert json.loads((hub / "timestamp.json").read_text())["signed"]["version"] == 2
    # Rotation: the new root needs the old root's threshold.
    r = run_appliance(
        "bundle", "repo-key", str(hub), "--role", "targets", "--add", pub["new"],
        "--revoke", pub["root1"],
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    run_appliance("bundle", "repo-sign", str(hub), "--role", "root", "--key", key["root1"])
    r = run_appliance(*publish, "--timestamp-key", key["online"])
    assert r.returncode == 2 and "1 of the 2" in r.stderr and "Traceback" not in r.stderr
    assert not (hub / "2.root.json").exists()
    # Bad input: one line, exit 2, nothing written.
    r = run_appliance("bundle", "repo-timestamp", str(tmp_path / "none"), "--key", key["online"])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
