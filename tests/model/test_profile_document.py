"""load_profile_document: the merged profile with elements_file inlined, for bundles."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import ProfileError
from appliance.model.parse import load_profile, load_profile_document, parse_profile

REPO = Path(__file__).resolve().parents[2]


def test_shipped_profile_round_trips_through_parse_profile() -> None:
    path = REPO / "profiles" / "edge-gateway.toml"
    document = load_profile_document(path)
    assert "extends" not in document
    assert all("elements_file" not in spec for spec in document["sets"].values())
    loaded = load_profile(path)
    parsed = parse_profile(document, "doc", path.parent)
    assert parsed.sets == loaded.sets
    assert parsed.rules == loaded.rules
    assert parsed.zones == loaded.zones


def test_extends_merged_and_file_elements_inlined(tmp_path: Path) -> None:
    (tmp_path / "base.toml").write_text(
        'version = 1\nname = "base"\n[zones.lan]\ninterfaces = ["eth1"]\n'
    )
    (tmp_path / "list.txt").write_text("# blocked\n192.0.2.1\n192.0.2.0/30  # covers it\n")
    (tmp_path / "p.toml").write_text(
        'extends = "base.toml"\nversion = 1\nname = "p"\n'
        '[sets.bl]\ntype = "ipv4_addr"\ninterval = true\nelements = ["198.51.100.1"]\n'
        'elements_file = "list.txt"\n'
    )
    document = load_profile_document(tmp_path / "p.toml")
    assert document["name"] == "p"
    assert document["zones"] == {"lan": {"interfaces": ["eth1"]}}
    assert sorted(document["sets"]["bl"]["elements"]) == ["192.0.2.0/30", "198.51.100.1"]
    assert "elements_file" not in document["sets"]["bl"]


def test_invalid_profile_is_reported_with_its_file(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text('version = 1\nname = "p"\n[sets.bl]\ntype = "nope"\n')
    with pytest.raises(ProfileError, match=r"p\.toml: sets\.bl\.type"):
        load_profile_document(tmp_path / "p.toml")
