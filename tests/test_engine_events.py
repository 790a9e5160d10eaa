"""The engine's read-back with a journal of the kernel's events (no root: the fake kernel):
another writer's element changes are taken from the events, not from a dump; a gap in the
journal, and events that do not fit, fall back to a dump; while the watch is live, a
quiet read-back that ends does not dump sets that only transactions change."""

from __future__ import annotations

from appliance.adapters.nfelements import Encoder
from appliance.adapters.nftevents import (
    NFT_MSG_DELSETELEM,
    NFT_MSG_NEWSETELEM,
    ElementList,
    Transaction,
)
from appliance.compile.nftjson import Json
from appliance.engine import QUIET_SECONDS, Engine
from appliance.model.intervals import Spans
from appliance.model.values import element_bounds
from appliance.reconcile.readback import EventJournal
from tests.fakenfsets import FakeNfSets
from tests.test_engine_packed import Counted, addresses, desired


def _rig(now: list[float]) -> tuple[Counted, FakeNfSets, Engine, EventJournal]:
    kernel = Counted()
    sets = FakeNfSets(kernel)
    engine = Engine(kernel, clock=lambda: now[0], sets=sets)
    journal = engine.follow_events()
    journal.set_live(True)
    return kernel, sets, engine, journal


def _element(op: str, text: str, tag: str | None = None) -> Json:
    value: object = {"elem": {"val": text, "comment": tag}} if tag else text
    return {
        op: {"element": {"family": "inet", "table": "appliance", "name": "bl", "elem": [value]}}
    }


def _lists(kind: int, texts: list[str], tag: str | None) -> list[ElementList]:
    spans = Spans.of(32, (element_bounds("ipv4_addr", t) for t in texts))
    encoder = Encoder(32, False, tag)
    return [ElementList(kind, "bl", b) for b in encoder.element_lists(spans, 0, len(spans))]


def test_another_writers_elements_are_read_from_the_events() -> None:
    now = [0.0]
    kernel, sets, engine, journal = _rig(now)
    wanted = addresses(0, 500)
    d = desired(wanted)
    engine.apply(d)
    dumps = sets.dumps
    gone, stale, runtime = wanted[7], "10.200.0.1", "192.0.2.1"
    kernel.run([_element("delete", gone), _element("add", stale, "profile")])
    journal.record(
        Transaction(
            4242,
            kernel.gen,
            [],
            _lists(NFT_MSG_DELSETELEM, [gone], "profile")
            + _lists(NFT_MSG_NEWSETELEM, [stale], "profile"),
        )
    )
    kernel.run([_element("add", runtime)])
    journal.record(Transaction(4242, kernel.gen, [], _lists(NFT_MSG_NEWSETELEM, [runtime], None)))
    plan, observed, _ = engine.converge(d)
    assert list(plan.add["bl"]) == [gone] and list(plan.delete["bl"]) == [stale]
    assert set(observed.elements["bl"]) == {runtime}
    assert sets.dumps == dumps and {"bl", "ports"} <= engine.followed
    assert (journal.followed, journal.fell_back) == (1, 0)
    assert kernel.element_texts("bl") == set(wanted) | {runtime}

    # the repair was ours and stands: nothing read, nothing to do
    assert not engine.converge(d)[0].changed and sets.dumps == dumps


def test_a_gap_or_events_that_do_not_fit_are_read_by_a_dump() -> None:
    now = [0.0]
    kernel, sets, engine, journal = _rig(now)
    wanted = addresses(0, 500)
    d = desired(wanted)
    engine.apply(d)
    dumps = sets.dumps
    kernel.run([_element("delete", wanted[3])])  # announced, then lost
    journal.lost()
    assert list(engine.converge(d)[0].add["bl"]) == [wanted[3]]
    assert sets.dumps > dumps and journal.fell_back == 1

    dumps = sets.dumps
    kernel.run([_element("delete", wanted[4])])
    wrong = _lists(NFT_MSG_DELSETELEM, ["10.99.0.1"], "profile")  # not what was held
    journal.record(Transaction(4242, kernel.gen, [], wrong))
    assert list(engine.converge(d)[0].add["bl"]) == [wanted[4]]
    assert sets.dumps == dumps + 1 and "bl" not in engine.followed


def test_a_quiet_read_back_that_ends_reads_only_what_changes_without_transactions() -> None:
    now = [0.0]
    _kernel, sets, engine, journal = _rig(now)
    d = desired(addresses(0, 100))
    engine.apply(d)
    dumps = sets.dumps
    now[0] += QUIET_SECONDS + 1
    plan, observed, _ = engine.converge(d)
    assert not plan.changed and observed.count("bl") == 100
    assert sets.dumps == dumps  # the generation stood: the sets cannot have changed
    journal.set_live(False)
    now[0] += QUIET_SECONDS + 1
    engine.converge(d)
    assert sets.dumps > dumps  # no watch: read again
