"""The table's structure listed without set elements (``NftBackend.list_structure``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appliance.adapters.nft import _of_our_table
from tests.conftest import nft_in, run_appliance

REPO = Path(__file__).resolve().parents[2]
PROFILES = sorted(p.name for p in (REPO / "profiles").glob("*.toml"))

# Two sets with elements in our table, and another table of the family with a set named
# like ours and a rule with an anonymous set: the structure leaves all of it out but ours.
EXTRA = """
add set inet appliance extra_iv { type ipv4_addr; flags interval; }
add set inet appliance extra_h { type ipv4_addr; }
add element inet appliance extra_iv { 10.0.0.0/24, 10.2.0.1-10.2.0.9 }
add element inet appliance extra_h { 192.0.2.1, 192.0.2.7 }
add table inet other
add set inet other appliance { type ipv4_addr; elements = { 198.51.100.1 }; }
add chain inet other c
add rule inet other c ip saddr @appliance tcp dport { 22, 80 } drop
"""


def test_only_our_tables_objects_are_kept() -> None:
    assert _of_our_table({"table": {"family": "inet", "name": "appliance", "handle": 1}})
    assert _of_our_table({"chain": {"family": "inet", "table": "appliance", "name": "input"}})
    assert _of_our_table({"set": {"family": "inet", "table": "appliance", "name": "x"}})
    assert not _of_our_table({"table": {"family": "inet", "name": "other"}})
    assert not _of_our_table({"set": {"family": "inet", "table": "other", "name": "appliance"}})
    assert not _of_our_table({"rule": {"family": "ip", "table": "appliance", "chain": "input"}})
    assert not _of_our_table({"metainfo": {"version": "1.0.6"}})


def _listings() -> tuple[Any, Any]:
    from appliance.adapters.nft import NftBackend

    backend = NftBackend()
    structure = backend.list_structure()
    return structure, backend.list_table()


def _structure() -> Any:
    from appliance.adapters.nft import NftBackend

    return NftBackend().list_structure()


def _without_elements(listing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stripped = []
    for obj in listing:
        kind, body = next(iter(obj.items()))
        if kind in ("set", "map"):
            body = {k: v for k, v in body.items() if k != "elem"}
        stripped.append({kind: body})
    return stripped


@pytest.mark.root
@pytest.mark.parametrize("profile", PROFILES)
def test_structure_is_the_full_listing_without_elements(
    netns: str, profile: str, tmp_path: Path
) -> None:
    """The same objects in the same order as ``list table``, only the named sets' elements
    left out (anonymous sets stay inline in their rules)."""
    from appliance.adapters.nsexec import run_in_netns

    applied = run_appliance("apply", "--netns", netns, str(REPO / "profiles" / profile))
    assert applied.returncode == 0, applied.stderr
    script = tmp_path / "extra.nft"
    script.write_text(EXTRA)
    nft_in(netns, "-f", str(script))
    structure, full = run_in_netns(netns, _listings)
    assert full is not None
    assert sum(1 for obj in full if "elem" in obj.get("set", {})) >= 2
    assert structure == _without_elements(full)
    assert {next(iter(obj.values()))["family"] for obj in structure} == {"inet"}
    assert all(_of_our_table(obj) for obj in structure)


@pytest.mark.root
def test_no_table_is_none_even_with_another_table(netns: str) -> None:
    from appliance.adapters.nsexec import run_in_netns

    assert run_in_netns(netns, _structure) is None
    nft_in(netns, "add", "table", "inet", "other")
    assert run_in_netns(netns, _structure) is None
