"""Commit-confirm: the saved table and its restore (a change back, on the fake kernel and
on nftables), the segments' links and their restore (on the fake links)."""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from pathlib import Path

import pytest

from appliance.compile.nftjson import Json
from appliance.confirm import (
    FORMAT,
    PREVIOUS_ELEMENTS,
    confirm,
    links_snapshot,
    load_table,
    pending_path,
    pending_record,
    restore_links,
    restore_table,
    save_table,
    saved_table,
    wait_and_rollback,
)
from appliance.daemon.policies import policy_from_profile
from appliance.engine import Engine
from appliance.model.parse import load_profile
from appliance.reconcile.state import Desired
from tests.conftest import nft_in, run_appliance, small_profile
from tests.daemon.conftest import wait_until
from tests.fakekernel import FakeKernel, FakeLinks


def _segments(tmp_path: Path, name: str, *segments: tuple[str, str, str]) -> Desired:
    text = f'version = 1\nname = "{name}"\n'
    for segment, netns, address in segments:
        text += (
            f'\n[[isolation.segments]]\nname = "{segment}"\nkind = "netns"\nnetns = "{netns}"\n'
            f'addresses = ["{address}.1/24"]\npeer_addresses = ["{address}.10/24"]\n'
            f'zone = "z{segment}"\n'
        )
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return policy_from_profile(str(path), load_profile(path)).desired


def test_a_rollback_puts_the_links_back_as_they_were(tmp_path: Path) -> None:
    links = FakeLinks()
    engine = Engine(FakeKernel(), links)
    engine.apply(
        _segments(tmp_path, "before", ("mec1", "mec-a", "10.50.0"), ("mec2", "mec-b", "10.60.0"))
    )
    before = copy.deepcopy(links.state)
    snapshot = json.loads(json.dumps(links_snapshot(links)))  # as the pending record keeps it
    # the new policy: mec1 readdressed, mec2 gone (its link and namespace), mec3 new
    engine.apply(
        _segments(tmp_path, "after", ("mec1", "mec-a", "10.70.0"), ("mec3", "mec-c", "10.80.0"))
    )
    assert links.state != before
    restore_links(links, snapshot)
    assert links.state.links == before.links
    assert {ns: links.state.peers.get(ns) for ns in before.peers} == before.peers
    assert "ap-mec3" not in links.state.links


def test_without_segments_nothing_is_recorded_or_changed(tmp_path: Path) -> None:
    links = FakeLinks()
    snapshot = links_snapshot(links)
    assert snapshot == []
    restore_links(links, [])
    assert links.runs == [[], []] or links.runs == []
    assert links_snapshot(None) is None


@pytest.mark.root
def test_an_unconfirmed_apply_takes_back_the_segment_links_it_made(
    netns: str, tmp_path: Path
) -> None:
    segment_ns = f"aps-{uuid.uuid4().hex[:8]}"
    profile = tmp_path / "seg.toml"
    profile.write_text(
        'version = 1\nname = "segments"\n\n[[isolation.segments]]\nname = "mec1"\n'
        f'kind = "netns"\nnetns = "{segment_ns}"\naddresses = ["10.50.0.1/24"]\n'
        'peer_addresses = ["10.50.0.10/24"]\nzone = "mec"\n'
    )
    state = tmp_path / "state"
    try:
        result = run_appliance(
            "apply", "--netns", netns, "--state-dir", str(state), "--confirm", "1s", str(profile)
        )
        assert result.returncode == 0, result.stderr
        assert "ap-mec1" in _links(netns)
        # the watcher removes the pending record once it has rolled back
        wait_until(lambda: not pending_path(str(state)).exists(), timeout=30)
        assert "ap-mec1" not in _links(netns)
        assert segment_ns not in _namespaces()  # the apply made it: it goes too
        assert nft_in(netns, "list", "tables", check=False).strip() == ""
    finally:
        subprocess.run(["ip", "netns", "del", segment_ns], capture_output=True, check=False)


def _links(ns: str) -> list[str]:
    out = subprocess.run(
        ["ip", "-n", ns, "-j", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    return [item["ifname"] for item in json.loads(out)]


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


# ---- the table ----------------------------------------------------------------------------


def _policy(tmp_path: Path, name: str, elements: list[str], rule: str = "ssh") -> Desired:
    path = tmp_path / f"{name}.toml"
    path.write_text(small_profile(name, elements).replace('name = "ssh"', f'name = "{rule}"'))
    return policy_from_profile(str(path), load_profile(path)).desired


def _spread(count: int) -> list[str]:
    """``count`` addresses no two of which are adjacent (an interval set keeps them apart)."""
    return [f"10.{i // 100}.{i % 100}.1" for i in range(count)]


def _shape(listing: list[Json] | None) -> tuple[list[str], list[str]]:
    """A listing without handles: its objects (elements sorted) and its rules, chain by
    chain in their order (the kernel lists kept objects before those added after them)."""
    objects, rules = [], []
    for obj in listing or []:
        ((kind, body),) = obj.items()
        if kind == "metainfo":
            continue
        clean = {k: v for k, v in body.items() if k != "handle"}
        if "elem" in clean:
            clean["elem"] = sorted(json.dumps(e, sort_keys=True) for e in clean["elem"])
        text = json.dumps({kind: clean}, sort_keys=True)
        (rules if kind == "rule" else objects).append((str(clean.get("chain")), text))
    return sorted(text for _chain, text in objects), [
        text for _chain, text in sorted(rules, key=lambda r: r[0])
    ]


def _touched_sets(batches: list[list[Json]]) -> set[tuple[str, str]]:
    """(command, kind) of every command on a table or a whole set in ``batches`` (``flush
    table`` takes the rules only)."""
    return {
        (op, kind)
        for batch in batches
        for command in batch
        for op, obj in command.items()
        for kind in obj
        if kind in ("table", "set")
    }


def test_a_rollback_changes_the_table_back_keeping_the_sets_both_have(tmp_path: Path) -> None:
    kernel = FakeKernel()
    engine = Engine(kernel)
    engine.apply(_policy(tmp_path, "before", _spread(1500)))
    engine.set_add("blocklist", ["192.168.7.1"])  # a run-time element
    before = kernel.list_table()
    record = {
        "format": FORMAT,
        "previous": save_table(str(tmp_path), saved_table(engine.observe())),
    }
    stored = json.dumps(record)
    assert len(stored) < 20_000  # the large set is packed beside the record
    assert (tmp_path / PREVIOUS_ELEMENTS).stat().st_size > 0
    # the new policy: the rule renamed (a structural change), one element less, one more
    engine.apply(_policy(tmp_path, "after", [*_spread(1499), "172.16.0.1"], rule="ssh-new"))
    assert _shape(kernel.list_table()) != _shape(before)
    done = len(kernel.batches)
    restore_table(engine, load_table(str(tmp_path), json.loads(stored)))
    assert _shape(kernel.list_table()) == _shape(before)
    # the table and the sets stay (no delete, no set flushed); elements go as deltas
    assert _touched_sets(kernel.batches[done:]) <= {("flush", "table")}
    assert kernel.element_texts("blocklist") >= {"192.168.7.1", "10.0.0.1"}


def test_hub_elements_added_since_go_and_the_saved_ones_come_back(tmp_path: Path) -> None:
    kernel = FakeKernel()
    engine = Engine(kernel)
    first = _policy(tmp_path, "before", ["192.0.2.0/24"])
    engine.apply(
        Desired(first.objects, first.elements, first.types, hub={"blocklist": ["198.51.100.0/24"]})
    )
    before = kernel.list_table()
    previous = save_table(str(tmp_path), saved_table(engine.observe()))
    engine.apply(
        Desired(first.objects, first.elements, first.types, hub={"blocklist": ["203.0.113.0/24"]})
    )
    restore_table(engine, load_table(str(tmp_path), {"format": FORMAT, "previous": previous}))
    assert _shape(kernel.list_table()) == _shape(before)


def test_a_record_of_the_earlier_format_is_restored_the_same_way(tmp_path: Path) -> None:
    kernel = FakeKernel()
    engine = Engine(kernel)
    engine.apply(_policy(tmp_path, "before", ["192.0.2.0/24", "198.51.100.0/24"]))
    before = kernel.list_table()
    record = json.loads(json.dumps({"token": "t", "deadline": 0, "previous": before}))
    engine.apply(_policy(tmp_path, "after", ["192.0.2.0/24"], rule="ssh-new"))
    done = len(kernel.batches)
    restore_table(engine, load_table(str(tmp_path), record))
    assert _shape(kernel.list_table()) == _shape(before)
    assert _touched_sets(kernel.batches[done:]) <= {("flush", "table")}


def test_no_table_before_means_none_after(tmp_path: Path) -> None:
    kernel = FakeKernel()
    engine = Engine(kernel)
    previous = save_table(str(tmp_path), saved_table(engine.observe()))
    assert previous is None
    engine.apply(_policy(tmp_path, "after", ["192.0.2.0/24"]))
    restore_table(engine, load_table(str(tmp_path), {"format": FORMAT, "previous": previous}))
    assert kernel.list_table() is None
    restore_table(engine, None)  # and again: nothing to remove
    assert kernel.list_table() is None


def test_a_record_of_an_unknown_format_is_refused_and_the_table_left_alone(
    tmp_path: Path,
) -> None:
    kernel = FakeKernel()
    engine = Engine(kernel)
    engine.apply(_policy(tmp_path, "after", ["192.0.2.0/24"]))
    after = kernel.list_table()
    record = {"format": 99, "token": "t", "deadline": 0, "previous": {"objects": []}}
    pending_path(str(tmp_path)).write_text(json.dumps(record))
    assert not wait_and_rollback(str(tmp_path), "t", engine)
    assert kernel.list_table() == after
    kept = json.loads(pending_path(str(tmp_path)).read_text())
    assert "unknown format 99" in kept["error"] and "\n" not in kept["error"]


@pytest.mark.root
def test_an_unconfirmed_apply_is_changed_back_and_a_kept_set_never_emptied(
    netns: str, tmp_path: Path
) -> None:
    first = tmp_path / "first.toml"
    first.write_text(small_profile("first", ["203.0.113.0/24", "198.51.100.0/24"]))
    assert run_appliance("apply", "--netns", netns, str(first)).returncode == 0
    added = run_appliance("set", "add", "--netns", netns, "blocklist", "192.0.2.7")
    assert added.returncode == 0, added.stderr
    before = _listing(netns)
    handle = _set_handle(netns, "blocklist")
    second = tmp_path / "second.toml"  # a rule renamed (a structural change), an element less
    second.write_text(
        small_profile("second", ["203.0.113.0/24"]).replace('name = "ssh"', 'name = "ssh-new"')
    )
    state = tmp_path / "state"
    result = run_appliance(
        "apply", "--netns", netns, "--state-dir", str(state), "--confirm", "1s", str(second)
    )
    assert result.returncode == 0, result.stderr
    assert "ssh-new" in nft_in(netns, "list", "table", "inet", "appliance")
    wait_until(lambda: not pending_path(str(state)).exists(), timeout=30)
    assert _listing(netns) == before
    # the set both tables have was kept through the apply and the rollback, never deleted
    assert _set_handle(netns, "blocklist") == handle
    # the saved elements go last, once the rollback's record has (a stop between leaves a
    # stale copy, never a record without its elements)
    wait_until(lambda: not (state / PREVIOUS_ELEMENTS).exists(), timeout=30)


def _set_handle(ns: str, name: str) -> int:
    listing = json.loads(nft_in(ns, "-j", "-a", "list", "set", "inet", "appliance", name))
    return int(next(obj["set"]["handle"] for obj in listing["nftables"] if "set" in obj))


def _listing(ns: str) -> tuple[list[str], list[str]]:
    return _shape(json.loads(nft_in(ns, "-j", "list", "table", "inet", "appliance"))["nftables"])


def _without_blocklist(tmp_path: Path) -> Desired:
    """The small profile without its blocklist (the set and the rule that uses it go)."""
    text = small_profile("gone", [])
    start = text.index("[sets.blocklist]")
    text = text[:start] + text[text.index("[sets.ports]") :]
    start = text.index("[[rules]]")
    text = text[:start] + text[text.index("[[rules]]", start + 1) :]
    path = tmp_path / "gone.toml"
    path.write_text(text)
    return policy_from_profile(str(path), load_profile(path)).desired


def _arm_here(tmp_path: Path, engine: Engine, token: str = "t") -> None:
    """What ``apply --confirm`` records (without its watcher process), due at once."""
    record = pending_record(str(tmp_path), engine.observe(), 0, token)
    pending_path(str(tmp_path)).write_text(json.dumps(record))


def test_a_rollback_puts_back_the_run_time_elements_the_apply_took(tmp_path: Path) -> None:
    kernel = FakeKernel()
    engine = Engine(kernel)
    engine.apply(_policy(tmp_path, "before", ["203.0.113.0/24"]))
    engine.set_add("blocklist", ["192.168.7.1", "192.168.9.0/24"])  # run-time elements
    before = kernel.list_table()
    _arm_here(tmp_path, engine)
    engine.apply(_without_blocklist(tmp_path))  # the set goes, its run-time elements too
    assert kernel.list_set("blocklist") is None
    assert wait_and_rollback(str(tmp_path), "t", engine, sleep=lambda _s: None)
    objects, rules = _shape(kernel.list_table())
    assert (sorted(objects), rules) == (sorted(_shape(before)[0]), _shape(before)[1])
    assert kernel.element_texts("blocklist") == {"203.0.113.0/24", "192.168.7.1", "192.168.9.0/24"}
    assert not pending_path(str(tmp_path)).exists()


def test_run_time_elements_come_back_with_what_is_left_of_their_timeouts(
    tmp_path: Path,
) -> None:
    kernel = FakeKernel()
    engine = Engine(kernel)
    engine.apply(_policy(tmp_path, "before", []))
    element = {"family": "inet", "table": "appliance", "name": "blocklist"}
    kernel.run([{"add": {"element": {**element, "elem": ["192.168.7.1"]}}}])
    record = pending_record(str(tmp_path), engine.observe(), 0, "t")
    record["runtime"] = {  # as a set with timeouts lists them: seconds left
        "blocklist": [["192.0.2.1", "autoblock", None, 100], ["192.0.2.2", None, None, 5]]
    }
    record["saved_at"] -= 30  # saved 30 s ago: the second one's timeout has ended
    pending_path(str(tmp_path)).write_text(json.dumps(record))
    engine.apply(_without_blocklist(tmp_path))
    kernel.refuse = lambda commands: None
    added: list[Json] = []
    run = kernel.run

    def recording(commands: list[Json]) -> list[Json]:
        added.extend(c["add"]["element"] for c in commands if "element" in c.get("add", {}))
        return run(commands)

    kernel.run = recording  # type: ignore[method-assign]
    assert wait_and_rollback(str(tmp_path), "t", engine, sleep=lambda _s: None)
    # the set has no timeouts here: the fake kernel refuses the lot, then the one alone
    tried = [e for body in added for e in body["elem"] if isinstance(e, dict)]
    assert tried and all(
        e == {"elem": {"val": "192.0.2.1", "timeout": 70, "comment": "autoblock"}} for e in tried
    )


def test_a_refused_rollback_is_logged_counted_and_tried_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = FakeKernel()
    engine = Engine(kernel)
    engine.apply(_policy(tmp_path, "before", ["203.0.113.0/24"]))
    before = kernel.list_table()
    _arm_here(tmp_path, engine)
    engine.apply(_policy(tmp_path, "after", ["198.51.100.0/24"], rule="ssh-new"))
    refusals = [3]

    def refuse(_commands: list[Json]) -> str | None:
        if refusals[0]:
            refusals[0] -= 1
            return "Device or resource busy"
        return None

    kernel.refuse = refuse
    pauses: list[float] = []
    counted: list[int] = []

    def sleep(seconds: float) -> None:  # between tries: the record says how it stands
        pauses.append(seconds)
        counted.append(json.loads(pending_path(str(tmp_path)).read_text()).get("refused", 0))

    assert wait_and_rollback(str(tmp_path), "t", engine, sleep=sleep)
    assert _shape(kernel.list_table()) == _shape(before)
    assert counted == [1, 2, 3] and pauses == [1.0, 2.0, 4.0]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and all("rollback refused" in line for line in lines)
    assert "Device or resource busy" in lines[0]


def test_a_refused_rollback_stops_trying_once_confirmed(tmp_path: Path) -> None:
    kernel = FakeKernel()
    engine = Engine(kernel)
    engine.apply(_policy(tmp_path, "before", ["203.0.113.0/24"]))
    _arm_here(tmp_path, engine)
    engine.apply(_policy(tmp_path, "after", ["198.51.100.0/24"], rule="ssh-new"))
    after = kernel.list_table()
    kernel.refuse = lambda _commands: "Device or resource busy"
    tries: list[float] = []

    def sleep(seconds: float) -> None:
        tries.append(seconds)
        if len(tries) == 2:
            assert confirm(str(tmp_path))  # the operator keeps the new table

    assert not wait_and_rollback(str(tmp_path), "t", engine, sleep=sleep)
    assert kernel.list_table() == after and len(tries) == 2


@pytest.mark.root
def test_an_apply_that_drops_a_set_rolls_back_with_its_run_time_elements(
    netns: str, tmp_path: Path
) -> None:
    first = tmp_path / "first.toml"
    first.write_text(small_profile("first", ["203.0.113.0/24"]))
    assert run_appliance("apply", "--netns", netns, str(first)).returncode == 0
    for value in ("192.0.2.7", "198.51.100.0/25"):
        added = run_appliance("set", "add", "--netns", netns, "blocklist", value)
        assert added.returncode == 0, added.stderr
    before = _listing(netns)
    _without_blocklist(tmp_path)  # writes gone.toml: the blocklist and its rule dropped
    state = tmp_path / "state"
    result = run_appliance(
        "apply", "--netns", netns, "--state-dir", str(state), "--confirm", "1s",
        str(tmp_path / "gone.toml"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    wait_until(lambda: not pending_path(str(state)).exists(), timeout=30)
    assert _listing(netns) == before  # the set is back with its run-time elements
