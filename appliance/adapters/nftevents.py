"""nf_tables change events, read from the kernel's netlink multicast group.

Every committed nf_tables transaction is announced to the ``NFNLGRP_NFTABLES`` group: one
message per object it touched (table, chain, rule, set, element, object, flowtable), then
a ``NEWGEN`` message naming the new generation and the process that committed it. Unlike
``nft monitor``, reading them needs no copy of the ruleset: ``nft monitor`` lists the
whole ruleset, every set element included, before it prints an event, which for a set of
a million elements is more memory than the daemon's unit may use.

Only what a drift check needs is decoded: the message kind, the family and the table name
(attribute 1 of every object message), the new generation and the process that committed
it. The element messages (``NEWSETELEM``/``DELSETELEM``) of one table, named when the
events are gathered, are kept as the kernel sent them: the set's name and the element
list, the same bytes as a dump's, so that the elements another process added or deleted
are known without a dump of the set. Standard library only.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
SO_RCVBUFFORCE = 33
NFNL_SUBSYS_NFTABLES = 10
NLMSG_ERROR = 2
NLMSG_OVERRUN = 4

NFT_MSG_NEWSETELEM = 12
NFT_MSG_DELSETELEM = 14
NFT_MSG_NEWGEN = 15
NFTA_GEN_ID = 1
NFTA_GEN_PROC_PID = 2
NFTA_TABLE = 1  # the table's name in every object message (NFTA_*_TABLE, NFTA_TABLE_NAME)
NFTA_SET_ELEM_LIST_SET = 2
NFTA_SET_ELEM_LIST_ELEMENTS = 3
NFPROTO_INET = 1

RECEIVE_BUFFER = 8 * 1024 * 1024  # a burst of element events; beyond it, events are lost

_header = struct.Struct("=IHHII")
_attr = struct.Struct("=HH")


@dataclass(frozen=True)
class Change:
    """One object message of a transaction: its kind (``NFT_MSG_*``), family and table."""

    kind: int
    family: int
    table: str


def open_events(receive_buffer: int = RECEIVE_BUFFER) -> socket.socket:
    """A non-blocking socket subscribed to nf_tables events of this network namespace."""
    sock = socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
    )
    try:
        sock.bind((0, 0))
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, receive_buffer)
        except OSError:  # without CAP_NET_ADMIN: the ceiling net.core.rmem_max allows
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def messages(datagram: bytes) -> Iterator[tuple[int, bytes]]:
    """The nf_tables messages of one datagram: (``NFT_MSG_*`` kind, payload after the
    netlink header). Messages of other subsystems and truncated ones are skipped."""
    at = 0
    end = len(datagram)
    while at + _header.size <= end:
        length, kind, _flags, _seq, _pid = _header.unpack_from(datagram, at)
        if length < _header.size or at + length > end:
            return
        if kind >> 8 == NFNL_SUBSYS_NFTABLES:
            yield kind & 0xFF, datagram[at + _header.size : at + length]
        at += (length + 3) & ~3


def _attributes(payload: bytes) -> Iterator[tuple[int, bytes]]:
    at = 4  # struct nfgenmsg: family, version, resource id
    end = len(payload)
    while at + _attr.size <= end:
        length, kind = _attr.unpack_from(payload, at)
        if length < _attr.size or at + length > end:
            return
        yield kind & 0x3FFF, payload[at + _attr.size : at + length]
        at += (length + 3) & ~3


def change(kind: int, payload: bytes) -> Change:
    """The object message ``payload`` of ``kind`` as a Change (table "" when absent)."""
    family = payload[0] if payload else 0
    for attr, value in _attributes(payload):
        if attr == NFTA_TABLE:
            return Change(kind, family, value.split(b"\0", 1)[0].decode(errors="replace"))
    return Change(kind, family, "")


def generation_pid(payload: bytes) -> int | None:
    """The committing process of a ``NEWGEN`` message, if the kernel named it."""
    for attr, value in _attributes(payload):
        if attr == NFTA_GEN_PROC_PID and len(value) >= 4:
            return int.from_bytes(value[:4], "big")
    return None


def generation_id(payload: bytes) -> int | None:
    """The generation a ``NEWGEN`` message announces."""
    for attr, value in _attributes(payload):
        if attr == NFTA_GEN_ID and len(value) >= 4:
            return int.from_bytes(value[:4], "big")
    return None


@dataclass(frozen=True)
class ElementList:
    """The elements one message added (``NFT_MSG_NEWSETELEM``) or deleted
    (``NFT_MSG_DELSETELEM``) in a set of the kept table: the payload of its
    NFTA_SET_ELEM_LIST_ELEMENTS attribute, as a dump of the set carries it (an interval's
    start and end are two elements, each in a message of its own)."""

    kind: int
    set: str
    elements: bytes


@dataclass
class Transaction:
    """One committed transaction: the process that committed it (if the kernel named it),
    the generation it made, its object messages (one Change per kind and table) and the
    element messages of the kept table. ``elements`` is None when they are not all known:
    more than the budget, or events were lost before it ended."""

    pid: int | None
    generation: int | None
    changes: list[Change]
    elements: list[ElementList] | None


ELEMENT_BUDGET = 4 * 1024 * 1024  # bytes of element lists kept for one transaction


class Transactions:
    """Gathers object messages until their ``NEWGEN``: ``feed`` returns each transaction
    completed by a datagram. Each kind of change on a table is held once; at most ``limit``
    of them, the rest summed up by one change of kind -1 on an unknown table. With
    ``keep`` (family, table), the element messages of that table are held as well, up to
    ``budget`` bytes a transaction (consecutive messages of one kind and set as one list).
    After :meth:`lost` (the kernel dropped events), the next transaction to end is marked
    as not wholly known.

    A load sends a message per element (millions): an element message whose family, table
    and set (its leading bytes) are the last one's is taken without decoding them again.
    """

    def __init__(
        self,
        limit: int = 4096,
        keep: tuple[int, str] | None = None,
        budget: int = ELEMENT_BUDGET,
    ) -> None:
        self.limit = limit
        self.keep = (keep[0], keep[1].encode()) if keep is not None else None
        self.budget = budget
        self.pending: dict[Change, None] = {}
        self.dropped = 0
        self.elements: list[ElementList] | None = []
        self.kept = 0
        self.partial = False
        self._lead = b""  # the last element message's kind, family, table and set
        self._set: str | None = None  # its set, if its elements are held
        self._run = bytearray()  # element lists of the current kind and set, not yet held
        self._run_kind = 0

    def lost(self) -> None:
        """Events were lost: what is gathered so far is dropped, and the transaction that
        ends next is not wholly known."""
        self._begin()
        self.elements = None
        self.partial = True

    def _begin(self) -> None:
        self.pending = {}
        self.dropped = 0
        self.elements = []
        self.kept = 0
        self.partial = False
        self._lead = b""
        self._set = None
        self._run = bytearray()

    def feed(self, datagram: bytes) -> list[Transaction]:
        done: list[Transaction] = []
        at, end = 0, len(datagram)
        while at + _header.size <= end:
            length, kind = _header.unpack_from(datagram, at)[:2]
            if length < _header.size or at + length > end:
                break
            if kind >> 8 == NFNL_SUBSYS_NFTABLES:
                kind &= 0xFF
                if kind in (NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM):
                    self._element_message(kind, datagram, at + _header.size, at + length)
                elif kind == NFT_MSG_NEWGEN:
                    done.append(self._end(datagram[at + _header.size : at + length]))
                else:
                    self._note(change(kind, datagram[at + _header.size : at + length]))
            at += (length + 3) & ~3
        return done

    def _end(self, payload: bytes) -> Transaction:
        self._close_run()
        changes = list(self.pending)
        if self.dropped or self.partial:
            changes.append(Change(-1, NFPROTO_INET, "?"))
        transaction = Transaction(
            generation_pid(payload),
            generation_id(payload),
            changes,
            None if self.partial else self.elements,
        )
        self._begin()
        return transaction

    def _note(self, found: Change) -> None:
        if found in self.pending:
            return
        if len(self.pending) < self.limit:
            self.pending[found] = None
        else:
            self.dropped += 1

    def _element_message(self, kind: int, data: bytes, start: int, stop: int) -> None:
        """An element message in ``data[start:stop]`` (after the netlink header)."""
        lead_end = start + 4  # nfgenmsg, then the table and the set attributes
        for _ in range(2):
            if lead_end + _attr.size > stop:
                break
            size = _attr.unpack_from(data, lead_end)[0]
            if size < _attr.size:
                break
            lead_end += (size + 3) & ~3
        lead = bytes([kind]) + data[start:lead_end]
        if lead != self._lead:
            self._close_run()
            self._lead = lead
            found = self._decode(kind, data[start:stop])
            self._note(found)
            kept = self.keep is not None and (found.family, found.table.encode()) == self.keep
            self._set = self._set_name(data[start:stop]) if kept else None
            self._run_kind = kind
        if self._set is None or self.elements is None:
            return
        listed = None
        if lead_end + _attr.size <= stop:
            size, attr = _attr.unpack_from(data, lead_end)
            if attr & 0x3FFF == NFTA_SET_ELEM_LIST_ELEMENTS and lead_end + size <= stop:
                listed = data[lead_end + _attr.size : lead_end + size]
        if listed is None or self.kept + len(listed) > self.budget:
            self.elements = None  # more than is held, or not as expected: not all known
            self._run = bytearray()
            return
        self.kept += len(listed)
        self._run += listed

    def _close_run(self) -> None:
        if self._run and self.elements is not None and self._set is not None:
            self.elements.append(ElementList(self._run_kind, self._set, bytes(self._run)))
        self._run = bytearray()

    @staticmethod
    def _decode(kind: int, payload: bytes) -> Change:
        return change(kind, payload)

    @staticmethod
    def _set_name(payload: bytes) -> str:
        for attr, value in _attributes(payload):
            if attr == NFTA_SET_ELEM_LIST_SET:
                return value.split(b"\0", 1)[0].decode(errors="replace")
        return ""
