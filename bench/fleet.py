"""Fleet sync: N real hub clients against one reference hub on loopback.

Measures the time from publishing version V+1 (bundle.json, then bundle.json.sig, as
`bundle build` and `bundle sign` write them) until every client has fetched it, verified it
(signature, schema and profile, expiry, rollback), stored it as last good and POSTed its
status to the hub. The clients long-poll (the hub announces it). Each appliance has its own
bundle path (``fleet/edge-NNNN/``, all symlinks to one group directory) so /fleet holds one
report per appliance.

The hub is `appliance hub serve` in its own process; the clients are asyncio tasks spread
over worker processes (``--workers``). State directories live on /dev/shm (every appliance
has its own disk; one shared disk's fsyncs would measure this machine, not the protocol).
The reference is one client alone in the same run; the ratio says what a fleet costs.
"Seen by all" is the time until the last client had verified the new version; the CPU per
round of the hub and of the clients, divided by the cores, is the shortest round this machine
allows. ``--light`` keeps the requests and drops the clients' work (nothing verified or
stored): what is left is the hub's share (with ``--tuf``, the TUF client's requests: the
long poll on ``timestamp.json``, the next root unless the hub says it has none, snapshot,
targets, the bundle by its hash, the status). ``--tuf`` publishes and verifies with TUF roles;
``--nginx PERIOD`` measures plain conditional polling of nginx instead (with ``--tuf``, of
``timestamp.json``, then the TUF files when it changed).

    .venv/bin/python -m bench.fleet [--clients 1 100 1000] [--rounds 3] [--workers 2]
        [--tuf | --light | --nginx PERIOD]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOT_HINT_HEADER = "x-tuf-root-version"  # appliance.sync.hub: the newest root it serves

PROFILE = {
    "version": 1,
    "name": "fleet",
    "zones": {"wan": {"interfaces": ["eth0"]}, "lan": {"interfaces": ["eth1"]}},
    "sets": {"blocklist": {"type": "ipv4_addr", "interval": True}},
    "rules": [
        {"name": "drop-bl", "from": "any", "to": "any", "saddr": ["@blocklist"], "action": "drop"},
        {"name": "lan-out", "from": "lan", "to": "wan", "action": "accept"},
    ],
}


def publish(group: Path, key: object, version: int, elements: int) -> None:
    from appliance.storage import atomic_write
    from appliance.sync import bundle as B

    items = [f"10.{version % 250}.{i // 250}.{i % 250}" for i in range(elements)]
    data = B.build_bundle(PROFILE, {"blocklist": items}, version, time.time() + 86400, group)
    atomic_write(group / B.BUNDLE_FILE, data, 0o644)  # build
    sig = B.sign_text("", key, data)  # type: ignore[arg-type]
    atomic_write(group / B.SIG_FILE, sig.encode(), 0o644)  # sign


def publish_tuf(group: Path, key: object, version: int, elements: int) -> None:
    """The same bundle published as a TUF repository (one key for every role, for the
    bench): targets staged and signed, then snapshot and timestamp."""
    from appliance.storage import atomic_write
    from appliance.sync import bundle as B
    from appliance.sync import repository, tuf

    now = time.time()
    if version == 1:
        roles = {role: ([key.public], 1) for role in tuf.ROLES}  # type: ignore[attr-defined]
        repository.init(group, roles, now + 86400)
        repository.sign(group, tuf.ROOT, key)  # type: ignore[arg-type]
    items = [f"10.{version % 250}.{i // 250}.{i % 250}" for i in range(elements)]
    data = B.build_bundle(PROFILE, {"blocklist": items}, version, now + 86400, group)
    atomic_write(group / B.BUNDLE_FILE, data, 0o644)
    repository.stage_targets(group, now + 86400)
    repository.sign(group, tuf.TARGETS, key)  # type: ignore[arg-type]
    repository.publish(group, key, key, now + 86400, now + 3600)  # type: ignore[arg-type]


def _emitter() -> Callable[[dict[str, object]], None]:
    """A function writing JSON lines to stdout, flushed once per turn of the event loop (a
    thousand clients done in one turn cost one write, not a thousand)."""
    loop = asyncio.get_running_loop()
    pending: list[str] = []

    def flush() -> None:
        sys.stdout.write("".join(pending))
        sys.stdout.flush()
        pending.clear()

    def emit(record: dict[str, object]) -> None:
        if not pending:
            loop.call_soon(flush)
        pending.append(json.dumps(record) + "\n")

    return emit


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---- worker: a slice of the fleet in one process ----------------------------------------


async def worker(base: str, first: int, count: int, state: Path, pub: str) -> None:
    from appliance.sync import keys
    from appliance.sync.client import ClientLimits, HubClient
    from appliance.sync.transport import Limits

    tuf_root = Path(pub).read_bytes() if pub.endswith("root.json") else None
    trust = [] if tuf_root else [keys.load_public(pub)]
    ready = 0
    ready_event = asyncio.Event()
    # Thousands of clients share this event loop, which a busy machine leaves seconds behind:
    # the deadlines of one appliance alone (10 s to read) would time out on that lag, and the
    # retries would be what is measured. The checks are the same.
    limits = ClientLimits(
        http=Limits(connect_timeout=60, read_timeout=60, total_timeout=120),
        long_poll=30,
        status_timeout=60,
    )
    emit = _emitter()

    async def appliance(index: int) -> None:
        nonlocal ready
        name = f"edge-{index:04d}"
        client = HubClient(
            f"{base}/fleet/{name}/",
            trust,
            state / name,
            name=name,
            limits=limits,
            tuf_root=tuf_root,
        )
        first_apply = True
        while True:
            sync = await client.poll_once()
            if sync.pending and not first_apply and sync.bundle is not None:
                emit({"seen": index, "version": sync.bundle.version, "t": time.time()})
            if sync.pending:
                sync = await client.applied(sync, "bench")
                if first_apply:
                    first_apply = False
                    ready += 1
                    if ready == count:
                        ready_event.set()
                else:
                    emit({"done": index, "version": sync.version, "t": time.time()})
            elif not sync.ok:
                emit({"error": index, "result": sync.result, "why": sync.error})
            await asyncio.sleep(client.next_delay(sync, 5))

    tasks = [asyncio.create_task(appliance(first + i)) for i in range(count)]
    await ready_event.wait()
    emit({"ready": count})
    await asyncio.gather(*tasks)


async def light_worker(base: str, first: int, count: int, use_tuf: bool = False) -> None:
    """The hub's share alone: clients that make the requests the real client makes, one
    kept-alive connection each, but verify and store nothing, so what is measured is the hub.

    Signed pair: the long poll on the signature, the bundle when it changed, the status
    report. TUF (``use_tuf``): the long poll on ``timestamp.json``, the next root probed
    unless the hub's answer says it has none, then the snapshot, the targets and the bundle
    by the names each file gives the next (read, not verified), and the status report."""
    import re
    from urllib.parse import urlsplit

    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    emit = _emitter()
    ready = 0
    ready_event = asyncio.Event()
    opening = asyncio.Semaphore(100)  # connections set up a hundred at a time
    Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]

    async def exchange(
        stream: Stream, request: str, body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        reader, writer = stream
        writer.write(request.encode("latin-1") + body)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        headers: dict[str, str] = {}
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(": ")
            headers[name.lower()] = value
        length = int(headers.get("content-length", "0"))
        data = await reader.readexactly(length) if length else b""
        return int(head[9:12]), headers, data

    def get(path: str, etag: str = "", wait: int = 0) -> str:
        query = f"?wait={wait}" if wait else ""
        condition = f"If-None-Match: {etag}\r\n" if etag else ""
        return f"GET {path}{query} HTTP/1.1\r\n{condition}\r\n"

    async def report(stream: Stream, index: int, path: str, version: int) -> None:
        emit({"seen": index, "version": version, "t": time.time()})
        body = json.dumps(
            {"name": path, "version": version, "result": "applied", "sent": time.time()}
        ).encode()
        await exchange(
            stream, f"POST {path}status HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n", body
        )
        emit({"done": index, "version": version, "t": time.time()})

    def bundle_version(data: bytes) -> int:
        found = re.match(rb'\{"version":(\d+)', data)  # bundles start with it
        return int(found.group(1)) if found else 0

    async def connect(path: str) -> tuple[Stream, list[str]]:
        async with opening:
            stream = await asyncio.open_connection(host, port)
            if use_tuf:
                _, headers, _ = await exchange(stream, get(path + "timestamp.json"))
                return stream, [headers.get("etag", "")]
            _, sig, _ = await exchange(stream, get(path + "bundle.json.sig"))
            _, data, _ = await exchange(stream, get(path + "bundle.json"))
        return stream, [sig.get("etag", ""), data.get("etag", "")]

    async def update_pair(stream: Stream, index: int, path: str, etags: list[str]) -> None:
        status, headers, _ = await exchange(stream, get(path + "bundle.json.sig", etags[0], 30))
        if status != 200:
            return
        etags[0] = headers.get("etag", "")
        status, headers, data = await exchange(stream, get(path + "bundle.json", etags[1]))
        etags[1] = headers.get("etag", "")
        await report(stream, index, path, bundle_version(data))

    root_version = 1

    async def update_tuf(stream: Stream, index: int, path: str, etags: list[str]) -> None:
        status, headers, data = await exchange(stream, get(path + "timestamp.json", etags[0], 30))
        if status != 200:
            return
        etags[0] = headers.get("etag", "")
        newest = headers.get(ROOT_HINT_HEADER)
        if newest is None or int(newest) > root_version:
            await exchange(stream, get(f"{path}{root_version + 1}.root.json"))  # 404
        meta = json.loads(data)["signed"]["meta"]
        _, _, data = await exchange(
            stream, get(f"{path}{meta['snapshot.json']['version']}.snapshot.json")
        )
        meta = json.loads(data)["signed"]["meta"]
        _, _, data = await exchange(
            stream, get(f"{path}{meta['targets.json']['version']}.targets.json")
        )
        target = json.loads(data)["signed"]["targets"]["bundle.json"]["hashes"]["sha256"]
        _, _, data = await exchange(stream, get(f"{path}{target}.bundle.json"))
        await report(stream, index, path, bundle_version(data))

    update = update_tuf if use_tuf else update_pair

    async def appliance(index: int) -> None:
        nonlocal ready
        path = f"/fleet/edge-{index:04d}/"
        stream, etags = await connect(path)
        ready += 1
        if ready == count:
            ready_event.set()
        while True:
            try:
                await update(stream, index, path, etags)
            except (OSError, asyncio.IncompleteReadError, ValueError, KeyError) as exc:
                emit({"error": index, "result": "unreachable", "why": repr(exc)})
                stream[1].close()
                await asyncio.sleep(0.5)
                stream, etags = await connect(path)

    tasks = [asyncio.create_task(appliance(first + i)) for i in range(count)]
    await ready_event.wait()
    emit({"ready": count})
    await asyncio.gather(*tasks)


async def poller(base: str, first: int, count: int, period: float, use_tuf: bool = False) -> None:
    """Plain conditional polling (what a static server sees): each appliance GETs its
    signature file with If-None-Match every ``period`` seconds, at a random phase, over one
    kept-alive connection, and the bundle when the signature changed. With ``use_tuf``, the
    file polled is ``timestamp.json``; when it changed, the next root is asked for (a static
    server announces none), then snapshot, targets and the bundle by the names each gives."""
    import random
    from urllib.parse import urlsplit

    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = 0
    emit = _emitter()

    Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
    last_body = [b""]

    async def get(stream: Stream, path: str, etag: str) -> tuple[int, str]:
        nonlocal requests
        reader, writer = stream
        condition = f"If-None-Match: {etag}\r\n" if etag else ""
        writer.write(f"GET {path} HTTP/1.1\r\nHost: hub\r\n{condition}\r\n".encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        requests += 1
        status = int(head.split(" ", 2)[1])
        headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
        lower = {k.lower(): v for k, v in headers.items()}
        length = int(lower.get("content-length", "0"))
        last_body[0] = await reader.readexactly(length) if length else b""
        return status, lower.get("etag", "")

    watched = "timestamp.json" if use_tuf else "bundle.json.sig"

    async def follow(stream: Stream, name: str, etag: str) -> str:
        """After a change: what the client fetches next; the bundle's new ETag (pair)."""
        if not use_tuf:
            return (await get(stream, name + "bundle.json", etag))[1]
        meta = json.loads(last_body[0])["signed"]["meta"]
        await get(stream, name + "2.root.json", "")  # 404: the root stays 1
        await get(stream, f"{name}{meta['snapshot.json']['version']}.snapshot.json", "")
        meta = json.loads(last_body[0])["signed"]["meta"]
        await get(stream, f"{name}{meta['targets.json']['version']}.targets.json", "")
        target = json.loads(last_body[0])["signed"]["targets"]["bundle.json"]
        await get(stream, f"{name}{target['hashes']['sha256']}.bundle.json", "")
        return ""

    ready = 0
    ready_event = asyncio.Event()
    opening = asyncio.Semaphore(100)  # connections set up a hundred at a time
    failed: list[int] = []

    async def appliance(index: int) -> None:
        nonlocal ready
        name = f"/fleet/edge-{index:04d}/"
        for attempt in range(20):
            try:
                async with opening:
                    stream = await asyncio.open_connection(host, port)
                    _, sig_etag = await get(stream, name + watched, "")
                    _, etag = await get(stream, name + "bundle.json", "")
                break
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                if attempt == 19:
                    emit({"error": index, "why": repr(exc)})
                    failed.append(index)
                    if ready + len(failed) == count:
                        ready_event.set()
                    return
                await asyncio.sleep(0.5)
        ready += 1
        if ready + len(failed) == count:
            ready_event.set()
        await asyncio.sleep(random.uniform(0, period))
        while True:
            started = time.monotonic()
            try:
                status, new_sig = await get(stream, name + watched, sig_etag)
                if status == 200 and new_sig != sig_etag:
                    sig_etag = new_sig
                    etag = await follow(stream, name, etag)
                    emit({"seen": index, "t": time.time()})
            except (OSError, asyncio.IncompleteReadError, ValueError, KeyError) as exc:
                emit({"poll_error": index, "why": repr(exc)})
                stream[1].close()
                try:
                    async with opening:
                        stream = await asyncio.open_connection(host, port)
                except OSError:
                    pass
            await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))

    tasks = [asyncio.create_task(appliance(first + i)) for i in range(count)]
    await ready_event.wait()
    emit({"ready": count, "failed": len(failed)})
    while True:
        await asyncio.sleep(1.0)
        emit({"requests": requests, "tasks": len(tasks)})
        requests = 0


NGINX_CONF = """
daemon off;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
worker_processes 1;
worker_rlimit_nofile {files};
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp-body;
    proxy_temp_path {dir}/tmp-proxy;
    fastcgi_temp_path {dir}/tmp-fastcgi;
    uwsgi_temp_path {dir}/tmp-uwsgi;
    scgi_temp_path {dir}/tmp-scgi;
    default_type application/octet-stream;
    keepalive_timeout 120s;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
    }}
}}
"""


def _fleet_tree(root: Path, n: int) -> Path:
    """``root/srv/group`` (returned: where the bundles go) and ``root/srv/fleet/edge-NNNN``
    for N edges, each a link to the group."""
    group = root / "srv" / "group"
    group.mkdir(parents=True)
    (root / "srv" / "fleet").mkdir()
    for i in range(n):
        os.symlink("../group", root / "srv" / "fleet" / f"edge-{i:04d}")
    return group


def _spawn_workers(
    procs: list[subprocess.Popen[str]], mode: str, port: int, n: int, workers: int, *args: str
) -> None:
    """N edges shared out over at most ``workers`` processes of ``bench.fleet MODE``, each
    given the hub's URL, its first edge, its count of edges and ``args``; each process is
    added to ``procs`` as it starts."""
    workers = max(1, min(workers, n))
    share = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
    first = 0
    for count in share:
        command = [sys.executable, "-m", "bench.fleet", mode, f"http://127.0.0.1:{port}"]
        command += [str(first), str(count), *args]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO))
        first += count


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    """SIGTERM to every process, the last started first; one that has not exited 10 s
    later is killed."""
    for proc in reversed(procs):
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run_nginx(
    n: int, workers: int, elements: int, period: float, use_tuf: bool = False
) -> dict[str, object]:
    """nginx (Debian's, one worker) serving the same bundles to N plain pollers."""
    from appliance.sync import keys

    root = Path(tempfile.mkdtemp(prefix="fleet-nginx-"))
    procs: list[subprocess.Popen[str]] = []
    try:
        key = keys.generate()
        group = _fleet_tree(root, n)
        release = publish_tuf if use_tuf else publish
        release(group, key, 1, elements)
        port = free_port()
        conf = root / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                dir=root, root=root / "srv", port=port, files=8 * n + 1000, connections=4 * n + 1000
            )
        )
        nginx = subprocess.Popen(["nginx", "-c", str(conf)], text=True)
        procs.append(nginx)
        deadline = time.monotonic() + 10
        while not (root / "nginx.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # nginx writes its pid file once it listens
        mode = "tuf" if use_tuf else "pair"
        _spawn_workers(procs, "--poll-worker", port, n, workers, str(period), mode)
        clients = procs[1:]
        lines = _lines(clients)
        ready = failed = 0
        deadline = time.monotonic() + 300
        while ready < n:
            record = _next(lines, deadline)
            ready += int(record.get("ready", 0))  # type: ignore[call-overload]
            failed += int(record.get("failed", 0))  # type: ignore[call-overload]
        nginx_pids = [int(p) for p in _children(nginx.pid)] + [nginx.pid]
        # One period to spread the phases, then one measured period, then a publish.
        deadline = time.monotonic() + period
        while time.monotonic() < deadline:
            _next(lines, deadline + 5)
        cpu_before = sum(_cpu(pid) for pid in nginx_pids)
        clients_before = sum(_cpu(p.pid) for p in clients)
        requests = 0
        deadline = time.monotonic() + period
        while time.monotonic() < deadline:
            record = _next(lines, deadline + 5)
            requests += int(record.get("requests", 0))  # type: ignore[call-overload]
        cpu_nginx = sum(_cpu(pid) for pid in nginx_pids) - cpu_before
        cpu_clients = sum(_cpu(p.pid) for p in clients) - clients_before
        time.sleep(1.1)  # nginx's ETag is the mtime in seconds and the size
        start = time.time()
        release(group, key, 2, elements)
        seen: dict[int, float] = {}
        poll_errors = 0
        first_error = ""
        deadline = time.monotonic() + 3 * period
        while len(seen) < n - failed and time.monotonic() < deadline:
            try:
                record = _next(lines, deadline)
            except SystemExit:
                break
            if "poll_error" in record:
                poll_errors += 1
                first_error = first_error or str(record.get("why"))
            if "seen" in record:
                seen[int(record["seen"])] = float(record["t"])  # type: ignore[arg-type]
        return {
            "clients": n,
            "failed": failed,
            "period": period,
            "rate": requests / period,
            "cpu_nginx": cpu_nginx,
            "cpu_clients": cpu_clients,
            "all_seen": max(seen.values(), default=float("nan")) - start,
            "median_seen": statistics.median(seen.values() or [float("nan")]) - start,
            "seen": len(seen),
            "poll_errors": poll_errors,
            "first_error": first_error,
        }
    finally:
        _stop(procs)
        shutil.rmtree(root, ignore_errors=True)


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


# ---- the run ----------------------------------------------------------------------------


def run_fleet(
    n: int, rounds: int, workers: int, elements: int, use_tuf: bool = False, light: bool = False
) -> dict[str, object]:
    from appliance.sync import keys

    root = Path(tempfile.mkdtemp(prefix="fleet-hub-"))
    state = Path(tempfile.mkdtemp(prefix="fleet-state-", dir="/dev/shm"))
    procs: list[subprocess.Popen[str]] = []
    try:
        key = keys.generate()
        keys.write_keypair(root / "hub.key", key)
        group = _fleet_tree(root, n)
        version = 1
        release = publish_tuf if use_tuf else publish
        release(group, key, version, elements)
        trust_file = group / "1.root.json" if use_tuf else root / "hub.key.pub"
        port = free_port()
        hub = subprocess.Popen(
            [sys.executable, "-m", "appliance", "hub", "serve", str(root / "srv"),
             "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.PIPE, text=True, cwd=REPO,
        )  # fmt: skip
        procs.append(hub)
        assert hub.stdout is not None
        hub.stdout.readline()
        if light:
            _spawn_workers(procs, "--light-worker", port, n, workers, "tuf" if use_tuf else "pair")
        else:
            _spawn_workers(procs, "--worker", port, n, workers, str(state), str(trust_file))
        clients = procs[1:]
        lines = _lines(clients)
        ready = 0
        # Generous on a busy machine: every client fetches, verifies and stores version 1.
        deadline = time.monotonic() + 120 + 0.05 * n
        while ready < n:
            record = _next(lines, deadline)
            ready += int(record.get("ready", 0))  # type: ignore[call-overload]
        samples: list[float] = []  # publish -> the last client stored it and reported
        seen_samples: list[float] = []  # publish -> the last client verified (or fetched) it
        errors: list[dict[str, object]] = []
        error_count = 0
        cpu_hub = cpu_clients = 0.0
        load_before = os.getloadavg()[0]
        for _ in range(rounds):
            hub_before = _cpu(hub.pid)
            clients_before = sum(_cpu(p.pid) for p in clients)
            time.sleep(1.0)  # every client back in its long poll
            version += 1
            start = time.time()
            release(group, key, version, elements)
            done: dict[int, float] = {}
            seen: dict[int, float] = {}
            deadline = time.monotonic() + 120 + 0.02 * n
            while len(done) < n:
                record = _next(lines, deadline)
                if "error" in record:
                    error_count += 1
                    errors.append(record)
                elif record.get("version") == version and "seen" in record:
                    seen[int(record["seen"])] = float(record["t"])  # type: ignore[arg-type]
                elif record.get("version") == version:
                    done[int(record["done"])] = float(record["t"])  # type: ignore[arg-type]
            samples.append(max(done.values()) - start)
            seen_samples.append(max(seen.values()) - start)
            cpu_hub += _cpu(hub.pid) - hub_before
            cpu_clients += sum(_cpu(p.pid) for p in clients) - clients_before
        return {
            "clients": n,
            "samples": samples,
            "seen": seen_samples,
            "errors": errors[:3],
            "error_count": error_count,
            "cpu_hub": cpu_hub / rounds,
            "cpu_clients": cpu_clients / rounds,
            "load": (load_before, os.getloadavg()[0]),
        }
    finally:
        _stop(procs)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _lines(procs: list[subprocess.Popen[str]]) -> asyncio.Queue[dict[str, object]]:
    """Every worker's JSON lines, read by threads into one queue-like list."""
    import queue
    import threading

    q: queue.Queue[dict[str, object]] = queue.Queue()

    def pump(proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            q.put(json.loads(line))

    for proc in procs:
        threading.Thread(target=pump, args=(proc,), daemon=True).start()
    return q  # type: ignore[return-value]


def _next(lines: object, deadline: float) -> dict[str, object]:
    import queue

    assert isinstance(lines, queue.Queue)
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise SystemExit("fleet bench: timed out waiting for the clients")
    try:
        record: dict[str, object] = lines.get(timeout=remaining)
    except queue.Empty:
        raise SystemExit("fleet bench: timed out waiting for the clients") from None
    return record


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--elements", type=int, default=100, help="blocklist size per bundle")
    parser.add_argument("--worker", nargs=5, metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument(
        "--nginx",
        type=float,
        metavar="PERIOD",
        help="instead: nginx serving the bundles to plain pollers, one GET every PERIOD s",
    )
    parser.add_argument("--poll-worker", nargs=5, metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument("--tuf", action="store_true", help="publish and verify with TUF roles")
    parser.add_argument(
        "--light",
        action="store_true",
        help="the hub's share alone: clients that make the same requests, verify nothing",
    )
    parser.add_argument("--light-worker", nargs=4, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.light_worker:
        base, first, count, mode = args.light_worker
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        asyncio.run(light_worker(base, int(first), int(count), mode == "tuf"))
        return 0
    if args.poll_worker:
        base, first, count, period, mode = args.poll_worker
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        asyncio.run(poller(base, int(first), int(count), float(period), mode == "tuf"))
        return 0
    if args.nginx:
        for n in args.clients:
            result = run_nginx(n, args.workers, args.elements, args.nginx, args.tuf)
            print(
                f"nginx{' TUF' if args.tuf else ''} N={n:5d}, "
                f"a conditional GET every {args.nginx:g}s: "
                f"{result['rate']:.0f} requests/s, nginx CPU {result['cpu_nginx']:.2f}s "
                f"over {args.nginx:g}s ({100 * result['cpu_nginx'] / args.nginx:.1f}% of a core), "
                f"pollers {result['cpu_clients']:.2f}s; version 2 seen by all "
                f"{result['all_seen']:.1f}s after publishing "
                f"(median {result['median_seen']:.1f}s); "
                f"{result['failed']} pollers could not connect; seen by {result['seen']}, "
                f"{result['poll_errors']} poll errors {result['first_error']}"
            )
        return 0
    if args.worker:
        base, first, count, state, pub = args.worker
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        profile_to = os.environ.get("FLEET_PROFILE")
        if profile_to:  # diagnostics: a cProfile of each worker, written on SIGTERM
            import cProfile

            profiler = cProfile.Profile()

            def dump(*_: object) -> None:
                profiler.disable()
                profiler.dump_stats(f"{profile_to}.{first}")
                os._exit(0)

            signal.signal(signal.SIGTERM, dump)
            profiler.enable()
        asyncio.run(worker(base, int(first), int(count), Path(state), pub))
        return 0
    print(
        f"fleet sync{' (TUF roles)' if args.tuf else ''}: publish -> all clients "
        + (
            "fetched and reported; light clients (the same requests, nothing verified or stored)"
            if args.light
            else "verified, stored and reported"
        )
        + "; long poll; "
        f"{args.elements}-element blocklist; {args.workers} client processes; "
        f"{os.cpu_count()} CPUs"
    )
    reference = None
    for n in args.clients:
        result = run_fleet(n, args.rounds, args.workers, args.elements, args.tuf, args.light)
        samples = result["samples"]
        assert isinstance(samples, list)
        median = statistics.median(samples)
        if reference is None:
            reference = median
        ratio = median / reference if reference else float("nan")
        hub, clients = float(result["cpu_hub"]), float(result["cpu_clients"])  # type: ignore[arg-type]
        load, seen = result["load"], result["seen"]
        assert isinstance(load, tuple) and isinstance(seen, list)
        print(
            f"N={n:5d}: median {median:.3f}s  max {max(samples):.3f}s  "
            f"(seen by all: median {statistics.median(seen):.3f}s)  "
            f"(rounds: {', '.join(f'{s:.3f}' for s in samples)})  "
            f"ratio to N={args.clients[0]}: {ratio:.1f}x  "
            f"CPU per round: hub {hub:.2f}s, clients {clients:.2f}s "
            f"(per appliance {1e6 * hub / n:.0f} + {1e6 * clients / n:.0f} us; "
            f"on {os.cpu_count()} idle cores no round could end before "
            f"{(hub + clients) / (os.cpu_count() or 1):.2f}s); "
            f"load average {load[0]:.1f} -> {load[1]:.1f}"
        )
        if result["errors"]:
            print(f"  {result['error_count']} client errors, first: {result['errors']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
