"""Reading a set's ``elements_file``: only a regular file, at most ``MAX_BYTES``, within
``DEADLINE_SECONDS``.

The profile is read in the daemon's kernel worker: a FIFO (which never ends), a device
such as ``/dev/zero`` (which never ends either) or a huge file would stall enforcement or
exhaust memory. They are refused with a one-line reason instead. 64 MiB holds a list of a
million IPv6 prefixes with room for comments (an IPv4 address takes 8 to 19 bytes a line).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator

MAX_BYTES = 64 * 1024 * 1024
DEADLINE_SECONDS = 10.0
_CHUNK = 1 << 16  # a chunk is split into its lines at once: a few thousand strings at a time


class ElementsFileError(ValueError):
    """The file cannot be an element list; the message says why (one line)."""


def read_elements_text(
    filename: str,
    max_bytes: int = MAX_BYTES,
    deadline_seconds: float = DEADLINE_SECONDS,
) -> str:
    """The text of ``filename`` (see :func:`iter_lines` for what is refused)."""
    return "".join(iter_lines(filename, max_bytes, deadline_seconds))


def read_elements_bytes(
    filename: str,
    max_bytes: int = MAX_BYTES,
    deadline_seconds: float = DEADLINE_SECONDS,
) -> bytes:
    """The bytes of ``filename``, refused as :func:`iter_lines` refuses (but not decoded:
    the caller decodes, or reads the lines with :func:`iter_lines` for their errors)."""
    fd, info = _open_regular(filename, max_bytes)
    try:
        began = time.monotonic()
        parts = []
        size = 0
        while True:
            chunk = os.read(fd, max(info.st_size - size, 0) + _CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:  # it grew while read
                raise ElementsFileError(_too_large(filename, max_bytes))
            if time.monotonic() - began > deadline_seconds:
                raise ElementsFileError(f"{filename}: not read within {deadline_seconds:g}s")
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)


def iter_lines(
    filename: str,
    max_bytes: int = MAX_BYTES,
    deadline_seconds: float = DEADLINE_SECONDS,
) -> Iterator[str]:
    """The lines of ``filename`` (with their line ends), read a chunk at a time: the whole
    text is never held. ElementsFileError if it is not a regular file, is larger than
    ``max_bytes``, takes longer than ``deadline_seconds`` or is not UTF-8; OSError if it
    cannot be opened or read."""
    fd, _ = _open_regular(filename, max_bytes)
    try:
        spent = 0.0  # seconds in reads (what the caller does between chunks is its own)
        size = 0  # bytes read
        offset = 0  # of ``rest`` in the file
        rest = b""
        while True:
            began = time.monotonic()
            chunk = os.read(fd, _CHUNK)
            spent += time.monotonic() - began
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:  # it grew while read
                raise ElementsFileError(_too_large(filename, max_bytes))
            if spent > deadline_seconds:
                raise ElementsFileError(f"{filename}: not read within {deadline_seconds:g}s")
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            yield from _decode(filename, data[:cut], offset)
            offset += cut
        if rest:
            yield from _decode(filename, rest, offset)
    finally:
        os.close(fd)


def _open_regular(filename: str, max_bytes: int) -> tuple[int, os.stat_result]:
    """``filename`` opened for reading, with its status, if it is a regular file of at most
    ``max_bytes``; ElementsFileError (the descriptor closed) if not."""
    # O_NONBLOCK: opening a FIFO without a writer would otherwise wait for one.
    fd = os.open(filename, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ElementsFileError(f"{filename}: not a regular file ({_kind(info.st_mode)})")
        if info.st_size > max_bytes:
            raise ElementsFileError(_too_large(filename, max_bytes))
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def _decode(filename: str, data: bytes, offset: int) -> list[str]:
    try:
        return data.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError as exc:
        raise ElementsFileError(f"{filename}: not UTF-8 text (byte {offset + exc.start})") from None


def _too_large(filename: str, max_bytes: int) -> str:
    return f"{filename}: larger than {max_bytes // (1024 * 1024)} MiB"


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a file"
