"""Netlink framing with the standard library: messages and attributes, encoded and decoded.

Pure functions shared by the netfilter (:mod:`appliance.adapters.capture`) and rtnetlink
(:mod:`appliance.adapters.rtnl`) adapters, tested without root.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_DUMP = 0x300
NLA_TYPE_MASK = 0x3FFF

NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, seq, pid
NLATTR = struct.Struct("=HH")  # length, type
IFINFOMSG = struct.Struct("=BxHiII")  # rtnetlink link header: family, type, index, flags, change


def nlmsg(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """One netlink message: the header (port id 0: the kernel) and ``body``."""
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def nlattr(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to four bytes."""
    length = NLATTR.size + len(payload)
    return NLATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def iter_messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, seq, body) of every netlink message in a datagram; stops at a truncation."""
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, kind, _flags, seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            return
        yield kind, seq, data[offset + NLMSGHDR.size : offset + length]
        offset += (length + 3) & ~3


def iter_attrs(data: bytes, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of every attribute from ``offset``; stops at a truncation."""
    while offset + NLATTR.size <= len(data):
        length, kind = NLATTR.unpack_from(data, offset)
        if length < NLATTR.size or offset + length > len(data):
            return
        yield kind & NLA_TYPE_MASK, data[offset + NLATTR.size : offset + length]
        offset += (length + 3) & ~3


def dump_answers(
    sock: socket.socket, request: bytes, seq: int, bufsize: int = 1 << 16
) -> Iterator[tuple[int, bytes]]:
    """Send the dump ``request`` (sequence number ``seq``) on ``sock`` and yield (type,
    body) of every answer to it until the kernel's NLMSG_DONE; an error answer raises
    OSError with the kernel's errno (a socket timeout raises as the socket does)."""
    sock.send(request)
    while True:
        for kind, answer_seq, body in iter_messages(sock.recv(bufsize)):
            if answer_seq != seq:
                continue
            if kind == NLMSG_DONE:
                return
            if kind == NLMSG_ERROR:
                code = ack_error(body)
                if code:
                    raise OSError(code, os.strerror(code))
                return
            yield kind, body


def ack_error(body: bytes) -> int:
    """The errno of an NLMSG_ERROR body (0: an ACK)."""
    if len(body) < 4:
        return errno.EPROTO
    return -int(struct.unpack_from("=i", body)[0])
