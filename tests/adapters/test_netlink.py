"""Netlink framing: messages and attributes round-trip, truncations stop the walk."""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from appliance.adapters.netlink import (
    NLMSG_DONE,
    NLMSG_ERROR,
    ack_error,
    dump_answers,
    iter_attrs,
    iter_messages,
    nlattr,
    nlmsg,
)


def test_messages_and_attributes_round_trip() -> None:
    body = nlattr(1, b"abc") + nlattr(2, struct.pack("=I", 7))
    data = nlmsg(0x401, 0x5, 9, body) + nlmsg(NLMSG_ERROR, 0, 10, struct.pack("=i", 0))
    messages = list(iter_messages(data))
    assert [(kind, seq) for kind, seq, _ in messages] == [(0x401, 9), (NLMSG_ERROR, 10)]
    assert list(iter_attrs(messages[0][2])) == [(1, b"abc"), (2, struct.pack("=I", 7))]
    assert ack_error(messages[1][2]) == 0


def test_attribute_padding_and_nested_flag() -> None:
    assert nlattr(3, b"ab\0") == struct.pack("=HH", 7, 3) + b"ab\0" + b"\0"
    assert nlattr(1, b"abcd") == struct.pack("=HH", 8, 1) + b"abcd"
    nested = nlattr(0x8000 | 3, b"")
    assert list(iter_attrs(nested)) == [(3, b"")]


def test_truncated_input_stops_the_walk() -> None:
    data = nlmsg(16, 0, 1, nlattr(1, b"abcd"))
    assert list(iter_messages(data[:-1])) == []
    assert list(iter_attrs(nlattr(1, b"abcd")[:-2])) == []


def test_error_body() -> None:
    assert ack_error(struct.pack("=i", -errno.EPERM)) == errno.EPERM
    assert ack_error(b"\0") == errno.EPROTO


def test_a_dump_yields_its_own_answers_until_done_and_raises_on_an_error() -> None:
    """Answers to another sequence number are skipped; the kernel's error is an OSError."""
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, kernel:
        kernel.send(nlmsg(0x100, 0, 7, b"old!") + nlmsg(0x100, 0, 8, b"one!"))
        kernel.send(nlmsg(0x100, 0, 8, b"two!") + nlmsg(NLMSG_DONE, 0, 8, b"\0" * 4))
        assert list(dump_answers(ours, b"request", 8)) == [(0x100, b"one!"), (0x100, b"two!")]
        assert kernel.recv(64) == b"request"
        refused = struct.pack("=i", -errno.EPERM) + b"\0" * 16
        kernel.send(nlmsg(NLMSG_ERROR, 0, 9, refused))
        with pytest.raises(OSError) as caught:
            list(dump_answers(ours, b"request", 9))
        assert caught.value.errno == errno.EPERM
