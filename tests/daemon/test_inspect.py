"""The daemon's live inspection without sockets: fake readers feed crafted packets through the
bounded queue and the engine thread; alerts, drops, and one block per source."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from appliance.daemon.defaults import INSPECT_QUEUE
from appliance.daemon.inspect import LiveInspection, settings_key
from appliance.daemon.metrics import Metrics
from appliance.errors import KernelError
from appliance.model.parse import load_profile
from appliance.model.profile import Profile
from appliance.probe import require_kernel_support

PROFILE = """
version = 1
name = "live"
[zones.wan]
interfaces = ["eth0"]
[protect]
block_timeout = "3s"
never_block = ["198.51.100.9"]
[inspect]
mode = "sample"
[inspect.detectors]
port_scan = { ports = 5, window = "10s" }
"""


def syn(src: str, dport: int) -> bytes:
    from scapy.layers.inet import IP, TCP

    return bytes(IP(src=src, dst="198.51.100.1") / TCP(sport=40000 + dport, dport=dport, flags="S"))


class FakeReader:
    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        self.pending: list[tuple[float, bytes, int]] = []
        self.kernel_drops = 0

    def feed(self, packets: list[bytes]) -> None:
        self.pending += [(1000.0 + i * 0.001, p, 101) for i, p in enumerate(packets)]
        os.write(self.w, b"x")

    def fileno(self) -> int:
        return self.r

    def read(self, limit: int = 256) -> list[tuple[float, bytes, int]]:
        with contextlib.suppress(BlockingIOError):
            os.read(self.r, 4096)
        taken, self.pending = self.pending[:limit], self.pending[limit:]
        if self.pending:
            os.write(self.w, b"x")
        return taken

    def close(self) -> None:
        if self.r >= 0:
            os.close(self.r)
            os.close(self.w)
            self.r = self.w = -1


def metrics() -> Metrics:
    async def counters() -> dict[str, tuple[int, int]]:
        return {}

    return Metrics(CollectorRegistry(), read_counters=counters, set_counts=dict)


def profile(tmp_path: Path, text: str = PROFILE) -> Profile:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return load_profile(path)


async def _ignore(source: str) -> None:
    pass


def start_live(
    p: Profile,
    reader: FakeReader,
    alerts: Path,
    *,
    block: Callable[[str], Awaitable[None]] = _ignore,
    registry: Metrics | None = None,
    logger: str = "test",
    queue_size: int = INSPECT_QUEUE,
) -> LiveInspection:
    """A LiveInspection of ``p`` reading from ``reader`` and writing alerts to ``alerts``,
    started on the running loop."""
    live = LiveInspection(
        p,
        metrics=metrics() if registry is None else registry,
        block=block,
        logger=logging.getLogger(logger),
        alerts=str(alerts),
        queue_size=queue_size,
        readers=[reader],
    )
    live.start(asyncio.get_running_loop())
    return live


async def until(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.01)


def test_scan_blocks_once_and_never_block_is_spared(tmp_path: Path) -> None:
    blocked: list[str] = []

    async def block(source: str) -> None:
        blocked.append(source)

    async def run() -> LiveInspection:
        reader = FakeReader()
        live = start_live(profile(tmp_path), reader, tmp_path / "log" / "eve.json", block=block)
        try:
            reader.feed([syn("198.51.100.2", p) for p in range(1, 30)])
            reader.feed([syn("198.51.100.9", p) for p in range(1, 30)])
            await until(lambda: live.counts.inspected == 58)
            await until(lambda: live.counts.blocks == 1)
            reader.feed([syn("198.51.100.2", p) for p in range(100, 130)])  # still blocked
            await until(lambda: live.counts.inspected == 88)
            await asyncio.sleep(0.05)
        finally:
            await live.stop()
            reader.close()
        return live

    live = asyncio.run(run())
    assert blocked == ["198.51.100.2"]
    events = [json.loads(line) for line in (tmp_path / "log" / "eve.json").read_text().splitlines()]
    actions = {(e["src_ip"], e["alert"]["action"]) for e in events}
    assert ("198.51.100.2", "blocked") in actions
    assert ("198.51.100.9", "allowed") in actions
    assert live.status()["blocks"] == 1


def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    async def run() -> tuple[LiveInspection, Metrics]:
        reader = FakeReader()
        m = metrics()
        live = start_live(
            profile(tmp_path), reader, tmp_path / "eve.json", registry=m, queue_size=4
        )
        try:
            reader.feed([syn("203.0.113.1", 80)] * 100)  # one read of 100: 4 fit
            await until(lambda: live.counts.received == 100)
            await until(lambda: live.counts.inspected + live.counts.queue_drops == 100)
        finally:
            await live.stop()
            reader.close()
        return live, m

    live, m = asyncio.run(run())
    assert live.counts.queue_drops >= 96
    assert m.registry.get_sample_value("appliance_inspect_dropped_total") == live.counts.queue_drops
    assert m.registry.get_sample_value("appliance_inspect_packets_total") == live.counts.inspected


def test_inline_needs_the_queue_statement(tmp_path: Path) -> None:
    inline = profile(tmp_path, PROFILE.replace('mode = "sample"', 'mode = "inline"'))
    with pytest.raises(KernelError, match=r'inspect\.mode: "inline" needs the nftables queue'):
        require_kernel_support(inline, "p.toml", lambda: {"queue": False})
    require_kernel_support(inline, "p.toml", lambda: {"queue": True})
    sample = profile(tmp_path)
    require_kernel_support(sample, "p.toml", lambda: {})


def test_settings_key_follows_rule_file_content(tmp_path: Path) -> None:
    rules = tmp_path / "a.rules"
    rules.write_text('alert tcp any any -> any 1 (msg:"a"; sid:1; rev:1;)\n')
    p = profile(
        tmp_path, PROFILE.replace('mode = "sample"', f'mode = "sample"\nrules = ["{rules}"]')
    )
    first = settings_key(p, None)
    assert settings_key(p, None) == first
    rules.write_text('alert tcp any any -> any 2 (msg:"b"; sid:2; rev:1;)\n')
    assert settings_key(p, None) != first
    assert settings_key(p, "/tmp/other.json") != settings_key(p, None)
    classes = tmp_path / "classification.config"
    classes.write_text("config classification: a,A,1\n")
    text = PROFILE.replace(
        'mode = "sample"', f'mode = "sample"\nrules = ["{rules}"]\nclassification = "{classes}"'
    )
    with_classes = profile(tmp_path, text)
    before = settings_key(with_classes, None)
    classes.write_text("config classification: a,A,2\n")
    assert settings_key(with_classes, None) != before


class FakeQueue(FakeReader):
    """An inline reader: packets carry a queue number and id; verdicts are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.verdicts: dict[int, bool] = {}
        self.next_id = 0

    def read_inline(self, limit: int = 256) -> list[tuple[float, bytes, int, int, int]]:
        out = []
        for ts, data, linktype in self.read(limit):
            self.next_id += 1
            out.append((ts, data, linktype, 0x4150, self.next_id))
        return out

    def verdict(self, queue_num: int, packet_id: int, accept: bool) -> bool:
        self.verdicts[packet_id] = accept
        return True


def test_inline_verdicts_drop_the_packet_that_blocks(tmp_path: Path) -> None:
    rules = tmp_path / "drop.rules"
    rules.write_text('drop tcp any any -> any 8080 (msg:"x"; flags:S; sid:1; rev:1;)\n')
    text = PROFILE.replace('mode = "sample"', f'mode = "inline"\nrules = ["{rules}"]')

    async def run() -> FakeQueue:
        reader = FakeQueue()
        live = start_live(profile(tmp_path, text), reader, tmp_path / "eve.json", queue_size=3)
        try:
            reader.feed([syn("203.0.113.1", 80), syn("203.0.113.2", 8080)])
            await until(lambda: len(reader.verdicts) == 2)
            reader.feed([syn("203.0.113.3", 80)] * 10)  # 3 fit, 7 are accepted unseen
            await until(lambda: len(reader.verdicts) == 12)
        finally:
            await live.stop()
        return reader

    reader = asyncio.run(run())
    assert reader.verdicts[1] is True and reader.verdicts[2] is False
    assert all(reader.verdicts[i] for i in range(3, 13))


def test_skipped_rules_are_logged_counted_in_status_and_metric(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules = tmp_path / "set.rules"
    rules.write_text(
        'alert tcp any any -> any any (msg:"a"; content:"x"; http_uri; sid:1;)\n'
        'alert tcp any any -> any any (msg:"b"; dnp3_func:1; content:"y"; sid:2;)\n'
        'alert tcp any any -> any any (msg:"c"; frobnicate; sid:3;)\n'
        'alert tcp any any -> any any (msg:"d"; depth:3; sid:4;)\n'
    )
    text = PROFILE.replace('mode = "sample"', f'mode = "sample"\nrules = ["{rules}"]')
    registry = metrics()

    async def run() -> dict[str, object]:
        reader = FakeReader()
        live = start_live(
            profile(tmp_path, text),
            reader,
            tmp_path / "eve.json",
            registry=registry,
            logger="test.skipped",
        )
        try:
            return live.status()
        finally:
            await live.stop()
            reader.close()

    with caplog.at_level(logging.WARNING, logger="test.skipped"):
        status = asyncio.run(run())
    assert status["rules"] == {
        "loaded": 1,
        "skipped": 3,
        "skipped_by_reason": {"dnp3_func": 1, "unknown": 1, "invalid": 1},
    }
    warnings = [r.getMessage() for r in caplog.records if r.name == "test.skipped"]
    assert f"{rules}:2: sid 2: unsupported keyword 'dnp3_func'" in warnings
    assert f"{rules}:3: sid 3: unsupported keyword 'frobnicate'" in warnings
    gauge = registry.inspect_rules_skipped
    assert gauge.labels(reason="dnp3_func")._value.get() == 1
    assert gauge.labels(reason="invalid")._value.get() == 1


def test_alert_file_renamed_by_logrotate_is_opened_afresh(tmp_path: Path) -> None:
    eve = tmp_path / "log" / "eve.json"

    async def run() -> LiveInspection:
        reader = FakeReader()
        live = start_live(profile(tmp_path), reader, eve)
        try:
            reader.feed([syn("198.51.100.2", p) for p in range(1, 30)])
            await until(lambda: live.counts.alerts == 1)
            eve.rename(tmp_path / "log" / "eve.json.1")  # what logrotate does
            reader.feed([syn("198.51.100.3", p) for p in range(1, 30)])
            await until(lambda: live.counts.alerts == 2)
        finally:
            await live.stop()
            reader.close()
        return live

    live = asyncio.run(run())
    rotated = (tmp_path / "log" / "eve.json.1").read_text().splitlines()
    fresh = eve.read_text().splitlines()
    assert [json.loads(line)["src_ip"] for line in rotated] == ["198.51.100.2"]
    assert [json.loads(line)["src_ip"] for line in fresh] == ["198.51.100.3"]
    status = live.status()
    assert status["alerts_file_reopened"] == 1
