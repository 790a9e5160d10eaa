"""The last-good store: an atomic pair on disk, loadable at boot, stale once expired."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.sync import bundle as B
from appliance.sync import keys
from appliance.sync.store import BundleStore, StoreError
from tests.sync.conftest import PROFILE_DOC, build, sign

NOW = 1_900_000_000.0


def _bundle(key: keys.PrivateKey, version: int, expires: float) -> tuple[B.Bundle, bytes]:
    data = build(version, ["192.0.2.1"], expires=expires)
    sig = sign(data, key)
    verdict = B.verify(data, sig, [key.public], NOW, Path("/"))
    assert verdict.bundle is not None
    return verdict.bundle, sig


def test_save_and_load(tmp_path: Path, key1: keys.PrivateKey) -> None:
    store = BundleStore(tmp_path)
    with pytest.raises(StoreError, match="no bundle"):
        store.load((key1.public,), NOW, Path("/"))
    bundle, sig = _bundle(key1, 3, NOW + 60)
    store.save(bundle, sig, '"e1"', '"s1"', now=NOW)
    loaded = store.load((key1.public,), NOW, Path("/"))
    assert loaded.bundle.version == 3
    assert loaded.bundle.data == bundle.data
    assert loaded.signature == sig
    assert (loaded.etag, loaded.sig_etag) == ('"e1"', '"s1"')
    assert not loaded.stale
    assert (tmp_path / "hub" / "current" / "bundle.json").read_bytes() == bundle.data
    assert (tmp_path / "hub" / "current" / "bundle.json.sig").read_bytes() == sig
    # Expired since: still loads, marked stale.
    assert store.load((key1.public,), NOW + 61, Path("/")).stale


def test_replacing_keeps_one_generation(tmp_path: Path, key1: keys.PrivateKey) -> None:
    store = BundleStore(tmp_path)
    for version in (1, 2, 3):
        bundle, sig = _bundle(key1, version, NOW + 60)
        store.save(bundle, sig, now=NOW)
    gens = [p.name for p in (tmp_path / "hub").iterdir() if p.name.startswith("gen-")]
    assert len(gens) == 1 and gens[0].startswith("gen-3-")
    assert os.readlink(tmp_path / "hub" / "current") == gens[0]
    assert store.load((key1.public,), NOW, Path("/")).bundle.version == 3


def test_untrusted_or_corrupt_store_is_refused(
    tmp_path: Path, key1: keys.PrivateKey, key2: keys.PrivateKey
) -> None:
    store = BundleStore(tmp_path)
    bundle, sig = _bundle(key1, 1, NOW + 60)
    store.save(bundle, sig, now=NOW)
    with pytest.raises(StoreError, match="bad_signature"):
        store.load((key2.public,), NOW, Path("/"))
    current = tmp_path / "hub" / "current" / "bundle.json"
    current.write_bytes(current.read_bytes().replace(b"192.0.2.1", b"192.0.2.2"))
    with pytest.raises(StoreError, match="bad_signature"):
        store.load((key1.public,), NOW, Path("/"))


def test_delta_bundle_is_stored_with_its_resolved_sets(
    tmp_path: Path, key1: keys.PrivateKey
) -> None:
    base, _ = _bundle(key1, 1, NOW + 60)
    data = B.encode_document(
        {
            "version": 2,
            "expires": B.format_time(NOW + 60),
            "profile": PROFILE_DOC,
            "sets": {"blocklist": {"base": 1, "add": ["198.51.100.1"], "del": []}},
        }
    )
    sig = sign(data, key1)
    verdict = B.verify(data, sig, [key1.public], NOW, Path("/"), running=base)
    assert verdict.bundle is not None
    store = BundleStore(tmp_path)
    store.save(verdict.bundle, sig, now=NOW)
    loaded = store.load((key1.public,), NOW, Path("/"))
    assert loaded.bundle.data == data
    assert set(loaded.bundle.elements["blocklist"]) == {"192.0.2.1", "198.51.100.1"}
