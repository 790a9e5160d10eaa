"""Set elements over nf_tables netlink (NETLINK_NETFILTER), straight from packed spans.

The elements of an existing set travel between :class:`~appliance.reconcile.intervals.Spans`
and the kernel without libnftables, JSON or an object per element:

- :meth:`NfSets.apply` encodes NFT_MSG_NEWSETELEM / NFT_MSG_DELSETELEM messages from the
  spans' word arrays (whole arrays at a time, by slice assignment) and sends them in
  nfnetlink batches, each batch one kernel transaction. The bytes are those ``nft`` 1.0.6
  sends for the same elements (without its set id attribute): a hash set gets one element
  per value; an interval set (rbtree) a start element and an end element ``last + 1``
  flagged NFT_SET_ELEM_INTERVAL_END, except the span that reaches the top of the range,
  sent as a start flagged "interval open" in its user data. A tag is the elements' comment
  (``nft list`` shows ``comment "TAG"``).
- :meth:`NfSets.dump` reads the elements back with one NFT_MSG_GETSETELEM dump, parsed
  from a reused receive buffer as it arrives, into packed spans per comment tag.

Semantics, as nft's ``add element`` / ``destroy element``:

- adding an element that is already there (same key, same interval) is no error and leaves
  it as it is (its comment included: re-tag by a delete and an add);
- deleting an element that is not there is no error. For a hash set every value of a
  ``delete`` span is an element; for an interval set every span of ``delete`` must be one
  of the set's elements exactly (``[a, b]`` does not cut a piece out of an element
  ``[a, c]``: it is skipped as absent); ``intervals.exact_delta`` gives that delta between
  two interval sets;
- without ``flush``, the change goes in batches of at most ``chunk`` spans (for a hash set,
  a span is one element per value), each its own transaction; a batch holds the deletes
  before the adds of one range of values, and no element deleted in one batch overlaps one
  added in another, so a replaced range is never missing between two transactions;
- with ``flush``, the set is emptied and refilled with ``add`` in one transaction: no
  packet sees it empty or half filled;
- elements with a timeout (run-time elements) are left out of :meth:`dump` and
  :meth:`count`: they are managed through libnftables.
"""

from __future__ import annotations

import ctypes
import errno
import heapq
import os
import select
import socket
import struct
import sys
import threading
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from appliance.adapters.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
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
from appliance.errors import KernelError
from appliance.reconcile.intervals import MASK64, Spans

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
CLONE_NEWNET = 0x40000000

NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 16
NFNL_MSG_BATCH_END = 17
NFT_MSG_GETSET = 10
NFT_MSG_NEWSET = 9
NFT_MSG_NEWSETELEM = 12
NFT_MSG_GETSETELEM = 13
NFT_MSG_DELSETELEM = 14
NFT_MSG_NEWGEN, NFT_MSG_GETGEN, NFTA_GEN_ID = 15, 16, 1
NFT_MSG_DESTROYSETELEM = 30  # Linux 6.3 and later: a delete that ignores absent elements

NFTA_SET_TABLE, NFTA_SET_NAME, NFTA_SET_FLAGS, NFTA_SET_KEY_LEN = 1, 2, 3, 5
NFTA_SET_HANDLE = 16
NFT_SET_INTERVAL, NFT_SET_MAP, NFT_SET_TIMEOUT = 0x4, 0x8, 0x10
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_FLAGS = 1, 3
NFTA_SET_ELEM_TIMEOUT, NFTA_SET_ELEM_EXPIRATION, NFTA_SET_ELEM_USERDATA = 4, 5, 6
NFTA_DATA_VALUE = 1
NFT_SET_ELEM_INTERVAL_END = 0x1
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
UDATA_COMMENT, UDATA_FLAGS = 0, 1  # libnftnl's element user data TLVs
UDATA_INTERVAL_OPEN = struct.pack("=BBI", UDATA_FLAGS, 4, 1)

FAMILIES = {"ip": 2, "ip6": 10, "inet": 1, "arp": 3, "bridge": 7, "netdev": 5}
MAX_NEST = 0xFFFF - 4  # the elements of one message: one attribute, 16-bit length
DEFAULT_CHUNK = 65536
RECV_BUFFER = 1 << 20

_HDR = struct.Struct("=HH")
_LITTLE = sys.byteorder == "little"


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


# ---- encoding (pure) ------------------------------------------------------------------


def comment_udata(tag: str) -> bytes:
    """The user data TLV nft writes for ``comment "TAG"`` (NUL-terminated, at most 255)."""
    text = tag.encode() + b"\0"
    if len(text) > 255:
        raise ValueError(f"comment {tag!r} is longer than 254 bytes")
    return bytes((UDATA_COMMENT, len(text))) + text


def _element(klen: int, *, end: bool = False, udata: bytes = b"") -> tuple[bytes, int]:
    """One element with a zero key: (bytes, offset of the key in them)."""
    key = nlattr(NFTA_SET_ELEM_KEY | NLA_F_NESTED, nlattr(NFTA_DATA_VALUE, bytes(klen)))
    flags = nlattr(NFTA_SET_ELEM_FLAGS, struct.pack(">I", NFT_SET_ELEM_INTERVAL_END))
    body = (flags if end else b"") + key + (nlattr(NFTA_SET_ELEM_USERDATA, udata) if udata else b"")
    return nlattr(NLA_F_NESTED, body), (20 if end else 12)


def _be_keys(width: int, lo: array[int], hi: array[int] | None) -> bytes:
    """The values as big-endian keys of ``width`` bits, concatenated."""
    if width == 128:
        assert hi is not None
        n = len(lo)
        his, los = array("Q", hi), array("Q", lo)
        if _LITTLE:
            his.byteswap()
            los.byteswap()
        hb, lb = his.tobytes(), los.tobytes()
        out = bytearray(16 * n)
        for j in range(8):
            out[j::16] = hb[j::8]
            out[8 + j :: 16] = lb[j::8]
        return bytes(out)
    words = array("I" if width == 32 else "H", lo)
    if _LITTLE:
        words.byteswap()
    return words.tobytes()


def _plus_one(
    width: int, lo: array[int], hi: array[int] | None
) -> tuple[array[int], array[int] | None]:
    """``value + 1`` of every value (none is the top of the range)."""
    if hi is None:
        return array("Q", (v + 1 for v in lo)), None
    new_lo = array("Q", ((v + 1) & MASK64 for v in lo))
    new_hi = array("Q", (h + (v == MASK64) for h, v in zip(hi, lo, strict=True)))
    return new_lo, new_hi


def _fill(template: bytes, n: int, keys: list[tuple[int, bytes]], klen: int) -> bytearray:
    """``n`` copies of ``template`` with the keys written at their offsets."""
    size = len(template)
    out = bytearray(template * n)
    for offset, data in keys:
        for j in range(klen):
            out[offset + j :: size] = data[j::klen]
    return out


def _number(out: bytearray, size: int, offsets: tuple[int, ...], after: int = 0) -> None:
    """Number the elements of one message ``after + 1``, ... in their attribute types (as
    libnftnl does; the kernel ignores them)."""
    n = len(out) // size
    per = len(offsets)
    base = NLA_F_NESTED + after + 1
    for k, offset in enumerate(offsets):
        numbers = array("H", range(base + k, base + k + per * n, per))
        raw = numbers.tobytes()
        out[offset + 2 :: size] = raw[0::2]
        out[offset + 3 :: size] = raw[1::2]


class Encoder:
    """The element attributes of one set's spans, in messages that fit the kernel."""

    def __init__(self, width: int, interval: bool, tag: str | None = None) -> None:
        if width not in (16, 32, 128):
            raise ValueError(f"unsupported width {width}")
        self.width = width
        self.interval = interval
        self.klen = width // 8
        self.top = (1 << width) - 1
        udata = comment_udata(tag) if tag else b""
        self.start, self.key_at = _element(self.klen, udata=udata)
        self.end, self.end_key_at = _element(self.klen, end=True)
        self.open, _ = _element(self.klen, udata=udata + UDATA_INTERVAL_OPEN)

    def element_lists(
        self, spans: Spans, i: int, j: int, *, adding: bool = True
    ) -> Iterator[bytes]:
        """The elements of ``spans[i:j]``, each list small enough for one message. Interval
        elements added that do not start at 0 follow an end element at 0, as nft sends
        them (the kernel keeps it; listings leave it out)."""
        if not self.interval:
            yield from self._values(*_expand(spans, i, j))
            return
        last_is_top = j > i and spans.lasts[j - 1] == self.top
        stop = j - 1 if last_is_top else j
        lead = b""
        if adding and j > i and spans.firsts[i] != 0:
            zero_end = bytearray(self.end)
            _number(zero_end, len(zero_end), (0,))
            lead = bytes(zero_end)
        held = lead if stop == i else None  # one list held back: the top may join it
        if stop > i:
            for listed in self._pairs(spans, i, stop, lead):
                if held is not None:
                    yield held
                held = listed
        if last_is_top:
            first = _slice(spans.firsts, j - 1, j)
            keys = _be_keys(self.width, *first)
            out = _fill(self.open, 1, [(self.key_at, keys)], self.klen)
            if held and len(held) + len(out) <= MAX_NEST:
                _number(out, len(self.open), (0,), self._count(held))
                held += out
            else:
                if held:
                    yield held
                _number(out, len(self.open), (0,))
                held = bytes(out)
        if held:
            yield held

    @staticmethod
    def _count(listed: bytes) -> int:
        """How many elements a list holds."""
        n = offset = 0
        while offset < len(listed):
            offset += (_HDR.unpack_from(listed, offset)[0] + 3) & ~3
            n += 1
        return n

    def _values(self, lo: array[int], hi: array[int] | None) -> Iterator[bytes]:
        size = len(self.start)
        per = MAX_NEST // size
        for k in range(0, len(lo), per):
            part_lo = lo[k : k + per]
            part_hi = hi[k : k + per] if hi is not None else None
            keys = _be_keys(self.width, part_lo, part_hi)
            out = _fill(self.start, len(part_lo), [(self.key_at, keys)], self.klen)
            _number(out, size, (0,))
            yield bytes(out)

    def _pairs(self, spans: Spans, i: int, j: int, lead: bytes = b"") -> Iterator[bytes]:
        """Start and end elements of ``spans[i:j]`` (none reaches the top), after ``lead``
        in the first list."""
        pair = self.start + self.end
        size = len(pair)
        k = i
        while k < j:
            room = MAX_NEST - len(lead)
            stop = min(k + room // size, j)
            firsts = _slice(spans.firsts, k, stop)
            ends = _plus_one(self.width, *_slice(spans.lasts, k, stop))
            keys = [
                (self.key_at, _be_keys(self.width, *firsts)),
                (len(self.start) + self.end_key_at, _be_keys(self.width, *ends)),
            ]
            out = _fill(pair, stop - k, keys, self.klen)
            _number(out, size, (0, len(self.start)), 1 if lead else 0)
            yield lead + bytes(out)
            lead = b""
            k = stop


def _slice(bounds: Any, i: int, j: int) -> tuple[array[int], array[int] | None]:
    """Words ``i:j`` of a Spans' bounds (low words, high words of 128-bit values)."""
    lo: array[int] = bounds.lo
    hi: array[int] | None = bounds.hi
    return lo[i:j], (hi[i:j] if hi is not None else None)


def _expand(spans: Spans, i: int, j: int) -> tuple[array[int], array[int] | None]:
    """Every value of ``spans[i:j]`` (a hash set's elements), as word arrays."""
    lo, hi = _slice(spans.firsts, i, j)
    last_lo, last_hi = _slice(spans.lasts, i, j)
    if lo == last_lo and hi == last_hi:  # single values: the arrays are the elements
        return lo, hi
    out_lo: array[int] = array("Q")
    out_hi: array[int] | None = array("Q") if hi is not None else None
    for k in range(i, j):
        first, last = spans.firsts[k], spans.lasts[k]
        if out_hi is None:
            out_lo.extend(range(first, last + 1))
        else:
            for value in range(first, last + 1):
                out_hi.append(value >> 64)
                out_lo.append(value & MASK64)
    return out_lo, out_hi


def message(
    kind: int, flags: int, seq: int, family: int, attrs: bytes, elements: bytes | None
) -> bytes:
    """One nf_tables message: nfgenmsg, ``attrs``, then the elements' list attribute."""
    body = struct.pack("=BBH", family, 0, 0) + attrs
    if elements is not None:
        body += nlattr(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, elements)
    return nlmsg((NFNL_SUBSYS_NFTABLES << 8) | kind, flags, seq, body)


def batch_edge(kind: int, seq: int) -> bytes:
    """NFNL_MSG_BATCH_BEGIN / _END for the nf_tables subsystem."""
    body = struct.pack("=BBH", 0, 0, socket.htons(NFNL_SUBSYS_NFTABLES))
    return nlmsg(kind, NLM_F_REQUEST, seq, body)


def _names(table: str, set_name: str) -> tuple[bytes, bytes]:
    return (
        nlattr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0"),
        nlattr(NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0"),
    )


@dataclass
class Batch:
    """The messages of one transaction (without BEGIN/END) and which seqs delete."""

    messages: list[bytes]
    delete_seqs: range


def build_batch(
    *,
    family: int,
    table: str,
    set_name: str,
    seq: int,
    encoder: Encoder,
    add: tuple[Spans, int, int] | None = None,
    delete: tuple[Spans, int, int] | None = None,
    delete_kind: int = NFT_MSG_DELSETELEM,
    flush: bool = False,
) -> Batch:
    """The messages of one batch, numbered from ``seq``: a flush (the set's name before the
    table's, as nft sends it), the deletes, then the adds; the last asks for an ACK."""
    table_attr, set_attr = _names(table, set_name)
    attrs = table_attr + set_attr
    messages: list[bytes] = []

    def append(kind: int, flags: int, names: bytes, listed: bytes | None) -> None:
        messages.append(message(kind, flags, seq + len(messages), family, names, listed))

    if flush:
        append(NFT_MSG_DELSETELEM, NLM_F_REQUEST, set_attr + table_attr, None)
    deletes = 0
    if delete is not None:
        plain = Encoder(encoder.width, encoder.interval)
        for elements in plain.element_lists(*delete, adding=False):
            append(delete_kind, NLM_F_REQUEST, attrs, elements)
            deletes += 1
    if add is not None:
        for elements in encoder.element_lists(*add):
            append(NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE, attrs, elements)
    if messages:  # built one by one (no second copy of a large batch), the last acked
        last = bytearray(messages[-1])
        flags = NLMSGHDR.unpack_from(last)[2]
        struct.pack_into("=H", last, 6, flags | NLM_F_ACK)
        messages[-1] = bytes(last)
    first_delete = seq + (1 if flush else 0)
    return Batch(messages, range(first_delete, first_delete + deletes))


def batch_ranges(
    add: Spans | None, delete: Spans | None, chunk: int
) -> Iterator[tuple[tuple[int, int], tuple[int, int]]]:
    """Index ranges ``((add_i, add_j), (del_i, del_j))`` of the batches of a delta: at most
    about ``chunk`` spans each, cut at a value below which every span of both sides ends,
    so no span of one batch overlaps a span of another."""
    empty = Spans(32)
    adds = add if add is not None else empty
    dels = delete if delete is not None else empty
    na, nd = len(adds), len(dels)
    ia = idel = 0
    half = max(chunk // 2, 1)
    while ia < na or idel < nd:
        cut = None
        for spans, i, n in ((adds, ia, na), (dels, idel, nd)):
            if i + half < n and (cut is None or spans.firsts[i + half] < cut):
                cut = spans.firsts[i + half]
        if cut is None:
            ja, jd = na, nd
        else:
            while True:
                ja = bisect_left(adds.firsts, cut, ia) if na else 0
                jd = bisect_left(dels.firsts, cut, idel) if nd else 0
                reach = max(
                    adds.lasts[ja - 1] + 1 if ja > ia else cut,
                    dels.lasts[jd - 1] + 1 if jd > idel else cut,
                )
                if reach <= cut:
                    break
                cut = reach
        yield (ia, ja), (idel, jd)
        ia, idel = ja, jd


def exact_elements(wanted: Spans, present: Spans) -> Spans:
    """The spans of ``wanted`` that are exactly spans of ``present``."""
    found = Spans(wanted.width)
    for first, last in wanted:
        if (first, last) in present.overlapping(first, last):
            found._push(first, last)
    return found


def intersection(a: Spans, b: Spans) -> Spans:
    return a.difference(a.difference(b))


# ---- decoding (pure) ------------------------------------------------------------------


class _Unordered(Exception):
    """The dump of an interval set did not come in descending order."""


class ElementReader:
    """Elements of dump messages into packed spans per comment tag, as they arrive.

    A hash set's values are kept as sort keys in word arrays and sorted at the end in runs;
    an interval set's elements come from the kernel in descending order (rbtree), paired as
    they arrive (``ordered``); any other order raises :class:`_Unordered` and the caller
    reads again with ``ordered=False`` (sort keys, as for a hash set).
    """

    RUN = 1 << 16

    def __init__(self, width: int, interval: bool, *, ordered: bool = True) -> None:
        self.width = width
        self.interval = interval
        self.ordered = interval and ordered
        self.klen = width // 8
        self.top = (1 << width) - 1
        self.plain = 4 + 4 + ((4 + self.klen + 3) & ~3)
        self.skipped = 0  # elements with a timeout
        self.count = 0
        self._tags: dict[bytes, int] = {b"": 0}
        self.tag_names: list[str | None] = [None]
        # ordered pairing: spans per tag in descending order
        self._pending: int | None = None
        self._previous: tuple[int, int] | None = None
        self._desc: list[Spans] = []  # per tag, highest first, in the spans' own words
        # sort keys: value << 17 | start << 16 | tag, words for 128 bits
        self._keys_lo: array[int] = array("Q")
        self._keys_hi: array[int] = array("Q")
        self._meta: array[int] = array("I")

    def _tag(self, udata: bytes) -> int:
        found = self._tags.get(udata)
        if found is not None:
            return found
        comment = None
        k = 0
        while k + 2 <= len(udata):
            kind, length = udata[k], udata[k + 1]
            if kind == UDATA_COMMENT:
                comment = (
                    udata[k + 2 : k + 2 + length].split(b"\0", 1)[0].decode("utf-8", "replace")
                )
            k += 2 + length
        if comment is None:
            self._tags[udata] = 0
            return 0
        if comment not in self.tag_names:
            self.tag_names.append(comment)
        index = self.tag_names.index(comment)
        self._tags[udata] = index
        return index

    def _key(self, buf: bytes | bytearray, at: int) -> int:
        if self.klen == 4:
            return int(struct.unpack_from(">I", buf, at)[0])
        if self.klen == 2:
            return int(struct.unpack_from(">H", buf, at)[0])
        hi, lo = struct.unpack_from(">QQ", buf, at)
        return int((hi << 64) | lo)

    def feed(self, buf: bytes | bytearray, start: int, end: int) -> None:
        """The elements of one NFTA_SET_ELEM_LIST_ELEMENTS payload ``buf[start:end]``."""
        offset = start
        plain = self.plain
        while offset + 4 <= end:
            length = _HDR.unpack_from(buf, offset)[0]
            if length < 4 or offset + length > end:
                return
            if length == plain:
                self._element(self._key(buf, offset + 12), 0, 0)
            else:
                self._general(buf, offset + 4, offset + length)
            offset += (length + 3) & ~3

    def _general(self, buf: bytes | bytearray, start: int, end: int) -> None:
        key = None
        flags = 0
        tag = 0
        offset = start
        while offset + 4 <= end:
            length, kind = _HDR.unpack_from(buf, offset)
            if length < 4:
                return
            kind &= NLA_TYPE_MASK
            if kind == NFTA_SET_ELEM_KEY and length >= 8 + self.klen:
                key = self._key(buf, offset + 8)
            elif kind == NFTA_SET_ELEM_FLAGS and length >= 8:
                flags = int(struct.unpack_from(">I", buf, offset + 4)[0])
            elif kind == NFTA_SET_ELEM_USERDATA:
                tag = self._tag(bytes(buf[offset + 4 : offset + length]))
            elif kind in (NFTA_SET_ELEM_TIMEOUT, NFTA_SET_ELEM_EXPIRATION):
                flags |= 1 << 31
            offset += (length + 3) & ~3
        if key is not None:
            self._element(key, flags, tag)

    def _element(self, key: int, flags: int, tag: int) -> None:
        is_end = bool(flags & NFT_SET_ELEM_INTERVAL_END) and self.interval
        if flags & (1 << 31):
            self.skipped += 1
            if self.ordered and not is_end:
                self._pending = None
            return
        if not is_end:
            self.count += 1
        if self.ordered:
            self._pair_descending(key, is_end, tag)
            return
        meta = (0 if is_end else 1 << 16) | tag
        if self.width == 128:
            self._keys_hi.append(key >> 64)
            self._keys_lo.append(key & MASK64)
            self._meta.append(meta)
        else:
            self._keys_lo.append((key << 17) | meta)

    def _pair_descending(self, key: int, is_end: bool, tag: int) -> None:
        previous = self._previous
        if previous is not None and (
            key > previous[0] or (key == previous[0] and not (previous[1] == 0 and is_end))
        ):
            raise _Unordered
        self._previous = (key, 1 if is_end else 0)
        if is_end:
            if self._pending is not None:
                raise _Unordered
            self._pending = key
            return
        last = self.top if self._pending is None else self._pending - 1
        self._pending = None
        while len(self._desc) <= tag:
            self._desc.append(Spans(self.width))
        raw = self._desc[tag]
        raw.firsts.append(key)
        raw.lasts.append(last)

    def result(self) -> dict[str | None, Spans]:
        """The spans per tag (None: elements without a comment)."""
        found: dict[str | None, Spans] = {}
        if self.ordered:
            if self._pending not in (None, 0):  # an end at 0 alone: nft's leading element
                raise _Unordered
            for tag, raw in enumerate(self._desc):
                if len(raw):
                    found[self.tag_names[tag]] = _ascending(raw)
            self._desc = []
            return found
        per_tag: dict[int, Spans] = {}
        pending: tuple[int, int] | None = None
        for composite in self._sorted():
            value, is_start, tag = composite >> 17, (composite >> 16) & 1, composite & 0xFFFF
            if not self.interval:
                self._target(per_tag, tag)._push(value, value)
            elif is_start:
                if pending is not None:  # a start without its end: reaches the next start
                    self._target(per_tag, pending[1])._push(pending[0], value - 1)
                pending = (value, tag)
            elif pending is not None:
                self._target(per_tag, pending[1])._push(pending[0], value - 1)
                pending = None
        if pending is not None:
            self._target(per_tag, pending[1])._push(pending[0], self.top)
        return {self.tag_names[t]: s for t, s in sorted(per_tag.items()) if len(s)}

    def _target(self, per_tag: dict[int, Spans], tag: int) -> Spans:
        found = per_tag.get(tag)
        if found is None:
            found = per_tag[tag] = Spans(self.width)
        return found

    def _sorted(self) -> Iterator[int]:
        """The sort keys in ascending order: runs sorted in place, then merged."""
        n = len(self._keys_lo)
        runs = []
        for k in range(0, n, self.RUN):
            if self.width == 128:
                run = sorted(
                    (((self._keys_hi[m] << 64) | self._keys_lo[m]) << 17) | self._meta[m]
                    for m in range(k, min(k + self.RUN, n))
                )
                for m, composite in enumerate(run, start=k):
                    self._meta[m] = composite & 0x1FFFF
                    self._keys_lo[m] = (composite >> 17) & MASK64
                    self._keys_hi[m] = composite >> 81
            else:
                self._keys_lo[k : k + self.RUN] = array(
                    "Q", sorted(self._keys_lo[k : k + self.RUN])
                )
            runs.append((k, min(k + self.RUN, n)))

        def run_keys(i: int, j: int) -> Iterator[int]:
            for m in range(i, j):
                if self.width == 128:
                    yield (((self._keys_hi[m] << 64) | self._keys_lo[m]) << 17) | self._meta[m]
                else:
                    yield self._keys_lo[m]

        yield from heapq.merge(*(run_keys(i, j) for i, j in runs))


def _ascending(raw: Spans) -> Spans:
    """Spans appended highest first, turned around in place (adjacent ones, which another
    writer may have added as separate elements, merged)."""
    for words in raw.words():
        words.reverse()
    firsts, lasts = raw.firsts, raw.lasts
    if all(firsts[k + 1] > lasts[k] + 1 for k in range(len(raw) - 1)):
        return raw
    merged = Spans(raw.width)
    for first, last in raw:
        merged._push(first, last)
    return merged


def iter_dump_elements(data: bytes | bytearray, length: int) -> Iterator[tuple[int, int, int, int]]:
    """(message type, seq, start, end) of each message in ``data[:length]``; for a
    NEWSETELEM message, start/end delimit its elements' list (0, 0 if it has none); for an
    error, start is the errno."""
    offset = 0
    while offset + NLMSGHDR.size <= length:
        size, kind, _flags, seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if size < NLMSGHDR.size or offset + size > length:
            return
        body = offset + NLMSGHDR.size
        if kind == NLMSG_ERROR:
            yield kind, seq, ack_error(bytes(data[body : body + 4])), 0
        elif kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM:
            start = end = 0
            attr = body + 4  # nfgenmsg
            while attr + 4 <= offset + size:
                alen, akind = _HDR.unpack_from(data, attr)
                if alen < 4:
                    break
                if akind & NLA_TYPE_MASK == NFTA_SET_ELEM_LIST_ELEMENTS:
                    start, end = attr + 4, attr + alen
                attr += (alen + 3) & ~3
            yield kind, seq, start, end
        else:
            yield kind, seq, 0, 0
        offset += (size + 3) & ~3


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
        except _Unordered:
            reader = ElementReader(width, interval, ordered=False)
            self._dump_into(set_name, reader)
        return reader.result()

    def count(self, set_name: str) -> int:
        """How many elements the set holds (an interval counts once), timeouts left out:
        one dump, counted as it arrives, nothing kept."""
        info = self.info(set_name)
        reader = _Counter(info.key_len * 8 if info.key_len in (2, 4, 16) else 32, info.interval)
        self._dump_into(set_name, reader)
        return reader.count

    def _dump_into(self, set_name: str, reader: ElementReader) -> None:
        sock = self._socket()
        seq = self._next_seq(1)
        table_attr, set_attr = _names(self.table, set_name)
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
        except _Unordered:
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
                wanted = _part(delete, idel, jd)
                there = (
                    _union([exact_elements(wanted, spans) for spans in present], width)
                    if interval
                    else intersection(wanted, _union(present, width))
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
            self._destroy = self._probe_destroy()
        return NFT_MSG_DESTROYSETELEM if self._destroy else NFT_MSG_DELSETELEM

    def _probe_destroy(self) -> bool:
        """Does the kernel know DESTROYSETELEM? (ENOENT for a set that does not exist: it
        does; EINVAL or EOPNOTSUPP: it does not.) Nothing changes either way."""
        seq = self._next_seq(3)
        table_attr, set_attr = _names(self.table, "\x01appliance-probe")
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


class _Counter(ElementReader):
    """Counts elements without keeping them."""

    def __init__(self, width: int, interval: bool) -> None:
        super().__init__(width, interval, ordered=False)

    def _element(self, key: int, flags: int, tag: int) -> None:
        if flags & (1 << 31):
            self.skipped += 1
        elif not (self.interval and flags & NFT_SET_ELEM_INTERVAL_END):
            self.count += 1


def _union(parts: list[Spans], width: int) -> Spans:
    total = Spans(width)
    for spans in parts:
        total = total.union(spans)
    return total


def _part(spans: Spans, i: int, j: int) -> Spans:
    part = Spans(spans.width)
    for k in range(i, j):
        part._push(spans.firsts[k], spans.lasts[k])
    return part
