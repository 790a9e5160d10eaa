"""Set elements over nf_tables netlink (NETLINK_NETFILTER), straight from packed spans.

The elements of an existing set travel between :class:`~appliance.model.intervals.Spans`
and the kernel without libnftables, JSON or an object per element:

- :meth:`NfSets.apply` sends NFT_MSG_NEWSETELEM / NFT_MSG_DELSETELEM messages (built by
  :mod:`appliance.adapters.nfelements`, the bytes nft sends) in nfnetlink batches, each
  batch one kernel transaction, in one sendmsg (the kernel takes a batch only whole from
  one datagram; the send buffer is forced to its size, as nft does); a tag is the
  elements' comment (``nft list`` shows ``comment "TAG"``);
- :meth:`NfSets.dump` reads the elements back with one NFT_MSG_GETSETELEM dump, parsed
  from a reused receive buffer as it arrives, into packed spans per comment tag;
- :meth:`NfSets.count`, :meth:`NfSets.info` (handle, flags, key length) and
  :meth:`NfSets.generation` (the ruleset's) say what changed without keeping elements.
  The kernel reports no element count for a set: ``count`` counts a dump as it arrives.

Semantics, as nft's ``add element`` / ``destroy element``:

- adding an element that is already there (same key, same interval) is no error and leaves
  it as it is (its comment included: re-tag by a delete and an add);
- deleting an element that is not there is no error. For a hash set every value of a
  ``delete`` span is an element; for an interval set every span of ``delete`` must be one
  of the set's elements exactly (``[a, b]`` does not cut a piece out of an element
  ``[a, c]``: it is skipped as absent); ``intervals.exact_delta`` gives that delta between
  two interval sets. A hash set's deletes are NFT_MSG_DESTROYSETELEM where the kernel has
  it (Linux 6.3 and later: known from the kernel's release, else probed once); otherwise,
  and for interval sets, a batch the kernel refuses with ENOENT is sent again with only
  the elements a dump finds;
- without ``flush``, the change goes in batches of at most ``chunk`` spans (for a hash set,
  a span is one element per value), each its own transaction; a batch holds the deletes
  before the adds of one range of values, and no element deleted in one batch overlaps one
  added in another, so a replaced range is never missing between two transactions;
- with ``flush``, the set is emptied and refilled with ``add`` in one transaction: no
  packet sees it empty or half filled;
- a refused batch changes nothing and raises a one-line KernelError naming the set and the
  kernel's errno text; the batches sent before it stay (each was its own transaction);
- elements with a timeout (run-time elements) are left out of :meth:`dump` and
  :meth:`count`: they are managed through libnftables.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from appliance.adapters.netlink import (
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGHDR,
    ack_error,
    iter_attrs,
    iter_messages,
    nlattr,
    nlmsg,
)
from appliance.adapters.nfelements import (
    FAMILIES,
    NFNL_MSG_BATCH_BEGIN,
    NFNL_MSG_BATCH_END,
    NFNL_SUBSYS_NFTABLES,
    NFT_MSG_DELSETELEM,
    NFT_MSG_DESTROYSETELEM,
    NFT_MSG_GETGEN,
    NFT_MSG_GETSET,
    NFT_MSG_GETSETELEM,
    NFT_MSG_NEWGEN,
    NFT_MSG_NEWSET,
    NFT_SET_INTERVAL,
    NFT_SET_MAP,
    NFTA_GEN_ID,
    NFTA_SET_FLAGS,
    NFTA_SET_HANDLE,
    NFTA_SET_KEY_LEN,
    NFTA_SET_NAME,
    NFTA_SET_TABLE,
    ElementCounter,
    ElementReader,
    Encoder,
    Unordered,
    batch_edge,
    batch_ranges,
    build_batch,
    exact_elements,
    intersection,
    iter_dump_elements,
    message,
    names,
    part_of,
    union_of,
)
from appliance.errors import KernelError
from appliance.model.intervals import Spans

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
CLONE_NEWNET = 0x40000000
DEFAULT_CHUNK = 65536
RECV_BUFFER = 1 << 20


class SetElementsError(KernelError):
    """The kernel refused a batch of elements; ``errno`` is its answer."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.errno = code


@dataclass(frozen=True)
class SetInfo:
    """What the kernel says of a set without listing its elements."""

    handle: int
    flags: int
    key_len: int

    @property
    def interval(self) -> bool:
        return bool(self.flags & NFT_SET_INTERVAL)


# ---- the kernel -----------------------------------------------------------------------


def open_socket(netns: str | None = None) -> socket.socket:
    """A NETLINK_NETFILTER socket, in the named network namespace if given (opened by a
    short-lived thread that enters it: the rest of the process stays where it is)."""
    if netns is None:
        return _netfilter_socket()
    found: list[socket.socket | BaseException] = []

    def enter_and_open() -> None:
        try:
            fd = os.open(os.path.join("/run/netns", netns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            finally:
                os.close(fd)
            found.append(_netfilter_socket())
        except BaseException as exc:  # handed to the caller's thread
            found.append(exc)

    thread = threading.Thread(target=enter_and_open, name="nfsets-netns")
    thread.start()
    thread.join()
    result = found[0]
    if isinstance(result, BaseException):
        raise KernelError(f"network namespace {netns!r}: {result}")
    return result


def _netfilter_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)  # errors without the request
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECV_BUFFER * 4)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER * 4)
    except OSError:
        sock.close()
        raise
    return sock


DESTROY_RELEASE = (6, 3)  # the first Linux release with NFT_MSG_DESTROYSETELEM


def has_destroy(release: str) -> bool:
    """Whether a kernel of this release (``uname -r``) has DESTROYSETELEM for certain
    (False: an older release, or one not read: a backport may have it, so probe)."""
    numbers = release.split("-", 1)[0].split(".")
    try:
        version = (int(numbers[0]), int(numbers[1]))
    except (IndexError, ValueError):
        return False
    return version >= DESTROY_RELEASE


class NfSets:
    """The elements of sets in one table (``family``, ``table``) of one namespace."""

    def __init__(
        self,
        *,
        family: str = "inet",
        table: str = "appliance",
        netns: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        if family not in FAMILIES:
            raise ValueError(f"unknown nftables family {family!r}")
        self.family = family
        self.table = table
        self.netns = netns
        self.timeout = timeout
        self._family = FAMILIES[family]
        self._sock: socket.socket | None = None
        self._seq = 0
        self._sndbuf = 0
        self._destroy: bool | None = None  # the kernel has DESTROYSETELEM
        self._buffer = bytearray(RECV_BUFFER)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> NfSets:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _socket(self) -> socket.socket:
        if self._sock is None:
            try:
                self._sock = open_socket(self.netns)
            except OSError as exc:
                raise KernelError(f"nf_tables netlink: {exc.strerror or exc}") from None
            self._sock.settimeout(self.timeout)
            self._sndbuf = 0
        return self._sock

    def _where(self, set_name: str) -> str:
        return f"set {self.family} {self.table} {set_name}"

    def _next_seq(self, count: int) -> int:
        first = self._seq + 1
        self._seq += count
        return first

    # ---- reading ----------------------------------------------------------------------

    def info(self, set_name: str) -> SetInfo:
        """The set's handle, flags and key length (one request, no elements)."""
        seq = self._next_seq(1)
        table_attr = nlattr(NFTA_SET_TABLE, self.table.encode() + b"\0")
        name_attr = nlattr(NFTA_SET_NAME, set_name.encode() + b"\0")
        request = message(
            NFT_MSG_GETSET,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            self._family,
            table_attr + name_attr,
            None,
        )
        handle = flags = key_len = 0
        got = False
        try:
            answers = list(self._exchange(request, seq, set_name))
        except SetElementsError as exc:
            if exc.errno == errno.ENOENT:
                raise SetElementsError(f"{self._where(set_name)}: no such set", exc.errno) from None
            raise
        for kind, body in answers:
            if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSET:
                got = True
                for attr, payload in iter_attrs(body, 4):
                    if attr == NFTA_SET_FLAGS and len(payload) >= 4:
                        flags = int(struct.unpack_from(">I", payload)[0])
                    elif attr == NFTA_SET_KEY_LEN and len(payload) >= 4:
                        key_len = int(struct.unpack_from(">I", payload)[0])
                    elif attr == NFTA_SET_HANDLE and len(payload) >= 8:
                        handle = int(struct.unpack_from(">Q", payload)[0])
        if not got:
            raise KernelError(f"{self._where(set_name)}: no answer from the kernel")
        return SetInfo(handle, flags, key_len)

    def _exchange(self, request: bytes, seq: int, set_name: str) -> Iterator[tuple[int, bytes]]:
        sock = self._socket()
        try:
            sock.sendall(request)
            while True:
                data = sock.recv(RECV_BUFFER)
                for kind, answer_seq, body in iter_messages(data):
                    if answer_seq != seq:
                        continue
                    if kind == NLMSG_ERROR:
                        code = ack_error(body)
                        if code:
                            raise SetElementsError(self._refused(set_name, code), code)
                        return
                    if kind == NLMSG_DONE:
                        return
                    yield kind, body
        except OSError as exc:
            raise KernelError(f"{self._where(set_name)}: {exc.strerror or exc}") from None

    def _refused(self, set_name: str, code: int) -> str:
        text = os.strerror(code)
        if code == errno.ENFILE:
            text += " (the set is full: more elements than its size)"
        elif code == errno.EEXIST:
            text += " (an element overlaps one of the set's)"
        return f"{self._where(set_name)}: the kernel refused the elements: {text}"

    def generation(self) -> int:
        """The ruleset generation of the namespace: each committed transaction moves it."""
        seq = self._next_seq(1)
        request = nlmsg(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            struct.pack("=BBH", 0, 0, 0),
        )
        for kind, body in self._exchange(request, seq, "(generation)"):
            if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN:
                for attr, payload in iter_attrs(body, 4):
                    if attr == NFTA_GEN_ID and len(payload) >= 4:
                        return int(struct.unpack_from(">I", payload)[0])
        raise KernelError("nf_tables netlink: no ruleset generation in the answer")

    def dump(self, set_name: str, *, width: int, interval: bool) -> dict[str | None, Spans]:
        """Every element without a timeout, as spans per comment tag (None: no comment)."""
        reader = ElementReader(width, interval)
        try:
            self._dump_into(set_name, reader)
        except Unordered:
            reader = ElementReader(width, interval, ordered=False)
            self._dump_into(set_name, reader)
        return reader.result()

    def count(self, set_name: str) -> int:
        """How many elements the set holds (an interval counts once), timeouts left out:
        one dump, counted as it arrives, nothing kept."""
        info = self.info(set_name)
        reader = ElementCounter(
            info.key_len * 8 if info.key_len in (2, 4, 16) else 32, info.interval
        )
        self._dump_into(set_name, reader)
        return reader.count

    def _dump_into(self, set_name: str, reader: ElementReader) -> None:
        sock = self._socket()
        seq = self._next_seq(1)
        table_attr, set_attr = names(self.table, set_name)
        request = message(
            NFT_MSG_GETSETELEM,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            self._family,
            table_attr + set_attr,
            None,
        )
        buffer = self._buffer
        try:
            sock.sendall(request)
            while True:
                length = sock.recv_into(buffer)
                for kind, answer_seq, start, end in iter_dump_elements(buffer, length):
                    if answer_seq != seq:
                        continue
                    if kind == NLMSG_DONE:
                        return
                    if kind == NLMSG_ERROR:
                        if start:
                            raise SetElementsError(self._refused(set_name, start), start)
                        return
                    if end > start:
                        reader.feed(buffer, start, end)
        except Unordered:
            self._drain(seq)
            raise
        except OSError as exc:
            self.close()
            raise KernelError(f"{self._where(set_name)}: {exc.strerror or exc}") from None

    def _drain(self, seq: int) -> None:
        """Read the rest of an abandoned dump."""
        sock = self._socket()
        while True:
            length = sock.recv_into(self._buffer)
            for kind, answer_seq, _start, _end in iter_dump_elements(self._buffer, length):
                if answer_seq == seq and kind in (NLMSG_DONE, NLMSG_ERROR):
                    return

    # ---- writing ----------------------------------------------------------------------

    def apply(
        self,
        set_name: str,
        *,
        width: int,
        interval: bool,
        add: Spans | None,
        delete: Spans | None,
        flush: bool = False,
        tag: str | None = None,
        chunk: int = DEFAULT_CHUNK,
    ) -> int:
        """Add and delete elements (see the module's semantics); with ``flush`` the set
        holds exactly ``add`` afterwards, changed in one transaction. Returns the number of
        transactions. One-line KernelError naming the set if the kernel refuses."""
        for spans in (add, delete):
            if spans is not None and spans.width != width:
                raise ValueError(f"spans of {spans.width} bits for a set of {width}")
        info = self.info(set_name)
        if info.key_len != width // 8 or info.interval != interval or info.flags & NFT_SET_MAP:
            shape = (
                f"{'an interval' if info.interval else 'a hash'} set of {info.key_len * 8}-bit keys"
            )
            raise KernelError(f"{self._where(set_name)}: the kernel holds {shape}")
        encoder = Encoder(width, interval, tag)
        if flush:
            whole = (add, 0, len(add)) if add is not None and len(add) else None
            self._send_batch(set_name, encoder, add=whole, delete=None, flush=True)
            return 1
        done = 0
        present: list[Spans] | None = None
        for (ia, ja), (idel, jd) in batch_ranges(add, delete, chunk):
            adds = (add, ia, ja) if add is not None and ja > ia else None
            dels = (delete, idel, jd) if delete is not None and jd > idel else None
            if adds is None and dels is None:
                continue
            try:
                self._send_batch(set_name, encoder, add=adds, delete=dels)
            except _AbsentDelete:
                # an element to delete is not there (a kernel without DESTROYSETELEM, or
                # an interval that is not one of the set's elements): delete only those
                # that are, read once
                assert dels is not None and delete is not None
                if present is None:
                    present = list(self.dump(set_name, width=width, interval=interval).values())
                wanted = part_of(delete, idel, jd)
                there = (
                    union_of([exact_elements(wanted, spans) for spans in present], width)
                    if interval
                    else intersection(wanted, union_of(present, width))
                )
                kept = (there, 0, len(there)) if len(there) else None
                if kept is None and adds is None:
                    continue
                self._send_batch(set_name, encoder, add=adds, delete=kept, plain_delete=True)
            done += 1
        return done

    def _delete_kind(self, interval: bool) -> int:
        if interval:
            return NFT_MSG_DELSETELEM  # a partial interval must not remove half an element
        if self._destroy is None:
            self._destroy = has_destroy(os.uname().release) or self._probe_destroy()
        return NFT_MSG_DESTROYSETELEM if self._destroy else NFT_MSG_DELSETELEM

    def _probe_destroy(self) -> bool:
        """Does the kernel know DESTROYSETELEM? (ENOENT for a set that does not exist: it
        does; EINVAL or EOPNOTSUPP: it does not.) Nothing changes either way."""
        seq = self._next_seq(3)
        table_attr, set_attr = names(self.table, "\x01appliance-probe")
        probe = message(
            NFT_MSG_DESTROYSETELEM,
            NLM_F_REQUEST | NLM_F_ACK,
            seq + 1,
            self._family,
            table_attr + set_attr,
            b"",
        )
        codes = self._transact(
            [batch_edge(NFNL_MSG_BATCH_BEGIN, seq), probe, batch_edge(NFNL_MSG_BATCH_END, seq + 2)],
            seq + 1,
            "\x01appliance-probe",
        )
        return not any(code in (errno.EINVAL, errno.EOPNOTSUPP) for _s, code in codes)

    def _send_batch(
        self,
        set_name: str,
        encoder: Encoder,
        *,
        add: tuple[Spans, int, int] | None,
        delete: tuple[Spans, int, int] | None,
        flush: bool = False,
        plain_delete: bool = False,
    ) -> None:
        kind = (
            NFT_MSG_DELSETELEM
            if plain_delete or delete is None
            else self._delete_kind(encoder.interval)
        )
        begin = self._next_seq(1)
        batch = build_batch(
            family=self._family,
            table=self.table,
            set_name=set_name,
            seq=begin + 1,
            encoder=encoder,
            add=add,
            delete=delete,
            delete_kind=kind,
            flush=flush,
        )
        if not batch.messages:
            self._seq = begin
            return
        last = begin + len(batch.messages)
        self._next_seq(len(batch.messages) + 1)
        parts = [
            batch_edge(NFNL_MSG_BATCH_BEGIN, begin),
            *batch.messages,
            batch_edge(NFNL_MSG_BATCH_END, last + 1),
        ]
        codes = self._transact(parts, last, set_name)
        failed = [(seq, code) for seq, code in codes if code]
        if not failed:
            return
        if not plain_delete and all(
            code == errno.ENOENT and seq in batch.delete_seqs for seq, code in failed
        ):
            raise _AbsentDelete
        raise SetElementsError(self._refused(set_name, failed[0][1]), failed[0][1])

    def _transact(self, parts: list[bytes], last_seq: int, set_name: str) -> list[tuple[int, int]]:
        """Send one batch in one sendmsg (the kernel takes a batch from one datagram) and
        collect the answers: (seq, errno) for every error or ACK, up to the last
        message's."""
        sock = self._socket()
        size = sum(len(part) for part in parts)
        try:
            if size + 4096 > self._sndbuf:
                wanted = max(size + 4096, 1 << 20)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, wanted)
                except OSError:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, wanted)
                self._sndbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) - 32
            sent = sock.sendmsg(parts)
            if sent != size:
                raise OSError(errno.EMSGSIZE, f"sent {sent} of {size} bytes")
            codes: list[tuple[int, int]] = []
            first_seq = NLMSGHDR.unpack_from(parts[0])[3]
            while True:
                data = sock.recv(RECV_BUFFER)
                finished = False
                for kind, seq, body in iter_messages(data):
                    if kind != NLMSG_ERROR or not first_seq <= seq <= last_seq + 1:
                        continue
                    code = ack_error(body)
                    codes.append((seq, code))
                    if seq == last_seq or code:
                        finished = True  # the rest, if any, is queued already
                if finished:
                    break
            # the kernel answers a batch before sendmsg returns: anything else is queued
            while select.select([sock], [], [], 0)[0]:
                for kind, seq, body in iter_messages(sock.recv(RECV_BUFFER)):
                    if kind == NLMSG_ERROR and first_seq <= seq <= last_seq + 1:
                        codes.append((seq, ack_error(body)))
            return codes
        except OSError as exc:
            self.close()
            raise KernelError(f"{self._where(set_name)}: {exc.strerror or exc}") from None


class _AbsentDelete(Exception):
    """A batch failed only because elements to delete were absent."""
