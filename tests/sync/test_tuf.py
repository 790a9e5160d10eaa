"""TUF's attacks on an update system, one test each, against the client's trust decisions.

The repository is built with the publisher's steps (appliance.sync.repository); the client
runs the workflow (appliance.sync.updater) over a mirror that the tests may turn malicious.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest

from appliance.storage import atomic_write
from appliance.sync import bundle as B
from appliance.sync import keys, repository, tuf
from appliance.sync.updater import Fetch, TrustStore, refresh
from tests.sync.conftest import build

DAY = 86400.0


class Repo:
    """A hub directory with root keys r1..r3 (2 of 3), targets t1..t3 (2 of 3), an online
    snapshot and timestamp key."""

    def __init__(self, directory: Path, now: float) -> None:
        self.dir = directory
        self.now = now
        self.root_keys = [keys.generate() for _ in range(3)]
        self.targets_keys = [keys.generate() for _ in range(3)]
        self.snapshot_key = keys.generate()
        self.timestamp_key = keys.generate()
        roles = {
            tuf.ROOT: ([k.public for k in self.root_keys], 2),
            tuf.TARGETS: ([k.public for k in self.targets_keys], 2),
            tuf.SNAPSHOT: ([self.snapshot_key.public], 1),
            tuf.TIMESTAMP: ([self.timestamp_key.public], 1),
        }
        repository.init(directory, roles, now + 365 * DAY)
        for key in self.root_keys[:2]:
            repository.sign(directory, tuf.ROOT, key)

    def release(self, version: int, signers: list[keys.PrivateKey] | None = None) -> bytes:
        """Publish bundle ``version``: by the publisher's steps (2 of the targets keys), or
        with ``signers`` forged by someone holding the online keys (no threshold check)."""
        data = build(version, [f"192.0.2.{version}"], expires=self.now + 365 * DAY)
        atomic_write(self.dir / B.BUNDLE_FILE, data, 0o644)
        if signers is None:
            repository.stage_targets(self.dir, self.now + 90 * DAY)
            for key in self.targets_keys[:2]:
                repository.sign(self.dir, tuf.TARGETS, key)
        else:
            number = repository.latest_version(self.dir, tuf.TARGETS) + 1
            signed = tuf.new_signed(
                tuf.TARGETS,
                number,
                self.now + 90 * DAY,
                targets={B.BUNDLE_FILE: tuf.file_meta(data)},
            )
            atomic_write(self.dir / f"{sha(data)}.{B.BUNDLE_FILE}", data, 0o644)
            atomic_write(self.dir / f"{number}.targets.json", tuf.sign_new(signed, *signers))
        self.publish()
        return data

    def publish(self, timestamp_days: float = 1.0) -> None:
        repository.publish(
            self.dir,
            self.snapshot_key,
            self.timestamp_key,
            self.now + 7 * DAY,
            self.now + timestamp_days * DAY,
        )

    def root(self) -> bytes:
        return (self.dir / "1.root.json").read_bytes()


def mirror(directory: Path, served: list[str] | None = None) -> Fetch:
    async def fetch(name: str, cap: int) -> bytes | None:
        path = directory / name
        if served is not None:
            served.append(name)
        if not path.exists():
            return None
        with open(path, "rb") as handle:
            data = handle.read(cap + 1)  # a client reads at most the cap (+1 to tell)
        if len(data) > cap:
            raise B.BundleError(B.TOO_LARGE, f"{name}: over {cap} bytes")
        return data

    return fetch


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def update(trusted: tuf.Trusted, directory: Path, have: str = "") -> bytes | None:
    result = asyncio.run(refresh(trusted, mirror(directory), have))
    return result.bundle


def refused(trusted: tuf.Trusted, directory: Path, have: str = "") -> B.BundleError:
    with pytest.raises(B.BundleError) as caught:
        update(trusted, directory, have)
    return caught.value


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    r = Repo(tmp_path / "hub", time.time())
    r.release(1)
    return r


def client(repo: Repo, now: float | None = None) -> tuf.Trusted:
    return tuf.Trusted(repo.root(), repo.now if now is None else now)


def test_a_release_is_fetched_then_nothing_new(repo: Repo) -> None:
    trusted = client(repo)
    data = update(trusted, repo.dir)
    assert data is not None and json.loads(data)["version"] == 1
    assert update(trusted, repo.dir, sha(data)) is None
    v2 = repo.release(2)
    assert update(trusted, repo.dir, sha(data)) == v2


def test_arbitrary_installation_unsigned_and_wrong_role(repo: Repo) -> None:
    trusted = client(repo)
    update(trusted, repo.dir)
    # A bundle swapped on the mirror under the name targets signed for.
    name = next(p for p in repo.dir.iterdir() if p.name.endswith(".bundle.json"))
    atomic_write(name, build(9, ["198.51.100.1"]), 0o644)
    repo.release(2)  # and a new release whose file is then swapped too
    entry = json.loads((repo.dir / "2.targets.json").read_text())["signed"]["targets"]
    target = repo.dir / f"{entry['bundle.json']['hashes']['sha256']}.bundle.json"
    good = target.read_bytes()
    atomic_write(target, good.replace(b"192.0.2.2", b"192.0.2.9"), 0o644)  # same length
    assert refused(trusted, repo.dir).result == B.BAD_SIGNATURE
    # targets.json signed by the timestamp key (a key of another role) is refused.
    fresh = client(repo)
    repo.release(3, signers=[repo.timestamp_key, repo.snapshot_key])
    error = refused(fresh, repo.dir)
    assert error.result == B.BAD_SIGNATURE and "0 of the 2" in error.reason


def test_rollback_of_timestamp_snapshot_and_targets(repo: Repo, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(repo.dir, old)
    trusted = client(repo)
    repo.release(2)
    update(trusted, repo.dir)
    assert trusted.targets is not None and trusted.targets.version == 2
    # The mirror serves yesterday's repository: its timestamp is older.
    error = refused(trusted, old)
    assert error.result == B.ROLLBACK and "timestamp.json" in error.reason
    # A new timestamp (the online key) naming the old snapshot is refused too.
    repository.timestamp(old, repo.timestamp_key, repo.now + DAY)
    for _ in range(3):
        repository.timestamp(old, repo.timestamp_key, repo.now + DAY)
    assert refused(trusted, old).result == B.ROLLBACK


def test_rollback_survives_a_restart(repo: Repo, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(repo.dir, old)
    store = TrustStore(tmp_path / "state")
    trusted = client(repo)
    repo.release(2)
    update(trusted, repo.dir)
    store.save(trusted)
    again = store.load(repo.root(), repo.now)
    assert again.timestamp is not None and again.targets is not None
    assert again.targets.version == 2
    assert refused(again, old).result == B.ROLLBACK


def test_indefinite_freeze_without_resigning_targets(repo: Repo) -> None:
    trusted = client(repo)
    data = update(trusted, repo.dir)
    assert data is not None
    have = sha(data)
    # Two days later the frozen mirror still serves the one-day timestamp: refused.
    later = client(repo, repo.now + 2 * DAY)
    later.timestamp, later.snapshot, later.targets = (
        trusted.timestamp,
        trusted.snapshot,
        trusted.targets,
    )
    error = refused(later, repo.dir, have)
    assert error.result == B.EXPIRED and "timestamp.json" in error.reason
    # The online key renews the timestamp; the offline targets keys sign nothing.
    targets_before = sorted(p.name for p in repo.dir.glob("*.targets.json"))
    repo.now += 2 * DAY
    repository.timestamp(repo.dir, repo.timestamp_key, repo.now + DAY)
    assert update(later, repo.dir, have) is None
    assert sorted(p.name for p in repo.dir.glob("*.targets.json")) == targets_before


def test_endless_data_is_cut_at_the_signed_length(repo: Repo) -> None:
    trusted = client(repo)
    served: list[str] = []
    entry = json.loads((repo.dir / "1.targets.json").read_text())["signed"]["targets"]
    target = repo.dir / f"{entry['bundle.json']['hashes']['sha256']}.bundle.json"
    with open(target, "ab") as handle:  # the mirror appends a gigabyte (sparse)
        handle.truncate(1 << 30)
    with pytest.raises(B.BundleError) as caught:
        asyncio.run(refresh(trusted, mirror(repo.dir, served)))
    assert caught.value.result == B.TOO_LARGE
    # An endless timestamp.json: cut at its fixed cap.
    with open(repo.dir / "timestamp.json", "ab") as handle:
        handle.truncate(1 << 30)
    assert refused(client(repo), repo.dir).result == B.TOO_LARGE


def test_extraneous_dependencies_only_named_targets(repo: Repo) -> None:
    """Only files targets.json names are fetched: an extra file on the mirror, or a target
    name the targets role never signed for, is never taken."""
    trusted = client(repo)
    atomic_write(repo.dir / "extra.bundle.json", build(50), 0o644)
    served: list[str] = []
    asyncio.run(refresh(trusted, mirror(repo.dir, served)))
    assert not any("extra" in name for name in served)
    with pytest.raises(B.BundleError) as caught:
        trusted.target("extra.bundle.json")
    assert caught.value.result == B.BAD_SIGNATURE


def test_mix_and_match_of_snapshot_and_targets(repo: Repo, tmp_path: Path) -> None:
    trusted = client(repo)
    update(trusted, repo.dir)
    v1_targets = (repo.dir / "1.targets.json").read_bytes()
    repo.release(2)
    # The mirror serves the new timestamp and snapshot with the old targets under the new name.
    atomic_write(repo.dir / "2.targets.json", v1_targets, 0o644)
    error = refused(trusted, repo.dir)
    assert error.result == B.BAD_SIGNATURE and "targets.json" in error.reason


def test_malicious_mirror_edits_any_file(repo: Repo) -> None:
    trusted = client(repo)
    update(trusted, repo.dir)
    repo.release(2)
    # Each file changed by one byte inside the signed part: each is refused.
    for name in ("timestamp.json", "2.snapshot.json", "2.targets.json"):
        path = repo.dir / name
        good = path.read_bytes()
        document = json.loads(good)
        document["signed"]["expires"] = "2099-01-01T00:00:00Z"
        atomic_write(path, json.dumps(document).encode(), 0o644)
        probe = client(repo)
        assert refused(probe, repo.dir).result in (B.BAD_SIGNATURE, B.TOO_LARGE), name
        atomic_write(path, good, 0o644)
    assert update(trusted, repo.dir) is not None


def test_a_compromised_key_below_threshold_signs_nothing(repo: Repo) -> None:
    trusted = client(repo)
    update(trusted, repo.dir)
    stolen = repo.targets_keys[0]
    repo.release(2, signers=[stolen])  # 1 of the 2 targets signatures
    error = refused(trusted, repo.dir)
    assert error.result == B.BAD_SIGNATURE and "1 of the 2" in error.reason
    # The same key twice counts once.
    repo.release(3, signers=[stolen, stolen])
    error = refused(client(repo), repo.dir)
    assert error.result == B.BAD_SIGNATURE and "1 of the 2" in error.reason
    # A stolen root key cannot make a new root alone.
    repository.change_keys(repo.dir, tuf.TARGETS, repo.now + DAY, add=[stolen.public])
    repository.sign(repo.dir, tuf.ROOT, repo.root_keys[0])
    with pytest.raises(repository.RepositoryError, match="1 of the 2"):
        repo.publish()


def test_key_rotation_over_the_channel_and_a_revoked_key(repo: Repo) -> None:
    trusted = client(repo)
    update(trusted, repo.dir)
    stolen = repo.targets_keys[0]
    # Root 2 revokes the stolen targets key and adds a new one; 2 of 3 root keys sign it.
    replacement = keys.generate()
    repository.change_keys(
        repo.dir,
        tuf.TARGETS,
        repo.now + 365 * DAY,
        add=[replacement.public],
        revoke=[stolen.public],
    )
    for key in repo.root_keys[1:]:
        repository.sign(repo.dir, tuf.ROOT, key)
    repo.targets_keys = [replacement, repo.targets_keys[1], repo.targets_keys[2]]
    repo.release(2, signers=[replacement, repo.targets_keys[1]])
    assert update(trusted, repo.dir) is not None
    assert trusted.root.version == 2
    # The revoked key with one more good key: below the threshold of the new root.
    repo.release(3, signers=[stolen, repo.targets_keys[2]])
    error = refused(trusted, repo.dir)
    assert error.result == B.BAD_SIGNATURE and "1 of the 2" in error.reason
    # A client installed with root 1 follows the chain to root 2 and refuses it too.
    fresh = client(repo)
    assert refused(fresh, repo.dir).result == B.BAD_SIGNATURE and fresh.root.version == 2


def test_a_root_not_signed_by_the_old_threshold_is_not_followed(repo: Repo) -> None:
    trusted = client(repo)
    update(trusted, repo.dir)
    attacker = [keys.generate(), keys.generate()]
    forged = tuf.root_signed(
        2,
        repo.now + DAY,
        {
            tuf.ROOT: ([k.public for k in attacker], 2),
            tuf.TARGETS: ([attacker[0].public], 1),
            tuf.SNAPSHOT: ([attacker[0].public], 1),
            tuf.TIMESTAMP: ([attacker[0].public], 1),
        },
    )
    atomic_write(repo.dir / "2.root.json", tuf.sign_new(forged, *attacker), 0o644)
    error = refused(trusted, repo.dir)
    assert error.result == B.BAD_SIGNATURE and "root" in error.reason
    assert trusted.root.version == 1


def test_an_expired_root_is_a_freeze(repo: Repo) -> None:
    trusted = client(repo, repo.now + 400 * DAY)
    assert refused(trusted, repo.dir).result == B.EXPIRED


def test_canonical_json_and_key_ids() -> None:
    assert tuf.canonical({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'.encode()
    with pytest.raises(B.BundleError):
        tuf.canonical({"a": 1.5})
    key = keys.generate().public
    assert len(tuf.tuf_key_id(key)) == 64


@pytest.mark.parametrize("missing", ["timestamp.json", "snapshot", "targets", "bundle"])
def test_a_file_missing_from_the_hub_is_an_http_error_not_a_bad_signature(
    repo: Repo, missing: str
) -> None:
    """A 404 on metadata or a target is a serving fault (http_error); nothing is trusted
    from it, and the same files served again are taken."""
    trusted = client(repo)
    repo.release(2)
    entry = json.loads((repo.dir / "2.targets.json").read_text())["signed"]["targets"]
    name = {
        "timestamp.json": "timestamp.json",
        "snapshot": "2.snapshot.json",
        "targets": "2.targets.json",
        "bundle": f"{entry['bundle.json']['hashes']['sha256']}.bundle.json",
    }[missing]
    path = repo.dir / name
    kept = path.read_bytes()
    path.unlink()
    error = refused(trusted, repo.dir)
    assert error.result == B.HTTP_ERROR and name in error.reason and "404" in error.reason
    atomic_write(path, kept, 0o644)
    data = update(trusted, repo.dir)
    assert data is not None and json.loads(data)["version"] == 2
