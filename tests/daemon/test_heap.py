"""Freed memory goes back to the system after a large load (glibc: malloc_trim)."""

from __future__ import annotations

import ctypes.util
import gc
import weakref

import pytest

from appliance.daemon import heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_release_collects_cycles_and_trims(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    monkeypatch.setattr(heap, "_TRIM", lambda pad: trims.append(pad) or 1)
    gc.disable()
    try:
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        assert gone() is not None  # only a collection frees a cycle
        assert heap.release() is True
        assert gone() is None
    finally:
        gc.enable()
    assert trims == [0]  # every free page, none kept at the top


def test_release_without_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_TRIM", None)
    assert heap.release() is False


@pytest.mark.skipif("libc.so.6" not in str(ctypes.util.find_library("c")), reason="not glibc")
def test_glibc_has_trim_and_a_fixed_threshold() -> None:
    assert heap._TRIM is not None
    assert heap.release() is True
    assert heap.configure() is True
    assert heap.configure() is True  # as often as a daemon starts in one process


def test_configure_without_mallopt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_MALLOPT", None)
    assert heap.configure() is False
