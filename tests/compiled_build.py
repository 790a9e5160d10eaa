"""Build one of the product's C extensions with the machine's own gcc, warnings as errors, and
load the module built (whatever the checkout or the installed package holds)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sysconfig
from pathlib import Path
from types import ModuleType

import pytest

FLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror")


def build_with_gcc(source: Path, name: str, into: Path) -> ModuleType:
    """The module ``name`` built from ``source`` in ``into``; the test is skipped where there
    is no gcc, no Python headers or no source (a guest image without its toolchain)."""
    include = Path(sysconfig.get_paths()["include"])
    if shutil.which("gcc") is None or not (include / "Python.h").exists():
        pytest.skip("no gcc or Python headers here (APPLIANCE_GUEST_CORE=1 adds them to a guest)")
    if not source.exists():
        pytest.skip(f"no {source.name} in this installation")
    built = into / (name.rpartition(".")[2] + sysconfig.get_config_var("EXT_SUFFIX"))
    compiled = subprocess.run(
        ["gcc", *FLAGS, f"-I{include}", str(source), "-o", str(built)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert compiled.returncode == 0, compiled.stderr
    assert compiled.stderr == ""
    spec = importlib.util.spec_from_file_location(name, built)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
