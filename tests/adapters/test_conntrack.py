"""ctnetlink: the messages (pure), and on a real kernel, the entries of a flow through a
router listed and those of one source deleted."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys

import pytest

from appliance.adapters.conntrack import (
    CTA_IP_V4_DST,
    CTA_IP_V4_SRC,
    CTA_PROTO_DST_PORT,
    CTA_PROTO_NUM,
    CTA_PROTO_SRC_PORT,
    CTA_STATUS,
    CTA_TUPLE_IP,
    CTA_TUPLE_ORIG,
    CTA_TUPLE_PROTO,
    CTA_TUPLE_REPLY,
    CTA_ZONE,
    IPCTNL_MSG_CT_DELETE,
    IPS_OFFLOAD,
    NLA_F_NESTED,
    canonical_addresses,
    ct_type,
    decode_entry,
    encode_delete,
    encode_dump,
    sends_from,
)
from appliance.adapters.netlink import NLM_F_ACK, NLM_F_DUMP, iter_attrs, nlattr
from tests.routed import CLIENT_ADDR, SERVER_ADDR, echo_flow, routed


def tuple_attr(kind: int, src: str, dst: str, sport: int, dport: int) -> bytes:
    addrs = nlattr(CTA_IP_V4_SRC, socket.inet_aton(src)) + nlattr(
        CTA_IP_V4_DST, socket.inet_aton(dst)
    )
    proto = (
        nlattr(CTA_PROTO_NUM, bytes([6]))
        + nlattr(CTA_PROTO_SRC_PORT, struct.pack("!H", sport))
        + nlattr(CTA_PROTO_DST_PORT, struct.pack("!H", dport))
    )
    inner = nlattr(CTA_TUPLE_IP | NLA_F_NESTED, addrs) + nlattr(
        CTA_TUPLE_PROTO | NLA_F_NESTED, proto
    )
    return nlattr(kind | NLA_F_NESTED, inner)


def entry_body(status: int, zone: bytes | None = None) -> bytes:
    body = struct.pack("=BBH", socket.AF_INET, 0, 0)
    body += tuple_attr(CTA_TUPLE_ORIG, "192.0.2.7", "198.51.100.1", 40000, 443)
    body += tuple_attr(CTA_TUPLE_REPLY, "10.0.0.5", "192.0.2.7", 8443, 40000)  # DNAT'd
    body += nlattr(CTA_STATUS, struct.pack("!I", status))
    if zone is not None:
        body += nlattr(CTA_ZONE, zone)
    return body


def test_an_entry_decodes_both_directions_and_its_offload_bit() -> None:
    entry = decode_entry(entry_body(IPS_OFFLOAD | 0x8))
    assert entry is not None
    assert (entry.orig.src, entry.orig.dst, entry.orig.proto) == ("192.0.2.7", "198.51.100.1", 6)
    assert (entry.orig.sport, entry.orig.dport) == (40000, 443)
    assert entry.reply is not None and entry.reply.src == "10.0.0.5"
    assert entry.offloaded
    assert not decode_entry(entry_body(0x8)).offloaded  # type: ignore[union-attr]
    assert decode_entry(struct.pack("=BBH", 2, 0, 0)) is None  # no tuple: not an entry


def test_a_delete_names_the_entry_by_its_original_tuple_and_zone() -> None:
    entry = decode_entry(entry_body(0, zone=struct.pack("!H", 3)))
    assert entry is not None
    msg = encode_delete(entry, seq=9)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", msg)
    assert (length, kind, seq) == (len(msg), ct_type(IPCTNL_MSG_CT_DELETE), 9)
    assert flags & NLM_F_ACK
    attrs = dict(iter_attrs(msg, 16 + 4))
    assert attrs[CTA_TUPLE_ORIG] == entry.orig_raw
    assert attrs[CTA_ZONE] == struct.pack("!H", 3)
    assert CTA_TUPLE_REPLY not in attrs
    dump = encode_dump(seq=1)
    assert struct.unpack_from("=IHH", dump)[2] & NLM_F_DUMP == NLM_F_DUMP


def test_a_source_sends_in_the_original_and_the_answering_direction() -> None:
    entry = decode_entry(entry_body(0))
    assert entry is not None
    assert sends_from(entry, frozenset({"192.0.2.7"}))
    assert sends_from(entry, frozenset({"10.0.0.5"}))  # the server behind the DNAT
    assert not sends_from(entry, frozenset({"198.51.100.1", "203.0.113.1"}))


def test_addresses_are_canonical_and_networks_of_one() -> None:
    got = canonical_addresses(["192.0.2.7", "2001:DB8::1", "198.51.100.9/32", "10.0.0.0/8", "x"])
    assert got == {"192.0.2.7", "2001:db8::1", "198.51.100.9"}


# --- on the running kernel (root) -------------------------------------------

FLUSH = """
import json, sys
from appliance.adapters.conntrack import Conntrack, flush_sources
def flows():
    with Conntrack() as ct:
        return sorted(e.orig.src for e in ct.entries() if e.orig.proto == 6)
before = flows()
deleted = flush_sources(sys.argv[1:])
print(json.dumps({"before": before, "deleted": deleted, "after": flows()}))
"""


TRACKING = "table inet t { chain f { type filter hook forward priority 0; ct state new; }; }"


def in_router(router: str, *args: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", router, sys.executable, "-c", FLUSH, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


@pytest.mark.root
def test_the_entries_of_a_source_are_deleted_and_only_theirs() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with routed("ct") as net:
        # conntrack runs in the router once a table asks for it
        subprocess.run(
            ["ip", "netns", "exec", net.router, "nft", "-f", "-"],
            input=TRACKING,
            text=True,
            check=True,
        )
        with echo_flow(net, timeout=10) as flow:
            assert flow.echo("one")
            other = json.loads(in_router(net.router, "192.0.2.99"))
            assert other == {"before": [CLIENT_ADDR], "deleted": 0, "after": [CLIENT_ADDR]}
            # The server answers in the flow: it is a source of it too.
            mine = json.loads(in_router(net.router, SERVER_ADDR))
            assert mine == {"before": [CLIENT_ADDR], "deleted": 1, "after": []}
