"""The compiled splice built with the guest's own toolchain (Debian's gcc, amd64 and arm64)
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

from appliance.model import splice

SOURCE = Path(splice.__file__).with_name("_splice.c")
NAME = "appliance.model._splice"


@pytest.mark.guest
def test_builds_without_warnings_and_agrees_with_its_twin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    include = Path(sysconfig.get_paths()["include"])
    if shutil.which("gcc") is None or not (include / "Python.h").exists():
        pytest.skip("no gcc or Python headers in this image (APPLIANCE_GUEST_CORE=1 adds them)")
    built = tmp_path / ("_splice" + sysconfig.get_config_var("EXT_SUFFIX"))
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
    monkeypatch.delenv(splice.ENV, raising=False)
    assert splice.compiled() is module

    from tests.model import test_splice_compiled as held

    held.test_a_large_splice_as_the_twin()
    held.test_many_lines_as_the_twin()
    held.test_differ_lines_reads_addresses_as_inet_pton_does()
    held.test_splice_words_as_the_twin()
    held.test_differ_lines_as_the_twin()
    held.test_differ_lines_on_any_bytes_as_the_twin()
    held.test_splice_words_refuses_what_is_not_words()
    held.test_a_diff_with_the_compiled_splice_is_the_twin_s(monkeypatch)
