"""Connection tracking over ctnetlink (NETLINK_NETFILTER), with the standard library: list
the entries, and delete those of given addresses.

A block in ``autoblock_v4``/``_v6`` drops a source's packets in the forward hook; a flow
already offloaded to the flowtable no longer passes that hook. Deleting the flow's
conntrack entry takes it off the flowtable (the kernel drops a flow whose entry is gone),
so its next packet goes through the forward chain again, and the block.

The message encoding and decoding are pure; :class:`Conntrack` is the socket.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from appliance.adapters.netlink import (
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    ack_error,
    dump_answers,
    iter_attrs,
    iter_messages,
    nlattr,
    nlmsg,
)
from appliance.errors import KernelError

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
NFGENMSG = struct.Struct("=BBH")  # family, version, resource id (big endian)
NLA_F_NESTED = 0x8000

CTA_TUPLE_ORIG = 1
CTA_TUPLE_REPLY = 2
CTA_STATUS = 3
CTA_ZONE = 18
CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_IP_V4_SRC = 1
CTA_IP_V4_DST = 2
CTA_IP_V6_SRC = 3
CTA_IP_V6_DST = 4
CTA_PROTO_NUM = 1
CTA_PROTO_SRC_PORT = 2
CTA_PROTO_DST_PORT = 3

IPS_OFFLOAD = 1 << 14  # the flow is in a flowtable (conntrack -L: [OFFLOAD])

RECV_BUFFER = 1 << 20
TIMEOUT = 5.0  # seconds for one answer of the kernel


def ct_type(message: int) -> int:
    return (NFNL_SUBSYS_CTNETLINK << 8) | message


@dataclass(frozen=True)
class Tuple:
    """One direction of a connection."""

    src: str
    dst: str
    proto: int
    sport: int | None = None
    dport: int | None = None


@dataclass(frozen=True)
class Entry:
    """One conntrack entry: its family, both directions, status bits, and the raw
    attributes that name it again in a delete."""

    family: int
    orig: Tuple
    reply: Tuple | None
    status: int
    orig_raw: bytes  # the CTA_TUPLE_ORIG payload, as the kernel gave it
    zone_raw: bytes | None = None

    @property
    def offloaded(self) -> bool:
        return bool(self.status & IPS_OFFLOAD)


# --- encoding and decoding (pure) -----------------------------------------------------


def encode_dump(seq: int, family: int = socket.AF_UNSPEC) -> bytes:
    """Request every entry of ``family`` (AF_UNSPEC: all)."""
    body = NFGENMSG.pack(family, 0, 0)
    return nlmsg(ct_type(IPCTNL_MSG_CT_GET), NLM_F_REQUEST | NLM_F_DUMP, seq, body)


def encode_delete(entry: Entry, seq: int) -> bytes:
    """Delete ``entry``, named by its original tuple (and zone)."""
    body = NFGENMSG.pack(entry.family, 0, 0)
    body += nlattr(CTA_TUPLE_ORIG | NLA_F_NESTED, entry.orig_raw)
    if entry.zone_raw is not None:
        body += nlattr(CTA_ZONE, entry.zone_raw)
    return nlmsg(ct_type(IPCTNL_MSG_CT_DELETE), NLM_F_REQUEST | NLM_F_ACK, seq, body)


def _address(payload: bytes) -> str:
    return str(ipaddress.ip_address(payload))


def decode_tuple(data: bytes) -> Tuple:
    src = dst = ""
    proto = 0
    sport = dport = None
    for kind, payload in iter_attrs(data):
        if kind == CTA_TUPLE_IP:
            for ip_kind, value in iter_attrs(payload):
                if ip_kind in (CTA_IP_V4_SRC, CTA_IP_V6_SRC):
                    src = _address(value)
                elif ip_kind in (CTA_IP_V4_DST, CTA_IP_V6_DST):
                    dst = _address(value)
        elif kind == CTA_TUPLE_PROTO:
            for proto_kind, value in iter_attrs(payload):
                if proto_kind == CTA_PROTO_NUM and value:
                    proto = value[0]
                elif proto_kind == CTA_PROTO_SRC_PORT and len(value) >= 2:
                    sport = struct.unpack_from("!H", value)[0]
                elif proto_kind == CTA_PROTO_DST_PORT and len(value) >= 2:
                    dport = struct.unpack_from("!H", value)[0]
    return Tuple(src, dst, proto, sport, dport)


def decode_entry(body: bytes) -> Entry | None:
    """An IPCTNL_MSG_CT_NEW body (nfgenmsg and attributes); None without an original tuple."""
    if len(body) < NFGENMSG.size:
        return None
    family = body[0]
    orig_raw: bytes | None = None
    reply: Tuple | None = None
    status = 0
    zone_raw = None
    for kind, payload in iter_attrs(body, NFGENMSG.size):
        if kind == CTA_TUPLE_ORIG:
            orig_raw = payload
        elif kind == CTA_TUPLE_REPLY:
            reply = decode_tuple(payload)
        elif kind == CTA_STATUS and len(payload) >= 4:
            status = struct.unpack_from("!I", payload)[0]
        elif kind == CTA_ZONE:
            zone_raw = payload
    if orig_raw is None:
        return None
    return Entry(family, decode_tuple(orig_raw), reply, status, orig_raw, zone_raw)


def sends_from(entry: Entry, addresses: frozenset[str]) -> bool:
    """Whether one of ``addresses`` sends in ``entry``'s flow: the original source, or
    the reply's (the peer it answers for, after any NAT)."""
    if entry.orig.src in addresses:
        return True
    return entry.reply is not None and entry.reply.src in addresses


def canonical_addresses(texts: Iterable[str]) -> frozenset[str]:
    """Addresses as the decoder writes them; what is no single address is left out."""
    out = set()
    for text in texts:
        try:
            out.add(str(ipaddress.ip_address(text.strip())))
        except ValueError:
            try:
                net = ipaddress.ip_network(text.strip(), strict=False)
            except ValueError:
                continue
            if net.num_addresses == 1:
                out.add(str(net.network_address))
    return frozenset(out)


# --- the socket ------------------------------------------------------------------------


class Conntrack:
    """A ctnetlink socket in this process's network namespace (needs CAP_NET_ADMIN)."""

    def __init__(self) -> None:
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        except OSError as exc:
            raise KernelError(f"conntrack: cannot open ctnetlink: {exc.strerror or exc}") from None
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
        self.sock.settimeout(TIMEOUT)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Conntrack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def entries(self, family: int = socket.AF_UNSPEC) -> Iterator[Entry]:
        """Every entry, decoded as the dump streams in."""
        self.seq += 1
        seq = self.seq
        try:
            for _kind, body in dump_answers(self.sock, encode_dump(seq, family), seq, RECV_BUFFER):
                entry = decode_entry(body)
                if entry is not None:
                    yield entry
        except TimeoutError:
            raise
        except OSError as exc:
            raise KernelError(f"conntrack: listing refused: {exc.strerror or exc}") from None

    def delete(self, entry: Entry) -> bool:
        """Delete ``entry``; False when it was already gone."""
        self.seq += 1
        seq = self.seq
        self.sock.send(encode_delete(entry, seq))
        while True:
            for kind, rseq, body in iter_messages(self.sock.recv(RECV_BUFFER)):
                if kind == NLMSG_ERROR and rseq == seq:
                    err = ack_error(body)
                    if err == 0:
                        return True
                    if err == 2:  # ENOENT: it ended meanwhile
                        return False
                    raise KernelError(f"conntrack: delete refused: errno {err}")


def flush_sources(addresses: Iterable[str]) -> int:
    """Delete the conntrack entries of every flow one of ``addresses`` sends in (offloaded
    or not): one listing, then one delete per entry. The number deleted."""
    wanted = canonical_addresses(addresses)
    if not wanted:
        return 0
    with Conntrack() as ct:
        doomed = [entry for entry in ct.entries() if sends_from(entry, wanted)]
        return sum(1 for entry in doomed if ct.delete(entry))


def end_flows(addresses: Iterable[str], log: logging.Logger) -> int:
    """:func:`flush_sources`, for a block already in place: a failure is logged, never
    raised (the block holds; only an offloaded flow of the source may outlive it)."""
    try:
        return flush_sources(addresses)
    except (KernelError, OSError) as exc:
        log.warning("conntrack: the flows of blocked sources not ended: %s", exc)
        return 0
