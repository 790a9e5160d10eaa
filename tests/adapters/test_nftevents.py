"""nf_tables events: messages parsed from crafted bytes (pure) and from the kernel (root)."""

from __future__ import annotations

import ctypes
import os
import select
import socket
import struct
import subprocess
import threading
import time

import pytest

from appliance.adapters.nftevents import (
    NFPROTO_INET,
    NFT_MSG_NEWGEN,
    Change,
    ElementList,
    Transaction,
    Transactions,
    messages,
    open_events,
)

NEWTABLE, NEWCHAIN, NEWRULE, DELRULE, NEWSET, NEWSETELEM, DELSETELEM = 0, 3, 6, 8, 9, 12, 14


def _attr(kind: int, value: bytes) -> bytes:
    body = struct.pack("=HH", 4 + len(value), kind) + value
    return body + b"\0" * (-len(body) % 4)


def _nlmsg(kind: int, payload: bytes) -> bytes:
    body = struct.pack("=IHHII", 16 + len(payload), (10 << 8) | kind, 0, 0, 0) + payload
    return body + b"\0" * (-len(body) % 4)


def message(kind: int, family: int, table: str) -> bytes:
    """An nf_tables object message of ``kind`` on ``family`` ``table``."""
    return _nlmsg(kind, bytes([family, 0, 0, 0]) + _attr(1, table.encode() + b"\0"))


def transaction(pid: int, *objects: bytes) -> bytes:
    """One datagram: the object messages, then the generation committed by ``pid``."""
    gen = bytes([0, 0, 0, 0]) + _attr(1, (7).to_bytes(4, "big")) + _attr(2, pid.to_bytes(4, "big"))
    gen += _attr(3, b"nft\0")
    return b"".join(objects) + _nlmsg(NFT_MSG_NEWGEN, gen)


def _done(transactions: list[Transaction]) -> list[tuple[int | None, list[Change]]]:
    return [(t.pid, t.changes) for t in transactions]


def test_a_transaction_is_its_changes_the_committing_process_and_its_generation() -> None:
    data = transaction(4242, message(DELRULE, NFPROTO_INET, "appliance"))
    [done] = Transactions().feed(data)
    assert (done.pid, done.generation) == (4242, 7)
    assert done.changes == [Change(DELRULE, NFPROTO_INET, "appliance")]


def test_each_kind_of_change_is_held_once_and_a_long_list_is_summed_up() -> None:
    added = message(NEWSETELEM, NFPROTO_INET, "appliance")
    assert _done(Transactions().feed(transaction(1, added * 50))) == [
        (1, [Change(NEWSETELEM, NFPROTO_INET, "appliance")])
    ]
    gathered = Transactions(limit=3)
    rules = b"".join(message(NEWRULE, NFPROTO_INET, f"t{i}") for i in range(5))
    [(pid, changes)] = _done(gathered.feed(rules) + gathered.feed(transaction(9)))
    assert pid == 9 and len(changes) == 4 and changes[-1].kind == -1


def test_a_transaction_may_span_datagrams() -> None:
    gathered = Transactions()
    assert gathered.feed(message(DELSETELEM, NFPROTO_INET, "appliance")) == []
    assert _done(gathered.feed(transaction(3))) == [
        (3, [Change(DELSETELEM, NFPROTO_INET, "appliance")])
    ]


def element_message(kind: int, table: str, set_name: str, elements: bytes) -> bytes:
    """An element message: the table, the set and the element list attribute."""
    attrs = _attr(1, table.encode() + b"\0") + _attr(2, set_name.encode() + b"\0")
    return _nlmsg(kind, bytes([NFPROTO_INET, 0, 0, 0]) + attrs + _attr(3, elements))


def test_the_kept_tables_element_lists_are_held_up_to_the_budget() -> None:
    ours = element_message(DELSETELEM, "appliance", "blocklist", b"\x01" * 40)
    other = element_message(NEWSETELEM, "other", "blocklist", b"\x02" * 40)
    gathered = Transactions(keep=(NFPROTO_INET, "appliance"), budget=100)
    [done] = gathered.feed(transaction(5, ours, other, ours))
    assert done.elements == [ElementList(DELSETELEM, "blocklist", b"\x01" * 40)] * 2
    [done] = gathered.feed(transaction(5, ours, ours, ours))  # 120 bytes: more than kept
    assert done.elements is None


def test_a_transaction_after_lost_events_is_not_wholly_known() -> None:
    gathered = Transactions(keep=(NFPROTO_INET, "appliance"))
    gathered.feed(element_message(NEWSETELEM, "appliance", "blocklist", b"\x01" * 8))
    gathered.lost()
    [done] = gathered.feed(transaction(5))
    assert done.elements is None and done.changes[-1].kind == -1
    [done] = gathered.feed(transaction(6))
    assert done.elements == [] and done.changes == []


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x02",
        struct.pack("=IHHII", 8, 10 << 8, 0, 0, 0),  # shorter than its header
        struct.pack("=IHHII", 400, 10 << 8, 0, 0, 0),  # longer than the datagram
        _nlmsg(NEWRULE, b""),  # no nfgenmsg
        _nlmsg(NEWRULE, bytes(4) + struct.pack("=HH", 200, 1)),  # an attribute past the end
        _nlmsg(2, b"\xff" * 20),  # another subsystem's kind numbers: an error message
    ],
)
def test_malformed_datagrams_are_no_error(data: bytes) -> None:
    list(messages(data))
    Transactions().feed(data)


def _open_in(netns: str, receive_buffer: int | None = None) -> socket.socket:
    """An event socket of ``netns``, opened by a thread that entered it (a socket stays in
    the namespace it was made in; the test's own thread does not move)."""
    made: list[socket.socket | BaseException] = []

    def run() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            made.append(open_events() if receive_buffer is None else open_events(receive_buffer))
        except BaseException as exc:
            made.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    result = made[0]
    if isinstance(result, BaseException):
        raise result
    return result


@pytest.mark.root
def test_the_kernel_announces_a_transaction_with_its_process(netns: str) -> None:
    sock = _open_in(netns)
    try:
        script = (
            "table inet appliance {\n"
            "  set blocklist { type ipv4_addr; elements = { 10.0.0.1 }; }\n"
            "  chain input { type filter hook input priority 0; tcp dport 4444 accept; }\n"
            "}\n"
        )
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, "nft", "-f", "-"], stdin=subprocess.PIPE
        )
        proc.communicate(script.encode(), timeout=30)
        assert proc.returncode == 0
        gathered = Transactions(keep=(NFPROTO_INET, "appliance"))
        done: list[Transaction] = []
        deadline = time.monotonic() + 10
        while not done and time.monotonic() < deadline:
            if select.select([sock], [], [], 0.5)[0]:
                done += gathered.feed(sock.recv(256 * 1024))
        assert done, "no generation announced within 10 s"
        first = done[0]
        assert first.pid == proc.pid  # ip netns exec runs nft in its own process
        kinds = {
            c.kind for c in first.changes if c.table == "appliance" and c.family == NFPROTO_INET
        }
        assert {NEWTABLE, NEWSET, NEWCHAIN, NEWRULE, NEWSETELEM} <= kinds
        assert first.elements is not None
        assert {(e.kind, e.set) for e in first.elements} == {(NEWSETELEM, "blocklist")}
    finally:
        sock.close()
