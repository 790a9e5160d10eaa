"""The bundle and hub commands, run as a user would."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.conftest import REPO, run_appliance
from tests.sync.conftest import PROFILE_TOML


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    profile = tmp_path / "edge.toml"
    profile.write_text(
        PROFILE_TOML + '\n[hub]\nurl = "http://127.0.0.1:1/x/"\ntrust = ["k.pub"]\n'
        '[metrics]\nlisten = "127.0.0.1:9469"\n'
    )
    (tmp_path / "k.pub").write_text("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
    (tmp_path / "bl.txt").write_text("# feed\n192.0.2.1\n198.51.100.0/24 # net\n\n")
    return profile, tmp_path / "out"


def test_keygen_build_sign_verify(tmp_path: Path) -> None:
    profile, out = _setup(tmp_path)
    key = tmp_path / "hub.key"
    r = run_appliance("bundle", "keygen", str(key))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    r = run_appliance("bundle", "keygen", str(key))
    assert r.returncode != 0
    assert "exists" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

    args = ["bundle", "build", "--profile", str(profile), "--sets", f"blocklist={tmp_path}/bl.txt"]
    r = run_appliance(*args, "--version", "7", "--expires", "1d", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "bundle.json").read_text())
    assert doc["version"] == 7
    assert "hub" not in doc["profile"] and "metrics" not in doc["profile"]
    assert doc["sets"]["blocklist"]["full"] == ["192.0.2.1", "198.51.100.0/24"]

    pub = f"{key}.pub"
    r = run_appliance("bundle", "verify", str(out), "--trust", pub)
    assert r.returncode == 1
    assert r.stderr.startswith("rejected: no_signature")

    assert run_appliance("bundle", "sign", str(out), "--key", str(key)).returncode == 0
    r = run_appliance("bundle", "verify", str(out), "--trust", pub)
    assert r.returncode == 0, r.stderr
    assert "version 7" in r.stdout
    r = run_appliance("bundle", "verify", str(out), "--trust", pub, "--min-version", "8")
    assert r.returncode == 1
    assert r.stderr.strip().startswith("rejected: rollback")
    assert len(r.stderr.strip().splitlines()) == 1

    # Rotation: a second key signs too; either alone is trusted.
    key2 = tmp_path / "new.key"
    assert run_appliance("bundle", "keygen", str(key2)).returncode == 0
    assert run_appliance("bundle", "sign", str(out), "--key", str(key2)).returncode == 0
    assert len((out / "bundle.json.sig").read_text().splitlines()) == 2
    for trusted in (pub, f"{key2}.pub"):
        assert run_appliance("bundle", "verify", str(out), "--trust", trusted).returncode == 0

    # One tampered byte.
    data = (out / "bundle.json").read_bytes()
    (out / "bundle.json").write_bytes(data.replace(b"192.0.2.1", b"192.0.2.9"))
    r = run_appliance("bundle", "verify", str(out), "--trust", pub)
    assert r.returncode == 1
    assert r.stderr.startswith("rejected: bad_signature")


def test_build_exits_2_on_unknown_set_or_bad_element(tmp_path: Path) -> None:
    profile, out = _setup(tmp_path)
    base = ["bundle", "build", "--profile", str(profile), "--version", "1", "--expires", "1h"]
    r = run_appliance(*base, "--sets", f"nope={tmp_path}/bl.txt", str(out))
    assert r.returncode == 2
    assert "not a set of the profile" in r.stderr
    (tmp_path / "v6.txt").write_text("2001:db8::1\n")
    r = run_appliance(*base, "--sets", f"blocklist={tmp_path}/v6.txt", str(out))
    assert r.returncode == 2
    assert "v6.txt:1" in r.stderr
    (tmp_path / "bad.toml").write_text('version = 1\nname = "x"\n[zones.a]\ninterfaces = 3\n')
    r = run_appliance(
        "bundle",
        "build",
        "--profile",
        str(tmp_path / "bad.toml"),
        "--version",
        "1",
        "--expires",
        "1h",
        str(out),
    )
    assert r.returncode == 2
    assert "zones.a.interfaces" in r.stderr
    assert not (out / "bundle.json").exists()


def test_build_a_shipped_profile(tmp_path: Path) -> None:
    r = run_appliance(
        "bundle",
        "build",
        "--profile",
        str(REPO / "profiles" / "edge-gateway.toml"),
        "--version",
        "1",
        "--expires",
        "2099-01-01T00:00:00Z",
        str(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "bundle.json").read_text())
    assert doc["expires"] == "2099-01-01T00:00:00Z"
    assert "elements_file" not in json.dumps(doc)


def test_delta_build_writes_full_too(tmp_path: Path) -> None:
    profile, out = _setup(tmp_path)
    key = tmp_path / "hub.key"
    run_appliance("bundle", "keygen", str(key), check=True)
    base = ["bundle", "build", "--profile", str(profile), "--expires", "1h"]
    run_appliance(
        *base, "--version", "1", "--sets", f"blocklist={tmp_path}/bl.txt", str(out), check=True
    )
    old = tmp_path / "v1.json"
    old.write_bytes((out / "bundle.json").read_bytes())
    (tmp_path / "bl2.txt").write_text("192.0.2.1\n203.0.113.5\n")
    r = run_appliance(
        *base,
        "--version",
        "2",
        "--sets",
        f"blocklist={tmp_path}/bl2.txt",
        "--delta-from",
        str(old),
        str(out),
    )
    assert r.returncode == 0, r.stderr
    delta = json.loads((out / "bundle.json").read_text())
    assert delta["sets"]["blocklist"] == {
        "base": 1,
        "add": ["203.0.113.5"],
        "del": ["198.51.100.0/24"],
    }
    full = json.loads((out / "full" / "bundle.json").read_text())
    assert full["sets"]["blocklist"]["full"] == ["192.0.2.1", "203.0.113.5"]
    run_appliance("bundle", "sign", str(out), "--key", str(key), check=True)
    for directory in (out, out / "full"):
        r = run_appliance("bundle", "verify", str(directory), "--trust", f"{key}.pub")
        assert r.returncode == 0, r.stderr


def test_verify_a_tuf_repository_as_an_appliance_would(tmp_path: Path) -> None:
    """``bundle verify DIR --root ROOT``: the TUF workflow from that root alone; a bad
    repository exits 1 with one line naming the result, as a rejected signed pair does."""
    import time

    from appliance.storage import atomic_write
    from appliance.sync import bundle as B
    from appliance.sync import keys, repository, tuf
    from tests.sync.conftest import build

    hub = tmp_path / "hub"
    now = time.time()
    key = keys.generate()
    repository.init(hub, {role: ([key.public], 1) for role in tuf.ROLES}, now + 86400)
    repository.sign(hub, tuf.ROOT, key)
    atomic_write(hub / B.BUNDLE_FILE, build(3, ["192.0.2.3"]), 0o644)
    repository.stage_targets(hub, now + 86400)
    repository.sign(hub, tuf.TARGETS, key)
    repository.publish(hub, key, key, now + 86400, now + 3600)
    root = str(hub / "1.root.json")

    r = run_appliance("bundle", "verify", str(hub), "--root", root)
    assert r.returncode == 0, r.stderr
    assert "valid: version 3" in r.stdout and "targets.json version 1 (1 of 1" in r.stdout
    r = run_appliance("bundle", "verify", f"file://{hub}/", "--root", root, "--min-version", "4")
    assert r.returncode == 1 and r.stderr.startswith("rejected: rollback"), r.stderr

    def rejected(*extra: str, code: int = 1) -> str:
        r = run_appliance("bundle", "verify", str(hub), *extra)
        assert r.returncode == code, (r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        return r.stderr

    target = next(hub.glob("*.bundle.json"))
    good = target.read_bytes()
    target.write_bytes(good.replace(b"192.0.2.3", b"192.0.2.9"))  # same length, other bytes
    assert rejected("--root", root).startswith("rejected: bad_signature")
    target.write_bytes(good)
    other = keys.generate()  # a root this repository's keys never signed
    other_root = tmp_path / "other-root.json"
    other_root.write_bytes(
        tuf.sign_new(
            tuf.root_signed(1, now + 86400, {r: ([other.public], 1) for r in tuf.ROLES}), other
        )
    )
    assert rejected("--root", str(other_root)).startswith("rejected: bad_signature")
    (hub / "timestamp.json").rename(tmp_path / "timestamp.json")
    assert rejected("--root", root).startswith("rejected: http_error: timestamp.json")
    assert "give --trust" in rejected(code=2)  # neither --trust nor --root
