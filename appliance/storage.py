"""Durable files: write to a temp file, fsync, rename, fsync the directory."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so a crash leaves either the old or the new file."""
    atomic_write_parts(path, (data,), mode)


def atomic_write_parts(
    path: str | os.PathLike[str],
    parts: Iterable[bytes | memoryview],
    mode: int = 0o600,
    skip_if_same: bool = False,
) -> None:
    """:func:`atomic_write` of ``parts``, written as they come (a large file is never held
    whole); with ``skip_if_same``, a file already holding the same bytes is left as it is."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as handle:
            for part in parts:
                if skip_if_same:
                    digest.update(part)
                handle.write(part)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            if skip_if_same and _file_digest(target) == digest.digest():
                os.unlink(tmp)
                return
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


READ_BLOCK = 1 << 16  # bytes of a file read at a time into one buffer, to hash it


def _file_digest(path: Path) -> bytes | None:
    """The file's SHA-256 (None if it cannot be read), read into one small buffer (a
    megabyte read at a time was two megabytes at once: the block hashed and the next)."""
    digest = hashlib.sha256()
    buffer = bytearray(READ_BLOCK)
    view = memoryview(buffer)
    try:
        with path.open("rb", buffering=0) as handle:
            while size := handle.readinto(buffer):
                digest.update(view[:size])
    except OSError:
        return None
    return digest.digest()
