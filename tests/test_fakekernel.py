"""The fake kernel against the real one: the same batches, the same answers.

Each sequence runs in a child in a throw-away namespace (libnftables, as the daemon runs
it) and in :class:`tests.fakekernel.FakeKernel`; after every step both must have taken or
refused it alike, and list the same table (structure, elements, their comments and
timeouts). The sequences are what the engine sends: a create, element deltas, swaps that
keep the sets both policies define (with their run-time elements) and replace the rest,
refused batches that must leave everything as it was; and what the swaps rely on: what
``flush table`` and ``delete chain`` leave, what a set, chain or counter in use refuses.
"""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appliance.compile.nftjson import TABLE_FAMILY, TABLE_NAME, Json
from appliance.compile.ruleset import element_json
from appliance.daemon.failsafe import failsafe_desired
from appliance.errors import KernelError
from appliance.model.parse import load_profile, parse_profile
from appliance.reconcile.plan import swap_commands
from appliance.reconcile.state import Desired, Observed, desired_from_profile, observed_from_listing
from tests.conftest import REPO
from tests.fakekernel import FakeKernel

TABLE = {"table": {"family": TABLE_FAMILY, "name": TABLE_NAME}}


def elements(op: str, name: str, elems: list[object]) -> Json:
    return {
        op: {"element": {"family": TABLE_FAMILY, "table": TABLE_NAME, "name": name, "elem": elems}}
    }


def edge() -> Desired:
    return desired_from_profile(load_profile(str(REPO / "profiles" / "edge-gateway.toml")))


def sequence() -> list[list[Json]]:
    """Batches in order; refused ones included on purpose."""
    desired = edge()
    failsafe = failsafe_desired()
    create = swap_commands(desired, Observed(None))
    ip = element_json("ipv4_addr", "198.51.100.7")
    timed = element_json("ipv4_addr", "198.51.100.8", 30)
    blocked = element_json("ipv4_addr", "192.0.2.77")
    prefix = element_json("ipv4_addr", "10.9.0.0/16")
    return [
        create,
        [elements("add", "autoblock_v4", [timed, blocked])],
        [elements("add", "blocklist", [ip, prefix])],
        [elements("add", "blocklist", [ip])],  # again: taken, nothing changes
        [elements("delete", "blocklist", [ip])],
        [elements("delete", "blocklist", [ip])],  # not there any more: refused
        [elements("add", "no_such_set", [ip])],  # refused
        # atomic: the first command would go in, the second is refused, so neither does
        [elements("add", "blocklist", [ip]), elements("delete", "web_ports", [8080])],
        [elements("add", "web_ports", [element_json("inet_service", "8080")])],
        [elements("add", "web_ports", ["198.51.100.1"])],  # wrong type: refused
        [elements("add", "blocklist", [element_json("ipv4_addr", "198.51.100.9", 5)])],
        [{"add": TABLE}, {"delete": TABLE}, *swap_commands(failsafe, Observed(None))],
        [{"add": TABLE}, {"delete": TABLE}, *swap_commands(desired, Observed(None))],
        [{"flush": TABLE}],
        [{"delete": TABLE}],
        [{"delete": TABLE}],  # no table: refused
        [{"add": {"set": {**_set(desired, "web_ports"), "name": "tiny", "size": 2}}}],  # refused
    ]


SWAP_PROFILE: dict[str, Any] = {
    "version": 1,
    "name": "swap",
    "zones": {"lan": {"interfaces": ["eth1"]}, "wan": {"interfaces": ["eth0"]}},
    "sets": {
        "bl": {"type": "ipv4_addr", "interval": True, "elements": ["192.0.2.0/24"]},
        "bl6": {"type": "ipv6_addr", "interval": True, "elements": ["2001:db8:bad::/48"]},
        "hosts": {"type": "ipv4_addr", "timeout": "10m", "elements": ["198.51.100.1"]},
        "ports": {"type": "inet_service", "elements": ["80", "443"]},
        "old": {"type": "ipv4_addr", "elements": ["198.18.0.1"]},
        "nets": {"type": "ipv4_addr", "interval": True, "elements": ["10.0.0.1"]},
    },
    "rules": [
        {"name": "drop-bl", "from": "wan", "to": "any", "saddr": ["@bl", "@old"], "action": "drop"},
        {"name": "drop-nets", "from": "wan", "to": "any", "saddr": ["@nets"], "action": "drop"},
        {"name": "drop-bl6", "from": "wan", "to": "any", "saddr": ["@bl6"], "action": "drop"},
        {"name": "drop-hosts", "from": "any", "to": "self", "saddr": ["@hosts"], "action": "drop"},
        {
            "name": "web",
            "from": "lan",
            "to": "wan",
            "proto": "tcp",
            "dport": ["@ports"],
            "limit": "10/second",
            "action": "accept",
        },
    ],
}


def swap_profiles() -> tuple[Desired, Desired]:
    """Two policies that differ in structure: the second keeps ``bl`` and ``bl6``, redefines
    ``hosts`` (no timeouts), ``ports`` (a size) and ``nets`` (no intervals), drops ``old``,
    adds ``new``, a rule, a limit's rate and the input policy."""
    second = copy.deepcopy(SWAP_PROFILE)
    sets = second["sets"]
    del sets["hosts"]["timeout"], sets["old"]
    sets["ports"]["size"] = 16
    sets["nets"]["interval"] = False
    sets["new"] = {"type": "ipv4_addr", "interval": True, "elements": ["198.19.0.0/16"]}
    rules = second["rules"]
    rules[0]["saddr"] = ["@bl", "@new"]
    rules[4]["limit"] = "20/second"
    rules.insert(
        1,
        {
            "name": "ssh",
            "from": "lan",
            "to": "self",
            "proto": "tcp",
            "dport": [22],
            "action": "accept",
        },
    )
    second["defaults"] = {"input": "reject"}
    return tuple(  # type: ignore[return-value]
        desired_from_profile(parse_profile(doc, "swap.toml", Path(".")))
        for doc in (SWAP_PROFILE, second)
    )


def observed_after(batches: list[list[Json]]) -> Observed:
    """What the engine reads back after ``batches`` (the fake's listing: the test checks it
    is the kernel's)."""
    fake = FakeKernel()
    for batch in batches:
        with contextlib.suppress(KernelError):
            fake.run(batch)
    return observed_from_listing(fake.list_table())


def swap_sequence() -> list[list[Json]]:
    """Swaps between two policies with run-time elements in kept, redefined and dropped
    sets; then what the swap's order relies on."""
    first, second = swap_profiles()
    obj = {"family": TABLE_FAMILY, "table": TABLE_NAME}
    batches = [
        swap_commands(first, Observed(None)),
        [
            elements("add", "bl", [element_json("ipv4_addr", "203.0.113.0/24")]),
            elements("add", "bl6", [element_json("ipv6_addr", "2001:db8:1::/64")]),
            elements("add", "nets", [element_json("ipv4_addr", "10.1.0.0/16")]),
            elements("add", "nets", [element_json("ipv4_addr", "10.2.0.1")]),
            elements("add", "hosts", [element_json("ipv4_addr", "198.51.100.9", 300)]),
            elements("add", "hosts", [element_json("ipv4_addr", "198.51.100.10")]),
            elements("add", "autoblock_v4", [element_json("ipv4_addr", "192.0.2.99", 300)]),
            elements("add", "autoblock_v6", [element_json("ipv6_addr", "2001:db8::99", 300)]),
            elements("add", "old", [element_json("ipv4_addr", "198.18.0.2")]),
        ],
    ]
    batches.append(swap_commands(second, observed_after(batches)))
    batches.append(swap_commands(first, observed_after(batches)))
    batches.append(swap_commands(first, observed_after(batches)))  # nothing to swap: still taken
    batches += [
        [{"delete": {"set": {**obj, "name": "bl"}}}],  # in use: refused
        [{"delete": {"counter": {**obj, "name": "drop-bl"}}}],  # in use: refused
        [{"delete": {"chain": {**obj, "name": "reject"}}}],  # jumped to: refused
        [{"add": {"set": {**_set(second, "hosts")}}}],  # other flags in place: refused
        [{"delete": {"chain": {**obj, "name": "output"}}}],  # with its rules: taken
        [{"add": {"chain": {**_chain(second, "input")}}}],  # a new policy: taken
        [  # a kept set refilled: flushed and filled again in one transaction
            {"flush": {"set": {**obj, "name": "bl"}}},
            elements("add", "bl", [element_json("ipv4_addr", "192.0.2.0/24")]),
        ],
        [{"flush": TABLE}],  # the rules go; sets keep their elements
        [{"delete": {"set": {**obj, "name": "bl"}}}],  # no rule uses it now: taken
    ]
    return batches


def _chain(desired: Desired, name: str) -> dict[str, Any]:
    for obj in desired.objects:
        if "chain" in obj and obj["chain"]["name"] == name:
            return dict(obj["chain"])
    raise KeyError(name)


def _set(desired: Desired, name: str) -> dict[str, Any]:
    for obj in desired.objects:
        if "set" in obj and obj["set"]["name"] == name:
            return dict(obj["set"])
    raise KeyError(name)


def comparable(listing: list[Json] | None) -> dict[str, Any] | None:
    """What the engine reads of a listing: structure, element texts with their tags and
    timeouts (not the seconds left: they tick in the kernel)."""
    observed = observed_from_listing(listing)
    if not observed.present:
        return None
    return {
        "structure": observed.structure,
        "elements": {
            name: sorted((e.text, e.comment, e.timeout) for e in elems.values())
            for name, elems in sorted(observed.elements.items())
            if elems
        },
        "types": observed.types,
    }


def run_fake(batches: list[list[Json]]) -> list[dict[str, Any]]:
    fake = FakeKernel()
    results = []
    for batch in batches:
        try:
            fake.run(batch)
            ok = True
        except Exception:
            ok = False
        results.append({"ok": ok, "table": comparable(fake.list_table())})
    return results


CHILD = """
import json, sys
from appliance.adapters.nft import NftBackend
from appliance.errors import KernelError
nft = NftBackend()
out = []
for batch in json.load(sys.stdin):
    try:
        nft.run(batch)
        ok = True
    except KernelError:
        ok = False
    out.append({"ok": ok, "listing": nft.list_table()})
json.dump(out, sys.stdout)
"""


def run_kernel(ns: str, batches: list[list[Json]]) -> list[dict[str, Any]]:
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", CHILD],
        input=json.dumps(batches),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=True,
    )
    return [
        {"ok": step["ok"], "table": comparable(step["listing"])} for step in json.loads(proc.stdout)
    ]


@pytest.mark.root
@pytest.mark.parametrize("batches", [sequence, swap_sequence], ids=["deltas", "swaps"])
def test_the_fake_answers_as_the_kernel_does(netns: str, batches: Any) -> None:
    batches = batches()
    kernel = run_kernel(netns, batches)
    fake = run_fake(batches)
    for index, (want, got) in enumerate(zip(kernel, fake, strict=True)):
        assert got["ok"] == want["ok"], f"step {index}: kernel ok={want['ok']}"
        assert got["table"] == want["table"], f"step {index}: the listings differ"


def test_a_refused_batch_changes_nothing() -> None:
    fake = FakeKernel()
    fake.run(swap_commands(edge(), Observed(None)))
    before = fake.list_table()
    with pytest.raises(Exception, match="refused"):
        fake.run(
            [
                elements("add", "blocklist", ["198.51.100.1"]),
                {"delete": {"set": {**_set(edge(), "web_ports"), "name": "nope"}}},
            ]
        )
    assert fake.list_table() == before


def test_the_sequence_has_refusals_and_successes() -> None:
    """The shared sequence exercises both outcomes (else it would compare little)."""
    for batches in (sequence(), swap_sequence()):
        results = run_fake(batches)
        assert {r["ok"] for r in results} == {True, False}


def test_a_test_can_make_it_refuse() -> None:
    fake = FakeKernel()
    fake.refuse = lambda commands: "Cannot allocate memory"
    with pytest.raises(Exception, match="Cannot allocate memory"):
        fake.run([{"add": TABLE}])
    assert fake.list_table() is None
