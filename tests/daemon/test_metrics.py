"""Metrics without a kernel: counters cached for a second, set sizes from bookkeeping."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from appliance.daemon.metrics import MAX_HEADER_LINES, Metrics, MetricsServer, counter_reader
from appliance.sync.bundle import RESULTS


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(clock: FakeClock, counts: dict[str, int]) -> tuple[Metrics, list[int]]:
    reads: list[int] = []

    async def read() -> dict[str, tuple[int, int]]:
        reads.append(1)
        return {"ssh": (3, 180), "ap_autoblock": (9, 900)}

    return Metrics(CollectorRegistry(), read, lambda: counts, clock=clock), reads


def test_counters_are_read_once_per_cache_period() -> None:
    clock = FakeClock()
    metrics, reads = make(clock, {})

    async def scenario() -> None:
        await metrics.exposition()
        await metrics.exposition()
        assert len(reads) == 1
        clock.now += 0.5
        await metrics.exposition()
        assert len(reads) == 1
        clock.now += 0.6
        await metrics.exposition()
        assert len(reads) == 2

    asyncio.run(scenario())


def test_exposition_names_rules_sets_and_autoblocks() -> None:
    counts = {"blocklist": 5, "autoblock_v4": 2, "autoblock_v6": 1, "ap_never_block_v4": 4}
    metrics, _ = make(FakeClock(), counts)
    metrics.set_policy("edge", "abc", "profile", 3)
    text = asyncio.run(metrics.exposition()).decode()
    assert 'appliance_rule_packets_total{rule="ssh"} 3.0' in text
    assert 'appliance_rule_bytes_total{rule="ssh"} 180.0' in text
    assert "ap_autoblock" not in text.replace("appliance_autoblock", "")
    assert 'appliance_set_elements{set="blocklist"} 5.0' in text
    assert "ap_never_block_v4" not in text
    assert "appliance_autoblock_elements 3.0" in text
    assert "appliance_policy_version 3.0" in text
    assert 'appliance_drift_repairs_total{kind="structure"} 0.0' in text
    assert 'appliance_hub_sync_total{result="unreachable"} 0.0' in text


def test_every_sync_result_is_exposed_before_its_first_count() -> None:
    metrics, _ = make(FakeClock(), {})
    text = asyncio.run(metrics.exposition()).decode()
    exposed = {
        line.split('"')[1]
        for line in text.splitlines()
        if line.startswith("appliance_hub_sync_total{")
    }
    assert exposed == set(RESULTS)


def test_a_slow_kernel_read_serves_the_cached_values() -> None:
    clock = FakeClock()
    release = asyncio.Event()
    calls: list[int] = []

    async def slow() -> dict[str, tuple[int, int]]:
        calls.append(1)
        if len(calls) > 1:
            await release.wait()
        return {"ssh": (len(calls), 0)}

    async def scenario() -> None:
        metrics = Metrics(CollectorRegistry(), slow, dict, clock=clock, max_wait=0.05)
        await metrics.exposition()
        clock.now += 2
        text = (await metrics.exposition()).decode()  # the read hangs: old values
        assert 'appliance_rule_packets_total{rule="ssh"} 1.0' in text
        release.set()
        await asyncio.sleep(0.01)
        assert metrics.counters == {"ssh": (2, 0)}

    asyncio.run(scenario())


class SplitCounters:
    """A backend that reads counters two ways: its own netlink dump (None: it failed) and
    through the kernel worker's listing."""

    def __init__(self, dump_fails: bool = False) -> None:
        self.dump_fails = dump_fails
        self.dumps: list[str] = []  # the thread each dump ran on
        self.listings: list[str] = []

    def dump_counters(self) -> dict[str, tuple[int, int]] | None:
        self.dumps.append(threading.current_thread().name)
        return None if self.dump_fails else {"ssh": (7, 70)}

    def list_counters(self) -> dict[str, tuple[int, int]]:
        self.listings.append(threading.current_thread().name)
        return {"ssh": (5, 50)}


def scrape_beside(backend: object, hold: bool) -> tuple[str, bool]:
    """A scrape with ``backend``'s counters, the kernel worker held by a long job (a large
    set's load) if ``hold``: its text, and whether the job was still under way when the
    scrape was answered."""
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel")
    job_done = threading.Event()
    release = threading.Event()

    def long_job() -> None:
        release.wait(30)
        job_done.set()

    async def kernel(func: Callable[[], dict[str, tuple[int, int]]]) -> dict[str, tuple[int, int]]:
        return await asyncio.get_running_loop().run_in_executor(worker, func)

    async def scenario() -> tuple[str, bool]:
        read = counter_reader(backend, kernel)
        metrics = Metrics(CollectorRegistry(), read, dict, clock=FakeClock(), max_wait=60)
        if not hold:
            release.set()
        held = asyncio.get_running_loop().run_in_executor(worker, long_job)
        text = (await metrics.exposition()).decode()
        under_way = not job_done.is_set()
        release.set()
        await held
        return text, under_way

    try:
        return asyncio.run(scenario())
    finally:
        release.set()
        worker.shutdown(wait=True)


def test_a_scrape_reads_fresh_counters_while_the_kernel_worker_is_busy() -> None:
    backend = SplitCounters()
    text, under_way = scrape_beside(backend, hold=True)
    assert under_way  # answered without waiting for the worker's job
    assert 'appliance_rule_packets_total{rule="ssh"} 7.0' in text  # read, not cached
    assert backend.listings == [] and backend.dumps[0].startswith("counters")


def test_a_failed_dump_reads_the_counters_through_the_kernel_worker() -> None:
    backend = SplitCounters(dump_fails=True)
    text, _ = scrape_beside(backend, hold=False)
    assert 'appliance_rule_packets_total{rule="ssh"} 5.0' in text
    assert backend.listings[0].startswith("kernel")


def test_a_backend_without_a_dump_reads_through_the_kernel_worker() -> None:
    class ListOnly:
        def __init__(self) -> None:
            self.threads: list[str] = []

        def list_counters(self) -> dict[str, tuple[int, int]]:
            self.threads.append(threading.current_thread().name)
            return {"ssh": (1, 10)}

    backend = ListOnly()
    text, _ = scrape_beside(backend, hold=False)
    assert 'appliance_rule_packets_total{rule="ssh"} 1.0' in text
    assert backend.threads[0].startswith("kernel")


def test_a_scrape_and_status_never_walk_a_sets_elements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a scrape and ``status`` show of a set comes from the counts kept when the
    policy was enforced: nothing in them reads the elements, however many there are."""
    from appliance.daemon.service import Daemon, DaemonConfig
    from appliance.model.elements import Elements
    from appliance.model.intervals import Spans
    from tests.conftest import small_profile
    from tests.fakekernel import FakeKernel

    profile = tmp_path / "profile.toml"
    profile.write_text(small_profile("counts", ["203.0.113.0/24", "198.51.100.7"]))
    config = DaemonConfig(
        profile=str(profile),
        state_dir=str(tmp_path / "state"),
        control_socket=str(tmp_path / "control.sock"),
    )
    daemon = Daemon(config, FakeKernel())

    def walked(*_args: object) -> None:
        raise AssertionError("the elements were walked")

    async def scenario() -> tuple[str, dict[str, int]]:
        await daemon.boot()
        for cls, names in (
            (Elements, ("__iter__", "__len__", "bounds", "first")),
            (Spans, ("__iter__", "__len__", "count", "values")),
        ):
            for name in names:
                monkeypatch.setattr(cls, name, walked)
        text = (await daemon.ctx.metrics.exposition()).decode()
        return text, daemon.control.status()["sets"]

    try:
        text, sets = asyncio.run(scenario())
    finally:
        daemon.ctx.executor.shutdown(wait=True)
    assert 'appliance_set_elements{set="blocklist"} 2.0' in text
    assert sets["blocklist"] == 2


def test_http_server_answers_metrics_and_404() -> None:
    metrics, _ = make(FakeClock(), {})

    async def get(port: int, path: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        return data

    async def scenario() -> None:
        server = MetricsServer(metrics)
        _host, port = await server.start("127.0.0.1", 0)
        try:
            ok = await get(port, "/metrics")
            assert ok.startswith(b"HTTP/1.0 200")
            assert b"appliance_apply_total" in ok
            assert (await get(port, "/")).startswith(b"HTTP/1.0 404")
        finally:
            await server.close()

    asyncio.run(scenario())


def test_a_request_with_endless_headers_is_dropped_unanswered() -> None:
    metrics, _ = make(FakeClock(), {})

    async def scenario() -> None:
        server = MetricsServer(metrics)
        _host, port = await server.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /metrics HTTP/1.1\r\n")
            for number in range(MAX_HEADER_LINES + 1):
                writer.write(f"X-Header-{number}: x\r\n".encode())
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 30) == b""
            writer.close()
            ok = await asyncio.wait_for(_get(port), 30)  # and the next one is answered
            assert ok.startswith(b"HTTP/1.0 200")
        finally:
            await server.close()

    asyncio.run(scenario())


async def _get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    data = await reader.read()
    writer.close()
    return data
