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
events are gathered, are kept packed: per run of messages of one kind and set, each
element's key bytes and one byte for its flags and comment (:class:`PackedElements`: 5
bytes an IPv4 element where the kernel sends 32, 17 an IPv6 one where it sends 44), so
that the elements another process added or deleted are known without a dump of the set.
A transaction whose generation no read-back will start before (``wanted``) keeps none.
Standard library only.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
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
NFTA_SET_ELEM_KEY = 1
NFTA_SET_ELEM_FLAGS = 3
NFTA_SET_ELEM_TIMEOUT = 4
NFTA_SET_ELEM_EXPIRATION = 5
NFTA_SET_ELEM_USERDATA = 6
NFTA_DATA_VALUE = 1
NFTA_LIST_ELEM = 1
NFT_SET_ELEM_INTERVAL_END = 0x1
NLA_F_NESTED = 0x8000
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

    def nbytes(self) -> int:
        return len(self.elements)

    def packed(self) -> PackedElements | None:
        """The same elements packed (None: not an element list as the kernel sends it)."""
        packer = ElementPacker()
        if not packer.add(self.elements, 0, len(self.elements)):
            return None
        return packer.packed(self.kind, self.set)


END = 1  # PackedElements.meta: the element is an interval's end
TIMED = 2  # it has a timeout or an expiration
TAG_SHIFT = 2  # the index of its user data (0: none) in the bits above
MAX_UDATA = (0xFF >> TAG_SHIFT) - 1  # distinct user data a run of elements may carry


@dataclass(frozen=True)
class PackedElements:
    """The elements of consecutive messages of one kind in one set, packed: each element's
    key as the kernel sent it (``klen`` bytes, big-endian) in ``keys``, and one byte of
    ``meta``: :data:`END`, :data:`TIMED`, and the index of its user data (its comment) in
    ``udata``, shifted by :data:`TAG_SHIFT` (index 0: none, 1: ``udata[0]``)."""

    kind: int
    set: str
    klen: int
    keys: bytes
    meta: bytes
    udata: tuple[bytes, ...]

    def __len__(self) -> int:
        return len(self.meta)

    def nbytes(self) -> int:
        return len(self.keys) + len(self.meta)

    def timed(self) -> bool:
        """Whether an element has a timeout or an expiration."""
        return any(meta & TIMED for meta in self.meta)

    def lists(self, chunk: int = 4096) -> Iterator[bytes]:
        """The elements as element lists again, ``chunk`` elements a list: each one's key,
        its interval end flag and its user data, as a dump carries them (its timeout is
        left out: see :meth:`timed`)."""
        klen, keys = self.klen, self.keys
        pad = bytes(-klen % 4)
        value_head = _attr.pack(_attr.size + klen, NFTA_DATA_VALUE)
        key_head = _attr.pack(2 * _attr.size + klen + len(pad), NFTA_SET_ELEM_KEY | NLA_F_NESTED)
        end_flag = _attr.pack(8, NFTA_SET_ELEM_FLAGS) + NFT_SET_ELEM_INTERVAL_END.to_bytes(4, "big")
        tails = [b""]
        for udata in self.udata:
            tails.append(_attr.pack(_attr.size + len(udata), NFTA_SET_ELEM_USERDATA))
            tails[-1] += udata + bytes(-len(udata) % 4)
        out = bytearray()
        for at, meta in enumerate(self.meta):
            body = key_head + value_head + keys[at * klen : (at + 1) * klen] + pad
            if meta & END:
                body += end_flag
            body += tails[meta >> TAG_SHIFT]
            out += _attr.pack(_attr.size + len(body), NFTA_LIST_ELEM | NLA_F_NESTED) + body
            if (at + 1) % chunk == 0:
                yield bytes(out)
                out = bytearray()
        if out:
            yield bytes(out)


class ElementPacker:
    """Packs element lists (NFTA_SET_ELEM_LIST_ELEMENTS payloads) as they come. An element
    laid out as the last one parsed but for its key (the same bytes before and after the
    key) is taken without parsing it again. ``add`` says False for what it does not pack
    (a key of another length in the same run, more than MAX_UDATA distinct comments, a
    malformed list): the caller then does not know the elements."""

    def __init__(self) -> None:
        self.klen = 0
        self.keys = bytearray()
        self.meta = bytearray()
        self.udata: dict[bytes, int] = {}
        self._before = b""  # the last element parsed, up to its key (none yet)
        self._after = b""  # and after it
        self._meta = 0

    def __len__(self) -> int:
        return len(self.meta)

    def nbytes(self) -> int:
        return len(self.keys) + len(self.meta)

    def add(self, data: bytes | bytearray, start: int, stop: int) -> bool:
        at = start
        before, after = self._before, self._after
        key_at = len(before)  # where the key is in an element laid out as the last one
        key_end = key_at + self.klen
        size = key_end + len(after)
        while at + _attr.size <= stop:
            # the bytes before the key begin with the element's length: equal, it is the
            # last one's
            if (
                key_at
                and data[at : at + key_at] == before
                and at + size <= stop
                and data[at + key_end : at + size] == after
            ):
                self.keys += data[at + key_at : at + key_end]
                self.meta.append(self._meta)
                at += (size + 3) & ~3
                continue
            length = _attr.unpack_from(data, at)[0]
            if length < _attr.size or at + length > stop:
                return False
            if not self._parse(data, at, at + length):
                return False
            before, after = self._before, self._after
            key_at = len(before)
            key_end = key_at + self.klen
            size = key_end + len(after)
            at += (length + 3) & ~3
        return at == stop

    def _parse(self, data: bytes | bytearray, start: int, stop: int) -> bool:
        """One element (a NFTA_LIST_ELEM nest at ``data[start:stop]``), kept as the
        template of the next ones; False if it cannot be packed."""
        key_at = key_len = -1
        meta = 0
        at = start + _attr.size
        while at + _attr.size <= stop:
            length, kind = _attr.unpack_from(data, at)
            if length < _attr.size or at + length > stop:
                return False
            kind &= 0x3FFF
            if kind == NFTA_SET_ELEM_KEY and length >= 2 * _attr.size:
                inner, inner_kind = _attr.unpack_from(data, at + _attr.size)
                if inner_kind & 0x3FFF == NFTA_DATA_VALUE and _attr.size < inner <= length - 4:
                    key_at, key_len = at + 2 * _attr.size, inner - _attr.size
            elif kind == NFTA_SET_ELEM_FLAGS and length >= 8:
                if int.from_bytes(data[at + 4 : at + 8], "big") & NFT_SET_ELEM_INTERVAL_END:
                    meta |= END
            elif kind in (NFTA_SET_ELEM_TIMEOUT, NFTA_SET_ELEM_EXPIRATION):
                meta |= TIMED
            elif kind == NFTA_SET_ELEM_USERDATA:
                udata = bytes(data[at + _attr.size : at + length])
                index = self.udata.get(udata)
                if index is None:
                    if len(self.udata) >= MAX_UDATA:
                        return False
                    index = self.udata[udata] = len(self.udata) + 1
                meta |= index << TAG_SHIFT
            at += (length + 3) & ~3
        if key_at < 0:  # no key (a catch-all element): no value of the set
            return True
        if self.meta and key_len != self.klen:
            return False
        self.klen = key_len
        self.keys += data[key_at : key_at + key_len]
        self.meta.append(meta)
        self._before = bytes(data[start:key_at])
        self._after = bytes(data[key_at + key_len : stop])
        self._meta = meta
        return True

    def packed(self, kind: int, set_name: str) -> PackedElements:
        return PackedElements(
            kind, set_name, self.klen, bytes(self.keys), bytes(self.meta), tuple(self.udata)
        )


@dataclass
class Transaction:
    """One committed transaction: the process that committed it (if the kernel named it),
    the generation it made, its object messages (one Change per kind and table) and the
    element messages of the kept table. ``elements`` is None when they are not all known:
    more than the budget, events were lost before it ended, or none was kept (no read-back
    starts before its generation)."""

    pid: int | None
    generation: int | None
    changes: list[Change]
    elements: list[ElementList | PackedElements] | None


ELEMENT_BUDGET = 1 << 17  # elements kept for one transaction (4 MiB as the kernel sends IPv4)


class Transactions:
    """Gathers object messages until their ``NEWGEN``: ``feed`` returns each transaction
    completed by a datagram. Each kind of change on a table is held once; at most ``limit``
    of them, the rest summed up by one change of kind -1 on an unknown table. With
    ``keep`` (family, table), the element messages of that table are held as well, packed,
    up to ``budget`` elements a transaction (consecutive messages of one kind and set as one
    :class:`PackedElements`). After :meth:`lost` (the kernel dropped events), the next
    transaction to end is marked as not wholly known.

    With ``wanted``, a transaction's elements are not held (``elements`` is None) if
    ``wanted`` says no for the generation it will make: the last one announced plus one
    (the kernel counts its commits one by one; after a loss, until the next announcement,
    it is not known and the elements are held).

    A load sends a message per element (millions): an element message whose family, table
    and set (its leading bytes) are the last one's is taken without decoding them again.
    """

    def __init__(
        self,
        limit: int = 4096,
        keep: tuple[int, str] | None = None,
        budget: int = ELEMENT_BUDGET,
        wanted: Callable[[int], bool] | None = None,
    ) -> None:
        self.limit = limit
        self.keep = (keep[0], keep[1].encode()) if keep is not None else None
        self.budget = budget
        self.wanted = wanted
        self.generation: int | None = None  # the last generation announced
        self.pending: dict[Change, None] = {}
        self.dropped = 0
        self.elements: list[ElementList | PackedElements] | None = []
        self.kept = 0
        self.partial = False
        self._lead = b""  # the last element message's kind, family, table and set
        self._set: str | None = None  # its set, if its elements are held
        self._run = ElementPacker()  # elements of the current kind and set, not yet held
        self._run_kind = 0
        self._asked = False  # whether ``wanted`` was asked for this transaction

    def lost(self) -> None:
        """Events were lost: what is gathered so far is dropped, and the transaction that
        ends next is not wholly known."""
        self._begin()
        self.elements = None
        self.partial = True
        self.generation = None

    def _begin(self) -> None:
        self.pending = {}
        self.dropped = 0
        self.elements = []
        self.kept = 0
        self.partial = False
        self._lead = b""
        self._set = None
        self._run = ElementPacker()
        self._asked = False

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
        generation = generation_id(payload)
        transaction = Transaction(
            generation_pid(payload),
            generation,
            changes,
            None if self.partial else self.elements,
        )
        self._begin()
        self.generation = generation
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
            if kept and not self._asked:
                self._ask()
        if self._set is None or self.elements is None:
            return
        if lead_end + _attr.size <= stop:
            size, attr = _attr.unpack_from(data, lead_end)
            if (
                attr & 0x3FFF == NFTA_SET_ELEM_LIST_ELEMENTS
                and lead_end + size <= stop
                and self._run.add(data, lead_end + _attr.size, lead_end + size)
                and self.kept + len(self._run) <= self.budget
            ):
                return
        self.elements = None  # more than is held, or not as expected: not all known
        self._run = ElementPacker()

    def _ask(self) -> None:
        """Whether this transaction's elements are wanted (asked once, at its first element
        message of the kept table)."""
        self._asked = True
        wanted, generation = self.wanted, self.generation
        if wanted is not None and generation is not None and not wanted(generation + 1):
            self.elements = None

    def _close_run(self) -> None:
        run = self._run
        if len(run) and self.elements is not None and self._set is not None:
            self.kept += len(run)
            self.elements.append(run.packed(self._run_kind, self._set))
        self._run = ElementPacker()

    @staticmethod
    def _decode(kind: int, payload: bytes) -> Change:
        return change(kind, payload)

    @staticmethod
    def _set_name(payload: bytes) -> str:
        for attr, value in _attributes(payload):
            if attr == NFTA_SET_ELEM_LIST_SET:
                return value.split(b"\0", 1)[0].decode(errors="replace")
        return ""
