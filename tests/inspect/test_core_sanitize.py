"""The compiled core built with AddressSanitizer and UndefinedBehaviorSanitizer (and, apart,
with arm64's unsigned char) in a copy of the tree, the differential tests and the longer
fuzz (test_core_fuzz.py) run against it. Opt-in, a few minutes:

    APPLIANCE_CORE_SANITIZE=1 APPLIANCE_CORE_FUZZ=20 APPLIANCE_CORE_EXAMPLES=3 \\
        .venv/bin/python -m pytest -q -p no:cacheprovider tests/inspect/test_core_sanitize.py

The shared tree's module stays the normal build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ASAN = "-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
BUILDS = {
    "sanitizers": (ASAN, "-fsanitize=address,undefined"),
    "unsigned-char": ("-O2 -funsigned-char -Wall -Wextra -Werror", ""),
}

pytestmark = pytest.mark.skipif(
    os.environ.get("APPLIANCE_CORE_SANITIZE") != "1" or shutil.which("gcc") is None,
    reason="opt-in: APPLIANCE_CORE_SANITIZE=1 (needs gcc and python3-dev)",
)


def runtime(name: str) -> str:
    """The path of a gcc runtime library (libasan.so), as gcc finds it."""
    found = subprocess.run(
        ["gcc", f"-print-file-name={name}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return found


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_core_under_sanitizers(build: str, tmp_path: Path) -> None:
    cflags, ldflags = BUILDS[build]
    for part in ("appliance", "tests", "profiles"):
        shutil.copytree(
            ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("*.so", "__pycache__")
        )
    for part in ("setup.py", "pyproject.toml"):
        shutil.copy(ROOT / part, tmp_path / part)
    env = {**os.environ, "CFLAGS": cflags, "LDFLAGS": ldflags, "PYTHONPATH": str(tmp_path)}
    env.pop("APPLIANCE_INSPECT_CORE", None)
    built = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    assert list((tmp_path / "appliance" / "inspect").glob("_fastpath*.so")), built.stderr
    if build == "sanitizers":
        env["LD_PRELOAD"] = runtime("libasan.so")
        env["ASAN_OPTIONS"] = "detect_leaks=0:halt_on_error=1"
    env.setdefault("APPLIANCE_CORE_FUZZ", "5")
    tests = [
        "tests/inspect/test_core.py",
        "tests/inspect/test_core_fuzz.py",
        "tests/inspect/test_match_anchors.py",  # the core through a large anchored group
        "tests/inspect/test_engine_scan.py",  # its scans, stream sizes counted
        "tests/inspect/test_core_hello.py",  # a TLS hello's JA3 and version
        "tests/inspect/test_core_tlswalk.py",  # the TLS records of the segments it takes
        "tests/inspect/test_tlsrecords.py",  # the same, through the engine
        "tests/inspect/test_engine_syn.py",  # the new-flow path: SYNs, ACKs, RSTs, FINs
        "tests/inspect/test_core_counters.py",  # its thresholds and SYN detectors
        "tests/inspect/test_core_anchors.py",  # anchored rules placed, a stream's head
        "tests/inspect/test_match_reference.py",  # the rule driver, header gates included
        "tests/inspect/test_fast_path.py",  # the gates of established flows' packets
        "tests/inspect/test_stream.py",  # streams ended by a FIN the fast path takes
        "tests/inspect/test_prefilter.py",  # the scanners' memo of application buffers
    ]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    out = done.stdout + done.stderr
    assert "AddressSanitizer" not in out and "runtime error:" not in out, out[-5000:]
    assert done.returncode == 0, out[-5000:]
    assert " skipped" not in out.splitlines()[-1], out[-2000:]  # the core was loaded
