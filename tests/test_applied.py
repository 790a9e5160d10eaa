"""What an apply leaves for the next one: the sets' elements with the ruleset generation,
kept on disk, taken instead of reading the sets while the generation is the same (the fake
kernel without root; the command line on nftables with root)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from appliance import applied
from appliance.engine import Engine
from appliance.model import splice
from tests.conftest import nft_in, run_appliance, small_profile
from tests.fakenfsets import FakeNfSets
from tests.test_engine_packed import Counted, addresses, desired

N = 3000


def _engine(kernel: Counted, state: Path) -> tuple[Engine, FakeNfSets]:
    """A new process's engine: it knows what the last apply kept, nothing else."""
    sets = FakeNfSets(kernel)
    engine = Engine(kernel, sets=sets)
    engine.known = applied.load(state, None)
    return engine, sets


def _apply(kernel: Counted, state: Path, elements: list[str]) -> tuple[Engine, FakeNfSets]:
    engine, sets = _engine(kernel, state)
    engine.apply(desired(elements))
    applied.save(state, None, engine.known_now())
    return engine, sets


def test_a_new_process_takes_the_sets_from_the_record_while_the_generation_stands(
    tmp_path: Path,
) -> None:
    kernel = Counted()
    first = addresses(0, N)
    _apply(kernel, tmp_path, first)
    changed = first[100:] + addresses(2 * N + 1, 100)
    engine, sets = _apply(kernel, tmp_path, changed)
    assert sets.dumps == 0 and {"bl", "ports"} <= engine.recalled
    assert kernel.element_texts("bl") == set(changed)
    engine, sets = _engine(kernel, tmp_path)
    plan = engine.plan(desired(changed))
    assert not plan.changed and sets.dumps == 0  # the delta's result was kept too


def test_another_writer_moves_the_generation_and_the_sets_are_read(tmp_path: Path) -> None:
    kernel = Counted()
    wanted = addresses(0, N)
    _apply(kernel, tmp_path, wanted)
    element = {"family": "inet", "table": "appliance", "name": "bl", "elem": wanted[:5]}
    kernel.run([{"delete": {"element": element}}])
    engine, sets = _engine(kernel, tmp_path)
    plan, _segments = engine.apply(desired(wanted))
    assert list(plan.add["bl"]) == wanted[:5]  # the drift is seen and repaired
    assert sets.dumps > 0 and engine.recalled == set()
    assert kernel.element_texts("bl") == set(wanted)


def test_a_record_of_another_namespace_or_boot_is_not_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = Counted()
    _apply(kernel, tmp_path, addresses(0, 10))
    assert applied.load(tmp_path, None) is not None
    monkeypatch.setattr(applied, "identity", lambda: "another-boot:4026531840")
    assert applied.load(tmp_path, None) is None
    assert applied.load(tmp_path, "elsewhere") is None  # no record for that namespace


def test_a_record_that_cannot_be_read_is_ignored(tmp_path: Path) -> None:
    kernel = Counted()
    _apply(kernel, tmp_path, addresses(0, 2000))
    path = applied.record_path(tmp_path, None)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])  # the words cut short
    assert applied.load(tmp_path, None) is None
    path.write_bytes(b"not json\n")
    assert applied.load(tmp_path, None) is None


def test_single_values_are_kept_once_and_ranges_with_both_bounds(tmp_path: Path) -> None:
    """A set of hosts keeps its words once (not once per bound); runs of neighbours (spans
    of several values) keep both bounds; each reads back as it was."""
    for step, points in ((2, True), (1, False)):
        kernel = Counted()
        wanted = addresses(0, N, step=step)
        engine, _sets = _apply(kernel, tmp_path, wanted)
        header = json.loads(applied.record_path(tmp_path, None).read_bytes().split(b"\n")[0])
        place = header["sets"]["bl"]["tags"]["profile"]
        assert place["points"] is points
        known = applied.load(tmp_path, None)
        assert known is not None
        items = known.tagged["bl"]["profile"]
        assert items.spans is not None and items.spans.points is points
        assert set(items) == set(wanted)
        kept = engine.known_now()
        assert kept is not None and kept.tagged["bl"]["profile"].spans is not None
        assert items.spans.words() == kept.tagged["bl"]["profile"].spans.words()


def test_the_record_keeps_run_time_elements_and_tags(tmp_path: Path) -> None:
    kernel = Counted()
    engine, _sets = _apply(kernel, tmp_path, addresses(0, 50))
    element = {"family": "inet", "table": "appliance", "name": "bl", "elem": ["10.200.0.1"]}
    kernel.run([{"add": {"element": element}}])  # run-time, untagged
    engine.converge(desired(addresses(0, 50)))  # read back: it now stands for the kernel
    applied.save(tmp_path, None, engine.known_now())
    known = applied.load(tmp_path, None)
    assert known is not None and known.generation == kernel.gen
    assert set(known.elements["bl"]) == {"10.200.0.1"}
    assert set(known.tagged["bl"]["profile"]) == set(addresses(0, 50))


def test_nothing_is_kept_when_another_writer_came_after_the_change(tmp_path: Path) -> None:
    kernel = Counted()
    engine, _sets = _engine(kernel, tmp_path)
    engine.apply(desired(addresses(0, 10)))
    kernel.run([{"add": {"element": {"family": "inet", "table": "appliance", "name": "bl",
                                     "elem": ["10.200.0.1"]}}}])  # fmt: skip
    assert engine.known_now() is None
    applied.save(tmp_path, None, None)
    assert not applied.record_path(tmp_path, None).exists()


@pytest.mark.root
def test_apply_keeps_its_record_and_repairs_what_another_writer_changed(
    netns: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    listing = tmp_path / "bl.txt"
    profile = tmp_path / "p.toml"
    elements = [f"10.9.{i // 120}.{i % 120 * 2 + 1}" for i in range(2000)]  # none adjacent
    listing.write_text("\n".join(elements) + "\n")
    profile.write_text(
        small_profile("kept", []).replace("elements = []", f'elements_file = "{listing}"')
    )
    assert "elements_file" in profile.read_text()

    def apply() -> None:
        result = run_appliance("apply", "--netns", netns, "--state-dir", str(state), str(profile))
        assert result.returncode == 0, result.stderr

    def held() -> set[str]:
        out = json.loads(nft_in(netns, "-j", "list", "set", "inet", "appliance", "blocklist"))
        body = next(obj["set"] for obj in out["nftables"] if "set" in obj)
        return {e["elem"]["val"] if isinstance(e, dict) else e for e in body.get("elem", [])}

    apply()
    record = applied.record_path(state, netns)
    assert record.exists()
    plan = run_appliance("plan", "--netns", netns, "--state-dir", str(state), str(profile))
    assert plan.returncode == 0 and plan.stdout.startswith("no changes"), plan.stdout
    listing.write_text("\n".join(elements[10:]) + "\n10.99.0.1\n")
    apply()  # from the record: the delta only
    assert held() == set(elements[10:]) | {"10.99.0.1"}
    nft_in(netns, "delete", "element", "inet", "appliance", "blocklist", "{ 10.9.0.21 }")
    apply()  # the generation moved: the set is read, the missing element put back
    assert held() == set(elements[10:]) | {"10.99.0.1"}
    added = run_appliance(
        "set", "add", "--netns", netns, "--state-dir", str(state), "blocklist", "10.98.0.1"
    )
    assert added.returncode == 0, added.stderr
    assert record.exists()  # it stands for the other sets
    apply()  # the run-time element is read with its set and kept
    assert held() == set(elements[10:]) | {"10.99.0.1", "10.98.0.1"}
    profile.write_text(profile.read_text().replace('name = "ssh"', 'name = "ssh-new"'))
    apply()  # a structural change: the kept set stays in the record
    assert record.exists()
    plan = run_appliance("plan", "--netns", netns, "--state-dir", str(state), str(profile))
    assert plan.returncode == 0 and plan.stdout.startswith("no changes"), plan.stdout
    assert held() == set(elements[10:]) | {"10.99.0.1", "10.98.0.1"}


def test_records_of_namespaces_that_are_gone_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespaces = tmp_path / "netns"
    namespaces.mkdir()
    (namespaces / "here").touch()
    monkeypatch.setattr(applied, "NETNS_DIR", namespaces)
    kernel = Counted()
    engine, _sets = _engine(kernel, tmp_path)
    engine.apply(desired(addresses(0, 10)))
    for name in ("gone", "here", None):
        applied.save(tmp_path, name, engine.known_now())
    kept = sorted(p.name for p in tmp_path.glob("applied-*"))
    assert kept == ["applied-here.state", "applied-host.state"]


def test_after_a_set_command_only_that_set_is_read_again(tmp_path: Path) -> None:
    kernel = Counted()
    wanted = addresses(0, N)
    _apply(kernel, tmp_path, wanted)
    before = kernel.gen
    element = {"family": "inet", "table": "appliance", "name": "ports", "elem": [8080]}
    kernel.run([{"add": {"element": element}}])  # `appliance set add ports 8080`
    applied.set_changed(tmp_path, None, "ports", before, kernel.gen)
    engine, sets = _engine(kernel, tmp_path)
    plan = engine.plan(desired(wanted))
    assert not plan.changed
    assert "bl" in engine.recalled and "ports" not in engine.recalled
    assert sets.dumps == 1  # the set the command changed, and only it


def test_a_set_command_after_another_writer_forgets_the_record(tmp_path: Path) -> None:
    kernel = Counted()
    _apply(kernel, tmp_path, addresses(0, 10))
    kernel.run([{"add": {"element": {"family": "inet", "table": "appliance", "name": "bl",
                                     "elem": ["10.250.0.1"]}}}])  # fmt: skip
    before = kernel.gen  # the record no longer stands
    kernel.run([{"add": {"element": {"family": "inet", "table": "appliance", "name": "ports",
                                     "elem": [8080]}}}])  # fmt: skip
    applied.set_changed(tmp_path, None, "ports", before, kernel.gen)
    assert not applied.record_path(tmp_path, None).exists()


def test_after_a_structural_change_the_kept_sets_are_kept_in_the_record(tmp_path: Path) -> None:
    kernel = Counted()
    first = addresses(0, N)
    _apply(kernel, tmp_path, first)
    changed = first[50:] + addresses(2 * N + 1, 50)
    engine, _sets = _engine(kernel, tmp_path)
    plan, _segments = engine.apply(desired(changed, extra_rule=True))  # a rule more: a swap
    assert plan.swap
    applied.save(tmp_path, None, engine.known_now())
    known = applied.load(tmp_path, None)
    assert known is not None and "bl" in known.handles
    assert set(known.tagged["bl"]["profile"]) == set(changed)
    engine, sets = _engine(kernel, tmp_path)
    assert not engine.plan(desired(changed, extra_rule=True)).changed
    assert sets.dumps == 0 and "bl" in engine.recalled
    assert kernel.element_texts("bl") == set(changed)


def _held_profile_elements() -> list[tuple[int, int]]:
    """The ``blocklist`` set's elements tagged ``profile`` (read by a netlink dump)."""
    from appliance.adapters.nfsets import NfSets

    with NfSets() as sets:
        return list(sets.dump("blocklist", width=32, interval=False).get("profile", []))


@pytest.mark.root
def test_a_changed_large_elements_file_is_applied_by_its_changed_lines(
    netns: str, tmp_path: Path
) -> None:
    """A 100,000-line feed loses its oldest 5,000 lines and gains 5,000, then 5,000 lines
    spread through it change: each apply diffs the file against its last version (the
    record keeps it) and the kernel holds exactly the new file's addresses."""
    from appliance.adapters.nsexec import run_in_netns
    from appliance.model.elements import Elements

    state = tmp_path / "state"
    listing = tmp_path / "feed.txt"
    profile = tmp_path / "p.toml"
    values = [(i * 7919) % (1 << 20) for i in range(110_000)]  # distinct, unordered
    texts = [f"10.{v >> 16}.{(v >> 8) & 255}.{v & 255}" for v in values]
    profile.write_text(
        small_profile("feed", [])
        .replace("interval = true\n", "size = 200000\n")
        .replace("elements = []", f'elements_file = "{listing}"')
    )

    def apply(lines: list[str], twin: bool = False) -> str:
        """The table hash the apply printed (``twin``: the splice's Python form)."""
        listing.write_text("".join(f"{line}\n" for line in lines))
        with pytest.MonkeyPatch.context() as patch:
            if twin:
                patch.setenv(splice.ENV, "python")
            result = run_appliance(
                "apply", "--netns", netns, "--state-dir", str(state), str(profile), timeout=300
            )
        assert result.returncode == 0, result.stderr
        held = run_in_netns(netns, _held_profile_elements, timeout=300)
        assert held == list(Elements.of("ipv4_addr", False, lines).spans or [])
        return re.findall(r"\(([0-9a-f]{16})\)", result.stdout)[-1]

    def general_hash() -> str:
        """The table hash of the file parsed whole, line by line (``check``: no record)."""
        result = run_appliance("check", str(profile), timeout=300)
        assert result.returncode == 0, result.stderr
        return re.findall(r"table hash ([0-9a-f]{16})", result.stdout)[-1]

    first = texts[:100_000]
    apply(first)
    record = json.loads(applied.record_path(state, netns).read_bytes().split(b"\n", 1)[0])
    assert list(record["files"]) == [str(listing)]  # its bytes kept for the next diff
    shifted = first[5_000:] + texts[100_000:105_000]
    assert apply(shifted) == general_hash()  # the compiled splice, where it is built
    spread = [t if i % 20 else texts[105_000 + i // 20] for i, t in enumerate(shifted)]
    assert apply(spread, twin=True) == general_hash()
    plan = run_appliance("plan", "--netns", netns, "--state-dir", str(state), str(profile))
    assert plan.stdout.startswith("no changes"), plan.stdout
