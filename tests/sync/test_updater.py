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


def test_the_root_chain_is_asked_for_only_past_the_root_the_hub_announces(tmp_path: Path) -> None:
    """With the timestamp, the reference hub says which root is its newest: a client that
    trusts it asks for no next root; one the hub says is behind follows the chain; without
    the announcement (a static server) the next root is asked for at every update."""
    import asyncio

    from appliance.sync import repository
    from appliance.sync.updater import refresh
    from tests.sync.test_tuf import DAY, Repo, mirror

    repo = Repo(tmp_path / "hub", time.time())
    repo.release(1)
    trusted = tuf.Trusted(repo.root(), repo.now)
    served: list[str] = []

    def update(announced: int | None) -> None:
        served.clear()
        fetch = mirror(repo.dir, served)
        asyncio.run(refresh(trusted, fetch, newest_root=lambda: announced))

    update(None)
    assert served[:2] == ["timestamp.json", "2.root.json"]
    repo.release(2)
    update(1)
    assert served[0] == "timestamp.json" and not [n for n in served if "root" in n]
    repository.change_keys(repo.dir, tuf.TIMESTAMP, repo.now + DAY, add=[keys.generate().public])
    for key in repo.root_keys[:2]:
        repository.sign(repo.dir, tuf.ROOT, key)
    repo.release(3)
    update(2)
    assert served[:3] == ["timestamp.json", "2.root.json", "3.root.json"]
    assert trusted.root.version == 2 and trusted.targets is not None
    assert trusted.targets.target("bundle.json") is not None
    # A hub announcing a root it does not have gets asked for it, and nothing changes.
    update(7)
    assert served[:2] == ["timestamp.json", "3.root.json"] and trusted.root.version == 2
