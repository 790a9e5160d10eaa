"""Prometheus metrics (rule counters, set sizes, drift, hub sync, inspection, segments and the
last error; docs/daemon.md, "Metrics", lists them) on an injected registry, served
from the event loop.

Rule counters come from the kernel in one batched read per scrape, cached for at least a
second, on a thread of their own where the backend can read them apart from the kernel
worker (:func:`counter_reader`): a scrape never queues behind a large set's load, reload or
read-back. Set sizes come from the daemon's bookkeeping, never from listing sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from appliance.reconcile.state import DYNAMIC_SETS
from appliance.sync.bundle import RESULTS

BUILTIN_PREFIX = "ap_"
AUTOBLOCK = ("autoblock_v4", "autoblock_v6")
DRIFT_KINDS = ("table_missing", "structure", "elements", "segments")
SCRAPE_SECONDS = 10.0  # each read of a scrape's request and the write of its answer
MAX_HEADER_LINES = 100  # a request with more is dropped unanswered


Counters = dict[str, tuple[int, int]]


def counter_reader(
    backend: Any, kernel: Callable[[Callable[[], Counters]], Awaitable[Counters]]
) -> Callable[[], Awaitable[Counters]]:
    """How the metrics read the rule counters: through ``backend.dump_counters`` on a thread
    of their own when the backend has it (a netlink dump on a socket of its own, safe beside
    the kernel worker), so that a read never waits for whatever the kernel worker is doing;
    through ``kernel`` (the worker) when it has not, or when that dump fails."""
    dump: Callable[[], Counters | None] | None = getattr(backend, "dump_counters", None)
    if dump is None:
        return lambda: kernel(backend.list_counters)
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="counters")

    async def read() -> Counters:
        counters = await asyncio.get_running_loop().run_in_executor(reader, dump)
        if counters is None:
            counters = await kernel(backend.list_counters)
        return counters

    return read


class _KernelCollector:
    """Rule counters and set sizes, produced at scrape time from cached values."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        packets = CounterMetricFamily(
            "appliance_rule_packets", "Packets matched by a profile rule", labels=["rule"]
        )
        octets = CounterMetricFamily(
            "appliance_rule_bytes", "Bytes matched by a profile rule", labels=["rule"]
        )
        for name, (pkts, byts) in sorted(self.metrics.counters.items()):
            if name.startswith(BUILTIN_PREFIX):
                continue
            packets.add_metric([name], pkts)
            octets.add_metric([name], byts)
        yield packets
        yield octets
        sizes = GaugeMetricFamily(
            "appliance_set_elements", "Elements in a set of the table", labels=["set"]
        )
        counts = self.metrics.set_counts()
        for name, count in sorted(counts.items()):
            if name in DYNAMIC_SETS or name.startswith(BUILTIN_PREFIX):
                continue
            sizes.add_metric([name], count)
        yield sizes
        yield GaugeMetricFamily(
            "appliance_autoblock_elements",
            "Addresses blocked automatically right now",
            value=sum(counts.get(name, 0) for name in AUTOBLOCK),
        )


class Metrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        read_counters: Callable[[], Awaitable[dict[str, tuple[int, int]]]],
        set_counts: Callable[[], Mapping[str, int]],
        clock: Callable[[], float] = time.monotonic,
        cache_seconds: float = 1.0,
        max_wait: float = 0.5,
    ) -> None:
        self.registry = registry
        self._read_counters = read_counters
        self.set_counts = set_counts
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._read_at: float | None = None
        self._max_wait = max_wait
        self._inflight: asyncio.Future[None] | None = None
        self.counters: dict[str, tuple[int, int]] = {}
        self.counter_reads = 0

        self.policy_version = Gauge(
            "appliance_policy_version",
            "Version of the enforced hub bundle; without one, the policy generation",
            registry=registry,
        )
        self.policy_info = Gauge(
            "appliance_policy_info",
            "The enforced policy: name, table hash and where it came from",
            ["name", "table_hash", "source"],
            registry=registry,
        )
        self.last_error = Gauge(
            "appliance_policy_error",
            "1 while the configured profile could not be enforced",
            registry=registry,
        )
        self.apply_total = Counter(
            "appliance_apply", "Policy applies by result", ["result"], registry=registry
        )
        self.apply_seconds = Histogram(
            "appliance_apply_seconds",
            "Time to bring the kernel to the desired table",
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.drift_repairs = Counter(
            "appliance_drift_repairs",
            "Repairs of the table after someone else changed it, by kind",
            ["kind"],
            registry=registry,
        )
        for kind in DRIFT_KINDS:
            self.drift_repairs.labels(kind=kind)
        for result in ("ok", "failed"):
            self.apply_total.labels(result=result)
        self.inspect_packets = Counter(
            "appliance_inspect_packets", "Packets inspected in user space", registry=registry
        )
        self.inspect_dropped = Counter(
            "appliance_inspect_dropped",
            "Packets the inspection engine could not keep up with",
            registry=registry,
        )
        self.inspect_decode_errors = Counter(
            "appliance_inspect_decode_errors",
            "Packets (or parts) the decoders could not take, by reason",
            ["reason"],
            registry=registry,
        )
        self.inspect_rules_skipped = Gauge(
            "appliance_inspect_rules_skipped",
            "Rules of the loaded set left out, by reason (a Suricata keyword, unknown, invalid)",
            ["reason"],
            registry=registry,
        )
        self.alerts = Counter(
            "appliance_alerts", "Alerts raised, by signature", ["signature_id"], registry=registry
        )
        self.hub_sync = Counter(
            "appliance_hub_sync", "Hub sync attempts by result", ["result"], registry=registry
        )
        for result in RESULTS:
            self.hub_sync.labels(result=result)
        self.hub_last_success = Gauge(
            "appliance_hub_last_success_timestamp_seconds",
            "Time of the last successful hub sync",
            registry=registry,
        )
        self.segments_waiting = Gauge(
            "appliance_segments_waiting",
            "Segments of the enforced policy waiting for their parent link",
            registry=registry,
        )
        self.hub_stale = Gauge(
            "appliance_hub_bundle_stale",
            "1 while the enforced hub bundle has expired, or the hub's TUF metadata has (the "
            "hub may be frozen); what runs stays enforced",
            registry=registry,
        )
        self.notify_dropped = Counter(
            "appliance_notify_dropped",
            "Service-manager notifications dropped because its queue was full",
            registry=registry,
        )
        self.table_watch_errors = Counter(
            "appliance_table_watch_errors",
            "Failures of the table watch it went on after (its event socket failed and was "
            "opened again, a drift hint failed)",
            registry=registry,
        )
        self.flow_offload = Gauge(
            "appliance_flow_offload",
            "1 while the enforced table offloads accepted forwarded flows to a flowtable",
            registry=registry,
        )
        registry.register(_KernelCollector(self))  # type: ignore[arg-type]

    def set_policy(self, name: str, table_hash: str, source: str, generation: int) -> None:
        self.policy_version.set(generation)
        self.policy_info.clear()
        self.policy_info.labels(name=name, table_hash=table_hash, source=source).set(1)

    async def refresh(self) -> None:
        """Read the rule counters unless the last read is younger than the cache time.

        A scrape never waits long for the kernel: when a read takes longer than
        ``max_wait`` (the kernel is busy with a large apply), the last values are served
        and the read completes in the background.
        """
        now = self._clock()
        if self._read_at is not None and now - self._read_at < self._cache_seconds:
            return
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._read())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._inflight), self._max_wait)

    async def _read(self) -> None:
        try:
            self.counters = await self._read_counters()
            self.counter_reads += 1
        finally:
            self._read_at = self._clock()
            self._inflight = None

    async def exposition(self) -> bytes:
        await self.refresh()
        return generate_latest(self.registry)  # type: ignore[no-any-return]


Probe = Callable[[], "str | None"]  # None: healthy; else the reason it is not


class MetricsServer:
    """A minimal HTTP/1.0 server on the event loop: GET /metrics, and the ``probes`` (path ->
    check: 200 ``ok``, or 503 and the check's one-line reason)."""

    def __init__(self, metrics: Metrics, probes: dict[str, Probe] | None = None) -> None:
        self.metrics = metrics
        self.probes = probes or {}
        self.server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._handle, host or None, port)
        address = self.server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
            self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), SCRAPE_SECONDS)
            for _ in range(MAX_HEADER_LINES):  # the headers: read and ignore
                line = await asyncio.wait_for(reader.readline(), SCRAPE_SECONDS)
                if line in (b"\r\n", b"\n", b""):
                    break
            else:
                return
            parts = request.decode("latin-1").split()
            if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                await _respond(writer, 405, b"method not allowed\n", "text/plain")
            elif (probe := self.probes.get(parts[1].split("?", 1)[0])) is not None:
                reason = probe()
                status, text = (200, "ok") if reason is None else (503, reason)
                body = b"" if parts[0] == "HEAD" else f"{text}\n".encode()
                await _respond(writer, status, body, "text/plain")
            elif parts[1].split("?", 1)[0] not in ("/metrics", "/metrics/"):
                await _respond(writer, 404, b"not found; try /metrics\n", "text/plain")
            else:
                body = await self.metrics.exposition()
                await _respond(
                    writer, 200, b"" if parts[0] == "HEAD" else body, CONTENT_TYPE_LATEST
                )
        except (TimeoutError, ConnectionError, UnicodeDecodeError, ValueError):
            writer.transport.abort()  # a scraper that does not read is not waited for
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


async def _respond(writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str) -> None:
    head = (
        f"HTTP/1.0 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await asyncio.wait_for(writer.drain(), SCRAPE_SECONDS)
