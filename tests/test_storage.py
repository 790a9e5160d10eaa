"""Durable files (pure, a temporary directory): a file replaced whole, written a part at a
time, left as it is when it already holds the same bytes; its digest read a block at a
time."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from appliance.storage import READ_BLOCK, _file_digest, atomic_write, atomic_write_parts


@pytest.mark.parametrize("size", [0, 1, READ_BLOCK - 1, READ_BLOCK, 3 * READ_BLOCK + 7])
def test_a_files_digest_is_its_sha256_read_a_block_at_a_time(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert _file_digest(path) == hashlib.sha256(data).digest()
    assert _file_digest(tmp_path / "absent") is None


def test_parts_are_written_whole_and_the_same_bytes_leave_the_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "script"
    parts = [b"a" * READ_BLOCK, memoryview(b"bc"), b""]
    atomic_write_parts(path, parts, skip_if_same=True)
    assert path.read_bytes() == b"a" * READ_BLOCK + b"bc"
    before = path.stat().st_ino
    atomic_write_parts(path, parts, skip_if_same=True)  # the same bytes: not replaced
    assert path.stat().st_ino == before
    atomic_write_parts(path, [b"other"], skip_if_same=True)
    assert path.read_bytes() == b"other" and path.stat().st_ino != before
    assert [p.name for p in path.parent.iterdir()] == ["script"]  # no temporary file left
    atomic_write(path, b"whole", 0o640)
    assert path.read_bytes() == b"whole" and path.stat().st_mode & 0o777 == 0o640
