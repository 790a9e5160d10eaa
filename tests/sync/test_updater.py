"""The trusted files on disk: kept across restarts, a damaged one dropped (not trusted)."""

from __future__ import annotations

import time
from pathlib import Path

from appliance.sync import keys, tuf
from appliance.sync.updater import TrustStore


def test_a_damaged_stored_file_is_dropped_and_the_installed_root_used(tmp_path: Path) -> None:
    key = keys.generate()
    now = time.time()
    one = {role: ([key.public], 1) for role in tuf.ROLES}
    root = tuf.sign_new(tuf.root_signed(1, now + 3600, one), key)
    store = TrustStore(tmp_path)
    (tmp_path / "root.json").write_bytes(b"{not json")
    (tmp_path / "timestamp.json").write_bytes(b"\x00" * 10)
    trusted = store.load(root, now)
    assert trusted.root.version == 1 and trusted.timestamp is None
    store.save(trusted)
    assert (tmp_path / "root.json").read_bytes() == root


def test_only_files_that_changed_are_written_again(tmp_path: Path) -> None:
    """A poll with nothing new (a long poll's 304) writes nothing to the state directory."""
    key = keys.generate()
    now = time.time()
    one = {role: ([key.public], 1) for role in tuf.ROLES}
    root = tuf.sign_new(tuf.root_signed(1, now + 3600, one), key)
    store = TrustStore(tmp_path)
    trusted = store.load(root, now)
    store.save(trusted)
    written = (tmp_path / "root.json").stat().st_ino
    store.save(trusted)
    again = TrustStore(tmp_path)  # after a restart: what was read is what the files hold
    again.save(again.load(root, now))
    assert (tmp_path / "root.json").stat().st_ino == written
    assert (tmp_path / "root.json").read_bytes() == root
