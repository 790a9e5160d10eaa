"""Golden tests: a profile in, the exact ruleset out (nft text and libnftables JSON).

Regenerate after an intended compiler change with ``pytest --update-golden`` and review
the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_appliance

GOLDEN = Path(__file__).parent / "golden"
PROFILES = sorted(GOLDEN.glob("*.toml"))


@pytest.mark.parametrize("profile", PROFILES, ids=[p.stem for p in PROFILES])
@pytest.mark.parametrize("fmt", ["nft", "json"])
def test_compile_matches_golden(profile: Path, fmt: str, update_golden: bool) -> None:
    args = ["compile", str(profile)] + (["--json"] if fmt == "json" else [])
    result = run_appliance(*args)
    assert result.returncode == 0, result.stderr
    golden = profile.with_suffix(f".{fmt}")
    if update_golden:
        golden.write_text(result.stdout)
    assert golden.exists(), f"{golden} missing: run pytest --update-golden"
    assert result.stdout == golden.read_text()


@pytest.mark.parametrize("profile", PROFILES, ids=[p.stem for p in PROFILES])
def test_compile_is_deterministic(profile: Path) -> None:
    first = run_appliance("compile", "--json", str(profile)).stdout
    second = run_appliance("compile", "--json", str(profile)).stdout
    assert first == second
