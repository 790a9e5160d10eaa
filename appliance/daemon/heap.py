"""Giving freed memory back to the system after a policy is loaded.

Parsing a large element list makes and drops millions of small objects. What the
interpreter keeps for reuse (the free lists of tuples and the like) pins its memory pools,
and the C allocator keeps the pages it freed inside its heap: without this the daemon's
RSS after loading a 1,000,000-element set stays twice what the packed elements need.
``release`` runs a full collection (which also empties the free lists) and asks the C
library to return its free pages (glibc's ``malloc_trim``; a C library without it is
left as it is).

``configure`` fixes glibc's threshold above which a block is a mapping of its own at
128 KiB. By default the threshold rises to the size of the largest block freed (up to
32 MiB): after the first large set, its arrays would come from the heap, each one grown
by copies that leave their earlier sizes behind in the heap until a trim (measured: a
reload of 1,000,000 elements peaked at 43 B per element instead of 28). A mapping of its
own grows in place and goes back to the system the moment it is freed.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 128 * 1024  # glibc's default starting threshold, kept fixed


def _find(name: str, *args: type) -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter runs on
    except OSError:  # pragma: no cover - a process always has its own symbols
        return None
    function = getattr(libc, name, None)
    if function is None:
        return None
    function.argtypes = list(args)
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_TRIM = _find("malloc_trim", ctypes.c_size_t)
_MALLOPT = _find("mallopt", ctypes.c_int, ctypes.c_int)


def configure() -> bool:
    """Blocks of 128 KiB and more as mappings of their own, whatever was freed before;
    whether the C library took it (False where it has no such setting)."""
    if _MALLOPT is None or _TRIM is None:  # not glibc: its parameters mean other things
        return False
    return bool(_MALLOPT(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def release() -> bool:
    """Collect garbage and return the allocator's free pages; whether pages could be
    returned (False where the C library cannot)."""
    gc.collect()
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
