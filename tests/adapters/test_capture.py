"""Capture adapters: the NFLOG netlink encoding and decoding, sequence-gap accounting and the
classic BPF filter, without root."""

from __future__ import annotations

import struct

import pytest

from appliance.adapters import capture
from appliance.adapters.capture import (
    NFULA_IFINDEX_INDEV,
    NFULA_PAYLOAD,
    NFULA_PREFIX,
    NFULA_SEQ,
    NFULA_TIMESTAMP,
    NflogReader,
    bpf_ethertype_filter,
    parse_nflog_packet,
)
from appliance.adapters.netlink import NLM_F_ACK, NLM_F_REQUEST, iter_attrs, iter_messages, nlattr


def packet_message(payload: bytes, seq: int | None = None, group: int = 0x4150) -> bytes:
    body = struct.pack("!BBH", 2, 0, group)
    body += nlattr(NFULA_PREFIX, b"x\0")
    body += nlattr(NFULA_IFINDEX_INDEV, struct.pack("!I", 3))
    body += nlattr(NFULA_TIMESTAMP, struct.pack("!QQ", 1700000000, 250000))
    if seq is not None:
        body += nlattr(NFULA_SEQ, struct.pack("!I", seq))
    body += nlattr(NFULA_PAYLOAD, payload)
    header = struct.pack("=IHHII", 16 + len(body), capture.NFNL_SUBSYS_ULOG << 8, 0, 0, 0)
    return header + body


def test_bind_request_layout() -> None:
    message = capture.nflog_bind(0x4150, 7)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", message)
    assert length == len(message) and length % 4 == 0
    assert kind == (4 << 8) | 1  # NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG
    assert flags == NLM_F_REQUEST | NLM_F_ACK and seq == 7
    family, version, group = struct.unpack_from("!BBH", message, 16)
    assert (family, version, group) == (0, 0, 0x4150)
    assert list(iter_attrs(message, 20)) == [(capture.NFULA_CFG_CMD, b"\x01")]


def test_mode_request_copies_packets_with_sequence_numbers() -> None:
    attrs = dict(iter_attrs(capture.nflog_mode(1, 2, copy_range=512), 20))
    assert attrs[capture.NFULA_CFG_MODE] == struct.pack("!IBx", 512, capture.NFULNL_COPY_PACKET)
    assert attrs[capture.NFULA_CFG_FLAGS] == struct.pack("!H", capture.NFULNL_CFG_F_SEQ)


def test_parse_packet() -> None:
    data = packet_message(b"\x45" + b"\0" * 19, seq=5)
    ((kind, _seq, body),) = list(iter_messages(data))
    assert kind == capture.NFNL_SUBSYS_ULOG << 8
    packet = parse_nflog_packet(body)
    assert packet is not None
    assert packet.group == 0x4150 and packet.seq == 5 and packet.indev == 3
    assert packet.payload == b"\x45" + b"\0" * 19 and packet.prefix == "x"
    assert packet.timestamp == 1700000000.25


def test_truncated_input_never_raises() -> None:
    data = packet_message(b"\x45" * 40, seq=1)
    for cut in range(len(data)):
        for _kind, _seq, body in iter_messages(data[:cut]):
            parse_nflog_packet(body)
    assert parse_nflog_packet(b"") is None


def test_sequence_gaps_count_kernel_drops() -> None:
    reader = NflogReader.__new__(NflogReader)
    reader.kernel_drops = 0
    reader._next_seq = None
    for seq in (10, 11, 15, 16, 0xFFFFFFFD, 0xFFFFFFFF, 1, 4):
        reader._count(seq)
    # 12-14 lost; a jump backwards (a restarted instance) is not a loss; 0xFFFFFFFE, 0
    # (across the wrap) and 2-3 lost
    assert reader.kernel_drops == 3 + 1 + 1 + 2


def run_bpf(program: bytes, frame: bytes) -> int:
    """A tiny interpreter for the instructions bpf_ethertype_filter emits."""
    insns = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == capture.BPF_LD_H_ABS:
            if k + 2 > len(frame):
                return 0
            acc = frame[k] << 8 | frame[k + 1]
            pc += 1
        elif code == capture.BPF_JEQ_K:
            pc += 1 + (jt if acc == k else jf)
        elif code == capture.BPF_RET_K:
            return int(k)
        else:
            raise AssertionError(code)


def test_bpf_filter_keeps_ip_and_vlan_frames_only() -> None:
    program = bpf_ethertype_filter(capture.MIRROR_ETHERTYPES, 1500)
    mac = b"\x02" * 12
    for ethertype in (0x0800, 0x86DD, 0x8100, 0x88A8):
        assert run_bpf(program, mac + struct.pack("!H", ethertype) + b"\0" * 40) == 1500
    for ethertype in (0x0806, 0x88CC, 0x8864):
        assert run_bpf(program, mac + struct.pack("!H", ethertype) + b"\0" * 40) == 0
    assert run_bpf(program, b"\0" * 10) == 0


def queue_message(payload: bytes, packet_id: int, queue_num: int = 0x4150) -> bytes:
    body = struct.pack("!BBH", 2, 0, queue_num)
    body += nlattr(capture.NFQA_PACKET_HDR, struct.pack("!IHBx", packet_id, 0x0800, 0))
    body += nlattr(capture.NFQA_PAYLOAD, payload)
    kind = capture.NFNL_SUBSYS_QUEUE << 8 | capture.NFQNL_MSG_PACKET
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_nfqueue_packet_and_verdict() -> None:
    ((_kind, _seq, body),) = list(iter_messages(queue_message(b"\x45" * 20, 77)))
    packet = capture.parse_nfqueue_packet(body)
    assert packet is not None
    assert (packet.queue_num, packet.packet_id, packet.payload) == (0x4150, 77, b"\x45" * 20)
    verdict = capture.nfqueue_verdict(0x4151, 77, capture.NF_DROP)
    _len, kind, flags, _seq, _pid = struct.unpack_from("=IHHII", verdict)
    assert kind == (3 << 8) | 1 and flags == NLM_F_REQUEST
    assert struct.unpack_from("!BBH", verdict, 16) == (0, 0, 0x4151)
    assert dict(iter_attrs(verdict, 20)) == {capture.NFQA_VERDICT_HDR: struct.pack("!II", 0, 77)}


def test_nfqueue_config_fails_open() -> None:
    attrs = dict(iter_attrs(capture.nfqueue_params(0x4150, 3), 20))
    assert attrs[capture.NFQA_CFG_FLAGS] == struct.pack("!I", capture.NFQA_CFG_F_FAIL_OPEN)
    assert attrs[capture.NFQA_CFG_MASK] == struct.pack("!I", capture.NFQA_CFG_F_FAIL_OPEN)
    bind = dict(iter_attrs(capture.nfqueue_bind(0x4150, 1), 20))
    assert bind[capture.NFQA_CFG_CMD] == struct.pack("!BxH", 1, 0)
    assert capture.parse_nfqueue_packet(body=b"\0\0\0\0") is None


def _bind_twice(kind: str) -> list[str]:
    made = capture.NflogReader(0x4150) if kind == "nflog" else capture.NfqueueReader(0x4150, 0x4153)
    results = ["bound"]
    try:
        capture.NflogReader(0x4150) if kind == "nflog" else capture.NfqueueReader(0x4151, 0x4151)
    except capture.CaptureError as exc:
        results.append(str(exc))
    made.close()
    again = (
        capture.NflogReader(0x4150) if kind == "nflog" else capture.NfqueueReader(0x4150, 0x4153)
    )
    again.close()
    results.append("rebound")
    return results


@pytest.mark.root
@pytest.mark.parametrize("kind", ["nflog", "nfqueue"])
def test_bind_is_exclusive_and_released_on_close(netns: str, kind: str) -> None:
    from appliance.adapters.nsexec import run_in_netns

    first, error, last = run_in_netns(netns, _bind_twice, kind, timeout=10.0)
    assert (first, last) == ("bound", "rebound")
    assert "cannot bind: another process reads it" in error and "\n" not in error
