"""The hub client against the reference hub on loopback (and against broken servers)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.storage import atomic_write
from appliance.sync import bundle as B
from appliance.sync import keys
from appliance.sync.client import ClientLimits, HubClient, SyncResult, backoff_delay, next_delay
from appliance.sync.hub import HubServer
from appliance.sync.transport import Limits, request
from tests.sync.conftest import PROFILE_DOC, Publisher, build, run, sign


@asynccontextmanager
async def hub(root: Path) -> AsyncIterator[tuple[HubServer, str]]:
    server = HubServer(root)
    host, port = await server.start("127.0.0.1", 0)
    try:
        yield server, f"http://{host}:{port}"
    finally:
        await server.close()


def client(
    base: str, path: str, state: Path, trust: list[keys.PublicKey], **kw: object
) -> HubClient:
    kw.setdefault("limits", ClientLimits(long_poll=0.5))  # short long polls in tests
    return HubClient(f"{base}/{path}/", trust, state, name="edge-1", **kw)  # type: ignore[arg-type]


async def applied(c: HubClient, table_hash: str = "t1") -> SyncResult:
    sync = await c.poll_once()
    assert sync.pending, sync
    return await c.applied(sync, table_hash)


def scenario(
    publisher: Publisher, tmp_path: Path, body: Callable[[HubServer, HubClient], Awaitable[None]]
) -> None:
    async def main() -> None:
        async with hub(publisher.root) as (server, base):
            c = client(
                base, publisher.path, tmp_path / "state", [k.public for k in publisher.signers]
            )
            await body(server, c)

    run(main())


def test_apply_store_report_then_not_modified(publisher: Publisher, tmp_path: Path) -> None:
    publisher.publish(3, ["192.0.2.1"])

    async def body(server: HubServer, c: HubClient) -> None:
        sync = await c.poll_once()
        assert sync.result == B.APPLIED and sync.pending
        assert sync.bundle is not None and sync.bundle.version == 3
        done = await c.applied(sync, "hash-3")
        assert done.version == 3 and not done.pending
        before = server.requests
        again = await c.poll_once()
        assert again.result == B.NOT_MODIFIED and not again.pending
        assert server.requests - before == 1  # one conditional GET of the signature
        fleet = server.fleet()
        assert fleet["site/edge-1"]["version"] == 3
        assert fleet["site/edge-1"]["result"] == "applied"
        assert fleet["site/edge-1"]["table_hash"] == "hash-3"
        assert fleet["site/edge-1"]["offered_version"] == 3
        # A new client on the same state dir boots from the store.
        fresh = HubClient(c.url, c.trust, c.store.root.parent)
        stored = fresh.load_last_good()
        assert stored is not None and stored.bundle.version == 3 and not stored.stale

    scenario(publisher, tmp_path, body)


def test_fleet_over_http_after_a_status_post(publisher: Publisher, tmp_path: Path) -> None:
    publisher.publish(1)

    async def body(server: HubServer, c: HubClient) -> None:
        await applied(c)
        base = c.url.split("/site/")[0]
        resp = await request("GET", base + "/fleet", Limits())
        fleet = json.loads(resp.body)
        report = fleet["site/edge-1"]
        assert set(report) >= {"name", "version", "result", "last_error", "table_hash", "time"}
        assert report["name"] == "edge-1" and report["version"] == 1
        assert report["received"].endswith("Z")

    scenario(publisher, tmp_path, body)


def test_tampered_bundle_changes_nothing_and_is_remembered(
    publisher: Publisher, tmp_path: Path
) -> None:
    publisher.publish(1, ["192.0.2.1"])

    async def body(server: HubServer, c: HubClient) -> None:
        await applied(c)
        data = build(2, ["192.0.2.2"])
        atomic_write(publisher.directory / B.SIG_FILE, sign(data, *publisher.signers))
        atomic_write(publisher.directory / B.BUNDLE_FILE, data.replace(b"192.0.2.2", b"192.0.2.3"))
        sync = await c.poll_once()
        assert sync.result == B.BAD_SIGNATURE and not sync.pending and sync.bundle is None
        assert sync.version == 1
        assert c.running is not None and c.running.bundle.version == 1
        before = server.requests
        again = await c.poll_once()
        assert again.result == B.BAD_SIGNATURE and again.repeated
        assert server.requests - before == 2  # two conditional GETs, nothing verified again
        # The publisher fixes bundle.json: picked up although the signature did not change.
        atomic_write(publisher.directory / B.BUNDLE_FILE, data)
        fixed = await c.poll_once()
        assert fixed.result == B.APPLIED and fixed.pending

    scenario(publisher, tmp_path, body)


def test_wrong_key_and_missing_signature(publisher: Publisher, tmp_path: Path) -> None:
    other = keys.generate()

    async def body(server: HubServer, c: HubClient) -> None:
        data = build(1)
        atomic_write(publisher.directory / B.BUNDLE_FILE, data)
        sync = await c.poll_once()
        assert sync.result == B.NO_SIGNATURE
        atomic_write(publisher.directory / B.SIG_FILE, sign(data, other))
        sync = await c.poll_once()
        assert sync.result == B.BAD_SIGNATURE
        assert c.running is None

    scenario(publisher, tmp_path, body)


def test_rollback_same_version_and_expired(publisher: Publisher, tmp_path: Path) -> None:
    async def body(server: HubServer, c: HubClient) -> None:
        publisher.publish(5, ["192.0.2.5"])
        await applied(c)
        publisher.publish(4)
        assert (await c.poll_once()).result == B.ROLLBACK
        publisher.publish(5, ["192.0.2.6"])
        sync = await c.poll_once()
        assert sync.result == B.ROLLBACK and "other bytes" in sync.error
        publisher.publish(6, expires=time.time() - 1)
        assert (await c.poll_once()).result == B.EXPIRED
        assert c.running is not None and c.running.bundle.version == 5
        # Same bytes as running, re-signed (a key added): a no-op that keeps the new signature.
        data = build(7)
        publisher.publish(7, data=data)
        await applied(c)
        key2 = keys.generate()
        c.trust = (*c.trust, key2.public)
        atomic_write(
            publisher.directory / B.SIG_FILE,
            sign(data, key2, existing=sign(data, *publisher.signers).decode()),
        )
        sync = await c.poll_once()
        assert sync.result == B.NOT_MODIFIED
        assert c.running is not None and len(c.running.signature.splitlines()) == 2

    scenario(publisher, tmp_path, body)


def test_running_bundle_expires_while_the_hub_is_frozen(
    publisher: Publisher, tmp_path: Path
) -> None:
    async def body(server: HubServer, c: HubClient) -> None:
        publisher.publish(1, expires=time.time() + 60)
        await applied(c)
        # its expiry passes (the client's clock a few minutes on: a busy machine may take
        # longer than any short expiry between the publication and the first poll)
        c.clock = lambda: time.time() + 300
        sync = await c.poll_once()
        assert sync.result == B.EXPIRED and sync.stale
        assert c.running is not None  # still enforced
        assert c.load_last_good() is not None and c.stale

    scenario(publisher, tmp_path, body)


def test_oversized_bundle_is_too_large(publisher: Publisher, tmp_path: Path) -> None:
    publisher.publish(1, [f"10.{i // 250}.{i % 250}.1" for i in range(2000)])

    async def main() -> None:
        async with hub(publisher.root) as (_, base):
            limits = ClientLimits(max_bundle=4096)
            c = client(base, publisher.path, tmp_path, [publisher.signers[0].public], limits=limits)
            sync = await c.poll_once()
            assert sync.result == B.TOO_LARGE, sync
            assert not sync.backoff

    run(main())


def test_delta_on_the_right_base_and_on_the_wrong_base(
    publisher: Publisher, tmp_path: Path
) -> None:
    def delta(version: int, base: int, add: list[str], delete: list[str]) -> bytes:
        return B.encode_document(
            {
                "version": version,
                "expires": B.format_time(time.time() + 3600),
                "profile": PROFILE_DOC,
                "sets": {"blocklist": {"base": base, "add": add, "del": delete}},
            }
        )

    async def body(server: HubServer, c: HubClient) -> None:
        publisher.publish(1, ["192.0.2.1", "192.0.2.2"])
        await applied(c)
        publisher.publish(2, data=delta(2, 1, ["198.51.100.1"], ["192.0.2.1"]))
        sync = await c.poll_once()
        assert sync.pending and sync.bundle is not None
        assert set(sync.bundle.elements["blocklist"]) == {"192.0.2.2", "198.51.100.1"}
        await c.applied(sync)
        # A delta on base 3 while 2 runs: refused; the full bundle is fetched instead.
        publisher.publish(4, data=delta(4, 3, ["203.0.113.9"], []))
        sync = await c.poll_once()
        assert sync.result == B.HTTP_ERROR and "wrong base" in sync.error
        assert not sync.pending
        publisher.publish(5, ["203.0.113.9"], subdir="full")
        publisher.publish(5, data=delta(5, 4, ["203.0.113.9"], []))
        sync = await c.poll_once()
        assert sync.pending and sync.bundle is not None and sync.bundle.version == 5
        assert not sync.bundle.is_delta
        assert {k: tuple(v) for k, v in sync.bundle.elements.items()} == {
            "blocklist": ("203.0.113.9",)
        }

    (publisher.directory / "full").mkdir()
    scenario(publisher, tmp_path, body)


def test_long_poll_answers_quickly_after_publishing(publisher: Publisher, tmp_path: Path) -> None:
    publisher.publish(1)

    async def body(server: HubServer, c: HubClient) -> None:
        c.limits = ClientLimits(long_poll=10)
        await applied(c)
        assert c.long_poll_max > 0

        async def later() -> float:
            await asyncio.sleep(0.5)
            publisher.publish(2)
            return time.monotonic()

        publishing = asyncio.create_task(later())
        started = time.monotonic()
        sync = await c.poll_once()
        published = await publishing
        answered = time.monotonic()
        assert sync.result == B.APPLIED and sync.long_polled
        assert answered - started >= 0.4  # it waited on the hub
        assert (
            answered - published < 1.5
        )  # the hub checks every 50 ms; the rest is a loaded CI host
        assert c.next_delay(sync, 30) <= 1.0

    scenario(publisher, tmp_path, body)


def test_long_poll_times_out_to_not_modified(publisher: Publisher, tmp_path: Path) -> None:
    publisher.publish(1)

    async def main() -> None:
        async with hub(publisher.root) as (_, base):
            limits = ClientLimits(long_poll=0.3)
            c = client(base, publisher.path, tmp_path, [publisher.signers[0].public], limits=limits)
            await applied(c)
            started = time.monotonic()
            sync = await c.poll_once()
            assert sync.result == B.NOT_MODIFIED and sync.long_polled
            assert 0.25 <= time.monotonic() - started < 2

    run(main())


def test_after_a_transport_failure_the_hub_must_announce_long_polls_again(
    publisher: Publisher, tmp_path: Path
) -> None:
    publisher.publish(1)

    async def main() -> None:
        server = HubServer(publisher.root)
        host, port = await server.start("127.0.0.1", 0)
        c = client(f"http://{host}:{port}", publisher.path, tmp_path, [publisher.signers[0].public])
        try:
            await applied(c)
            assert c.long_poll_max > 0
        finally:
            await server.close()
        sync = await c.poll_once()  # nobody listens: unreachable
        assert sync.result == B.UNREACHABLE and sync.backoff
        assert c.long_poll_max == 0  # the next poll is a plain one, whatever answers
        seen: list[bytes] = []

        async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()

        other = await asyncio.start_server(plain, "127.0.0.1", port)
        try:
            sync = await c.poll_once()
        finally:
            other.close()
            await other.wait_closed()
        assert sync.result == B.NOT_MODIFIED and not sync.long_polled
        assert seen and b"wait=" not in seen[0].split(b"\r\n")[0]

    run(main())


def test_publishing_in_two_steps_never_mixes_the_pair(publisher: Publisher, tmp_path: Path) -> None:
    """build (bundle.json) then sign (bundle.json.sig): in between, nothing new is taken."""
    publisher.publish(1)

    async def body(server: HubServer, c: HubClient) -> None:
        await applied(c)
        data = build(2)
        atomic_write(publisher.directory / B.BUNDLE_FILE, data)  # built, not signed yet
        c.limits = ClientLimits(long_poll=0.3)
        sync = await c.poll_once()
        assert sync.result == B.NOT_MODIFIED
        atomic_write(publisher.directory / B.SIG_FILE, sign(data, *publisher.signers))
        sync = await c.poll_once()
        assert sync.result == B.APPLIED and sync.bundle is not None and sync.bundle.version == 2

    scenario(publisher, tmp_path, body)


def test_apply_failed_is_remembered_and_reported(publisher: Publisher, tmp_path: Path) -> None:
    publisher.publish(1)

    async def body(server: HubServer, c: HubClient) -> None:
        async def refuse(bundle: B.Bundle) -> str:
            raise RuntimeError("the kernel said no")

        sync = await c.sync(refuse, "old-hash")
        assert sync.result == B.APPLY_FAILED and "kernel said no" in sync.error
        assert server.reports["site/edge-1"]["result"] == "apply_failed"
        assert server.reports["site/edge-1"]["last_error"] == "the kernel said no"
        assert c.running is None
        again = await c.poll_once()
        assert again.result == B.APPLY_FAILED and again.repeated

        async def accept(bundle: B.Bundle) -> str:
            return "new-hash"

        publisher.publish(2)
        sync = await c.sync(accept, "old-hash")
        assert sync.result == B.APPLIED and sync.version == 2
        assert server.reports["site/edge-1"]["table_hash"] == "new-hash"

    scenario(publisher, tmp_path, body)


def test_rotation_through_the_client(
    publisher: Publisher, tmp_path: Path, key2: keys.PrivateKey
) -> None:
    publisher.signers = [publisher.signers[0], key2]
    publisher.publish(1)

    async def main() -> None:
        async with hub(publisher.root) as (_, base):
            c = client(base, publisher.path, tmp_path, [key2.public])
            assert (await c.poll_once()).pending

    run(main())


def test_file_url(publisher: Publisher, tmp_path: Path) -> None:
    publisher.publish(1)

    async def main() -> None:
        c = HubClient(f"file://{publisher.directory}/", [publisher.signers[0].public], tmp_path)
        await applied(c)
        assert (await c.poll_once()).result == B.NOT_MODIFIED
        publisher.publish(2)
        assert (await c.poll_once()).pending

    run(main())


# ---- transport failures and backoff -----------------------------------------------------


async def status_server(code: int) -> tuple[asyncio.AbstractServer, str]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(f"HTTP/1.1 {code} Oops\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/edge/"


@pytest.mark.parametrize("code", [500, 504])
def test_http_5xx_is_http_error_with_backoff(
    tmp_path: Path, key1: keys.PrivateKey, code: int
) -> None:
    async def main() -> None:
        server, url = await status_server(code)
        try:
            c = HubClient(url, [key1.public], tmp_path, rng=lambda: 0.999)
            delays = []
            for _ in range(4):
                sync = await c.poll_once()
                assert sync.result == B.HTTP_ERROR and sync.backoff
                assert str(code) in sync.error
                delays.append(c.next_delay(sync, 30))
            assert delays == sorted(delays) and delays[-1] > delays[0] * 4
        finally:
            server.close()
            await server.wait_closed()

    run(main())


def test_http_404_is_http_error_without_backoff(tmp_path: Path, key1: keys.PrivateKey) -> None:
    async def main() -> None:
        server, url = await status_server(404)
        try:
            c = HubClient(url, [key1.public], tmp_path)
            sync = await c.poll_once()
            assert sync.result == B.HTTP_ERROR and not sync.backoff
            assert c.next_delay(sync, 30) == 30
        finally:
            server.close()
            await server.wait_closed()

    run(main())


def test_hub_down_is_unreachable_and_the_last_good_stays(
    publisher: Publisher, tmp_path: Path
) -> None:
    publisher.publish(1)

    async def main() -> None:
        async with hub(publisher.root) as (_, base):
            c = client(base, publisher.path, tmp_path / "s", [publisher.signers[0].public])
            await applied(c)
        # The hub is gone (at run time, and at the next boot).
        for fresh in (False, True):
            if fresh:
                c = HubClient(c.url, c.trust, tmp_path / "s")
                assert c.load_last_good() is not None
            sync = await c.poll_once()
            assert sync.result == B.UNREACHABLE and sync.backoff
            assert sync.version == 1 and c.running is not None
            assert await c.report(sync) is False  # a failed POST is ignored

    run(main())


def test_backoff_jitter_bounds() -> None:
    limits = ClientLimits(backoff_base=1, backoff_max=60)
    assert backoff_delay(0, 1, 60, lambda: 1.0) == 0
    assert [backoff_delay(n, 1, 60, lambda: 0.5) for n in (1, 2, 3, 7, 8, 40)] == [
        1,
        2,
        4,
        60,
        60,
        60,
    ]
    assert backoff_delay(5, 1, 60, lambda: 0.0) == 8  # half the step at least
    assert backoff_delay(5, 1, 60, lambda: 0.999) < 24  # below 1.5 steps
    failed = SyncResult(B.UNREACHABLE, backoff=True)
    assert next_delay(failed, 30, 3, limits, lambda: 0.5) == 4
    assert next_delay(SyncResult(B.BAD_SIGNATURE), 30, 0, limits, lambda: 0.5) == 30
    polled = SyncResult(B.NOT_MODIFIED, long_polled=True)
    delay = next_delay(polled, 30, 0, limits, lambda: 0.5, elapsed=0.2, long_poll=True)
    assert delay == pytest.approx(0.8)
    assert next_delay(polled, 30, 0, limits, lambda: 0.5, elapsed=20, long_poll=True) == 0
    assert next_delay(polled, 30, 0, limits, lambda: 0.5, elapsed=20, long_poll=False) == 30


def test_a_dripping_hub_fails_within_the_deadline(tmp_path: Path, key1: keys.PrivateKey) -> None:
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            for _ in range(1000):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(1)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(drip, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/edge/"
        try:
            http = Limits(connect_timeout=1, read_timeout=2, total_timeout=3)
            c = HubClient(url, [key1.public], tmp_path, limits=ClientLimits(http=http))
            started = time.monotonic()
            sync = await c.poll_once()
            assert sync.result == B.UNREACHABLE and sync.backoff
            assert "timed out" in sync.error
            assert time.monotonic() - started < 5
        finally:
            server.close()
            await server.wait_closed()

    run(main())


def test_client_from_a_local_profile(tmp_path: Path, key1: keys.PrivateKey) -> None:
    from appliance.model.parse import load_profile

    keys.write_keypair(tmp_path / "keys" / "hub.key", key1)
    (tmp_path / "local.toml").write_text(
        'version = 1\nname = "edge-7"\n[hub]\nurl = "http://127.0.0.1:1/site/edge-7/"\n'
        'trust = ["keys/hub.key.pub"]\npoll = "10s"\ntimeout = "7s"\n'
    )
    profile = load_profile(tmp_path / "local.toml")
    c = HubClient.from_profile(profile, tmp_path / "state")
    assert c.limits.http.total_timeout == 7 and c.limits.http.read_timeout == 7
    assert c.limits.http.connect_timeout == 5
    assert c.url == "http://127.0.0.1:1/site/edge-7/"
    assert c.name == "edge-7" and c.base_dir == tmp_path
    assert [k.raw for k in c.trust] == [key1.public.raw]
    assert c.load_last_good() is None


def test_check_reachable(publisher: Publisher, tmp_path: Path) -> None:
    publisher.publish(1)

    async def main() -> None:
        async with hub(publisher.root) as (_, base):
            c = client(base, publisher.path, tmp_path, [publisher.signers[0].public])
            assert await c.check_reachable()
            url = c.url
        gone = HubClient(
            url, c.trust, tmp_path, limits=ClientLimits(http=Limits(connect_timeout=1))
        )
        assert not await gone.check_reachable()

    run(main())


def test_stored_pair_checks_out_with_bundle_verify(publisher: Publisher, tmp_path: Path) -> None:
    from tests.conftest import run_appliance

    publisher.publish(3)

    async def main() -> None:
        async with hub(publisher.root) as (_, base):
            c = client(base, publisher.path, tmp_path / "state", [publisher.signers[0].public])
            await applied(c)

    run(main())
    pub = tmp_path / "hub.pub"
    pub.write_text(publisher.signers[0].public.encode() + "\n")
    current = tmp_path / "state" / "hub" / "current"
    result = run_appliance("bundle", "verify", str(current), "--trust", str(pub))
    assert result.returncode == 0, result.stderr
    assert "version 3" in result.stdout


def test_rolled_back_bundle_is_fetched_again(publisher: Publisher, tmp_path: Path) -> None:
    """Commit-confirm: an apply undone because the hub vanished stores nothing, backs off,
    and the same bundle is offered again at the next poll."""
    publisher.publish(3, ["192.0.2.1"])

    async def body(server: HubServer, c: HubClient) -> None:
        await applied(c)
        publisher.publish(4, ["192.0.2.2"])
        sync = await c.poll_once()
        assert sync.pending and sync.bundle is not None and sync.bundle.version == 4
        undone = await c.rolled_back(sync, "hub unreachable after the apply", "t1")
        assert undone.result == B.UNREACHABLE and undone.backoff and undone.version == 3
        assert c.failures == 1
        assert c.load_last_good() is not None and c.running_version == 3
        again = await c.poll_once()
        assert again.pending and again.bundle is not None and again.bundle.version == 4

    scenario(publisher, tmp_path, body)


@pytest.mark.parametrize("failure", ["missing", "too_large"])
def test_a_failed_bundle_fetch_after_a_new_signature_is_fetched_again(
    publisher: Publisher, tmp_path: Path, failure: str
) -> None:
    """A version counts as fetched only when its bundle and signature verified together: a
    new signature whose bundle.json failed once is not taken for "nothing new" later."""
    publisher.publish(1, ["192.0.2.1"])

    async def body(server: HubServer, c: HubClient) -> None:
        await applied(c)
        data = build(2, ["192.0.2.2"])
        target = publisher.directory / B.BUNDLE_FILE
        atomic_write(publisher.directory / B.SIG_FILE, sign(data, *publisher.signers), 0o644)
        if failure == "missing":
            target.unlink()
        else:
            with open(target, "wb") as handle:  # sparse, over the client's cap
                handle.truncate(B.MAX_BUNDLE_BYTES + 1)
        sync = await c.poll_once()
        assert not sync.ok and not sync.pending, sync
        assert c.next_delay(sync, 30) == 30  # polled plainly at the interval, not in a loop
        again = await c.poll_once()
        assert not again.ok and not again.pending, again
        atomic_write(target, data, 0o644)
        fixed = await c.poll_once()
        assert fixed.result == B.APPLIED and fixed.pending, fixed
        assert fixed.bundle is not None and fixed.bundle.version == 2

    scenario(publisher, tmp_path, body)


def _tuf_repo(directory: Path) -> tuple[Path, Callable[[int], None], keys.PrivateKey]:
    """A TUF repository in the hub directory: one key per role, and a release function."""
    from appliance.sync import repository, tuf

    now = time.time()
    key = keys.generate()
    roles = {role: ([key.public], 1) for role in tuf.ROLES}
    repository.init(directory, roles, now + 86400)
    repository.sign(directory, tuf.ROOT, key)

    def release(version: int) -> None:
        atomic_write(directory / B.BUNDLE_FILE, build(version, [f"192.0.2.{version}"]), 0o644)
        repository.stage_targets(directory, now + 86400)
        repository.sign(directory, tuf.TARGETS, key)
        repository.publish(directory, key, key, now + 86400, now + 3600)

    release(1)
    return directory / "1.root.json", release, key


def test_tuf_client_over_the_reference_hub(publisher: Publisher, tmp_path: Path) -> None:
    root, release, _key = _tuf_repo(publisher.directory)

    async def main() -> None:
        async with hub(publisher.root) as (_server, base):
            url = f"{base}/{publisher.path}/"
            limits = ClientLimits(long_poll=0.2)
            c = HubClient(url, [], tmp_path / "state", tuf_root=root.read_bytes(), limits=limits)
            first = await applied(c)
            assert first.version == 1
            again = await c.poll_once()
            assert again.result == B.NOT_MODIFIED, again
            assert c.long_poll_max > 0
            # A long poll on timestamp.json answers as soon as version 2 is published.
            c.limits = ClientLimits(long_poll=30)
            task = asyncio.ensure_future(c.poll_once())
            await asyncio.sleep(0.3)
            release(2)
            second = await asyncio.wait_for(task, 30)
            assert second.long_polled and second.pending and second.bundle is not None
            assert second.bundle.version == 2
            await c.applied(second)
            # A fresh client on the same state boots from the store and its trusted files.
            fresh = HubClient(url, [], tmp_path / "state", tuf_root=root.read_bytes())
            stored = fresh.load_last_good()
            assert stored is not None and stored.bundle.version == 2
            assert (await fresh.poll_once()).result == B.NOT_MODIFIED
            # A bundle swapped on the server under its signed name: refused, nothing applied.
            for path in publisher.directory.glob("*.bundle.json"):
                data = path.read_bytes()
                if b"192.0.2.2" in data:
                    atomic_write(path, data.replace(b"192.0.2.2", b"192.0.2.9"), 0o644)
            fresh2 = HubClient(url, [], tmp_path / "state2", tuf_root=root.read_bytes())
            bad = await fresh2.poll_once()
            assert bad.result == B.BAD_SIGNATURE and not bad.pending, bad

    run(main())


def test_client_from_a_profile_with_tuf_tls_proxy_and_a_status_key(
    tmp_path: Path, key1: keys.PrivateKey
) -> None:
    from appliance.errors import ProfileError
    from appliance.model.parse import load_profile

    root, _, _ = _tuf_repo(tmp_path / "hub")
    keys.write_keypair(tmp_path / "appliance.key", key1)
    for name in ("ca.pem", "edge.crt", "edge.key"):
        (tmp_path / name).write_text("PEM\n")
    head = 'version = 1\nname = "edge-7"\n[hub]\nurl = "https://hub.example.net/edge-7/"\n'
    (tmp_path / "local.toml").write_text(
        head + f'root = "{root}"\nca = "ca.pem"\nclient_cert = "edge.crt"\n'
        'client_key = "edge.key"\nproxy = "http://proxy.mgmt:3128"\nkey = "appliance.key"\n'
    )
    profile = load_profile(tmp_path / "local.toml")
    c = HubClient.from_profile(profile, tmp_path / "state")
    assert c.tuf_root == root.read_bytes() and c.trust == ()
    tls = c.limits.http.tls
    assert tls.ca == str(tmp_path / "ca.pem") and tls.cert == str(tmp_path / "edge.crt")
    assert tls.key == str(tmp_path / "edge.key") and tls.proxy == "http://proxy.mgmt:3128"
    assert c.status_key is not None and c.status_key.public.raw == key1.public.raw
    for body, where in (
        ("", "hub.trust"),  # neither trust nor root
        ('root = "missing.json"\n', "hub.root"),
        (f'root = "{root}"\nproxy = "socks5://p:1"\n', "hub.proxy"),
        (f'root = "{root}"\nclient_cert = "edge.crt"\n', "hub.client_cert"),
    ):
        (tmp_path / "bad.toml").write_text(head + body)
        with pytest.raises(ProfileError) as caught:
            load_profile(tmp_path / "bad.toml")
        assert where in str(caught.value), caught.value


def test_tuf_deltas_stay_deltas_and_a_wrong_base_takes_the_full_target(
    publisher: Publisher, tmp_path: Path
) -> None:
    from appliance.sync import repository, tuf

    directory = publisher.directory
    root, _release, key = _tuf_repo(directory)  # version 1: 192.0.2.1
    now = time.time()

    def publish(data: bytes, full: bytes | None = None) -> None:
        if full is not None:
            atomic_write(directory / B.FULL_DIR / B.BUNDLE_FILE, full, 0o644)
        atomic_write(directory / B.BUNDLE_FILE, data, 0o644)
        repository.stage_targets(directory, now + 86400)
        repository.sign(directory, tuf.TARGETS, key)
        repository.publish(directory, key, key, now + 86400, now + 3600)

    def delta(version: int, base: int, add: list[str]) -> bytes:
        return B.encode_document(
            {
                "version": version,
                "expires": B.format_time(now + 3600),
                "profile": PROFILE_DOC,
                "sets": {"blocklist": {"base": base, "add": add, "del": []}},
            }
        )

    async def main() -> None:
        async with hub(publisher.root) as (_server, base):
            url = f"{base}/{publisher.path}/"
            c = HubClient(url, [], tmp_path / "state", tuf_root=root.read_bytes())
            await applied(c)
            publish(delta(2, 1, ["198.51.100.1"]), full=build(2, ["192.0.2.1", "198.51.100.1"]))
            sync = await c.poll_once()
            assert sync.pending and sync.bundle is not None and sync.bundle.is_delta
            assert set(sync.bundle.elements["blocklist"]) == {"192.0.2.1", "198.51.100.1"}
            await c.applied(sync)
            # Version 4 as a delta on 3, which this appliance never ran: the full target.
            publish(delta(4, 3, ["203.0.113.9"]), full=build(4, ["203.0.113.9"]))
            sync = await c.poll_once()
            assert sync.pending and sync.bundle is not None and sync.bundle.version == 4
            assert not sync.bundle.is_delta
            assert {k: tuple(v) for k, v in sync.bundle.elements.items()} == {
                "blocklist": ("203.0.113.9",)
            }

    run(main())


@settings(max_examples=300, deadline=None)
@given(
    failures=st.integers(min_value=1, max_value=10_000),
    poll=st.floats(min_value=1.0, max_value=600.0),
    jitter=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_after_any_run_of_failures_the_next_poll_is_within_one_and_a_half_intervals(
    failures: int, poll: float, jitter: float
) -> None:
    """However long the hub failed, the backoff never holds the first poll after it is
    back by more than 1.5 poll intervals (so recovery takes under 2 intervals with the
    exchange itself), and never retries faster than half the first step."""
    failed = SyncResult(B.UNREACHABLE, backoff=True)
    delay = next_delay(failed, poll, failures, ClientLimits(), lambda: jitter)
    assert 0.5 <= delay <= 1.5 * poll


def _tuf_client(url: str, state: Path, root: Path, clock: Callable[[], float]) -> HubClient:
    limits = ClientLimits(long_poll=0.2)  # short long polls of timestamp.json
    return HubClient(url, [], state, tuf_root=root.read_bytes(), limits=limits, clock=clock)


def test_tuf_a_stored_bundle_changed_on_disk_is_refused_at_boot(
    publisher: Publisher, tmp_path: Path
) -> None:
    """The stored bundle is checked again at boot against the targets.json kept with it:
    a bundle or targets changed on disk after they were verified is refused (no last good:
    the daemon falls back to its profile), a good one loads; targets re-signed for the
    same bundle are kept with it."""
    from appliance.sync import repository, tuf

    directory = publisher.directory
    root, _release, key = _tuf_repo(directory)
    state = tmp_path / "state"
    current = state / "hub" / "current"

    async def main() -> None:
        async with hub(publisher.root) as (_server, base):
            url = f"{base}/{publisher.path}/"
            c = _tuf_client(url, state, root, time.time)
            await applied(c)
            assert (current / B.SIG_FILE).read_bytes() == (
                directory / "1.targets.json"
            ).read_bytes()
            # targets re-signed (a new version) for the same bundle: kept with the bundle
            repository.stage_targets(directory, time.time() + 86400)
            repository.sign(directory, tuf.TARGETS, key)
            repository.publish(directory, key, key, time.time() + 86400, time.time() + 3600)
            assert (await c.poll_once()).result == B.NOT_MODIFIED
            kept = (current / B.SIG_FILE).read_bytes()
            assert kept == (directory / "2.targets.json").read_bytes()
            assert _tuf_client(url, state, root, time.time).load_last_good() is not None

    run(main())
    bundle_file = (current / B.BUNDLE_FILE).resolve()
    good = bundle_file.read_bytes()
    bundle_file.write_bytes(good.replace(b"192.0.2.1", b"192.0.2.9"))  # valid, same length
    booted = _tuf_client("http://127.0.0.1:9/", state, root, time.time)
    assert booted.load_last_good() is None and booted.running is None
    assert "stored bundle refused: bad_signature" in booted.last_error
    assert "changed since it was verified" in booted.last_error
    bundle_file.write_bytes(good)
    targets_file = (current / B.SIG_FILE).resolve()
    targets = targets_file.read_bytes()
    document = json.loads(targets)
    document["signed"]["expires"] = "2099-01-01T00:00:00Z"  # extended by whoever holds the disk
    targets_file.write_bytes(json.dumps(document).encode())
    booted = _tuf_client("http://127.0.0.1:9/", state, root, time.time)
    assert booted.load_last_good() is None
    assert "signatures the targets role needs" in booted.last_error, booted.last_error
    targets_file.write_bytes(targets)
    assert _tuf_client("http://127.0.0.1:9/", state, root, time.time).load_last_good()


def test_tuf_an_expired_timestamp_is_stale_and_what_runs_stays(
    publisher: Publisher, tmp_path: Path
) -> None:
    """Freeze protection: once the timestamp expires the client says ``stale`` (in each
    sync and at boot) and keeps the running bundle; a timestamp renewed by the online key
    alone clears it."""
    from appliance.sync import repository

    directory = publisher.directory
    root, _release, key = _tuf_repo(directory)
    repository.timestamp(directory, key, time.time() + 60)
    now = [time.time()]
    state = tmp_path / "state"

    async def main() -> None:
        async with hub(publisher.root) as (_server, base):
            url = f"{base}/{publisher.path}/"
            c = _tuf_client(url, state, root, lambda: now[0])
            await applied(c)
            assert not c.stale
            now[0] += 600  # the hub is frozen: its timestamp expired 9 minutes ago
            sync = await c.poll_once()
            assert sync.result == B.EXPIRED and "timestamp.json" in sync.error, sync
            assert sync.stale and c.stale and c.running_version == 1
            booted = _tuf_client(url, state, root, lambda: now[0])
            assert booted.load_last_good() is not None and booted.stale
            repository.timestamp(directory, key, now[0] + 3600)
            sync = await c.poll_once()
            assert sync.result == B.NOT_MODIFIED and not sync.stale and not c.stale, sync
            assert c.running_version == 1

    run(main())


def test_tuf_a_long_poll_ends_when_the_timestamp_expires(
    publisher: Publisher, tmp_path: Path
) -> None:
    """A hub that stops renewing its timestamp under a long poll: the poll's wait ends
    when the timestamp expires, so the client says stale then, not after the whole wait."""
    from appliance.sync import repository

    directory = publisher.directory
    root, _release, key = _tuf_repo(directory)

    async def main() -> None:
        async with hub(publisher.root) as (_server, base):
            url = f"{base}/{publisher.path}/"
            limits = ClientLimits(long_poll=30)
            c = HubClient(url, [], tmp_path / "state", tuf_root=root.read_bytes(), limits=limits)
            await applied(c)
            repository.timestamp(directory, key, time.time() + 2)  # 2 s left, then frozen
            sync = await asyncio.wait_for(c.poll_once(), 20)  # the long poll takes it
            assert sync.result == B.NOT_MODIFIED and c.long_poll_max > 0, sync

            async def until_expired() -> SyncResult:
                for _ in range(10):  # bounded; one or two polls in practice
                    sync = await c.poll_once()
                    if sync.result == B.EXPIRED:
                        return sync
                raise AssertionError("the timestamp never expired")

            # well inside the 30 s the long poll would otherwise hold
            sync = await asyncio.wait_for(until_expired(), 20)
            assert sync.stale and c.stale and "timestamp.json" in sync.error, sync

    run(main())


def test_tuf_over_the_reference_hub_the_next_root_is_asked_for_only_when_announced(
    publisher: Publisher, tmp_path: Path
) -> None:
    """An update is timestamp, snapshot, targets and the bundle, without a request for a
    next root the hub said it does not have; a new root (the timestamp key rotated) is
    followed at the update that announces it."""
    from appliance.sync import repository, tuf

    root, release, key = _tuf_repo(publisher.directory)
    online = keys.generate()

    async def main() -> None:
        async with hub(publisher.root) as (server, base):
            asked: list[str] = []
            handle = server.handle

            def record(http: object, method: str, target: str, *rest: object) -> bool:
                asked.append(target.rsplit("/", 1)[-1])
                return handle(http, method, target, *rest)  # type: ignore[arg-type]

            server.handle = record  # type: ignore[method-assign]
            url = f"{base}/{publisher.path}/"
            limits = ClientLimits(long_poll=0.2)
            c = HubClient(url, [], tmp_path / "state", tuf_root=root.read_bytes(), limits=limits)
            await applied(c)
            release(2)
            asked.clear()
            await applied(c)
            names = [n.split("?")[0] for n in asked]
            assert names[:3] == ["timestamp.json", "2.snapshot.json", "2.targets.json"], asked
            assert names[3].endswith(".bundle.json") and names[4:] == ["status"], asked
            now = time.time()
            repository.change_keys(
                publisher.directory, tuf.TIMESTAMP, now + 86400, add=[online.public],
                revoke=[key.public],
            )  # fmt: skip
            repository.sign(publisher.directory, tuf.ROOT, key)
            atomic_write(publisher.directory / B.BUNDLE_FILE, build(3, ["192.0.2.3"]), 0o644)
            repository.stage_targets(publisher.directory, now + 86400)
            repository.sign(publisher.directory, tuf.TARGETS, key)
            repository.publish(publisher.directory, key, online, now + 86400, now + 3600)
            asked.clear()
            third = await applied(c)
            assert third.version == 3 and "2.root.json" in asked and "3.root.json" in asked
            assert c._trusted is not None and c._trusted.root.version == 2

    run(main())
