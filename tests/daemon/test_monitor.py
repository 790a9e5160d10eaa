"""Which nf_tables transactions hint at drift (pure), the watch going on after its failures
(a stand-in socket fed crafted events), and the daemon watching with a socket of its own,
no child (root). The repair a foreign change wakes is tested in test_daemon.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.adapters.nftevents import NFPROTO_INET, Change
from appliance.daemon.monitor import TableMonitor, foreign_drift
from tests.adapters.test_nftevents import message, transaction
from tests.daemon.conftest import Daemon, children, monitor_listening, wait_until, write_profile

OWN = 100
INET = NFPROTO_INET
IP = 2
NEWTABLE, DELTABLE, NEWRULE, DELRULE, NEWSETELEM, DELSETELEM = 0, 2, 6, 8, 12, 14


@pytest.mark.parametrize(
    ("changes", "pid", "expected"),
    [
        ([Change(DELRULE, INET, "appliance")], 200, True),
        ([Change(DELRULE, INET, "appliance")], OWN, False),
        ([Change(DELTABLE, INET, "appliance")], 200, True),
        ([Change(NEWRULE, INET, "appliance")], 200, True),
        ([Change(DELSETELEM, INET, "appliance")], 200, True),
        ([Change(NEWSETELEM, INET, "appliance")], 200, True),  # tagged as ours: drift
        ([Change(NEWSETELEM, INET, "appliance")], OWN, False),
        ([Change(NEWRULE, INET, "other")], 200, False),
        ([Change(DELTABLE, INET, "appliance2")], 200, False),
        ([Change(NEWRULE, IP, "appliance")], 200, False),
        ([Change(-1, INET, "?")], 200, True),  # more than was held: look
        ([Change(-1, INET, "?")], OWN, False),
        ([], 200, False),
        ([Change(DELRULE, INET, "appliance")], None, True),  # the kernel named no process
    ],
)
def test_foreign_drift(changes: list[Change], pid: int | None, expected: bool) -> None:
    assert foreign_drift(changes, pid, OWN) is expected


FOREIGN = transaction(200, message(DELRULE, INET, "appliance"))
OURS = transaction(OWN, message(DELRULE, INET, "appliance"))
ADDED = transaction(200, message(NEWSETELEM, INET, "other"))


def _watch(
    on_drift: Callable[[], None],
    feed: Callable[[socket.socket, int], None],
    until: Callable[[TableMonitor], bool],
) -> tuple[TableMonitor, list[str]]:
    """A monitor over stand-in sockets (one per opening), each fed by ``feed(peer, n)``
    from a thread, run until ``until`` holds (10 s at most)."""
    told: list[str] = []
    log = logging.getLogger("test.monitor")
    openings: list[socket.socket] = []

    def opener() -> socket.socket:
        ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setblocking(False)
        openings.append(peer)
        threading.Thread(target=feed, args=(peer, len(openings)), daemon=True).start()
        return ours

    monitor = TableMonitor(on_drift, OWN, log, opener, on_error=told.append, restart_pause=0.01)

    async def run() -> None:
        assert await monitor.start()
        try:
            deadline = asyncio.get_running_loop().time() + 10
            while not until(monitor) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
        finally:
            await monitor.stop()
            for peer in openings:
                peer.close()

    asyncio.run(run())
    return monitor, told


def test_only_a_foreign_change_of_the_table_hints() -> None:
    hints: list[int] = []

    def feed(peer: socket.socket, _n: int) -> None:
        for datagram in (OURS, ADDED, FOREIGN, OURS):
            peer.send(datagram)

    monitor, told = _watch(lambda: hints.append(1), feed, lambda m: bool(hints))
    assert hints == [1] and not told and monitor.errors == 0


def test_a_burst_of_waiting_events_leaves_the_loop_turns_while_it_is_read() -> None:
    hints: list[int] = []
    seen: list[int] = []  # how many the watch had read, at each turn of another task
    log = logging.getLogger("test.monitor")
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    peer.setblocking(False)
    burst = 0  # datagrams already waiting when the watch starts: as many as the queue takes
    with contextlib.suppress(BlockingIOError):
        while burst < 400:
            peer.send(FOREIGN)
            burst += 1
    assert burst >= 20
    monitor = TableMonitor(lambda: hints.append(1), OWN, log, lambda: ours, turn=0.0)

    async def run() -> None:
        assert await monitor.start()
        try:
            deadline = asyncio.get_running_loop().time() + 10
            while len(hints) < burst and asyncio.get_running_loop().time() < deadline:
                seen.append(len(hints))
                await asyncio.sleep(0)
        finally:
            await monitor.stop()
            peer.close()

    asyncio.run(run())
    assert len(hints) == burst
    # another task ran while the burst was read, not only before and after it
    assert any(0 < n < burst for n in seen), seen[:5]


def test_a_socket_that_fails_is_opened_again_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hints: list[int] = []

    def feed(peer: socket.socket, _n: int) -> None:
        peer.send(FOREIGN)
        peer.send(b"")  # an empty datagram: the stand-in's end of the socket

    with caplog.at_level(logging.WARNING, logger="test.monitor"):
        monitor, told = _watch(lambda: hints.append(1), feed, lambda m: m.errors >= 2)
    assert monitor.errors >= 2 and len(told) >= 2
    assert all("event socket failed (closed)" in reason for reason in told)
    assert len(hints) >= 3  # each socket's foreign change, and a look after each reopening
    lines = [r.getMessage() for r in caplog.records if "table watch" in r.getMessage()]
    assert lines and all("\n" not in line for line in lines)


def test_a_failed_drift_hint_is_logged_and_the_watch_goes_on() -> None:
    calls: list[int] = []

    def failing() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the kernel refused the repair")

    def feed(peer: socket.socket, _n: int) -> None:
        peer.send(FOREIGN)
        peer.send(FOREIGN)

    _monitor, told = _watch(failing, feed, lambda m: len(calls) >= 2)
    assert len(calls) >= 2  # still watching after the failure
    assert any("drift hint failed" in r and "refused the repair" in r for r in told)


def test_the_daemon_counts_its_table_watch_failures_in_a_metric(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from tests.daemon.test_decisions import Rig

    rig = Rig(tmp_path)
    monitor = rig.daemon._monitor
    assert monitor.on_error is not None
    monitor.on_error("event socket failed (closed); opened again in 1 s")
    monitor.on_error("drift hint failed: RuntimeError()")
    text = generate_latest(rig.daemon.ctx.metrics.registry).decode()
    assert "appliance_table_watch_errors_total 2.0" in text
    rig.daemon.ctx.executor.shutdown(wait=True)


@pytest.mark.root
def test_the_daemon_watches_without_a_child(
    netns: str, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = start_daemon(netns, write_profile(tmp_path / "p.toml"))
    assert daemon.proc is not None
    pid = daemon.proc.pid
    wait_until(lambda: monitor_listening(pid))  # the table watch starts after READY
    assert children(pid, "nft") == []


# ---- a drift read from the events, and by a dump where they are not all known ----------

SET_PROFILE = """version = 1
name = "events"
[zones.lan]
interfaces = ["eth1"]
[sets.blocklist]
type = "ipv4_addr"
interval = true
elements_file = "blocklist.txt"
[[rules]]
name = "drop-blocklist"
from = "any"
to = "self"
saddr = ["@blocklist"]
action = "drop"
"""
ELEMENTS = 20_000


def _element(i: int, base: int = 10) -> str:
    """Distinct, never adjacent elements: a /30 for one in four, a host otherwise."""
    value = (base << 24) + 8 * i
    text = f"{value >> 24}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"
    return f"{text}/30" if i % 4 == 0 else text


def _reads(daemon: Daemon) -> list[str]:
    return [
        e["msg"]
        for e in daemon.log_entries()
        if e["msg"].startswith("table read back") or e["msg"] == "drift repaired"
    ]


def _nft(ns: str, script: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script, text=True, check=True
    )


@pytest.mark.root
def test_a_drift_in_a_large_set_is_read_from_the_events_and_by_a_dump_when_not_all_known(
    netns: str, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    from tests.reliability.test_million_set import kernel_holds

    listing = tmp_path / "blocklist.txt"
    listing.write_text("".join(_element(i) + "\n" for i in range(ELEMENTS)))
    profile = tmp_path / "events.toml"
    profile.write_text(SET_PROFILE)
    daemon = start_daemon(netns, profile)
    assert daemon.proc is not None
    wait_until(lambda: monitor_listening(daemon.proc.pid))  # type: ignore[union-attr]
    where = "inet appliance blocklist"

    # Another writer deletes a profile element and adds a stale one tagged as the profile's:
    # the repair takes both from the transaction's events, no dump of the set.
    gone, stale = _element(7), _element(3, base=11)
    _nft(
        netns,
        f"delete element {where} {{ {gone} }}\n"
        f'add element {where} {{ {stale} comment "profile" }}\n',
    )
    wait_until(lambda: kernel_holds(netns, [gone, stale]) == [True, False], timeout=60)
    wait_until(lambda: "drift repaired" in _reads(daemon), timeout=60)
    reads = _reads(daemon)
    assert "table read back from nf_tables events" in reads, reads
    assert "table read back by a dump of its sets" not in reads, reads

    # More elements in one transaction than the events keep: not all known, so the set is
    # dumped, and the drift in it repaired all the same (the run-time elements stay).
    many = ", ".join(_element(i, base=12) for i in range(100_000))
    gone = _element(11)
    _nft(
        netns,
        f"delete element {where} {{ {gone} }}\nadd element {where} {{ {many} }}\n",
    )
    wait_until(lambda: kernel_holds(netns, [gone]) == [True], timeout=120)
    wait_until(lambda: "table read back by a dump of its sets" in _reads(daemon), timeout=60)
    assert kernel_holds(netns, [_element(5, base=12)]) == [True]


@pytest.mark.root
def test_events_lost_to_a_small_receive_queue_leave_a_gap_the_read_back_dumps_across(
    netns: str,
) -> None:
    """A tiny receive buffer: a transaction of 20,000 elements overruns it. The watch
    counts the loss and hints; the journal holds no generation up to the loss, so a
    read-back across it dumps; the first transaction to end after it is not known whole
    (its first messages may be gone), the next one is."""
    from appliance.adapters.nfsets import NfSets
    from appliance.reconcile.readback import EventJournal
    from tests.adapters.test_nftevents import _open_in

    journal = EventJournal()
    hints: list[int] = []
    monitor = TableMonitor(
        lambda: hints.append(1),
        OWN,
        logging.getLogger("test.monitor"),
        lambda: _open_in(netns, receive_buffer=4096),
        journal=journal,
    )
    many = ", ".join(_element(i) for i in range(20_000))
    script = (
        "table inet appliance { set blocklist { type ipv4_addr; flags interval; }; }\n"
        f"add element inet appliance blocklist {{ {many} }}\n"
    )

    def generation() -> int:
        with NfSets(netns=netns) as sets:
            return sets.generation()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        assert await monitor.start()
        try:
            before = await loop.run_in_executor(None, generation)
            _nft(netns, script)  # the loop blocked meanwhile: nothing is read until it ends
            deadline = loop.time() + 30
            while monitor.lost == 0 and loop.time() < deadline:
                await asyncio.sleep(0.05)
            for address in ("192.0.2.1", "192.0.2.3"):
                await loop.run_in_executor(
                    None, _nft, netns, f"add element inet appliance blocklist {{ {address} }}\n"
                )
            after = await loop.run_in_executor(None, generation)
            while (journal.newest or 0) < after and loop.time() < deadline:
                await asyncio.sleep(0.05)
            assert monitor.lost >= 1 and hints
            assert journal.between(before, after, wait=0) is None  # across the loss: a dump
            assert journal.between(after - 2, after, wait=0) is None
            [last] = journal.between(after - 1, after, wait=0) or [None]
            assert last is not None and last.elements is not None  # after it: known whole
            assert [(e.kind, e.set) for e in last.elements] == [(NEWSETELEM, "blocklist")]
        finally:
            await monitor.stop()

    asyncio.run(run())


@pytest.mark.root
def test_the_watch_keeps_no_elements_of_generations_a_read_back_stands_for(netns: str) -> None:
    """Once a read-back stands at a generation (the daemon's own delta, settled as soon as
    it is carried out), the journal drops the elements up to it, and those of a generation
    up to it announced later are not kept at all; the next ones are, packed."""
    from appliance.adapters.nfsets import NfSets
    from appliance.adapters.nftevents import PackedElements
    from appliance.reconcile.readback import EventJournal
    from tests.adapters.test_nftevents import _open_in

    journal = EventJournal()
    monitor = TableMonitor(
        lambda: None,
        OWN,
        logging.getLogger("test.monitor"),
        lambda: _open_in(netns),
        journal=journal,
    )
    where = "inet appliance blocklist"

    def generation() -> int:
        with NfSets(netns=netns) as sets:
            return sets.generation()

    async def run() -> None:
        loop = asyncio.get_running_loop()

        async def recorded(through: int) -> None:
            deadline = loop.time() + 30
            while (journal.newest or 0) < through and loop.time() < deadline:
                await asyncio.sleep(0.05)
            assert (journal.newest or 0) >= through, "the watch did not record in 30 s"

        def nft(script: str) -> int:
            _nft(netns, script)
            return generation()

        assert await monitor.start()
        try:
            made = await loop.run_in_executor(
                None,
                nft,
                "table inet appliance { set blocklist { type ipv4_addr; }; }\n"
                f"add element {where} {{ {', '.join(_element(i) for i in range(1, 200, 4))} }}\n",
            )
            await recorded(made)
            assert journal.records[made].elements  # kept while no read-back stands at it
            journal.settle(made + 1)  # as the daemon does once its own delta is carried out
            assert journal.records[made].elements is None
            many = ", ".join(_element(i, base=11) for i in range(1, 2000, 4))
            own = await loop.run_in_executor(None, nft, f"add element {where} {{ {many} }}\n")
            later = await loop.run_in_executor(
                None, nft, f"delete element {where} {{ {_element(1)} }}\n"
            )
            assert (own, later) == (made + 1, made + 2)
            await recorded(later)
            assert journal.records[own].elements is None  # announced after: never kept
            [last] = journal.between(own, later, wait=0) or [None]
            assert last is not None and last.elements is not None
            [run] = last.elements
            assert isinstance(run, PackedElements) and (run.set, len(run)) == ("blocklist", 1)
            assert journal.kept == run.nbytes() == 5
        finally:
            await monitor.stop()

    asyncio.run(run())
