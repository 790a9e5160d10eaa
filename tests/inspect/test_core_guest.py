"""The compiled fast path built with the guest's own toolchain (Debian's gcc, amd64 and arm64)
and held equal to its Python twin there. The guest image has gcc only when built with
``APPLIANCE_GUEST_CORE=1`` (qemu/build-image.sh); without it this test is skipped."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import appliance.inspect

SOURCE = Path(appliance.inspect.__file__).parent / "_fastpath.c"
NAME = "appliance.inspect._fastpath"


@pytest.mark.guest
def test_builds_without_warnings_and_agrees_with_its_twin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    include = Path(sysconfig.get_paths()["include"])
    if shutil.which("gcc") is None or not (include / "Python.h").exists():
        pytest.skip("no gcc or Python headers in this image (APPLIANCE_GUEST_CORE=1 adds them)")
    built = tmp_path / ("_fastpath" + sysconfig.get_config_var("EXT_SUFFIX"))
    flags = ["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{include}"]
    compiled = subprocess.run(
        ["gcc", *flags, str(SOURCE), "-o", str(built)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert compiled.returncode == 0, compiled.stderr
    assert compiled.stderr == ""
    # the module built here, whatever the checkout holds (it is read-only in the guest)
    spec = importlib.util.spec_from_file_location(NAME, built)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
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
