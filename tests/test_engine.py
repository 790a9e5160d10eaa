"""Applying against the kernel: atomic refusal, element deltas that keep the table,
run-time elements surviving a swap, commit-confirm."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import nft_in, run_appliance, small_profile

pytestmark = pytest.mark.root


def write_profile(path: Path, elements: list[str], extra: str = "") -> Path:
    path.write_text(small_profile("engine-test", elements) + extra)
    return path


def rules_with_handles(ns: str) -> list[tuple[int, str]]:
    listing = json.loads(nft_in(ns, "-j", "-a", "list", "table", "inet", "appliance"))
    return [
        (obj["rule"]["handle"], json.dumps(obj["rule"]["expr"], sort_keys=True))
        for obj in listing["nftables"]
        if "rule" in obj
    ]


def elements(ns: str, name: str) -> list[str]:
    result = run_appliance("set", "list", "--netns", ns, name)
    assert result.returncode == 0, result.stderr
    return [line.split()[0] for line in result.stdout.splitlines()]


def table_text_without_expiry(ns: str) -> str:
    """The table with handles, less the seconds left on timed elements (they tick)."""
    text = nft_in(ns, "-a", "list", "table", "inet", "appliance")
    return "\n".join(line.split(" expires ")[0] for line in text.splitlines())


def test_refused_profile_leaves_the_previous_table_byte_for_byte(
    netns: str, tmp_path: Path
) -> None:
    good = write_profile(tmp_path / "good.toml", ["203.0.113.0/24"])
    assert run_appliance("apply", "--netns", netns, str(good)).returncode == 0
    run_appliance("set", "add", "--netns", netns, "autoblock_v4", "198.51.100.9")
    added = run_appliance("set", "add", "--netns", netns, "ports", "2222", "2223", "2224")
    assert added.returncode == 0
    before = table_text_without_expiry(netns)
    # Valid to the parser, refused by the kernel: the swap carries the three run-time
    # ports across into a set now too small for them (with the profile's one).
    bad = tmp_path / "bad.toml"
    bad.write_text(
        good.read_text()
        .replace("elements = [22]", "elements = [22]\nsize = 2")
        .replace('name = "ssh"', 'name = "ssh2"')
    )
    assert run_appliance("check", str(bad)).returncode == 0
    result = run_appliance("apply", "--netns", netns, str(bad))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "refused" in result.stderr
    assert "set is full" in result.stderr
    assert "Traceback" not in result.stderr
    assert table_text_without_expiry(netns) == before


def test_set_add_keeps_rule_handles_and_counters(netns: str, tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "p.toml", ["203.0.113.0/24"])
    assert run_appliance("apply", "--netns", netns, str(profile)).returncode == 0
    send_outbound_udp(netns)
    counted = output_counter(netns)
    assert counted >= 3
    handles = rules_with_handles(netns)
    assert (
        run_appliance("set", "add", "--netns", netns, "blocklist", "192.0.2.0/25").returncode == 0
    )
    assert run_appliance("set", "add", "--netns", netns, "ports", "2222").returncode == 0
    assert (
        run_appliance("set", "del", "--netns", netns, "blocklist", "203.0.113.0/24").returncode == 0
    )
    assert rules_with_handles(netns) == handles
    assert "192.0.2.0/25" in elements(netns, "blocklist")
    assert "203.0.113.0/24" not in elements(netns, "blocklist")
    assert output_counter(netns) >= counted  # counters were not reset


def send_outbound_udp(ns: str) -> None:
    """Three datagrams through the output chain (to a neighbour that does not exist)."""
    subprocess.run(
        ["ip", "-n", ns, "link", "add", "t0", "type", "veth", "peer", "name", "t1"], check=True
    )
    subprocess.run(["ip", "-n", ns, "addr", "add", "10.99.0.1/24", "dev", "t0"], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "t0", "up"], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "t1", "up"], check=True)
    code = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for _ in range(3): s.sendto(b'x', ('10.99.0.2', 9))"
    )
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], check=True, timeout=10)


def output_counter(ns: str) -> int:
    listing = json.loads(nft_in(ns, "-j", "list", "counters", "table", "inet", "appliance"))
    for obj in listing["nftables"]:
        if obj.get("counter", {}).get("name") == "ap_default_output":
            return int(obj["counter"]["packets"])
    raise AssertionError("no ap_default_output counter")


def test_profile_element_change_is_a_delta_not_a_swap(netns: str, tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "p.toml", ["203.0.113.0/24"])
    assert run_appliance("apply", "--netns", netns, str(profile)).returncode == 0
    handles = rules_with_handles(netns)
    run_appliance("set", "add", "--netns", netns, "blocklist", "198.18.0.1")
    changed = write_profile(tmp_path / "p2.toml", ["203.0.113.0/24", "192.0.2.1"])
    plan = run_appliance("plan", "--netns", netns, str(changed))
    assert plan.returncode == 3 and "+ element blocklist 192.0.2.1" in plan.stdout
    assert "198.18.0.1" not in plan.stdout  # run-time additions are not changes
    assert run_appliance("apply", "--netns", netns, str(changed)).returncode == 0
    assert rules_with_handles(netns) == handles
    shrunk = write_profile(tmp_path / "p3.toml", ["192.0.2.1"])
    assert run_appliance("apply", "--netns", netns, str(shrunk)).returncode == 0
    assert sorted(elements(netns, "blocklist")) == ["192.0.2.1", "198.18.0.1"]
    assert rules_with_handles(netns) == handles


def test_swap_keeps_run_time_elements_and_autoblocks(netns: str, tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "p.toml", ["203.0.113.0/24"])
    assert run_appliance("apply", "--netns", netns, str(profile)).returncode == 0
    run_appliance("set", "add", "--netns", netns, "autoblock_v4", "198.51.100.9", "--timeout", "1h")
    run_appliance("set", "add", "--netns", netns, "blocklist", "198.18.0.0/16")
    structural = tmp_path / "p2.toml"
    structural.write_text(profile.read_text().replace('name = "ssh"', 'name = "ssh2"'))
    assert run_appliance("apply", "--netns", netns, str(structural)).returncode == 0
    assert "ssh2" in nft_in(netns, "list", "table", "inet", "appliance")
    assert elements(netns, "autoblock_v4") == ["198.51.100.9"]
    assert sorted(elements(netns, "blocklist")) == ["198.18.0.0/16", "203.0.113.0/24"]
    listing = run_appliance("set", "list", "--netns", netns, "autoblock_v4").stdout
    assert "expires" in listing  # the remaining timeout carried across the swap


def test_set_refuses_wrong_family_and_unknown_set(netns: str, tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "p.toml", [])
    assert run_appliance("apply", "--netns", netns, str(profile)).returncode == 0
    wrong = run_appliance("set", "add", "--netns", netns, "blocklist", "fd00::/64")
    assert wrong.returncode == 2 and "ipv4_addr" in wrong.stderr
    unknown = run_appliance("set", "add", "--netns", netns, "nosuch", "192.0.2.1")
    assert unknown.returncode == 2 and "nosuch" in unknown.stderr
    bad_port = run_appliance("set", "add", "--netns", netns, "ports", "70000")
    assert bad_port.returncode == 2


def test_unconfirmed_apply_rolls_back(netns: str, tmp_path: Path) -> None:
    first = write_profile(tmp_path / "p.toml", ["203.0.113.0/24"])
    assert run_appliance("apply", "--netns", netns, str(first)).returncode == 0
    before = sorted(  # lines: the rollback keeps what both tables have, listed first
        line.split(" expires ")[0]
        for line in nft_in(netns, "list", "table", "inet", "appliance").splitlines()
    )
    second = tmp_path / "p2.toml"
    second.write_text(first.read_text().replace('name = "ssh"', 'name = "ssh-new"'))
    state = tmp_path / "state"
    result = run_appliance(
        "apply", "--netns", netns, "--state-dir", str(state), "--confirm", "2s", str(second)
    )
    assert result.returncode == 0, result.stderr
    assert "ssh-new" in nft_in(netns, "list", "table", "inet", "appliance")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "ssh-new" in nft_in(
        netns, "list", "table", "inet", "appliance"
    ):
        time.sleep(0.2)
    restored = nft_in(netns, "list", "table", "inet", "appliance")
    assert sorted(line.split(" expires ")[0] for line in restored.splitlines()) == before
    assert run_appliance("confirm", "--state-dir", str(state)).returncode == 1


def test_confirmed_apply_stays(netns: str, tmp_path: Path) -> None:
    first = write_profile(tmp_path / "p.toml", [])
    assert run_appliance("apply", "--netns", netns, str(first)).returncode == 0
    second = tmp_path / "p2.toml"
    second.write_text(first.read_text().replace('name = "ssh"', 'name = "ssh-new"'))
    state = tmp_path / "state"
    assert (
        run_appliance(
            "apply", "--netns", netns, "--state-dir", str(state), "--confirm", "2s", str(second)
        ).returncode
        == 0
    )
    assert run_appliance("confirm", "--state-dir", str(state)).returncode == 0
    time.sleep(3)
    assert "ssh-new" in nft_in(netns, "list", "table", "inet", "appliance")
    assert run_appliance("confirm", "--state-dir", str(state)).returncode == 1


def test_confirm_with_nothing_pending_fails(tmp_path: Path) -> None:
    assert run_appliance("confirm", "--state-dir", str(tmp_path)).returncode == 1


def _set_header(name: str) -> tuple[Any, Any]:
    from appliance.adapters.nft import NftBackend

    backend = NftBackend()
    return backend.list_set(name, elements=False), backend.list_set(name)


def test_set_header_is_listed_without_elements(netns: str, tmp_path: Path) -> None:
    """`set add` reads the set's type and flags back without its elements, so its cost does
    not grow with the set."""
    from appliance.adapters.nsexec import run_in_netns

    profile = write_profile(tmp_path / "p.toml", ["203.0.113.0/24", "198.51.100.1"])
    assert run_appliance("apply", "--netns", netns, str(profile)).returncode == 0
    header, full = run_in_netns(netns, _set_header, "blocklist")
    assert header["type"] == "ipv4_addr" and "interval" in header["flags"]
    assert "elem" not in header
    assert len(full["elem"]) == 2
    # and full listings are not left terse afterwards
    assert run_appliance("set", "add", "--netns", netns, "blocklist", "192.0.2.7").returncode == 0
    assert "192.0.2.7" in elements(netns, "blocklist")


@pytest.mark.parametrize("runtime", ["203.0.113.0/25", "203.0.112.0/23"])
def test_repair_does_not_fail_on_a_run_time_element_that_overlaps_the_profile(
    netns: str, tmp_path: Path, runtime: str
) -> None:
    """A profile network deleted and a run-time network overlapping it added: the element
    repair and the structural repair (a rule deleted) both go through, the profile's
    network is back and what the run-time element covers outside it is kept."""
    profile = write_profile(tmp_path / "p.toml", ["203.0.113.0/24"])
    assert run_appliance("apply", "--netns", netns, str(profile)).returncode == 0
    assert (
        run_appliance("set", "del", "--netns", netns, "blocklist", "203.0.113.0/24").returncode == 0
    )
    added = run_appliance("set", "add", "--netns", netns, "blocklist", runtime)
    assert added.returncode == 0, added.stderr
    outside = ["203.0.112.0/24"] if runtime.endswith("/23") else []

    repaired = run_appliance("apply", "--netns", netns, str(profile))
    assert repaired.returncode == 0, repaired.stderr
    assert sorted(elements(netns, "blocklist")) == sorted(["203.0.113.0/24", *outside])

    deleted = run_appliance("set", "del", "--netns", netns, "blocklist", "203.0.113.0/24", *outside)
    assert deleted.returncode == 0, deleted.stderr
    assert run_appliance("set", "add", "--netns", netns, "blocklist", runtime).returncode == 0
    handle, _expr = rules_with_handles(netns)[-1]
    chain = next(
        obj["rule"]["chain"]
        for obj in json.loads(nft_in(netns, "-j", "-a", "list", "table", "inet", "appliance"))[
            "nftables"
        ]
        if "rule" in obj and obj["rule"]["handle"] == handle
    )
    nft_in(netns, "delete", "rule", "inet", "appliance", chain, "handle", str(handle))
    swapped = run_appliance("apply", "--netns", netns, str(profile))
    assert swapped.returncode == 0, swapped.stderr
    assert sorted(elements(netns, "blocklist")) == sorted(["203.0.113.0/24", *outside])


def _read_backs(profile_path: str) -> list[tuple[bool, int, bool]]:
    """In the test's namespace: (changed, listings so far, element present) after each
    converge of one policy: create, confirm, quiet, after another writer, quiet again."""
    from appliance.adapters.nft import NftBackend
    from appliance.engine import Engine
    from appliance.model.parse import load_profile
    from appliance.reconcile.state import desired_from_profile

    desired = desired_from_profile(load_profile(profile_path))
    engine = Engine(NftBackend())
    steps: list[tuple[bool, int, bool]] = []

    def step() -> None:
        plan, observed, _ = engine.converge(desired)
        present = observed.holds("blocklist", "192.0.2.1")
        steps.append((plan.changed, engine.listings, present))

    step()
    step()
    step()
    subprocess.run(
        ["nft", "delete", "element", "inet", "appliance", "blocklist", "{ 192.0.2.1 }"],
        check=True,
    )
    step()
    step()
    step()
    return steps


def test_read_back_lists_the_table_only_when_the_ruleset_generation_changed(
    netns: str, tmp_path: Path
) -> None:
    from appliance.adapters.nsexec import run_in_netns

    profile = write_profile(tmp_path / "p.toml", ["192.0.2.1"])
    steps = run_in_netns(netns, _read_backs, str(profile))
    assert steps == [
        (True, 1, False),  # created (read back before its elements were sent)
        (False, 1, True),  # only our transactions since: not listed again
        (False, 1, True),  # same generation: not listed
        (True, 2, False),  # another writer deleted the element: listed, repaired
        (False, 2, True),  # the repair was the only transaction: not listed again
        (False, 2, True),
    ]


def test_a_set_at_its_size_refuses_more_elements_and_nothing_changes(
    netns: str, tmp_path: Path
) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text(
        small_profile("engine-test", ["192.0.2.1"]).replace(
            'type = "ipv4_addr"\ninterval = true', 'type = "ipv4_addr"\ninterval = true\nsize = 3'
        )
    )
    assert run_appliance("apply", "--netns", netns, str(profile)).returncode == 0
    before = table_text_without_expiry(netns)
    full = run_appliance(
        "set", "add", "--netns", netns, "blocklist", "198.51.100.1", "198.51.100.3", "198.51.100.5"
    )
    assert full.returncode == 2
    assert full.stderr.strip().splitlines() == [
        "appliance: set 'blocklist' is full (size 3): 3 element(s) not added, nothing changed"
    ]
    assert table_text_without_expiry(netns) == before
    assert (
        run_appliance("set", "add", "--netns", netns, "blocklist", "198.51.100.1").returncode == 0
    )


def test_set_add_merges_overlapping_and_adjacent_values_of_one_request(
    netns: str, tmp_path: Path
) -> None:
    """Values the kernel would refuse together (a network and a host in it, two adjacent
    halves) are added merged."""
    profile = write_profile(tmp_path / "p.toml", ["203.0.113.0/24"])
    assert run_appliance("apply", "--netns", netns, str(profile)).returncode == 0
    added = run_appliance(
        "set", "add", "--netns", netns, "blocklist",
        "10.0.0.0/25", "10.0.0.128/25", "10.0.0.5", "10.1.0.0/16", "10.1.2.3",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert sorted(elements(netns, "blocklist")) == ["10.0.0.0/24", "10.1.0.0/16", "203.0.113.0/24"]


def _counters_both_ways() -> tuple[Any, Any]:
    from appliance.adapters.nft import NftBackend

    backend = NftBackend()
    return backend._dump_counters(), backend._list_counters()


def test_counters_read_by_netlink_are_those_libnftables_lists(netns: str, tmp_path: Path) -> None:
    from appliance.adapters.nsexec import run_in_netns

    profile = write_profile(tmp_path / "p.toml", ["203.0.113.0/24"])
    assert run_appliance("apply", "--netns", netns, str(profile)).returncode == 0
    send_outbound_udp(netns)
    dumped, listed = run_in_netns(netns, _counters_both_ways)
    assert dumped == listed and dumped["ap_default_output"][0] > 0
