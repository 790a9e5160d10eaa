"""Publishing a TUF repository: staged offline roles signed one key per call, k of n."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from appliance.storage import atomic_write
from appliance.sync import bundle as B
from appliance.sync import keys, repository, tuf
from tests.sync.conftest import build

DAY = 86400.0


def roles(
    root: list[keys.PrivateKey], online: keys.PrivateKey
) -> dict[str, tuple[list[keys.PublicKey], int]]:
    return {
        tuf.ROOT: ([k.public for k in root], 2),
        tuf.TARGETS: ([k.public for k in root], 2),
        tuf.SNAPSHOT: ([online.public], 1),
        tuf.TIMESTAMP: ([online.public], 1),
    }


def test_k_of_n_signing_one_key_per_call(tmp_path: Path) -> None:
    now = time.time()
    directory = tmp_path / "hub"
    offline = [keys.generate() for _ in range(3)]
    online = keys.generate()
    staged = repository.init(directory, roles(offline, online), now + 365 * DAY)
    assert json.loads(staged.read_text())["signatures"] == []
    with pytest.raises(repository.RepositoryError, match="0 of the 2"):
        repository.publish(directory, online, online, now + DAY, now + DAY)
    # Two machines, one key each: the staged file travels between them.
    _, count, threshold = repository.sign(directory, tuf.ROOT, offline[0])
    assert (count, threshold) == (1, 2)
    _, count, _ = repository.sign(directory, tuf.ROOT, offline[0])  # again: still one
    assert count == 1
    _, count, _ = repository.sign(directory, tuf.ROOT, offline[2])
    assert count == 2
    atomic_write(directory / B.BUNDLE_FILE, build(1), 0o644)
    repository.stage_targets(directory, now + 90 * DAY)
    repository.sign(directory, tuf.TARGETS, offline[1])
    with pytest.raises(repository.RepositoryError, match="1 of the 2"):
        repository.publish(directory, online, online, now + DAY, now + DAY)
    assert (directory / "1.root.json").exists()  # the root went out; targets wait
    repository.sign(directory, tuf.TARGETS, offline[2])
    written = repository.publish(directory, online, online, now + DAY, now + DAY)
    assert written[-3:] == ["1.targets.json", "1.snapshot.json", "timestamp.json"]
    assert not (directory / repository.STAGED / "targets.json").exists()
    # The timestamp alone: a new version, nothing else written.
    before = sorted(p.name for p in directory.iterdir())
    assert repository.timestamp(directory, online, now + DAY) == "timestamp.json"
    assert sorted(p.name for p in directory.iterdir()) == before
    assert tuf.parse((directory / "timestamp.json").read_bytes(), tuf.TIMESTAMP).version == 2


def test_bad_steps_are_one_line_errors(tmp_path: Path) -> None:
    now = time.time()
    online = keys.generate()
    offline = [keys.generate()]
    with pytest.raises(repository.RepositoryError, match="threshold 2 with 1 distinct keys"):
        repository.init(tmp_path, roles(offline, online), now + DAY)
    with pytest.raises(repository.RepositoryError, match="no root published"):
        repository.change_keys(tmp_path, tuf.TARGETS, now + DAY, add=[online.public])
    with pytest.raises(repository.RepositoryError, match="only root and targets"):
        repository.sign(tmp_path, tuf.TIMESTAMP, online)
    with pytest.raises(repository.RepositoryError, match="cannot read"):
        repository.sign(tmp_path, tuf.ROOT, online)
