"""The compiled table against the kernel: both output forms load to the same table,
apply converges (apply twice: no diff), and change-then-revert lands on the same table."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from tests.conftest import REPO, nft_in, run_appliance

GOLDEN = Path(__file__).parent / "golden"
ALL_PROFILES = sorted(GOLDEN.glob("*.toml")) + sorted((REPO / "profiles").glob("*.toml"))
# Inline inspection needs the nftables queue statement: those profiles round-trip in the
# QEMU guest (test_inline_inspection_round_trips), the rest here.
PROFILES = [p for p in ALL_PROFILES if 'mode = "inline"' not in p.read_text()]
IDS = [f"{p.parent.name}/{p.stem}" for p in PROFILES]

# Applying makes the segments' links too: vlan and vrf segments need kernel support this host
# may lack (tests/adapters/test_links.py applies them in the QEMU guest).
APPLIED = [p for p in PROFILES if 'kind = "vlan"' not in p.read_text()]

pytestmark = pytest.mark.root


@functools.cache
def _kernel_has_queue() -> bool:
    from appliance.probe import probe_features

    return probe_features().get("queue", False)


def kernel_table(ns: str) -> list[dict[str, object]]:
    """The table as listed, without handles and run-time values."""
    listing = json.loads(nft_in(ns, "-j", "list", "table", "inet", "appliance"))["nftables"]
    result = []
    for obj in listing:
        kind, body = next(iter(obj.items()))
        if kind == "metainfo":
            continue
        body = {k: v for k, v in body.items() if k not in ("handle", "packets", "bytes")}
        result.append({kind: body})
    return result


@pytest.mark.parametrize("profile", PROFILES, ids=IDS)
def test_text_and_json_load_the_same_table(profile: Path, netns: str, tmp_path: Path) -> None:
    text = run_appliance("compile", str(profile), check=True).stdout
    script = tmp_path / "ruleset.nft"
    script.write_text(text)
    nft_in(netns, "-f", str(script))
    from_text = kernel_table(netns)
    nft_in(netns, "delete", "table", "inet", "appliance")

    if profile in APPLIED:
        result = run_appliance("apply", "--netns", netns, str(profile))
        assert result.returncode == 0, result.stderr
    else:  # the table alone, as libnftables JSON (its links need the guest's kernel)
        document = tmp_path / "ruleset.json"
        document.write_text(run_appliance("compile", "--json", str(profile), check=True).stdout)
        nft_in(netns, "-j", "-f", str(document))
    from_json = kernel_table(netns)
    # The JSON path tags profile elements; the text form does not carry tags.
    for obj in from_json:
        body = obj.get("set")
        if isinstance(body, dict) and "elem" in body:
            body["elem"] = [
                e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e for e in body["elem"]
            ]
    assert from_text == from_json


@pytest.mark.parametrize("profile", APPLIED, ids=[f"{p.parent.name}/{p.stem}" for p in APPLIED])
def test_apply_converges(profile: Path, netns: str) -> None:
    assert run_appliance("apply", "--netns", netns, str(profile)).returncode == 0
    first = kernel_table(netns)
    plan = run_appliance("plan", "--netns", netns, str(profile))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert plan.stdout.strip() == "no changes"
    again = run_appliance("apply", "--netns", netns, str(profile))
    assert again.returncode == 0 and again.stdout.strip() == "no changes"
    assert kernel_table(netns) == first


def test_change_then_revert_returns_the_same_table(netns: str, tmp_path: Path) -> None:
    original = GOLDEN / "full.toml"
    assert run_appliance("apply", "--netns", netns, str(original)).returncode == 0
    before = kernel_table(netns)
    changed = tmp_path / "changed.toml"
    changed.write_text(original.read_text().replace("dport = [22]", "dport = [22, 2222]"))
    plan = run_appliance("plan", "--netns", netns, str(changed))
    assert plan.returncode == 3
    assert "2222" in plan.stdout
    assert run_appliance("apply", "--netns", netns, str(changed)).returncode == 0
    assert kernel_table(netns) != before
    assert run_appliance("apply", "--netns", netns, str(original)).returncode == 0
    assert kernel_table(netns) == before


@pytest.mark.guest
def test_inline_inspection_round_trips(netns: str, tmp_path: Path) -> None:
    """The queue statement of [inspect] mode "inline", where the kernel has it (the QEMU
    guest): the kernel lists back exactly what we emit, and the nft text form loads the
    same table."""
    if not _kernel_has_queue():
        pytest.skip("this kernel lacks the nftables queue statement")
    profile = GOLDEN / "inspect-inline.toml"
    test_apply_converges(profile, netns)
    nft_in(netns, "delete", "table", "inet", "appliance")
    test_text_and_json_load_the_same_table(profile, netns, tmp_path)
