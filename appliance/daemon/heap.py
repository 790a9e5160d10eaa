"""Giving freed memory back to the system after a policy is loaded.

Parsing a large element list makes and drops millions of small objects. What the
interpreter keeps for reuse (the free lists of tuples and the like) pins its memory pools,
and the C allocator keeps the pages it freed inside its heap: without this the daemon's
RSS after loading a 1,000,000-element set stays twice what the packed elements need.
``release`` runs a full collection (which also empties the free lists) and asks the C
library to return its free pages (glibc's ``malloc_trim``; a C library without it is
left as it is).
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable


def _find_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter runs on
    except OSError:  # pragma: no cover - a process always has its own symbols
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_TRIM = _find_trim()


def release() -> bool:
    """Collect garbage and return the allocator's free pages; whether pages could be
    returned (False where the C library cannot)."""
    gc.collect()
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
