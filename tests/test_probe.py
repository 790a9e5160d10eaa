"""Kernel feature probes: the netlink encoding and report parsing (pure), and on a
real kernel, the probes' answers against the command-line tools' and this host's
known feature set."""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import time
from pathlib import Path

import pytest

from appliance import probe
from appliance.adapters.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLMSG_ERROR
from appliance.model.parse import load_profile
from appliance.model.profile import Profile
from appliance.probe import (
    FEATURE_NAMES,
    LINK_PROBES,
    NFT_PROBES,
    NO_DEVICES,
    NO_FLOWTABLE,
    OFFLOAD_OFF,
    LinkProbe,
    Offload,
    ProbeError,
    decode_ack,
    encode_newlink,
    format_features,
    offload_for,
    parse_report,
)
from tests.guest_plugin import in_guest

# Features this project's host kernel (and CI's) lacks; the guest has them all.
HOST_LACKS = {"flowtable", "queue", "vlan", "vrf", "dummy"}


def attrs(data: bytes) -> dict[int, bytes]:
    """Top-level netlink attributes of ``data``."""
    out = {}
    while len(data) >= 4:
        length, kind = struct.unpack_from("=HH", data)
        out[kind] = data[4:length]
        data = data[(length + 3) & ~3 :]
    return out


# --- pure ---------------------------------------------------------------------


def test_every_feature_has_a_probe_and_the_contract_keys_are_there() -> None:
    probed = set(NFT_PROBES) | set(LINK_PROBES) | {"af_packet"}
    assert probed == set(FEATURE_NAMES)
    assert {"flowtable", "queue", "vlan", "vrf", "nflog"} <= set(FEATURE_NAMES)
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES))


def test_newlink_for_a_vlan_carries_name_parent_kind_and_id() -> None:
    msg = encode_newlink(LINK_PROBES["vlan"], seq=7, parent_index=42)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", msg)
    assert (length, kind, seq) == (len(msg), probe.RTM_NEWLINK, 7)
    assert flags & NLM_F_CREATE and flags & NLM_F_EXCL and flags & NLM_F_ACK
    top = attrs(msg[16 + 16 :])
    assert top[probe.IFLA_IFNAME] == b"pvlan\0"
    assert struct.unpack("=i", top[probe.IFLA_LINK]) == (42,)
    info = attrs(top[probe.IFLA_LINKINFO])
    assert info[probe.IFLA_INFO_KIND] == b"vlan"
    assert struct.unpack("=H", attrs(info[probe.IFLA_INFO_DATA])[probe.IFLA_VLAN_ID]) == (100,)


def test_newlink_for_a_veth_nests_the_peer() -> None:
    msg = encode_newlink(LinkProbe("a0", "veth", peer="b0"), seq=1)
    info = attrs(attrs(msg[32:])[probe.IFLA_LINKINFO])
    peer = attrs(info[probe.IFLA_INFO_DATA])[probe.VETH_INFO_PEER]
    assert attrs(peer[16:])[probe.IFLA_IFNAME] == b"b0\0"


@pytest.mark.parametrize("name", ["", "x" * 16, "a/b"])
def test_newlink_refuses_bad_names(name: str) -> None:
    with pytest.raises(ValueError):
        encode_newlink(LinkProbe(name, "dummy"), seq=1)


def test_newlink_refuses_a_child_link_without_parent() -> None:
    with pytest.raises(ValueError, match="parent"):
        encode_newlink(LINK_PROBES["macvlan"], seq=1)


def ack(seq: int, error: int) -> bytes:
    body = struct.pack("=i", error) + struct.pack("=IHHII", 16, 16, 0, seq, 0)
    return struct.pack("=IHHII", 16 + len(body), NLMSG_ERROR, 0, seq, 0) + body


def test_decode_ack_finds_the_answer_to_its_request() -> None:
    assert decode_ack(ack(3, 0), 3) == 0
    assert decode_ack(ack(2, -17) + ack(3, -95), 3) == 95
    with pytest.raises(ValueError):
        decode_ack(ack(2, 0), 3)
    with pytest.raises(ValueError):
        decode_ack(b"\x01\x02", 3)


def good_report() -> dict[str, object]:
    return {"features": {name: True for name in FEATURE_NAMES}, "errors": {"vlan": "x"}}


def test_parse_report_reads_every_feature() -> None:
    report = parse_report(json.dumps(good_report()))
    assert report.features == {name: True for name in FEATURE_NAMES}
    assert report.errors == {"vlan": "x"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "unreadable"),
        ("[]", "no object"),
        ('{"fatal": "needs root"}', "needs root"),
        ('{"features": {}}', "no answer for feature"),
        ('{"features": {"nftables": "yes"}}', "no answer for feature nftables"),
    ],
)
def test_parse_report_refuses_malformed_answers(text: str, message: str) -> None:
    with pytest.raises(ProbeError, match=message):
        parse_report(text)


def test_format_features_one_line_each_in_order() -> None:
    features = {name: name != "queue" for name in FEATURE_NAMES}
    lines = format_features(features).splitlines()
    assert [line.split()[0] for line in lines] == list(FEATURE_NAMES)
    assert lines[FEATURE_NAMES.index("queue")].split()[1] == "no"
    assert lines[0].split()[1] == "yes"


def test_a_namespace_refused_gives_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(probe, "_unshare_net", refuse)
    with pytest.raises(ProbeError, match="needs root") as exc:
        probe.probe_features()
    assert "\n" not in str(exc.value)


def test_a_hanging_probe_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe, "_child", lambda fd: time.sleep(30))
    start = time.monotonic()
    with pytest.raises(ProbeError, match="did not finish"):
        probe.probe_features(timeout=0.5)
    assert time.monotonic() - start < 5


# --- on the running kernel (root) -------------------------------------------

CLI_ORACLE = r"""
set -u
try() { if "$@" > /dev/null 2>&1; then echo "$name 1"; else echo "$name 0"; fi; }
ip link set lo up
name=veth try ip link add pv0 type veth peer name pv1
ip link set pv0 up 2> /dev/null
name=vlan try ip link add link pv0 name pvlan type vlan id 100
name=vrf try ip link add name pvrf type vrf table 100
name=dummy try ip link add name pdummy type dummy
name=bridge try ip link add name pbridge type bridge
name=macvlan try ip link add link pv0 name pmacvlan type macvlan mode bridge
name=vxlan try ip link add name pvxlan type vxlan id 42 dstport 4789
dev=lo
ip link show pv0 > /dev/null 2>&1 && dev=pv0
for f in "$@"; do
    name=${f%%=*}
    rules=${f#*=}
    try sh -c 'printf "%s\n" "$1" | nft -f -' sh "${rules//\{dev\}/$dev}"
done
"""


def cli_answers() -> dict[str, bool]:
    """What ``ip`` and ``nft`` say, tried in a namespace of their own."""
    args = [f"{name}={ruleset}" for name, ruleset in NFT_PROBES.items()]
    out = subprocess.run(
        ["unshare", "--net", "bash", "-c", CLI_ORACLE, "oracle", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return {name: value == "1" for name, value in (line.split() for line in out.splitlines())}


def host_state() -> tuple[str, str]:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return links, tables


@pytest.mark.root
def test_probe_agrees_with_ip_and_nft() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    features = probe.probe_features()
    expected = cli_answers()
    expected["af_packet"] = features["af_packet"]
    assert features == expected


@pytest.mark.root
def test_probe_leaves_this_namespace_alone_and_is_fast() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    before = host_state()
    start = time.monotonic()
    probe.probe_features()
    elapsed = time.monotonic() - start
    assert host_state() == before
    assert elapsed < (30 if in_guest() else 2), f"probing took {elapsed:.2f}s"


@pytest.mark.root
def test_probe_matches_this_hosts_kernel() -> None:
    """The host-versus-guest matrix of qemu/README.md, host column."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if in_guest():
        pytest.skip("the guest's column is tests/guest/test_kernel.py")
    if not os.environ.get("CI"):
        pytest.skip("the matrix is this project's CI host kernel; elsewhere see the probe test")
    features = probe.probe_features()
    assert {name for name, ok in features.items() if not ok} == HOST_LACKS


# --- flow offload: the profile's wish, the kernel, the links ---------------------------

OFFLOAD_PROFILE = """
version = 1
name = "fast"
[defaults]
offload = OFFLOAD
[zones.wan]
interfaces = ["eth0"]
[zones.lan]
interfaces = ["eth1", "wlan*"]
"""


def offload_profile(tmp_path: Path, offload: bool) -> Profile:
    path = tmp_path / "fast.toml"
    path.write_text(OFFLOAD_PROFILE.replace("OFFLOAD", "true" if offload else "false"))
    return load_profile(path)


def never() -> bool:
    raise AssertionError("the kernel was probed for a profile that does not ask for offload")


def test_offload_needs_the_profile_the_kernel_and_links(tmp_path: Path) -> None:
    links = lambda: ["lo", "eth0", "wlan3", "eth7"]  # noqa: E731
    wanted = offload_profile(tmp_path, True)
    off = offload_for(offload_profile(tmp_path, False), never, links)
    assert off == Offload(reason=OFFLOAD_OFF)
    assert offload_for(wanted, lambda: False, links) == Offload(reason=NO_FLOWTABLE)
    assert offload_for(wanted, lambda: True, links) == Offload(("eth0", "wlan3"))
    assert offload_for(wanted, lambda: True, lambda: ["lo", "eth7"]) == Offload(reason=NO_DEVICES)


@pytest.mark.root
def test_the_dry_run_flowtable_check_agrees_with_the_probe(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The daemon's check (in its own namespace, committing nothing) against the probe's."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    before = host_state()
    probe.has_flowtable.cache_clear()
    with caplog.at_level(logging.WARNING, logger="appliance.probe"):
        found = probe.has_flowtable()
    assert found == probe.probe_features()["flowtable"]
    assert host_state() == before
    if not found:  # the kernel's reason, in one line: nft's caret marks and hints left out
        (said,) = [r.getMessage() for r in caplog.records if NO_FLOWTABLE in r.getMessage()]
        assert "\n" not in said and "^" not in said, said
