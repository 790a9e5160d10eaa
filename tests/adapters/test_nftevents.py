"""nf_tables events: messages parsed from crafted bytes (pure) and from the kernel (root);
element lists packed and read back as the kernel's own bytes (hypothesis)."""

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
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.adapters.nfelements import ElementReader, Encoder, comment_udata
from appliance.adapters.nftevents import (
    MAX_UDATA,
    NFPROTO_INET,
    NFT_MSG_NEWGEN,
    Change,
    ElementList,
    ElementPacker,
    PackedElements,
    Transaction,
    Transactions,
    messages,
    open_events,
)
from appliance.model.intervals import Spans

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


def _raw(width: int, interval: bool, tag: str | None, pairs: list[tuple[int, int]]) -> bytes:
    """The element lists the kernel announces for ``pairs`` (one message's worth)."""
    spans = Spans.of(width, pairs)
    return b"".join(Encoder(width, interval, tag).element_lists(spans, 0, len(spans)))


def test_the_kept_tables_elements_are_held_packed_up_to_the_budget() -> None:
    listed = _raw(32, False, "profile", [(10, 10), (20, 20)])
    ours = element_message(DELSETELEM, "appliance", "blocklist", listed)
    other = element_message(NEWSETELEM, "other", "blocklist", listed)
    gathered = Transactions(keep=(NFPROTO_INET, "appliance"), budget=4)
    [done] = gathered.feed(transaction(5, ours, other, ours))
    assert done.elements is not None and len(done.elements) == 2  # a run each side of other
    for run in done.elements:
        assert isinstance(run, PackedElements)
        assert (run.kind, run.set, run.klen, len(run), run.nbytes()) == (
            DELSETELEM,
            "blocklist",
            4,
            2,
            10,  # 4 bytes of key and one of meta an IPv4 element (the kernel sends 32)
        )
        assert run.udata == (comment_udata("profile"),)
    [done] = gathered.feed(transaction(5, ours + ours))  # one run of the two messages
    assert done.elements is not None and [len(run) for run in done.elements] == [4]
    [done] = gathered.feed(transaction(5, ours, ours, ours))  # 6 elements: more than kept
    assert done.elements is None


def test_an_element_list_not_as_the_kernel_sends_it_is_not_known() -> None:
    ours = element_message(DELSETELEM, "appliance", "blocklist", b"\x01" * 40)
    [done] = Transactions(keep=(NFPROTO_INET, "appliance")).feed(transaction(5, ours))
    assert done.elements is None
    assert ElementList(DELSETELEM, "blocklist", b"\x01" * 40).packed() is None


def _read(width: int, interval: bool, lists: list[bytes]) -> dict[str | None, list]:
    reader = ElementReader(width, interval, ordered=False)
    for listed in lists:
        reader.feed(listed, 0, len(listed))
    assert not reader.skipped
    return {tag: list(spans) for tag, spans in reader.result().items()}


@st.composite
def announced(draw: st.DrawFn) -> tuple[int, bool, list[bytes]]:
    """Element lists of one kind as the kernel announces them: each element in a message of
    its own (an interval set's start and end apart), with one of several comments or none;
    interval or hash, IPv4, IPv6 or ports."""
    width = draw(st.sampled_from([16, 32, 128]))
    interval = draw(st.booleans())
    values = draw(st.lists(st.integers(0, (1 << width) - 1), min_size=1, max_size=12))
    if interval:
        pairs = [(min(a, b), max(a, b)) for a, b in zip(values[::2], values[1::2], strict=False)]
    else:  # each value of a hash set is an element: single values only
        pairs = [(value, value) for value in values]
    spans = Spans.of(width, pairs or [(values[0], values[0])])
    tags = [None, "profile", "hub", "bub", "x" * 40]  # "bub": laid out as "hub"
    lists = []
    for i in range(len(spans)):
        encoder = Encoder(width, interval, draw(st.sampled_from(tags)))
        lists += list(encoder.element_lists(spans, i, i + 1))
    return width, interval, lists


@settings(max_examples=200, deadline=None)
@given(announced())
def test_packed_elements_read_as_the_kernels_own_bytes(case: tuple[int, bool, list[bytes]]) -> None:
    width, interval, lists = case
    packer = ElementPacker()
    for listed in lists:
        assert packer.add(listed, 0, len(listed))
    packed = packer.packed(NEWSETELEM, "s")
    assert packed.klen in (0, width // 8) and not packed.timed()
    assert _read(width, interval, list(packed.lists(chunk=3))) == _read(width, interval, lists)


def test_a_key_of_another_length_or_too_many_comments_is_not_packed() -> None:
    packer = ElementPacker()
    assert packer.add(v4 := _raw(32, False, None, [(1, 1)]), 0, len(v4))
    assert not packer.add(v6 := _raw(128, False, None, [(1, 1)]), 0, len(v6))
    packer = ElementPacker()
    for n in range(MAX_UDATA):
        listed = _raw(32, False, f"tag{n}", [(n, n)])
        assert packer.add(listed, 0, len(listed))
    listed = _raw(32, False, "one more", [(99, 99)])
    assert not packer.add(listed, 0, len(listed))


def test_a_timeout_is_kept_as_such() -> None:
    listed = bytearray(_raw(32, False, None, [(1, 1)]))
    # an element with a timeout (NFTA_SET_ELEM_TIMEOUT, 8 bytes) inside its nest
    listed[0:2] = (int.from_bytes(listed[0:2], "little") + 12).to_bytes(2, "little")
    listed += (12).to_bytes(2, "little") + (4).to_bytes(2, "little") + (1000).to_bytes(8, "big")
    packed = ElementList(NEWSETELEM, "s", bytes(listed)).packed()
    assert packed is not None and packed.timed()


def test_the_elements_of_a_generation_not_wanted_are_not_held() -> None:
    listed = _raw(32, False, "profile", [(10, 10)])
    ours = element_message(NEWSETELEM, "appliance", "blocklist", listed)
    asked: list[int] = []

    def wanted(generation: int) -> bool:
        asked.append(generation)
        return generation > 7

    def announce(generation: int) -> bytes:
        gen = bytes(4) + _attr(1, generation.to_bytes(4, "big")) + _attr(2, (5).to_bytes(4, "big"))
        return _nlmsg(NFT_MSG_NEWGEN, gen)

    gathered = Transactions(keep=(NFPROTO_INET, "appliance"), wanted=wanted)
    [first] = gathered.feed(ours + announce(6))  # no generation known before: held
    assert first.elements is not None and asked == []
    [second] = gathered.feed(ours + ours + announce(7))  # the 7th: not wanted
    assert second.elements is None and second.generation == 7 and asked == [7]
    [third] = gathered.feed(ours + announce(8))
    assert third.elements is not None and asked == [7, 8]
    gathered.lost()  # the next generation is not known again
    gathered.feed(announce(20))
    [after] = gathered.feed(ours + announce(21))
    assert after.elements is not None and asked == [7, 8, 21]


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
