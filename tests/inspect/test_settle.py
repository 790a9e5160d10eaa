"""A rule set settled: out of the garbage collector's passes while it is loaded, walked and
freed again once let go."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from appliance.inspect.engine import InspectionConfig, InspectionEngine
from appliance.inspect.rules import Variables, parse_rules
from appliance.inspect.settle import settle, unsettle


class _Node:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def _left_frozen() -> Iterator[None]:
    yield
    gc.collect()
    gc.freeze()  # as the test run keeps what it made (conftest)


def test_a_settled_engine_is_out_of_the_collectors_passes() -> None:
    text = "".join(
        f'alert tcp any any -> any 80 (msg:"r{n}"; content:"word{n}"; sid:{n};)\n'
        for n in range(1, 300)
    )
    signatures = list(parse_rules(text, "test.rules", Variables.from_networks(None)))
    engine = InspectionEngine(InspectionConfig(signatures=signatures))
    settle()
    tracked = {id(o) for o in gc.get_objects()}
    assert id(engine.matcher) not in tracked
    assert not any(id(sig) in tracked for sig in signatures)
    assert gc.get_freeze_count() > len(signatures)
    unsettle()
    tracked = {id(o) for o in gc.get_objects()}
    assert id(engine.matcher) in tracked
    assert gc.get_freeze_count() == 0


def test_cycles_wait_for_unsettle_and_are_then_freed() -> None:
    node = _Node()
    alive = weakref.ref(node)
    settle()
    del node
    gc.collect()
    assert alive() is not None  # settled: no pass looked at it
    unsettle()
    gc.collect()
    assert alive() is None


def test_settle_frees_what_an_earlier_settle_kept() -> None:
    node = _Node()
    alive = weakref.ref(node)
    settle()
    del node
    settle()  # a new engine: the old one's cycles are freed first
    assert alive() is None
