"""nf_tables set element messages, encoded from and decoded into packed spans. Pure.

The bytes are those ``nft`` 1.0.6 sends for the same elements (without its set id
attribute): a hash set gets one element per value; an interval set (rbtree) a start element
and an end element ``last + 1`` flagged NFT_SET_ELEM_INTERVAL_END, except the span that
reaches the top of the range, sent as a start flagged "interval open" in its user data;
interval elements added that do not start at 0 follow an end element at 0. A tag is the
elements' comment. Elements are written from the spans' word arrays whole arrays at a time
(slice assignment), and read back from dump messages into packed spans per tag, never an
object per element. The socket side is :mod:`appliance.adapters.nfsets`.
"""

from __future__ import annotations

import heapq
import struct
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain, compress, repeat
from operator import add, and_, lshift, ne, or_, rshift
from typing import Any

from appliance.adapters.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    NLMSGHDR,
    ack_error,
    nlattr,
    nlmsg,
)
from appliance.model.intervals import MASK64, Spans

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

_HDR = struct.Struct("=HH")
_LITTLE = sys.byteorder == "little"
NFNL_SUBSYS_NFTABLES_BE = struct.unpack("=H", struct.pack(">H", NFNL_SUBSYS_NFTABLES))[0]


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
    """``value + 1`` of every value (none is the top of the range), at C speed."""
    if hi is None:
        return array("Q", list(map(add, lo, repeat(1)))), None
    new_lo = array("Q", list(map(and_, map(add, lo, repeat(1)), repeat(MASK64))))
    new_hi = array("Q", list(map(add, hi, map(MASK64.__eq__, lo))))
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
        low, high = _numbers(base + k, per, n)
        out[offset + 2 :: size] = low
        out[offset + 3 :: size] = high


@lru_cache(maxsize=16)
def _numbers(start: int, step: int, n: int) -> tuple[bytes, bytes]:
    """The two bytes of each of ``n`` attribute types from ``start`` by ``step``, apart (the
    same for every full message of a batch: made once)."""
    raw = array("H", range(start, start + step * n, step)).tobytes()
    return raw[0::2], raw[1::2]


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
    """Every value of ``spans[i:j]`` (a hash set's elements), as word arrays, at C speed
    (the ranges of the spans chained, never a Python step per span)."""
    lo, hi = _slice(spans.firsts, i, j)
    if spans.points:  # single values: the arrays are the elements
        return lo, hi
    last_lo, last_hi = _slice(spans.lasts, i, j)
    if lo == last_lo and hi == last_hi:
        return lo, hi
    if hi is None or last_hi is None:
        firsts, lasts = lo.tolist(), last_lo.tolist()
    else:
        firsts = list(map(or_, map(lshift, hi, repeat(64)), lo))
        lasts = list(map(or_, map(lshift, last_hi, repeat(64)), last_lo))
    # the spans of one value are their first values; the others' further values are
    # chained after them, and one sort merges the two runs
    wide = list(map(ne, firsts, lasts))
    starts = list(map(add, compress(firsts, wide), repeat(1)))
    stops = list(map(add, compress(lasts, wide), repeat(1)))
    values = firsts
    values += chain.from_iterable(map(range, starts, stops))
    values.sort()
    if hi is None or last_hi is None:
        return array(lo.typecode, values), None
    out_hi = array("Q", list(map(rshift, values, repeat(64))))
    return array("Q", list(map(and_, values, repeat(MASK64)))), out_hi


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
    body = struct.pack("=BBH", 0, 0, NFNL_SUBSYS_NFTABLES_BE)
    return nlmsg(kind, NLM_F_REQUEST, seq, body)


def names(table: str, set_name: str) -> tuple[bytes, bytes]:
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
    table_attr, set_attr = names(table, set_name)
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


class Unordered(Exception):
    """The dump of an interval set did not come in descending order."""


class ElementReader:
    """Elements of dump messages into packed spans per comment tag, as they arrive.

    A hash set's values are kept as sort keys in word arrays and sorted at the end in runs;
    an interval set's elements come from the kernel in descending order (rbtree), paired as
    they arrive (``ordered``); any other order raises :class:`Unordered` and the caller
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
            raise Unordered
        self._previous = (key, 1 if is_end else 0)
        if is_end:
            if self._pending is not None:
                raise Unordered
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
                raise Unordered
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


class ElementCounter(ElementReader):
    """Counts elements without keeping them."""

    def __init__(self, width: int, interval: bool) -> None:
        super().__init__(width, interval, ordered=False)

    def _element(self, key: int, flags: int, tag: int) -> None:
        if flags & (1 << 31):
            self.skipped += 1
        elif not (self.interval and flags & NFT_SET_ELEM_INTERVAL_END):
            self.count += 1


def union_of(parts: list[Spans], width: int) -> Spans:
    total = Spans(width)
    for spans in parts:
        total = total.union(spans)
    return total


def part_of(spans: Spans, i: int, j: int) -> Spans:
    part = Spans(spans.width)
    for k in range(i, j):
        part._push(spans.firsts[k], spans.lasts[k])
    return part
