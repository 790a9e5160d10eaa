"""Fixtures for the lab's own tests: a lab of namespaces that is always removed."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from appliance.lab import netns, topology
from tests.conftest import owned


def unique_prefix(tag: str) -> str:
    return owned(f"t{tag}") + "-"


@pytest.fixture(scope="module")
def lab() -> Iterator[topology.Lab]:
    """A lab (module-wide), removed at the end even if a test fails."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    prefix = unique_prefix("l")
    try:
        yield netns.up(prefix)
    finally:
        netns.down(prefix)


@pytest.fixture
def prefix() -> Iterator[str]:
    """A fresh lab prefix; whatever a test built under it is removed afterwards."""
    value = unique_prefix("p")
    try:
        yield value
    finally:
        if os.geteuid() == 0:
            netns.down(value)
