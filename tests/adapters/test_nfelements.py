"""nf_tables set element messages: the bytes against what nft sends, and read back from
dump messages into packed spans per tag, in any order the kernel gives them."""

from __future__ import annotations

import ipaddress
import random
import struct

import pytest

from appliance.adapters import nfelements
from appliance.adapters.netlink import NLM_F_ACK, NLMSGHDR, nlattr, nlmsg
from appliance.model.intervals import Spans

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
TOP32 = (1 << 32) - 1

# What `nft -f` (nftables 1.0.6) sent for these commands, read with
# `strace -e trace=sendmsg -e write=3`; one batch each, BEGIN to END.
NFT_SENT = {
    "a": (
        "140000001000010000000000000000000000000a780000000c0a01040100000000000000010000000e000100"
        "6170706c69616e63650000000600020068000000080004000000000144000380200001800c00018008000100"
        "0a0000010e000600000870726f66696c65000000200002800c000180080001000a0000020e00060000087072"
        "6f66696c65000000140000001100010002000000000000000000000a"
    ),
    "b": (
        "140000001000010000000000000000000000000aa40000000c0a01040100000000000000010000000e000100"
        "6170706c69616e63650000000600020069000000080004000000000270000380100001800c00018008000100"
        "000000001800028008000300000000010c0001800800010000000006100003800c000180080001000a000000"
        "1800048008000300000000010c000180080001000a0001001c0005800c00018008000100ffffff000a000600"
        "0104010000000000140000001100010002000000000000000000000a"
    ),
    "c": (
        "140000001000010000000000000000000000000aa40000000c0a01040100000000000000010000000e000100"
        "6170706c69616e63650000000600020069000000080004000000000270000380180001800800030000000001"
        "0c00018008000100000000001c0002800c000180080001000a0000000a000600000468756200000018000380"
        "08000300000000010c000180080001000a000100200004800c00018008000100ffff00001000060000046875"
        "6200010401000000140000001100010002000000000000000000000a"
    ),
    "d": (
        "140000001000010000000000000000000000000a580000000c0a01040100000000000000010000000e000100"
        "6170706c69616e63650000000600020073000000080004000000000324000380100001800c00018006000100"
        "00160000100002800c00018006000100ffff0000140000001100010002000000000000000000000a"
    ),
    "e": (
        "140000001000010000000000000000000000000ae00000000c0a01040100000000000000010000000e000100"
        "6170706c69616e636500000008000200736978000800040000000005ac0003801c0001801800018014000100"
        "0000000000000000000000000000000024000280080003000000000118000180140001000000000000000000"
        "00000000000000061c000380180001801400010020010db80000000000000000000000002400048008000300"
        "00000001180001801400010020010db9000000000000000000000000280005801800018014000100ffff0000"
        "0000000000000000000000000a0006000104010000000000140000001100010002000000000000000000000a"
    ),
    "p": (
        "140000001000010000000000000000000000000a7c0000000c0a01040100000000000000010000000e000100"
        "6170706c69616e63650000000600020070000000080004000000000448000380100001800c00018006000100"
        "000000001800028008000300000000010c00018006000100001600001c0003800c0001800600010004000000"
        "0a0006000104010000000000140000001100010002000000000000000000000a"
    ),
    "g": (
        "140000001000010000000000000000000000000a2c0000000e0a010001000000000000000100000006000200"
        "730000000e0001006170706c69616e6365000000480000000c0a01040200000000000000010000000e000100"
        "6170706c69616e63650000000600020073000000080004000000000314000380100001800c00018006000100"
        "00160000140000001100010003000000000000000000000a"
    ),
    "h6": (
        "140000001000010000000000000000000000000a700000000c0a01040100000000000000010000000e000100"
        "6170706c69616e6365000000070002006836000008000400000000063c0003801c0001801800018014000100"
        "000000000000000000000000000000011c000280180001801400010020010db800000000ffffffffffffffff"
        "140000001100010002000000000000000000000a"
    ),
    "f": (
        "140000001000010000000000000000000000000a740000000e0a01000100000000000000010000000e000100"
        "6170706c69616e6365000000060002006900000048000380100001800c000180080001000000000018000280"
        "08000300000000010c00018008000100000000061c0003800c00018008000100ffffff000a00060001040100"
        "00000000140000001100010002000000000000000000000a"
    ),
    "k": (
        "140000001000010000000000000000000000000a400000000e0a01000100000000000000010000000e000100"
        "6170706c69616e6365000000060002006800000014000380100001800c000180080001000a00000114000000"
        "1100010002000000000000000000000a"
    ),
}


def _v4(text: str) -> int:
    return int(V4(text))


def _v6(text: str) -> int:
    return int(V6(text))


# name: (set, width, interval, tag, add pairs, delete pairs, flush)
CASES: dict[
    str, tuple[str, int, bool, str | None, list[tuple[int, int]], list[tuple[int, int]], bool]
] = {
    "a": ("h", 32, False, "profile", [(_v4("10.0.0.1"), _v4("10.0.0.2"))], [], False),
    "b": (
        "i",
        32,
        True,
        None,
        [(0, 5), (_v4("10.0.0.0"), _v4("10.0.0.255")), (_v4("255.255.255.0"), TOP32)],
        [],
        False,
    ),
    "c": (
        "i",
        32,
        True,
        "hub",
        [(_v4("10.0.0.0"), _v4("10.0.0.255")), (_v4("255.255.0.0"), TOP32)],
        [],
        False,
    ),
    "d": ("s", 16, False, None, [(22, 22), (65535, 65535)], [], False),
    "e": (
        "six",
        128,
        True,
        None,
        [
            (0, 5),
            (_v6("2001:db8::"), _v6("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")),
            (_v6("ffff::"), (1 << 128) - 1),
        ],
        [],
        False,
    ),
    "p": ("p", 16, True, None, [(0, 21), (1024, 65535)], [], False),
    "g": ("s", 16, False, None, [(22, 22)], [], True),
    "h6": (
        "h6",
        128,
        False,
        None,
        [(1, 1), (_v6("2001:db8::ffff:ffff:ffff:ffff"),) * 2],
        [],
        False,
    ),
    "f": ("i", 32, True, None, [], [(0, 5), (_v4("255.255.255.0"), TOP32)], False),
    "k": ("h", 32, False, None, [], [(_v4("10.0.0.1"),) * 2], False),
}


def nft_messages(batch: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, seq, body) of the data messages of a batch, without the set id
    attribute nft adds (NFTA_SET_ELEM_LIST_SET_ID: the adapter names existing sets)."""
    found = []
    offset = 0
    while offset < len(batch):
        length, kind, flags, seq, _pid = NLMSGHDR.unpack_from(batch, offset)
        body = batch[offset + NLMSGHDR.size : offset + length]
        offset += length
        if kind in (nfelements.NFNL_MSG_BATCH_BEGIN, nfelements.NFNL_MSG_BATCH_END):
            continue
        kept = body[:4]
        at = 4
        while at < len(body):
            alen, atype = struct.unpack_from("=HH", body, at)
            padded = (alen + 3) & ~3
            if atype & 0x3FFF != 4:
                kept += body[at : at + padded]
            at += padded
        found.append((kind, flags, seq, kept))
    return found


def adapter_messages(case: str, seq: int) -> list[tuple[int, int, int, bytes]]:
    set_name, width, interval, tag, add, delete, flush = CASES[case]
    add_spans = Spans.of(width, add)
    delete_spans = Spans.of(width, delete)
    batch = nfelements.build_batch(
        family=nfelements.FAMILIES["inet"],
        table="appliance",
        set_name=set_name,
        seq=seq,
        encoder=nfelements.Encoder(width, interval, tag),
        add=(add_spans, 0, len(add_spans)) if add else None,
        delete=(delete_spans, 0, len(delete_spans)) if delete else None,
        flush=flush,
    )
    found = []
    for raw in batch.messages:
        length, kind, flags, msg_seq, _pid = NLMSGHDR.unpack_from(raw)
        found.append((kind, flags & ~NLM_F_ACK, msg_seq, raw[NLMSGHDR.size : length]))
    return found


@pytest.mark.parametrize("case", sorted(CASES))
def test_messages_are_the_bytes_nft_sends(case: str) -> None:
    """Hash and interval sets of IPv4, IPv6 and ports, a comment, the span from 0 and the
    one to the top of the range, a delete, a flush and refill: byte for byte nft's."""
    sent = nft_messages(bytes.fromhex("".join(NFT_SENT[case])))
    assert adapter_messages(case, sent[0][2]) == sent


def test_the_last_message_of_a_batch_asks_for_the_acknowledgement() -> None:
    spans = Spans.of(32, [(1, 1)])
    batch = nfelements.build_batch(
        family=1,
        table="t",
        set_name="s",
        seq=7,
        encoder=nfelements.Encoder(32, False),
        add=(spans, 0, 1),
        delete=(spans, 0, 1),
    )
    flags = [NLMSGHDR.unpack_from(raw)[2] for raw in batch.messages]
    assert [bool(f & NLM_F_ACK) for f in flags] == [False, True]
    assert batch.delete_seqs == range(7, 8)


def random_spans(rng: random.Random, width: int, count: int, longest: int) -> Spans:
    top = (1 << width) - 1
    pairs = []
    for _ in range(count):
        first = rng.randrange(top)
        pairs.append((first, min(first + rng.randrange(longest), top)))
    return Spans.of(width, pairs)


def encoded_elements(spans: Spans, interval: bool, tag: str | None) -> list[bytes]:
    return list(nfelements.Encoder(spans.width, interval, tag).element_lists(spans, 0, len(spans)))


def split_elements(lists: list[bytes]) -> list[bytes]:
    """Every element attribute of the lists, one by one (as the kernel may order them)."""
    found = []
    for listed in lists:
        offset = 0
        while offset < len(listed):
            length = struct.unpack_from("=H", listed, offset)[0]
            found.append(listed[offset : offset + ((length + 3) & ~3)])
            offset += (length + 3) & ~3
    return found


def read_back(
    elements: list[bytes], width: int, interval: bool, ordered: bool = True
) -> dict[str | None, Spans]:
    reader = nfelements.ElementReader(width, interval, ordered=ordered)
    data = b"".join(elements)
    reader.feed(data, 0, len(data))
    return reader.result()


@pytest.mark.parametrize("width", [16, 32, 128])
def test_interval_elements_read_back_in_the_kernels_descending_order(width: int) -> None:
    rng = random.Random(width)
    spans = random_spans(rng, width, 300, 1 << (width // 2))
    spans = spans.union(Spans.of(width, [(0, 3), ((1 << width) - 9, (1 << width) - 1)]))
    elements = split_elements(encoded_elements(spans, True, "profile"))
    # the rbtree lists from the highest key down; an end before its start
    pairs: list[list[bytes]] = []
    for element in elements:
        if len(pairs) and len(pairs[-1]) == 1 and b"\x08\x00\x03\x00" in element[4:8]:
            pairs[-1].append(element)
        else:
            pairs.append([element])
    descending = [e for pair in reversed(pairs) for e in reversed(pair)]
    assert read_back(descending, width, True) == {"profile": spans}
    # any other order: sorted, as for a hash set
    rng.shuffle(descending)
    with pytest.raises(nfelements.Unordered):
        read_back(descending, width, True)
    assert read_back(descending, width, True, ordered=False) == {"profile": spans}


@pytest.mark.parametrize("width", [16, 32, 128])
def test_hash_elements_read_back_in_any_order_per_tag(width: int) -> None:
    rng = random.Random(width + 1)
    profile = random_spans(rng, width, 2000, 1)
    hub = random_spans(rng, width, 500, 1).difference(profile)
    elements = split_elements(encoded_elements(profile, False, None))
    elements += split_elements(encoded_elements(hub, False, "hub"))
    rng.shuffle(elements)
    reader = nfelements.ElementReader(width, False)
    reader.RUN = 97  # several sorted runs merged
    data = b"".join(elements)
    reader.feed(data, 0, len(data))
    assert reader.result() == {None: profile, "hub": hub}


@pytest.mark.parametrize("width", [32, 128])
def test_a_hash_dump_repeating_elements_reads_each_once(width: int) -> None:
    """A dump of a hash set the kernel is rehashing may list an element twice (the
    rhashtable walk's documented behaviour): read back, the set is the same."""
    rng = random.Random(width + 2)
    spans = random_spans(rng, width, 1500, 1)
    elements = split_elements(encoded_elements(spans, False, "profile"))
    repeated = elements + rng.sample(elements, 300)
    rng.shuffle(repeated)
    assert read_back(repeated, width, False) == {"profile": spans}


def test_hash_spans_are_one_element_per_value() -> None:
    spans = Spans.of(32, [(10, 13), (20, 20)])
    elements = split_elements(encoded_elements(spans, False, None))
    assert len(elements) == 5
    assert read_back(elements, 32, False) == {None: spans}


@pytest.mark.parametrize("width", [32, 128])
def test_a_hash_sets_spans_expand_to_each_value_in_order(width: int) -> None:
    rng = random.Random(width)
    base = (1 << 100) if width == 128 else 0
    pairs = [(base + f, base + f + rng.choice([0, 0, 1, 5])) for f in range(0, 4000, 9)]
    pairs.append(((1 << width) - 3, (1 << width) - 1))  # to the top of the range
    spans = Spans.of(width, pairs)
    for i, j in ((0, len(spans)), (5, 40), (len(spans) - 1, len(spans))):
        lo, hi = nfelements._expand(spans, i, j)
        wanted = [v for first, last in list(spans)[i:j] for v in range(first, last + 1)]
        got = list(lo) if hi is None else [(h << 64) | low for h, low in zip(hi, lo, strict=True)]
        assert got == wanted


def test_elements_with_a_timeout_are_left_out() -> None:
    kept = split_elements(encoded_elements(Spans.of(32, [(1, 1)]), False, None))
    timed = nfelements._element(4, udata=b"")[0]
    key = struct.pack("=HH", 12, 0x8001) + struct.pack("=HH", 8, 1) + struct.pack(">I", 2)
    timeout = struct.pack("=HH", 12, nfelements.NFTA_SET_ELEM_TIMEOUT) + struct.pack(">Q", 5000)
    timed = struct.pack("=HH", 4 + len(key) + len(timeout), 0x8001) + key + timeout
    reader = nfelements.ElementReader(32, False)
    data = b"".join(kept) + timed
    reader.feed(data, 0, len(data))
    assert reader.result() == {None: Spans.of(32, [(1, 1)])}
    assert reader.skipped == 1


def test_large_lists_are_split_into_messages_the_kernel_takes() -> None:
    spans = random_spans(random.Random(3), 32, 20000, 50)
    for interval in (False, True):
        lists = encoded_elements(spans, interval, "profile")
        assert len(lists) > 1
        assert all(len(listed) <= nfelements.MAX_NEST for listed in lists)
        assert read_back(split_elements(lists), 32, interval, ordered=False) == {"profile": spans}


def test_batches_hold_whole_ranges_and_never_overlap_each_other() -> None:
    rng = random.Random(5)
    add = random_spans(rng, 32, 3000, 1 << 20)
    delete = random_spans(rng, 32, 3000, 1 << 20)
    seen_add = seen_delete = 0
    previous_reach = -1
    for (ia, ja), (idel, jd) in nfelements.batch_ranges(add, delete, 200):
        assert (ia, idel) == (seen_add, seen_delete)
        assert (ja - ia) + (jd - idel) > 0
        lows = [add.firsts[k] for k in range(ia, ja)] + [delete.firsts[k] for k in range(idel, jd)]
        highs = [add.lasts[k] for k in range(ia, ja)] + [delete.lasts[k] for k in range(idel, jd)]
        assert min(lows) > previous_reach
        previous_reach = max(highs)
        seen_add, seen_delete = ja, jd
    assert (seen_add, seen_delete) == (len(add), len(delete))


def test_batches_of_a_small_chunk_stay_small_when_nothing_overlaps() -> None:
    add = Spans.of(32, [(k * 10, k * 10) for k in range(1000)])
    sizes = [j - i for (i, j), _ in nfelements.batch_ranges(add, None, 100)]
    assert max(sizes) <= 100
    assert sum(sizes) == 1000


def test_exact_elements_skips_a_piece_of_an_element() -> None:
    present = Spans.of(32, [(1, 10), (20, 30)])
    wanted = Spans.of(32, [(1, 5), (20, 30), (40, 41)])
    assert list(nfelements.exact_elements(wanted, present)) == [(20, 30)]


def test_a_comment_is_the_tlv_nft_writes() -> None:
    assert nfelements.comment_udata("profile") == b"\x00\x08profile\x00"
    with pytest.raises(ValueError):
        nfelements.comment_udata("x" * 300)


def test_dump_messages_give_their_element_lists() -> None:
    elements = b"".join(encoded_elements(Spans.of(32, [(7, 7)]), False, None))
    body = struct.pack("=BBH", 1, 0, 0) + nlattr(3 | 0x8000, elements)
    kind = (nfelements.NFNL_SUBSYS_NFTABLES << 8) | nfelements.NFT_MSG_NEWSETELEM
    data = nlmsg(kind, 2, 9, body) + nlmsg(3, 2, 9, b"\0\0\0\0")
    found = list(nfelements.iter_dump_elements(data, len(data)))
    assert [(k, s) for k, s, _a, _b in found] == [(kind, 9), (3, 9)]
    _k, _s, start, end = found[0]
    assert data[start:end] == elements
