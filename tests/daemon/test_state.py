"""The last-good store and the failsafe policy. Pure: no kernel."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from appliance.daemon.failsafe import failsafe_desired, failsafe_profile
from appliance.daemon.state import StateStore, boot_script
from appliance.model.parse import load_profile, parse_profile
from appliance.reconcile.state import Desired, desired_from_profile

REPO = Path(__file__).resolve().parents[2]


def test_round_trip_keeps_the_table_hash(tmp_path: Path) -> None:
    desired = desired_from_profile(load_profile(REPO / "profiles" / "edge-gateway.toml"))
    store = StateStore(tmp_path / "state")
    assert store.load_last_good() is None
    store.save_last_good(desired, "127.0.0.1:9469", "edge-gateway.toml", now=123.0)
    loaded = store.load_last_good()
    assert loaded is not None
    assert loaded.desired.table_hash == desired.table_hash
    assert loaded.desired.elements == desired.elements
    assert loaded.desired.types == desired.types
    assert loaded.desired.name == "edge-gateway"
    assert loaded.metrics_listen == "127.0.0.1:9469"
    assert loaded.saved_at == 123.0
    assert os.stat(store.last_good_path).st_mode & 0o777 == 0o600


def test_no_temp_files_left(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save_last_good(failsafe_desired(), None, "x")
    store.save_last_good(failsafe_desired(), None, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last-good.json", "last-good.nft"]


def test_the_boot_script_replaces_the_table_with_tagged_elements(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save_last_good(failsafe_desired(), None, "x")
    script = store.boot_script_path.read_text()
    head = "table inet appliance {}\ndelete table inet appliance\ntable inet appliance {\n"
    assert script.startswith(head)
    assert script == boot_script(failsafe_desired())
    assert store.boot_script_path.stat().st_mode & 0o777 == 0o600


def test_elements_in_the_boot_script_carry_the_profile_tag() -> None:
    desired = desired_from_profile(load_profile(REPO / "profiles" / "edge-gateway.toml"))
    script = boot_script(desired)
    assert (
        'elements = { 192.0.2.128/25 comment "profile", 203.0.113.0/24 comment "profile" }'
        in script
    )


def test_an_unchanged_boot_script_is_not_written_again(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save_last_good(failsafe_desired(), None, "x")
    before = store.boot_script_path.stat().st_ino
    store.save_last_good(failsafe_desired(), None, "x")
    assert store.boot_script_path.stat().st_ino == before
    store.save_last_good(failsafe_desired(8080), None, "x")
    assert store.boot_script_path.stat().st_ino != before


@pytest.mark.parametrize(
    "content",
    ["not json", json.dumps({"format": 99}), json.dumps({"format": 1, "desired": {}})],
)
def test_unusable_last_good_is_one_line_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "last-good.json").write_text(content)
    with pytest.raises(ValueError, match="unusable last good state") as info:
        StateStore(tmp_path).load_last_good()
    assert "\n" not in str(info.value)


def test_tampered_last_good_is_refused(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save_last_good(failsafe_desired(), None, "x")
    record = json.loads(store.last_good_path.read_text())
    record["desired"]["elements"]["autoblock_v4"] = ["192.0.2.1"]
    store.last_good_path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="hash"):
        store.load_last_good()


def test_failsafe_compiles_to_a_default_drop_table() -> None:
    profile = failsafe_profile(9469)
    assert profile.defaults.input == "drop"
    assert profile.defaults.forward == "drop"
    assert profile.defaults.output == "accept"
    desired = failsafe_desired(9469)
    chains = {obj["chain"]["name"]: obj["chain"] for obj in desired.objects if "chain" in obj}
    assert chains["input"]["policy"] == "drop"
    assert chains["forward"]["policy"] == "drop"
    rules = [obj["rule"] for obj in desired.objects if "rule" in obj]
    management = [r for r in rules if r.get("comment") == "failsafe-management"]
    assert len(management) == 1
    assert "9469" in json.dumps(management[0]) and "22" in json.dumps(management[0])
    comments = {r.get("comment") for r in rules if r["chain"] == "input"}
    assert "builtin:established" in comments
    assert "builtin:loopback" in comments


def test_failsafe_follows_the_metrics_port() -> None:
    assert failsafe_desired(9100).table_hash != failsafe_desired(9469).table_hash
    assert failsafe_desired(None).table_hash != failsafe_desired(9469).table_hash


def test_compile_failsafe_prints_the_same_boot_script() -> None:
    from tests.conftest import run_appliance

    result = run_appliance("compile", "--failsafe")
    assert result.returncode == 0, result.stderr
    assert result.stdout == boot_script(failsafe_desired())
    for args in (("compile",), ("compile", "--failsafe", "--json")):
        refused = run_appliance(*args)
        assert refused.returncode == 2
        assert len(refused.stderr.strip().splitlines()) == 1


def large_desired(count: int) -> Desired:
    data = {
        "version": 1,
        "name": "large",
        "sets": {
            "bl": {"type": "ipv4_addr", "interval": True, "size": 2 * count},
            "v6": {
                "type": "ipv6_addr",
                "elements": [f"2001:db8::{i:x}" for i in range(0, 4000, 2)],
            },
            "small": {"type": "inet_service", "elements": [22, 80]},
        },
    }
    listing = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(0, 2 * count, 2)]
    data["sets"]["bl"]["elements"] = [*listing[:-1], "192.0.2.0/24"]
    return desired_from_profile(parse_profile(data, "large.toml", Path(".")))


def test_large_sets_are_kept_packed_beside_the_json(tmp_path: Path) -> None:
    desired = large_desired(5000)
    store = StateStore(tmp_path)
    store.save_last_good(desired, None, "large.toml")
    words = sorted(p.name for p in tmp_path.glob("*.elements"))
    assert words == [f"last-good-{desired.table_hash}.elements"]
    assert "10.0.0.2" not in store.last_good_path.read_text()  # packed, not as text
    loaded = store.load_last_good()
    assert loaded is not None and loaded.desired.elements == desired.elements
    assert list(loaded.desired.elements["small"]) == ["22", "80"]
    script = store.boot_script_path.read_text()
    assert script == boot_script(desired), "the saved script differs"
    assert 'add element inet appliance bl { 10.0.0.0 comment "profile", 10.0.0.2' in script
    assert '192.0.2.0/24 comment "profile" }\n' in script
    changed = large_desired(4000)
    store.save_last_good(changed, None, "large.toml")  # the old elements file goes
    assert [p.name for p in tmp_path.glob("*.elements")] == [
        f"last-good-{changed.table_hash}.elements"
    ]
    (tmp_path / f"last-good-{changed.table_hash}.elements").write_bytes(b"\0" * 8)
    with pytest.raises(ValueError, match="unusable last good state"):
        store.load_last_good()


@pytest.mark.root
def test_the_boot_script_of_a_large_set_loads_with_nft(tmp_path: Path) -> None:
    script = tmp_path / "boot.nft"
    script.write_text(boot_script(large_desired(25_000)))
    ns = f"apstate-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", str(script)], check=True)
        listed = subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "list", "set", "inet", "appliance", "bl"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert listed.count('comment "profile"') == 25_000
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
