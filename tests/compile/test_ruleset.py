"""Compile errors without a kernel: one place turns them into profile errors; the flow
offload parts of the table (flowtable, the rule that fills it), without a kernel."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from appliance.compile.nftjson import Json
from appliance.compile.render import render_table
from appliance.compile.ruleset import (
    FLOWTABLE,
    OFFLOAD_COMMENT,
    CompileError,
    as_profile_error,
    compile_profile,
    offload_devices,
    offloaded_devices,
    without_offload,
)
from appliance.errors import ProfileError
from appliance.model.parse import load_profile
from appliance.model.profile import Profile
from appliance.reconcile.state import normalize


def test_a_compile_error_becomes_a_profile_error_at_the_given_place() -> None:
    with pytest.raises(ProfileError) as caught, as_profile_error("/etc/appliance/edge.toml"):
        raise CompileError("forwards", "a forward's dport cannot be a set")
    assert caught.value.path == "/etc/appliance/edge.toml"
    assert caught.value.key == "forwards"
    assert caught.value.message == "a forward's dport cannot be a set"
    assert caught.value.__cause__ is None


def test_other_errors_pass_through() -> None:
    with pytest.raises(KeyError), as_profile_error("<hub>"):
        raise KeyError("x")


# --- flow offload ----------------------------------------------------------------------

OFFLOAD_PROFILE = """
version = 1
name = "fast"

[defaults]
offload = true

[zones.wan]
interfaces = ["eth0"]

[zones.lan]
interfaces = ["eth1", "wlan*"]

[[isolation.segments]]
name = "mec"
kind = "netns"
netns = "mec-apps"
zone = "mec"
addresses = ["10.45.0.1/24"]
peer_addresses = ["10.45.0.2/24"]

[[rules]]
name = "lan-out"
from = "lan"
to = "wan"
action = "accept"
"""


def offload_profile(tmp_path: Path, extra: str = "", offload: bool = True) -> Profile:
    text = OFFLOAD_PROFILE if offload else OFFLOAD_PROFILE.replace("offload = true", "")
    path = tmp_path / "fast.toml"
    path.write_text(text + extra)
    return load_profile(path)


def forward_comments(objects: list[Json]) -> list[str]:
    return [o["rule"]["comment"] for o in objects if o.get("rule", {}).get("chain") == "forward"]


def test_offload_hooks_the_zones_interfaces_that_exist(tmp_path: Path) -> None:
    profile = offload_profile(tmp_path)
    links = ["lo", "eth1", "wlan0", "wlan1", "eth9", "ap-mec", "eth0"]
    assert offload_devices(profile, links) == ("eth0", "eth1", "wlan0", "wlan1")
    assert offload_devices(profile, ["lo", "ap-mec", "eth9"]) == ()


def test_offload_adds_a_flowtable_and_one_forward_rule_past_the_sample(tmp_path: Path) -> None:
    profile = offload_profile(tmp_path, "[inspect]\nsample_packets = 5\n")
    plain = compile_profile(profile)
    fast = compile_profile(profile, ("eth1", "eth0"))
    assert "flowtable" not in json.dumps(plain) and offloaded_devices(plain) == ()
    tables = [o["flowtable"] for o in fast if "flowtable" in o]
    assert tables == [
        {
            "family": "inet",
            "table": "appliance",
            "name": FLOWTABLE,
            "hook": "ingress",
            "prio": 0,
            "dev": ["eth0", "eth1"],
        }
    ]
    kinds = [next(iter(o)) for o in fast]
    assert kinds.index("flowtable") > max(i for i, k in enumerate(kinds) if k == "set")
    assert kinds.index("flowtable") < kinds.index("chain")
    # After the blocks and invalid, before established: a blocked source is never offloaded.
    comments = forward_comments(fast)
    assert comments[:5] == [
        "protect:autoblock",
        "protect:autoblock",
        "protect:invalid",
        OFFLOAD_COMMENT,
        "builtin:established",
    ]
    rule = next(o["rule"] for o in fast if o.get("rule", {}).get("comment") == OFFLOAD_COMMENT)
    assert rule["expr"] == [
        {
            "match": {
                "op": "==",
                "left": {"meta": {"key": "l4proto"}},
                "right": {"set": ["tcp", "udp"]},
            }
        },
        {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "established"}},
        {"match": {"op": ">", "left": {"ct": {"key": "packets", "dir": "original"}}, "right": 5}},
        {"flow": {"op": "add", "flowtable": f"@{FLOWTABLE}"}},
    ]
    assert without_offload(fast) == plain
    assert offloaded_devices(fast) == ("eth0", "eth1")
    assert OFFLOAD_COMMENT not in [
        o["rule"]["comment"] for o in fast if "rule" in o and o["rule"]["chain"] != "forward"
    ]


def test_offload_without_sampling_starts_at_the_first_established_packet(tmp_path: Path) -> None:
    fast = compile_profile(offload_profile(tmp_path), ("eth0",))
    assert [o["flowtable"]["dev"] for o in fast if "flowtable" in o] == ["eth0"]  # as listed
    rule = next(o["rule"] for o in fast if o.get("rule", {}).get("comment") == OFFLOAD_COMMENT)
    assert "packets" not in json.dumps(rule)


def test_offload_off_in_the_profile_ignores_the_devices(tmp_path: Path) -> None:
    profile = offload_profile(tmp_path, offload=False)
    assert compile_profile(profile, ("eth0", "eth1")) == compile_profile(profile)


def test_offload_renders_as_nft_text(tmp_path: Path) -> None:
    text = render_table(compile_profile(offload_profile(tmp_path), ("eth0", "wlan0")))
    assert (
        'flowtable ap_fastpath {\n\t\thook ingress priority 0\n\t\tdevices = { "eth0", "wlan0" }'
        in text
    )
    assert (
        "meta l4proto { tcp, udp } ct state established flow add @ap_fastpath"
        ' comment "builtin:offload"'
    ) in text


def test_a_device_the_kernel_took_out_of_the_flowtable_is_no_drift(tmp_path: Path) -> None:
    fast = compile_profile(offload_profile(tmp_path), ("eth0", "eth1"))
    listed = copy.deepcopy(fast)
    for obj in listed:
        if "flowtable" in obj:
            obj["flowtable"].update(dev="eth1", handle=7)  # eth0 was deleted
    assert normalize(listed) == normalize(fast)
    assert normalize(without_offload(fast)) != normalize(fast)
