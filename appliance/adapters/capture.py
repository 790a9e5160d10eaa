"""Packet capture for live inspection: NFLOG over netlink, AF_PACKET with a kernel filter.

Both readers own one non-blocking socket (``fileno()`` for ``loop.add_reader``) and give,
per ``read()``, the packets that are waiting, at most ``limit`` of them: tuples of
(timestamp, bytes, linktype). They never block. Drops the kernel reports are counted in
``kernel_drops``.

- :class:`NflogReader`: binds an NFLOG group (the ``log group G`` of the compiled table),
  copy mode "packet"; a packet's payload starts at the network header (linktype raw IP).
  Losses show as gaps in the per-group sequence numbers and as ENOBUFS.
- :class:`NfqueueReader`: binds NFQUEUE numbers (the ``queue`` statement of inline mode),
  copy mode "packet", fail-open (the kernel accepts what does not fit in its queue).
  Every packet read is held by the kernel until :meth:`NfqueueReader.verdict` is called
  for it; ``read_inline`` returns each packet with its queue number and packet id.
- :class:`PacketReader`: AF_PACKET on one interface, with a classic BPF filter attached
  before the socket is bound, so it never sees a frame the filter refuses (linktype
  Ethernet). Losses come from PACKET_STATISTICS.

The NFLOG and NFQUEUE encoding and decoding are pure functions below (netlink framing in
:mod:`appliance.adapters.netlink`), tested without root.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import time
from dataclasses import dataclass

from appliance.adapters.netlink import (
    NLM_F_ACK,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    NLMSGHDR,
    ack_error,
    iter_attrs,
    iter_messages,
    nlattr,
    nlmsg,
)
from appliance.errors import ApplianceError

Packet = tuple[float, bytes, int]
InlinePacket = tuple[float, bytes, int, int, int]  # ..., queue number, packet id

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # the packet starts with an IPv4 or IPv6 header

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_NLBUFSIZ = 3
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULA_CFG_FLAGS = 6
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_UNBIND = 2
NFULNL_COPY_PACKET = 2
NFULNL_CFG_F_SEQ = 0x0001

NFULA_PACKET_HDR = 1
NFULA_TIMESTAMP = 3
NFULA_IFINDEX_INDEV = 4
NFULA_IFINDEX_OUTDEV = 5
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
NFULA_SEQ = 12
NFULA_HWTYPE = 15
NFULA_HWHEADER = 16


_NFGENMSG = struct.Struct("!BBH")  # family, version, res_id (the group, big-endian)

SOL_PACKET = 263
PACKET_STATISTICS = 6
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4

RECV_BUFFER = 8 << 20  # bytes of socket receive buffer asked for (SO_RCVBUFFORCE as root)
NLBUFSIZ = 128 << 10  # the kernel's batch buffer for one NFLOG group


class CaptureError(ApplianceError):
    """A capture socket could not be opened or bound (one line)."""


# ---- NFLOG encoding (pure) --------------------------------------------------------------


def nflog_config(group: int, seq: int, attrs: bytes, family: int = 0) -> bytes:
    """One NFULNL_MSG_CONFIG request for ``group`` (with ACK requested)."""
    body = _NFGENMSG.pack(family, 0, group) + attrs
    kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    flags = NLM_F_REQUEST | NLM_F_ACK
    return nlmsg(kind, flags, seq, body)


def nflog_bind(group: int, seq: int) -> bytes:
    return nflog_config(group, seq, nlattr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])))


def nflog_unbind(group: int, seq: int) -> bytes:
    return nflog_config(group, seq, nlattr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_UNBIND])))


def nflog_mode(group: int, seq: int, copy_range: int = 0xFFFF) -> bytes:
    """Copy whole packets (up to ``copy_range``; the rule's snaplen applies first), number
    them per group (gaps show losses), hand each one over at once."""
    attrs = nlattr(NFULA_CFG_MODE, struct.pack("!IBx", copy_range, NFULNL_COPY_PACKET))
    attrs += nlattr(NFULA_CFG_FLAGS, struct.pack("!H", NFULNL_CFG_F_SEQ))
    attrs += nlattr(NFULA_CFG_QTHRESH, struct.pack("!I", 1))
    attrs += nlattr(NFULA_CFG_NLBUFSIZ, struct.pack("!I", NLBUFSIZ))
    return nflog_config(group, seq, attrs)


@dataclass
class NflogPacket:
    group: int
    payload: bytes
    timestamp: float | None = None
    seq: int | None = None
    indev: int = 0
    outdev: int = 0
    prefix: str = ""
    hw_protocol: int = 0
    hwtype: int = 0
    hwheader: bytes = b""


def parse_nflog_packet(body: bytes) -> NflogPacket | None:
    """The packet of one NFULNL_MSG_PACKET body (after the netlink header); None without a
    payload."""
    if len(body) < _NFGENMSG.size:
        return None
    _family, _version, group = _NFGENMSG.unpack_from(body)
    packet = NflogPacket(group, b"")
    found = False
    for kind, value in iter_attrs(body, _NFGENMSG.size):
        if kind == NFULA_PAYLOAD:
            packet.payload = value
            found = True
        elif kind == NFULA_TIMESTAMP and len(value) >= 16:
            sec, usec = struct.unpack_from("!QQ", value)
            packet.timestamp = sec + usec / 1e6
        elif kind == NFULA_SEQ and len(value) >= 4:
            packet.seq = struct.unpack_from("!I", value)[0]
        elif kind == NFULA_IFINDEX_INDEV and len(value) >= 4:
            packet.indev = struct.unpack_from("!I", value)[0]
        elif kind == NFULA_IFINDEX_OUTDEV and len(value) >= 4:
            packet.outdev = struct.unpack_from("!I", value)[0]
        elif kind == NFULA_PREFIX:
            packet.prefix = value.rstrip(b"\0").decode("utf-8", "replace")
        elif kind == NFULA_PACKET_HDR and len(value) >= 2:
            packet.hw_protocol = struct.unpack_from("!H", value)[0]
        elif kind == NFULA_HWTYPE and len(value) >= 2:
            packet.hwtype = struct.unpack_from("!H", value)[0]
        elif kind == NFULA_HWHEADER:
            packet.hwheader = value
    return packet if found else None


# ---- NFLOG ------------------------------------------------------------------------------


def _big_buffer(sock: socket.socket, size: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, 33, size)  # SO_RCVBUFFORCE (root: past rmem_max)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


class NflogReader:
    """One NFLOG group over a NETLINK_NETFILTER socket."""

    linktype = LINKTYPE_RAW

    def __init__(self, group: int, recv_buffer: int = RECV_BUFFER) -> None:
        self.group = group
        self.kernel_drops = 0
        self.received = 0
        self._next_seq: int | None = None
        self._seq = 0
        try:
            self.sock = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
            )
        except OSError as exc:
            raise CaptureError(f"NFLOG: cannot open a netfilter netlink socket: {exc}") from None
        try:
            self.sock.bind((0, 0))
            _big_buffer(self.sock, recv_buffer)
            self.sock.settimeout(2.0)
            self._request(nflog_bind(group, self._next()))
            self._request(nflog_mode(group, self._next()))
            self.sock.setblocking(False)
        except OSError as exc:
            self.sock.close()
            raise CaptureError(f"NFLOG group {group}: cannot bind: {_bind_reason(exc)}") from None
        except BaseException:
            self.sock.close()
            raise

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _request(self, message: bytes) -> None:
        """Send a config request and wait for its ACK (the socket is still blocking)."""
        _request(self.sock, message)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, limit: int = 256) -> list[Packet]:
        packets: list[Packet] = []
        recv = self.sock.recv
        for _ in range(limit):
            try:
                data = recv(1 << 17)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the socket overflowed: the seq gap counts it
                    continue
                raise
            now = time.time()
            for kind, _seq, body in iter_messages(data):
                if kind != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
                    continue
                packet = parse_nflog_packet(body)
                if packet is None:
                    continue
                self._count(packet.seq)
                packets.append((packet.timestamp or now, packet.payload, LINKTYPE_RAW))
        self.received += len(packets)
        return packets

    def _count(self, seq: int | None) -> None:
        if seq is None:
            return
        expected = self._next_seq
        if expected is not None and seq != expected:
            gap = (seq - expected) & 0xFFFFFFFF
            if gap < 1 << 31:
                self.kernel_drops += gap
        self._next_seq = (seq + 1) & 0xFFFFFFFF

    def close(self) -> None:
        if self.sock.fileno() < 0:
            return
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(0.5)
            self.sock.send(nflog_unbind(self.group, self._next()))
        except OSError:
            pass
        self.sock.close()


def _bind_reason(exc: OSError) -> str:
    if exc.errno in (errno.EPERM, errno.EBUSY):
        return "another process reads it (or no CAP_NET_ADMIN)"
    return exc.strerror or str(exc)


def _strerror(err: int) -> str:
    import os

    return os.strerror(err)


# ---- NFQUEUE ----------------------------------------------------------------------------

NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_CFG_CMD_UNBIND = 2
NFQNL_COPY_PACKET = 2
NFQA_CFG_F_FAIL_OPEN = 0x0001
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_TIMESTAMP = 4
NFQA_PAYLOAD = 10
NF_DROP = 0
NF_ACCEPT = 1
QUEUE_MAXLEN = 4096  # packets the kernel holds per queue before failing open


def nfqueue_message(kind: int, queue_num: int, attrs: bytes, seq: int, ack: bool) -> bytes:
    body = _NFGENMSG.pack(0, 0, queue_num) + attrs
    flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
    msg_type = (NFNL_SUBSYS_QUEUE << 8) | kind
    return nlmsg(msg_type, flags, seq, body)


def nfqueue_bind(queue_num: int, seq: int) -> bytes:
    cmd = struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)
    return nfqueue_message(NFQNL_MSG_CONFIG, queue_num, nlattr(NFQA_CFG_CMD, cmd), seq, True)


def nfqueue_unbind(queue_num: int, seq: int) -> bytes:
    cmd = struct.pack("!BxH", NFQNL_CFG_CMD_UNBIND, 0)
    return nfqueue_message(NFQNL_MSG_CONFIG, queue_num, nlattr(NFQA_CFG_CMD, cmd), seq, True)


def nfqueue_params(queue_num: int, seq: int, copy_range: int = 0xFFFF) -> bytes:
    """Copy whole packets, a bounded kernel queue, and fail open when it is full."""
    attrs = nlattr(NFQA_CFG_PARAMS, struct.pack("!IBx", copy_range, NFQNL_COPY_PACKET))
    attrs += nlattr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN))
    attrs += nlattr(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN))
    attrs += nlattr(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN))
    return nfqueue_message(NFQNL_MSG_CONFIG, queue_num, attrs, seq, True)


def nfqueue_verdict(queue_num: int, packet_id: int, verdict: int) -> bytes:
    attr = nlattr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))
    return nfqueue_message(NFQNL_MSG_VERDICT, queue_num, attr, 0, False)


@dataclass
class QueuedPacket:
    queue_num: int
    packet_id: int
    payload: bytes
    timestamp: float | None = None


def parse_nfqueue_packet(body: bytes) -> QueuedPacket | None:
    """The packet of one NFQNL_MSG_PACKET body; None without a header or payload."""
    if len(body) < _NFGENMSG.size:
        return None
    _family, _version, queue_num = _NFGENMSG.unpack_from(body)
    packet_id: int | None = None
    payload: bytes | None = None
    stamp: float | None = None
    for kind, value in iter_attrs(body, _NFGENMSG.size):
        if kind == NFQA_PACKET_HDR and len(value) >= 4:
            packet_id = struct.unpack_from("!I", value)[0]
        elif kind == NFQA_PAYLOAD:
            payload = value
        elif kind == NFQA_TIMESTAMP and len(value) >= 16:
            sec, usec = struct.unpack_from("!QQ", value)
            stamp = sec + usec / 1e6
    if packet_id is None or payload is None:
        return None
    return QueuedPacket(queue_num, packet_id, payload, stamp)


class NfqueueReader:
    """NFQUEUE numbers ``first``..``last`` on one NETLINK_NETFILTER socket (inline mode).

    The kernel keeps each packet until its verdict; a packet that finds the kernel's queue
    full is accepted (fail open), and with the rule's ``bypass`` packets pass while no
    reader is bound.
    """

    linktype = LINKTYPE_RAW

    def __init__(self, first: int, last: int, recv_buffer: int = RECV_BUFFER) -> None:
        self.queues = tuple(range(first, last + 1))
        self.kernel_drops = 0
        self.verdict_errors = 0
        self.received = 0
        self._seq = 0
        try:
            self.sock = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
            )
        except OSError as exc:
            raise CaptureError(f"NFQUEUE: cannot open a netfilter netlink socket: {exc}") from None
        bound: list[int] = []
        try:
            self.sock.bind((0, 0))
            _big_buffer(self.sock, recv_buffer)
            self.sock.settimeout(2.0)
            for queue_num in self.queues:
                self._seq += 1
                _request(self.sock, nfqueue_bind(queue_num, self._seq))
                bound.append(queue_num)
                self._seq += 1
                _request(self.sock, nfqueue_params(queue_num, self._seq))
            self.sock.setblocking(False)
        except OSError as exc:
            self._unbind(bound)
            self.sock.close()
            raise CaptureError(
                f"NFQUEUE {first}-{last}: cannot bind: {_bind_reason(exc)}"
            ) from None

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_inline(self, limit: int = 256) -> list[InlinePacket]:
        packets: list[InlinePacket] = []
        recv = self.sock.recv
        kind = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
        for _ in range(limit):
            try:
                data = recv(1 << 17)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # messages lost; their packets fail open
                    self.kernel_drops += 1
                    continue
                raise
            now = time.time()
            for msg_kind, _seq, body in iter_messages(data):
                if msg_kind != kind:
                    continue
                packet = parse_nfqueue_packet(body)
                if packet is not None:
                    packets.append(
                        (
                            packet.timestamp or now,
                            packet.payload,
                            LINKTYPE_RAW,
                            packet.queue_num,
                            packet.packet_id,
                        )
                    )
        self.received += len(packets)
        return packets

    def read(self, limit: int = 256) -> list[Packet]:
        """Packets without their verdict handles: every one is accepted at once."""
        packets = self.read_inline(limit)
        for packet in packets:
            self.verdict(packet[3], packet[4], True)
        return [(ts, data, linktype) for ts, data, linktype, _q, _i in packets]

    def verdict(self, queue_num: int, packet_id: int, accept: bool) -> bool:
        """Release a packet. Safe from any thread: one datagram per verdict, handled by the
        kernel within the send. False if it could not be sent (the socket is closed: the
        kernel drops what it still held when the queue was unbound)."""
        message = nfqueue_verdict(queue_num, packet_id, NF_ACCEPT if accept else NF_DROP)
        try:
            self.sock.send(message)
        except OSError:
            self.verdict_errors += 1
            return False
        return True

    def _unbind(self, queues: list[int]) -> None:
        for queue_num in queues:
            self._seq += 1
            with contextlib.suppress(OSError):
                self.sock.send(nfqueue_unbind(queue_num, self._seq))

    def close(self) -> None:
        if self.sock.fileno() < 0:
            return
        self._unbind(list(self.queues))
        self.sock.close()


def _request(sock: socket.socket, message: bytes) -> None:
    """Send a config request and wait for its ACK (on a blocking socket)."""
    seq = NLMSGHDR.unpack_from(message)[3]
    sock.send(message)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        data = sock.recv(65536)
        for kind, got, body in iter_messages(data):
            if kind == NLMSG_ERROR and got == seq:
                err = ack_error(body)
                if err:
                    raise OSError(err, _strerror(err))
                return
    raise OSError(errno.ETIMEDOUT, "no answer from the kernel")


# ---- AF_PACKET --------------------------------------------------------------------------

BPF_LD_H_ABS = 0x28
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06

# EtherTypes a mirror reader keeps: IPv4, IPv6, 802.1Q and 802.1ad (QinQ) tagged frames.
MIRROR_ETHERTYPES = (0x0800, 0x86DD, 0x8100, 0x88A8)


def bpf_ethertype_filter(ethertypes: tuple[int, ...], snaplen: int = 0xFFFF) -> bytes:
    """A classic BPF program: keep a frame (up to ``snaplen`` bytes) whose EtherType is one
    of ``ethertypes``, drop anything else. Returns the ``sock_filter`` array."""
    insns: list[tuple[int, int, int, int]] = [(BPF_LD_H_ABS, 0, 0, 12)]
    count = len(ethertypes)
    for i, ethertype in enumerate(ethertypes):
        # true: jump to the accept at the end; false: fall through to the next test
        insns.append((BPF_JEQ_K, count - i, 0, ethertype))
    insns.append((BPF_RET_K, 0, 0, 0))
    insns.append((BPF_RET_K, 0, 0, snaplen))
    return b"".join(struct.pack("=HBBI", *insn) for insn in insns)


def attach_filter(sock: socket.socket, program: bytes) -> None:
    """SO_ATTACH_FILTER with a ``struct sock_fprog`` (the program's buffer stays alive for
    the call; the kernel copies it)."""
    import ctypes

    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class PacketReader:
    """AF_PACKET on one interface with a kernel BPF filter (IP, IPv6 and VLAN frames)."""

    linktype = LINKTYPE_ETHERNET

    def __init__(
        self,
        ifname: str,
        ethertypes: tuple[int, ...] = MIRROR_ETHERTYPES,
        recv_buffer: int = RECV_BUFFER,
    ) -> None:
        self.ifname = ifname
        self.kernel_drops = 0
        self.received = 0
        try:
            index = socket.if_nametoindex(ifname)
        except OSError:
            raise CaptureError(f"mirror: no interface {ifname!r}") from None
        try:
            # protocol 0: the socket receives nothing until it is bound, after the filter
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        except OSError as exc:
            raise CaptureError(f"mirror {ifname}: cannot open AF_PACKET: {exc.strerror}") from None
        try:
            attach_filter(self.sock, bpf_ethertype_filter(ethertypes))
            _big_buffer(self.sock, recv_buffer)
            self.sock.bind((ifname, ETH_P_ALL, 0, 0, b""))
            assert index > 0
            self.sock.setblocking(False)
        except OSError as exc:
            self.sock.close()
            raise CaptureError(f"mirror {ifname}: cannot capture: {exc.strerror}") from None

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, limit: int = 256) -> list[Packet]:
        packets: list[Packet] = []
        recv = self.sock.recv
        for _ in range(limit):
            try:
                data = recv(1 << 16)
            except BlockingIOError:
                break
            except OSError:  # the link went down: reported once, the socket stays usable
                break
            packets.append((time.time(), data, LINKTYPE_ETHERNET))
        self.received += len(packets)
        return packets

    def poll_drops(self) -> int:
        """Frames the kernel dropped for this socket since the last call (also counted in
        ``kernel_drops``)."""
        try:
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except OSError:
            return 0
        _packets, drops = struct.unpack("=II", raw)
        self.kernel_drops += drops
        return int(drops)

    def close(self) -> None:
        self.sock.close()
