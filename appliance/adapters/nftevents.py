"""nf_tables change events, read from the kernel's netlink multicast group.

Every committed nf_tables transaction is announced to the ``NFNLGRP_NFTABLES`` group: one
message per object it touched (table, chain, rule, set, element, object, flowtable), then
a ``NEWGEN`` message naming the new generation and the process that committed it. Unlike
``nft monitor``, reading them needs no copy of the ruleset: ``nft monitor`` lists the
whole ruleset, every set element included, before it prints an event, which for a set of
a million elements is more memory than the daemon's unit may use.

Only what a drift check needs is decoded: the message kind, the family and the table name
(attribute 1 of every object message), and the committing process of a generation.
Standard library only.
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
NFT_MSG_NEWGEN = 15
NFTA_GEN_PROC_PID = 2
NFTA_TABLE = 1  # the table's name in every object message (NFTA_*_TABLE, NFTA_TABLE_NAME)
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


class Transactions:
    """Gathers object messages until their ``NEWGEN``: ``feed`` returns each transaction
    completed by a datagram as (pid, changes). Element additions are left out; at most
    ``limit`` changes of an unfinished transaction are held, the rest summed up by one
    change of kind -1 on an unknown table."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self.pending: list[Change] = []
        self.dropped = 0

    def feed(self, datagram: bytes) -> list[tuple[int | None, list[Change]]]:
        done: list[tuple[int | None, list[Change]]] = []
        for kind, payload in messages(datagram):
            if kind == NFT_MSG_NEWGEN:
                changes = self.pending
                if self.dropped:
                    changes.append(Change(-1, NFPROTO_INET, "?"))
                done.append((generation_pid(payload), changes))
                self.pending = []
                self.dropped = 0
            elif kind == NFT_MSG_NEWSETELEM:
                continue  # added elements are never drift: not held (a load sends millions)
            elif len(self.pending) < self.limit:
                self.pending.append(change(kind, payload))
            else:
                self.dropped += 1
        return done
