"""The sets benchmark's reading of the daemon's log and of a process's RSS (pure, and the
benchmark's own process)."""

from __future__ import annotations

import calendar
import json
import os
import time

from bench.sets import Sampler, logged_at


def test_the_last_line_with_the_message_gives_its_wall_time() -> None:
    lines = [
        json.dumps({"ts": "2026-12-06T15:47:50.344Z", "msg": "policy enforced"}),
        "<6>" + json.dumps({"ts": "2026-12-06T15:47:56.012Z", "msg": "policy enforced"}),
        json.dumps({"ts": "2026-12-06T15:47:57.000Z", "msg": "ready"}),
        "not json",
    ]
    at = logged_at(lines, "policy enforced")
    assert at == calendar.timegm((2026, 12, 6, 15, 47, 56, 0, 0, 0)) + 0.012
    assert logged_at(lines, "reloading") is None


def test_the_sampler_reads_a_process_rss_until_stopped() -> None:
    sampler = Sampler(os.getpid())
    deadline = time.monotonic() + 10
    while len(sampler.samples) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    sampler.stop()
    count = len(sampler.samples)
    assert count >= 3
    first, last = sampler.samples[0][0], sampler.samples[-1][0]
    assert sampler.highest(first, last + 1) == max(kib for _at, kib in sampler.samples) > 0
    assert sampler.highest(last + 1, last + 2) == 0
    assert len(sampler.samples) == count  # stopped
