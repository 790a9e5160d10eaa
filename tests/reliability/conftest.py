"""Plumbing of the fault, load and bad-input suite.

The default run is short (few trials, seeded fuzzing of a few seconds) and runs in CI;
``APPLIANCE_SOAK=1`` runs the full counts and the long fuzzing (see docs/testing.md).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.daemon.conftest import (
    Link,
    peer_namespace,
    start_daemon,  # noqa: F401  (the daemon fixture, shared)
)

SOAK = os.environ.get("APPLIANCE_SOAK", "") not in ("", "0")


def trials(ci: int, soak: int) -> int:
    """How many trials a case runs: ``ci`` by default, ``soak`` with APPLIANCE_SOAK=1."""
    return soak if SOAK else ci


def fuzz_examples(ci: int) -> int:
    """Hypothesis examples: ``ci`` by default; with the soak flag, as many as fit in the
    fuzzing deadline (see ``fuzz_deadline``)."""
    return 10_000_000 if SOAK else ci


def fuzz_seconds() -> float:
    """The soak's time budget of one fuzz target (APPLIANCE_FUZZ_SECONDS, default 600)."""
    return float(os.environ.get("APPLIANCE_FUZZ_SECONDS", "600"))


@pytest.fixture
def peer_link(netns: str) -> Iterator[Link]:
    """A peer namespace wired to ``netns`` by a veth pair: 10.77.0.1 (netns, eth1) and
    10.77.0.2 (peer, eth0). Removed afterwards whatever happens."""
    with peer_namespace(netns, f"rel-{uuid.uuid4().hex[:8]}") as link:
        yield link


@dataclass
class TableSampler:
    """Lists ``inet appliance`` in a namespace every ``period`` seconds in a thread; a sample
    where the table is missing is recorded."""

    ns: str
    period: float = 0.01
    samples: int = 0
    missing: list[str] = field(default_factory=list)
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._done.is_set():
            result = subprocess.run(
                ["ip", "netns", "exec", self.ns, "nft", "list", "table", "inet", "appliance"],
                capture_output=True,
                text=True,
            )
            self.samples += 1
            if result.returncode != 0:
                self.missing.append(result.stderr.strip())
            self._done.wait(self.period)

    def __enter__(self) -> TableSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(30)

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        """Until ``count`` samples were taken in all (however loaded the host)."""
        deadline = time.monotonic() + timeout
        while self.samples < count and time.monotonic() < deadline:
            time.sleep(0.01)
