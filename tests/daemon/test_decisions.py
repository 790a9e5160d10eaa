"""The daemon's decisions without root: its managers run against the fake kernel.

Boot fallbacks (profile, last good, failsafe), reload refusals, confirm and rollback, the
retry with backoff of a profile the kernel refused, drift repairs by kind, hub rollback
and refusals, and what ``/readyz`` says in each case. The root tests in this folder prove
the same against the kernel in namespaces.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.compile.nftjson import TABLE_FAMILY, TABLE_NAME
from appliance.daemon.policies import Policy, policy_from_profile
from appliance.daemon.policy import RETRY_MAX_SECONDS
from appliance.daemon.service import Daemon, DaemonConfig
from appliance.errors import UsageError
from appliance.model.parse import load_profile
from tests.conftest import small_profile
from tests.fakekernel import FakeKernel, FakeLinks

INVALID = 'version = 1\nname = "broken"\n[zones.lan]\ninterfaces = 7\n'
RESYNC = 10.0
SEGMENT = (
    'version = 1\nname = "segments"\n\n[[isolation.segments]]\nname = "mec1"\n'
    'kind = "netns"\nnetns = "mec-app"\naddresses = ["10.50.0.1/24"]\n'
    'peer_addresses = ["10.50.0.10/24"]\nzone = "mec"\n'
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class Rig:
    """A daemon on the fake kernel, a profile file, a state directory, a clock."""

    def __init__(self, tmp: Path, confirm: float | None = None) -> None:
        self.tmp = tmp
        self.profile = tmp / "profile.toml"
        self.kernel = FakeKernel()
        self.links = FakeLinks()
        self.clock = Clock()
        self.records = Records()
        self.log = logging.getLogger(f"appliance.test.{id(self)}")
        self.log.addHandler(self.records)
        self.log.propagate = False
        config = DaemonConfig(
            profile=str(self.profile),
            state_dir=str(tmp / "state"),
            control_socket=str(tmp / "control.sock"),
            resync_interval=RESYNC,
            confirm_seconds=confirm,
        )
        self.daemon = Daemon(
            config, self.kernel, logger=self.log, clock=self.clock, links=self.links
        )

    def write(self, elements: list[str] | None = None, name: str = "decisions") -> None:
        self.profile.write_text(small_profile(name, elements or ["203.0.113.0/24"]))

    def write_invalid(self) -> None:
        self.profile.write_text(INVALID)

    def status(self) -> dict[str, Any]:
        return dict(self.daemon.control.status())

    def ready(self) -> str | None:
        return self.daemon.listener.not_ready()

    async def tick(self, reload: bool = False, resync: bool = False) -> None:
        if reload:
            self.daemon.request_reload()
        if resync:
            self.daemon.request_resync()
        await self.daemon.tick()

    def run(self, scenario: Callable[[], Awaitable[None]]) -> None:
        async def wrapped() -> None:
            try:
                await scenario()
            finally:
                for manager in self.daemon.managers:
                    await manager.close()

        try:
            asyncio.run(wrapped())
        finally:
            self.daemon.ctx.executor.shutdown(wait=True)
            self.log.removeHandler(self.records)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield Rig(tmp_path)


def test_boot_on_a_valid_profile_enforces_and_saves_it(rig: Rig) -> None:
    rig.write()

    async def scenario() -> None:
        await rig.daemon.boot()
        status = rig.status()
        assert (status["source"], status["policy"], status["last_error"]) == (
            "profile",
            "decisions",
            None,
        )
        assert rig.kernel.element_texts("blocklist") == {"203.0.113.0/24"}
        assert rig.daemon.ctx.store.load_last_good() is not None
        assert rig.ready() is None

    rig.run(scenario)


def test_boot_on_an_invalid_profile_enforces_the_last_good(rig: Rig, tmp_path: Path) -> None:
    rig.write(["198.51.100.0/24"])
    first = Rig(tmp_path)  # an earlier run saved its policy as the last good one
    first.run(first.daemon.boot)
    rig.write_invalid()

    async def scenario() -> None:
        await rig.daemon.boot()
        status = rig.status()
        assert status["source"] == "last_good"
        assert status["last_error"].startswith("profile not enforced:")
        assert "zones.lan.interfaces" in status["last_error"]
        assert rig.kernel.element_texts("blocklist") == {"198.51.100.0/24"}
        assert rig.ready() == "the last good policy is enforced instead of the profile"

    rig.run(scenario)


@pytest.mark.parametrize("profile", ["invalid", "missing"])
def test_boot_without_a_profile_or_last_good_enforces_the_failsafe(rig: Rig, profile: str) -> None:
    if profile == "invalid":
        rig.write_invalid()

    async def scenario() -> None:
        await rig.daemon.boot()
        status = rig.status()
        assert status["source"] == "failsafe"
        assert status["last_error"].startswith("profile not enforced:")
        assert rig.kernel.list_table() is not None
        assert rig.ready() == "the failsafe policy is enforced"

    rig.run(scenario)


def test_an_unusable_last_good_state_falls_to_the_failsafe(rig: Rig, tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "last-good.json").write_text("{not json")

    async def scenario() -> None:
        await rig.daemon.boot()
        assert rig.status()["source"] == "failsafe"
        assert any("last good state unusable" in m for m in rig.records.messages)

    rig.run(scenario)


def test_a_reload_with_an_invalid_profile_keeps_the_running_policy(rig: Rig) -> None:
    rig.write()

    async def scenario() -> None:
        await rig.daemon.boot()
        generation = rig.status()["generation"]
        rig.write_invalid()
        await rig.tick(reload=True)
        status = rig.status()
        assert status["source"] == "profile" and status["generation"] == generation
        assert status["last_error"].startswith("reload refused, the running policy stays")
        assert rig.ready() is not None
        rig.write(["192.0.2.0/24"])
        await rig.tick(reload=True)
        assert rig.status()["last_error"] is None and rig.ready() is None
        assert rig.kernel.element_texts("blocklist") == {"192.0.2.0/24"}

    rig.run(scenario)


@pytest.mark.parametrize("confirmed", [False, True])
def test_a_reload_stays_only_if_confirmed_in_time(tmp_path: Path, confirmed: bool) -> None:
    rig = Rig(tmp_path, confirm=30.0)
    rig.write(["203.0.113.0/24"])
    kept = {"192.0.2.0/24"} if confirmed else {"203.0.113.0/24"}

    async def scenario() -> None:
        await rig.daemon.boot()
        rig.write(["192.0.2.0/24"])
        await rig.tick(reload=True)
        assert rig.kernel.element_texts("blocklist") == {"192.0.2.0/24"}
        assert rig.status()["confirm_pending_until"] is not None
        pending = rig.daemon.policy.pending
        assert pending is not None and pending.handle is not None
        if confirmed:
            assert await rig.daemon.control.handle({"op": "confirm"}) == {"ok": True}
        else:
            pending.handle._run()  # the deadline passes: the timer fires
            await rig.tick()
        status = rig.status()
        assert rig.kernel.element_texts("blocklist") == kept
        assert status["confirm_pending_until"] is None
        if not confirmed:
            assert status["last_error"].startswith("reload not confirmed in 30s: rolled back")
        saved = rig.daemon.ctx.store.load_last_good()
        assert saved is not None and set(saved.desired.elements["blocklist"]) == kept
        again = await rig.daemon.control.handle({"op": "confirm"})
        assert again["ok"] is False and again["exit"] == 1

    rig.run(scenario)


def test_a_profile_the_kernel_refused_is_retried_with_backoff(rig: Rig) -> None:
    rig.write()
    refusing = True
    rig.kernel.refuse = lambda commands: (
        "Cannot allocate memory"
        if refusing and any("decisions" in str(c) or "203.0.113" in str(c) for c in commands)
        else None
    )

    async def scenario() -> None:
        nonlocal refusing
        await rig.daemon.boot()
        assert rig.status()["source"] == "failsafe"
        assert "Cannot allocate memory" in rig.status()["last_error"]
        tries_at = []
        for _ in range(10):  # read-backs every RESYNC seconds: tries 1, 2, 4, 8 ... apart
            rig.clock.now += RESYNC
            before = rig.daemon.policy.refused_tries
            await rig.tick(resync=True)
            if rig.daemon.policy.refused_tries > before:
                tries_at.append(rig.clock.now)
        assert [b - a for a, b in itertools.pairwise(tries_at)] == [
            2 * RESYNC,
            4 * RESYNC,
        ]
        assert rig.status()["source"] == "failsafe"
        refusing = False
        rig.clock.now += RETRY_MAX_SECONDS
        await rig.tick(resync=True)
        status = rig.status()
        assert status["source"] == "profile" and status["last_error"] is None
        assert rig.daemon.policy.refused is None
        assert rig.ready() is None

    rig.run(scenario)


def test_a_reload_replaces_the_refused_profile(rig: Rig) -> None:
    rig.write()
    rig.kernel.refuse = lambda commands: "Device or resource busy"

    async def scenario() -> None:
        await rig.daemon.boot()
        assert rig.daemon.policy.refused is not None
        rig.kernel.refuse = lambda commands: None
        rig.write(["192.0.2.0/24"])
        await rig.tick(reload=True)
        assert rig.daemon.policy.refused is None
        assert rig.status()["source"] == "profile"

    rig.run(scenario)


def test_each_drift_kind_is_repaired_and_counted(rig: Rig) -> None:
    rig.write()
    table = {"table": {"family": TABLE_FAMILY, "name": TABLE_NAME}}

    async def scenario() -> None:
        await rig.daemon.boot()
        await rig.tick(resync=True)
        assert rig.status()["drift_repairs"] == {}
        rig.kernel.run(
            [
                {
                    "delete": {
                        "element": {
                            **table["table"],
                            "table": TABLE_NAME,
                            "name": "blocklist",
                            "elem": [{"prefix": {"addr": "203.0.113.0", "len": 24}}],
                        }
                    }
                }
            ]
        )
        await rig.tick(resync=True)
        assert rig.kernel.element_texts("blocklist") == {"203.0.113.0/24"}
        assert rig.kernel.table is not None
        rig.kernel.table.rules.pop()  # someone deleted a rule
        await rig.tick(resync=True)
        rig.kernel.run([{"delete": table}])
        await rig.tick(resync=True)
        assert rig.kernel.list_table() is not None
        assert rig.status()["drift_repairs"] == {
            "elements": 1,
            "structure": 1,
            "table_missing": 1,
        }
        await rig.tick(resync=True)  # nothing changed since: nothing counted
        assert sum(rig.status()["drift_repairs"].values()) == 3

    rig.run(scenario)


def test_a_segment_link_removed_behind_the_daemons_back_is_segment_drift(rig: Rig) -> None:
    rig.profile.write_text(SEGMENT)

    async def scenario() -> None:
        await rig.daemon.boot()
        assert rig.status()["segments"] == ["mec1"]
        assert set(rig.links.state.links) == {"ap-mec1"}
        await rig.tick(resync=True)
        assert rig.status()["drift_repairs"] == {}
        rig.links.state.links.pop("ap-mec1")  # someone deleted the link (and its far end)
        rig.links.state.peers["mec-app"] = None
        await rig.tick(resync=True)
        assert rig.status()["drift_repairs"] == {"segments": 1}
        assert rig.links.state.links["ap-mec1"].addresses == {"10.50.0.1/24"}
        peer = rig.links.state.peers["mec-app"]
        assert peer is not None and peer.addresses == {"10.50.0.10/24"}

    rig.run(scenario)


def test_a_foreign_link_under_a_segments_name_refuses_the_profile_until_it_goes(
    rig: Rig,
) -> None:
    rig.profile.write_text(SEGMENT)
    rig.links.state.foreign = frozenset({"ap-mec1"})

    async def scenario() -> None:
        await rig.daemon.boot()
        status = rig.status()
        assert status["source"] == "failsafe"
        assert "ap-mec1 exists and is not the appliance's" in status["last_error"]
        assert rig.links.runs == []  # nothing made for a policy that did not go in
        rig.links.state.foreign = frozenset()
        rig.clock.now += RESYNC
        await rig.tick(resync=True)
        status = rig.status()
        assert (status["source"], status["last_error"]) == ("profile", None)
        assert "ap-mec1" in rig.links.state.links

    rig.run(scenario)


async def _a_refused_drift_repair(rig: Rig) -> None:
    """Boots, takes a rule out of the kernel's table, has the kernel refuse the repair and
    runs a resync: the refusal is the last error."""
    await rig.daemon.boot()
    assert rig.kernel.table is not None
    rig.kernel.table.rules.pop()
    rig.kernel.refuse = lambda commands: "Operation not permitted"
    await rig.tick(resync=True)
    assert rig.status()["last_error"].startswith("drift repair refused")


def test_a_refused_drift_repair_is_an_error(rig: Rig) -> None:
    rig.write()

    async def scenario() -> None:
        await _a_refused_drift_repair(rig)
        assert rig.ready() is not None

    rig.run(scenario)


def test_a_later_successful_repair_clears_the_repair_error(rig: Rig) -> None:
    rig.write()

    async def scenario() -> None:
        await _a_refused_drift_repair(rig)
        rig.kernel.refuse = lambda commands: None
        await rig.tick(resync=True)
        assert rig.status()["last_error"] is None
        assert rig.ready() is None
        assert rig.status()["drift_repairs"] == {"structure": 1}

    rig.run(scenario)


def test_a_successful_repair_keeps_an_error_that_is_not_a_repair_failure(rig: Rig) -> None:
    rig.write()

    async def scenario() -> None:
        await rig.daemon.boot()
        rig.write_invalid()
        await rig.tick(reload=True)
        error = rig.status()["last_error"]
        assert error.startswith("reload refused")
        await rig.tick(resync=True)
        assert rig.status()["last_error"] == error

    rig.run(scenario)


@pytest.mark.parametrize(
    ("timeout", "reason"),
    [
        (float("inf"), "must be from 1ms to 365d"),
        (1e30, "must be at most 365d"),
        (-5, "must be from 1ms to 365d"),
        (True, "expected a duration"),
        ("Infinity", "bad duration"),
        ("400d", "must be at most 365d"),
    ],
)
def test_a_set_add_with_a_bad_timeout_is_refused_with_exit_2(
    rig: Rig, timeout: object, reason: str
) -> None:
    rig.write()

    async def scenario() -> None:
        await rig.daemon.boot()
        with pytest.raises(UsageError, match=reason) as info:
            await rig.daemon.control.handle(
                {"op": "set_add", "set": "blocklist", "elements": ["192.0.2.1"], "timeout": timeout}
            )
        assert info.value.exit_code == 2
        assert rig.status()["runtime_elements"] == {}

    rig.run(scenario)


@pytest.mark.parametrize("op", ["set_add", "set_del"])
def test_a_set_request_above_the_element_bound_is_refused_before_the_kernel(
    rig: Rig, op: str
) -> None:
    rig.write()

    async def scenario() -> None:
        await rig.daemon.boot()
        values = [f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}" for i in range(100_001)]
        with pytest.raises(UsageError, match="100001 elements in one request; at most 100000"):
            await rig.daemon.control.handle({"op": op, "set": "blocklist", "elements": values})
        assert rig.status()["runtime_elements"] == {}

    rig.run(scenario)


def _with_elements_file(rig: Rig, target: str) -> None:
    """The profile's blocklist also reads ``target`` (a FIFO, a device)."""
    text = small_profile("decisions", ["203.0.113.0/24"])
    rig.profile.write_text(
        text.replace("[sets.ports]", f'elements_file = "{target}"\n[sets.ports]', 1)
    )


@pytest.mark.parametrize("target", ["fifo", "/dev/zero"])
def test_an_elements_file_that_never_ends_is_refused_at_reload(rig: Rig, target: str) -> None:
    """A FIFO (no writer: a read would wait for ever) or /dev/zero (a read would never end)
    is a profile error naming the key path; the running policy stays."""
    if target == "fifo":
        target = str(rig.tmp / "elements.fifo")
        os.mkfifo(target)
    rig.write()

    async def scenario() -> None:
        await rig.daemon.boot()
        hash_before = rig.status()["table_hash"]
        _with_elements_file(rig, target)
        await rig.tick(reload=True)
        status = rig.status()
        assert status["source"] == "profile" and status["table_hash"] == hash_before
        assert "sets.blocklist.elements_file" in status["last_error"]
        assert "not a regular file" in status["last_error"]

    rig.run(scenario)


@pytest.mark.parametrize("saved", [True, False])
def test_an_elements_file_that_never_ends_at_boot_falls_back(rig: Rig, saved: bool) -> None:
    """At boot: the last good policy if there is one, else the failsafe; never no table."""
    fifo = str(rig.tmp / "elements.fifo")
    os.mkfifo(fifo)
    rig.write()

    async def scenario() -> None:
        if saved:
            await rig.daemon.boot()
            rig.daemon.ctx.policy = None
        _with_elements_file(rig, fifo)
        await rig.daemon.boot()
        status = rig.status()
        assert status["source"] == ("last_good" if saved else "failsafe"), status
        assert rig.kernel.table is not None
        assert "sets.blocklist.elements_file" in status["last_error"]

    rig.run(scenario)


def test_a_service_manager_that_does_not_read_costs_dropped_notifications(rig: Rig) -> None:
    rig.write()
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # bound, never read
    manager.bind(str(rig.tmp / "notify.sock"))

    async def scenario() -> None:
        rig.daemon.ctx.notifier.address = str(rig.tmp / "notify.sock")
        await rig.daemon.boot()
        # Up to ten times the default datagram queue: reloads never wait, and once the
        # queue is full a notification is dropped (a reload sends more than one).
        for _ in range(100):
            await rig.tick(reload=True)
            if rig.status()["notify_dropped"]:
                break
        dropped = rig.status()["notify_dropped"]
        assert dropped > 0
        assert rig.status()["source"] == "profile"
        exposition = (await rig.daemon.ctx.metrics.exposition()).decode()
        assert f"appliance_notify_dropped_total {float(dropped)}" in exposition.splitlines()

    try:
        rig.run(scenario)
    finally:
        manager.close()


# ---- the hub: a verified bundle, applied or not -------------------------------------


class Hub:
    """The hub client's side of a bundle apply: what the daemon reported back."""

    def __init__(self, reachable: bool) -> None:
        self.reachable = reachable
        self.reports: list[tuple[str, str]] = []
        self.stale = False

    async def check_reachable(self) -> bool:
        return self.reachable

    async def apply_failed(self, sync: Any, error: str, table_hash: str) -> str:
        self.reports.append(("failed", error))
        return "failed"

    async def rolled_back(self, sync: Any, error: str, table_hash: str) -> str:
        self.reports.append(("rolled_back", error))
        return "rolled_back"

    async def applied(self, sync: Any, table_hash: str) -> str:
        self.reports.append(("applied", table_hash))
        return "applied"

    def close(self) -> None:
        pass


class Sync:
    def __init__(self, version: int) -> None:
        self.bundle = type("Bundle", (), {"version": version})()


def hub_rig(rig: Rig, monkeypatch: pytest.MonkeyPatch, reachable: bool, bundle: str) -> Hub:
    """A daemon on its profile, a hub client stand-in, and ``bundle`` as the policy the
    next bundle compiles to (``invalid``: it does not)."""
    from appliance.daemon import hub as hub_module
    from appliance.daemon.hub import HubSync
    from appliance.errors import ProfileError

    source = rig.tmp / "bundle.toml"
    source.write_text(small_profile("from-hub", ["192.0.2.0/24"]))

    def bundle_policy(bundle_: Any, listen: str | None) -> Policy:
        if bundle == "invalid":
            raise ProfileError("bundle version 7", "rules[0].dport", "ports need proto tcp")
        policy = policy_from_profile(str(source), load_profile(str(source)))
        return Policy(policy.desired, "hub", listen, profile=policy.profile, bundle_version=7)

    monkeypatch.setattr(hub_module, "bundle_policy", bundle_policy)
    client = Hub(reachable)
    sync = HubSync(rig.daemon.ctx, rig.daemon.policy)
    sync.client = client  # type: ignore[assignment]
    rig.daemon.hub = rig.daemon.policy.hub = sync
    return client


@pytest.mark.parametrize(
    ("reachable", "bundle", "report", "blocklist"),
    [
        (True, "valid", "applied", {"192.0.2.0/24"}),
        (False, "valid", "rolled_back", {"203.0.113.0/24"}),
        (True, "invalid", "failed", {"203.0.113.0/24"}),
        (True, "refused", "failed", {"203.0.113.0/24"}),
    ],
)
def test_a_bundle_is_kept_only_when_it_applies_and_the_hub_stays_reachable(
    rig: Rig,
    monkeypatch: pytest.MonkeyPatch,
    reachable: bool,
    bundle: str,
    report: str,
    blocklist: set[str],
) -> None:
    rig.write()
    client = hub_rig(rig, monkeypatch, reachable, bundle)

    async def scenario() -> None:
        await rig.daemon.boot()
        if bundle == "refused":
            rig.kernel.refuse = lambda c: "Invalid argument" if "192.0.2.0" in str(c) else None
        hub = rig.daemon.hub
        assert hub is not None
        result = await hub._apply_bundle(Sync(7))  # type: ignore[arg-type]
        assert str(result) == report
        assert [r for r, _ in client.reports] == [report]
        assert rig.kernel.element_texts("blocklist") == blocklist
        policy = rig.daemon.ctx.policy
        assert policy is not None
        assert policy.source == ("hub" if report == "applied" else "profile")
        if report == "applied":
            assert rig.daemon.ctx.last_error is None and rig.ready() is None

    rig.run(scenario)


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()


def test_the_listener_retries_a_busy_address_and_answers_health(rig: Rig) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    rig.write()
    rig.profile.write_text(rig.profile.read_text() + f'[metrics]\nlisten = "127.0.0.1:{port}"\n')

    async def scenario() -> None:
        await rig.daemon.boot()
        assert rig.status()["metrics_listen"] is None
        await rig.tick(resync=True)
        await rig.tick(resync=True)
        assert rig.records.messages.count("metrics: cannot listen") == 1  # once, not each tick
        blocker.close()
        await rig.tick(resync=True)
        assert rig.status()["metrics_listen"] == f"127.0.0.1:{port}"
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, http_get, port, "/healthz") == (200, "ok")
        assert await loop.run_in_executor(None, http_get, port, "/readyz") == (200, "ok")
        rig.write_invalid()
        await rig.tick(reload=True)
        code, reason = await loop.run_in_executor(None, http_get, port, "/readyz")
        assert code == 503 and reason.startswith("error: reload refused")

    try:
        rig.run(scenario)
    finally:
        blocker.close()


def test_the_listener_reports_an_ipv6_address_in_brackets(rig: Rig) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:  # a free port on the IPv6 loopback
            probe.bind(("::1", 0))
            port = probe.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 loopback on this host")
    rig.write()
    rig.profile.write_text(rig.profile.read_text() + f'[metrics]\nlisten = "[::1]:{port}"\n')

    async def scenario() -> None:
        await rig.daemon.boot()
        assert rig.status()["source"] == "profile"
        assert rig.status()["metrics_listen"] == f"[::1]:{port}"
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET6) as client:
            client.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(client, ("::1", port)), 10)

    rig.run(scenario)


def test_a_failing_manager_does_not_stop_the_others_and_marks_a_read_back(rig: Rig) -> None:
    from appliance.daemon.manager import Manager

    class Broken(Manager):
        name = "broken"

        async def configure(self, old: Policy | None, new: Policy | None) -> None:
            raise RuntimeError("a bug")

    rig.daemon.managers.insert(0, Broken())
    rig.write()
    with socket.socket() as probe:  # a free port on loopback
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rig.profile.write_text(rig.profile.read_text() + f'[metrics]\nlisten = "127.0.0.1:{port}"\n')

    async def scenario() -> None:
        await rig.daemon.boot()
        assert rig.status()["source"] == "profile"
        assert rig.status()["metrics_listen"] is not None  # the managers after it still heard
        assert "broken: configure failed" in rig.records.messages
        assert rig.daemon._resync

    rig.run(scenario)


def test_a_reload_plans_from_the_running_sets_held_compressed(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a reload parses the next profile, the running policy's sets are held
    compressed; the next plan reads them as they were, a refused reload keeps them."""
    monkeypatch.setattr("appliance.daemon.policy.PARK_SPANS", 1)
    rig.write(["203.0.113.0/24", "198.51.100.7"])

    async def scenario() -> None:
        await rig.daemon.boot()
        running = rig.daemon.ctx.policy
        assert running is not None
        rig.write_invalid()
        await rig.tick(reload=True)
        assert rig.daemon.ctx.policy is running
        spans = running.desired.elements["blocklist"].spans
        assert spans is not None and spans.parked
        await rig.tick(resync=True)  # nothing drifted: the plan read them in order
        assert rig.status()["last_error"].startswith("reload refused")
        assert rig.kernel.element_texts("blocklist") == {"203.0.113.0/24", "198.51.100.7"}
        rig.write(["198.51.100.7", "192.0.2.0/24"])
        await rig.tick(reload=True)
        assert rig.status()["last_error"] is None
        assert rig.kernel.element_texts("blocklist") == {"198.51.100.7", "192.0.2.0/24"}
        await rig.tick(resync=True)
        assert rig.kernel.element_texts("blocklist") == {"198.51.100.7", "192.0.2.0/24"}

    rig.run(scenario)
