"""The compiled fast path built with the guest's own toolchain (Debian's gcc, amd64 and arm64)
and held equal to its Python twin there. The guest image has gcc only when built with
``APPLIANCE_GUEST_CORE=1`` (qemu/build-image.sh); without it this test is skipped."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import appliance.inspect
from tests.compiled_build import build_with_gcc

SOURCE = Path(appliance.inspect.__file__).parent / "_fastpath.c"
NAME = "appliance.inspect._fastpath"


@pytest.mark.guest
def test_builds_without_warnings_and_agrees_with_its_twin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = build_with_gcc(SOURCE, NAME, tmp_path)
    monkeypatch.setitem(sys.modules, NAME, module)
    monkeypatch.delenv("APPLIANCE_INSPECT_CORE", raising=False)

    from tests.inspect import test_core

    compiled_engine, _ = test_core.pair()
    for ts, data, linktype in test_core.Mix(seed=1).build(10):
        compiled_engine.process(ts, data, linktype)
    assert compiled_engine._core is not None
    assert compiled_engine._core.__self__.__class__ is module.FastPath  # type: ignore[attr-defined]
    test_core.test_bench_mix_with_evictions()
    test_core.test_stretched_time_refreshes_and_evictions()
    test_core.test_anchored_rules(0)
    test_core.test_malformed_packets(0)
    test_core.test_entry_point_odd_arguments()
    test_core.test_patterns_worst_cases()
    test_core.test_patterns_candidates_and_none_in()
