"""The fake kernel against the real one: the same batches, the same answers.

Each sequence runs in a child in a throw-away namespace (libnftables, as the daemon runs
it) and in :class:`tests.fakekernel.FakeKernel`; after every step both must have taken or
refused it alike, and list the same table (structure, elements, their comments and
timeouts). The sequences are what the engine sends: a create, element deltas, a swap
keeping run-time elements, refused batches that must leave everything as it was.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from appliance.compile.nftjson import TABLE_FAMILY, TABLE_NAME, Json
from appliance.compile.ruleset import element_json
from appliance.daemon.failsafe import failsafe_desired
from appliance.model.parse import load_profile
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
        swap_commands(failsafe, Observed([])),  # the failsafe in place of the profile
        [{"add": TABLE}, {"delete": TABLE}, *swap_commands(desired, Observed(None))],
        [{"flush": TABLE}],
        [{"delete": TABLE}],
        [{"delete": TABLE}],  # no table: refused
        [{"add": {"set": {**_set(desired, "web_ports"), "name": "tiny", "size": 2}}}],  # refused
    ]


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
def test_the_fake_answers_as_the_kernel_does(netns: str) -> None:
    batches = sequence()
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
    results = run_fake(sequence())
    assert {r["ok"] for r in results} == {True, False}


def test_a_test_can_make_it_refuse() -> None:
    fake = FakeKernel()
    fake.refuse = lambda commands: "Cannot allocate memory"
    with pytest.raises(Exception, match="Cannot allocate memory"):
        fake.run([{"add": TABLE}])
    assert fake.list_table() is None
