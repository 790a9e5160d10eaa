"""Running code in a forked child inside a network namespace (root)."""

from __future__ import annotations

import os
import time

import pytest

from appliance.adapters import nsexec

pytestmark = pytest.mark.root


def _inode() -> int:
    """The network namespace of the calling process, by its inode."""
    return os.stat("/proc/self/ns/net").st_ino


def test_run_in_netns_enters_the_namespace(netns: str) -> None:
    here = _inode()
    assert nsexec.run_in_netns(None, _inode) == here
    assert nsexec.run_in_netns(netns, _inode) != here


def test_run_in_netns_reports_errors_and_missing_namespaces() -> None:
    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(nsexec.ChildError, match="boom"):
        nsexec.run_in_netns(None, fail)
    with pytest.raises(nsexec.ChildError, match="does not exist"):
        nsexec.run_in_netns("no-such-namespace-here", fail)


def test_run_in_netns_kills_a_child_that_overruns() -> None:
    with pytest.raises(nsexec.WorkerTimeout):
        nsexec.run_in_netns(None, time.sleep, 30, timeout=0.5)
