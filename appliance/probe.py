"""Kernel feature probes: which optional features the running kernel has.

Each feature is tried for real, in a network namespace made for the purpose: a
forked child process unshares a fresh network namespace (it has no name and
disappears with the child, whatever happens), loads a tiny nftables table through
libnftables or creates a link over rtnetlink, and reports what worked. The
caller's namespace is never touched; the only lasting effect is that the kernel
may load the modules the probes ask for, as it would for the real feature.

The daemon uses the same answers to choose its fallbacks (no flowtable: no fast
path; no ``queue``: no inline inspection; no table owner flag: no owner table). The
flowtable is asked differently: :func:`has_flowtable` has the kernel check one in the
caller's own namespace without committing it (a daemon may not make namespaces).

The description of every probe, the netlink encoding and the parsing of the
child's report are pure; only :func:`probe_features` and what it runs in the
child touch the kernel.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import select
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from appliance.adapters.netlink import (
    IFINFOMSG,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    ack_error,
    iter_messages,
    nlattr,
    nlmsg,
)
from appliance.errors import ApplianceError, KernelError

if TYPE_CHECKING:
    from appliance.model.profile import Profile

CLONE_NEWNET = 0x40000000


class ProbeError(ApplianceError):
    """The probes could not run at all (no privilege, no libnftables, a hang)."""

    exit_code = 1


@dataclass(frozen=True)
class Feature:
    """A kernel feature the probe checks, and how it is described."""

    name: str
    description: str


# In the order they are printed. Every key of probe_features().
FEATURES: tuple[Feature, ...] = (
    Feature("nftables", "nftables (inet family tables and base chains)"),
    Feature("flowtable", "nftables flowtable fast path (nf_flow_table)"),
    Feature("queue", "nftables queue statement (NFQUEUE), for inline inspection"),
    Feature("nflog", "nftables log group (NFLOG), for sampling packets"),
    Feature("table_owner", "nftables table owner flag"),
    Feature("conntrack", "connection tracking (ct state)"),
    Feature("nat", "NAT (masquerade)"),
    Feature("fib", "fib lookups (reverse path check)"),
    Feature("dynamic_set", "dynamic sets with timeouts updated from rules (meters)"),
    Feature("interval_set", "interval sets (networks and ranges)"),
    Feature("synproxy", "synproxy statement"),
    Feature("netdev_ingress", "netdev family ingress hook"),
    Feature("inet_ingress", "inet family ingress hook"),
    Feature("veth", "veth links"),
    Feature("vlan", "802.1Q VLAN links"),
    Feature("vrf", "VRF links"),
    Feature("dummy", "dummy links"),
    Feature("bridge", "bridge links"),
    Feature("macvlan", "macvlan links"),
    Feature("vxlan", "VXLAN links"),
    Feature("af_packet", "AF_PACKET sockets (mirror port capture)"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)

# Links made in the probe namespace: the parent of the VLAN and macvlan probes.
_VETH = "pv0"
_VETH_PEER = "pv1"

# One table per probe, so that a refusal spoils nothing else. "{dev}" is the
# device the hooks bind to.
NFT_PROBES: dict[str, str] = {
    "nftables": """
table inet probe_nftables {
  chain c { type filter hook input priority 0; policy accept; }
}""",
    "flowtable": """
table inet probe_flowtable {
  flowtable ft { hook ingress priority 0; devices = { {dev} }; }
  chain c { type filter hook forward priority 0; meta l4proto tcp flow add @ft; }
}""",
    "queue": """
table inet probe_queue {
  chain c { type filter hook input priority 0; meta l4proto tcp queue num 0 bypass; }
}""",
    "nflog": """
table inet probe_nflog {
  chain c { type filter hook input priority 0; log group 1; }
}""",
    "table_owner": """
table inet probe_table_owner {
  flags owner
  chain c { type filter hook input priority 0; }
}""",
    "conntrack": """
table inet probe_conntrack {
  chain c { type filter hook input priority 0; ct state established,related accept; }
}""",
    "nat": """
table inet probe_nat {
  chain c { type nat hook postrouting priority 100; oifname "{dev}" masquerade; }
}""",
    "fib": """
table inet probe_fib {
  chain c { type filter hook prerouting priority 0; fib saddr . iif oif missing drop; }
}""",
    "dynamic_set": """
table inet probe_dynamic_set {
  set s { type ipv4_addr; flags dynamic,timeout; timeout 1m; size 1024; }
  chain c {
    type filter hook input priority 0;
    update @s { ip saddr limit rate over 10/second } drop;
  }
}""",
    "interval_set": """
table inet probe_interval_set {
  set s { type ipv4_addr; flags interval; elements = { 10.0.0.0/8, 192.0.2.1-192.0.2.9 }; }
}""",
    "synproxy": """
table inet probe_synproxy {
  chain c {
    type filter hook input priority 0;
    tcp dport 80 ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm;
  }
}""",
    "netdev_ingress": """
table netdev probe_netdev_ingress {
  chain c { type filter hook ingress device "{dev}" priority 0; }
}""",
    "inet_ingress": """
table inet probe_inet_ingress {
  chain c { type filter hook ingress device "{dev}" priority 0; }
}""",
}


@dataclass(frozen=True)
class LinkProbe:
    """A link to create: ``kind`` with IFLA_INFO_DATA attributes ``data``."""

    ifname: str
    kind: str
    data: tuple[tuple[int, bytes], ...] = ()
    on_parent: bool = False  # IFLA_LINK: the probe veth
    peer: str | None = None  # veth: the peer's name


# IFLA_INFO_DATA attribute numbers, by link kind.
IFLA_VLAN_ID = 1
IFLA_VRF_TABLE = 1
IFLA_VXLAN_ID = 1
IFLA_VXLAN_PORT = 15
IFLA_MACVLAN_MODE = 1
MACVLAN_MODE_BRIDGE = 4
VETH_INFO_PEER = 1

LINK_PROBES: dict[str, LinkProbe] = {
    "veth": LinkProbe(_VETH, "veth", peer=_VETH_PEER),
    "vlan": LinkProbe("pvlan", "vlan", ((IFLA_VLAN_ID, struct.pack("=H", 100)),), on_parent=True),
    "vrf": LinkProbe("pvrf", "vrf", ((IFLA_VRF_TABLE, struct.pack("=I", 100)),)),
    "dummy": LinkProbe("pdummy", "dummy"),
    "bridge": LinkProbe("pbridge", "bridge"),
    "macvlan": LinkProbe(
        "pmacvlan",
        "macvlan",
        ((IFLA_MACVLAN_MODE, struct.pack("=I", MACVLAN_MODE_BRIDGE)),),
        on_parent=True,
    ),
    "vxlan": LinkProbe(
        "pvxlan",
        "vxlan",
        ((IFLA_VXLAN_ID, struct.pack("=I", 42)), (IFLA_VXLAN_PORT, struct.pack("!H", 4789))),
    ),
}

# --- rtnetlink encoding (pure) ----------------------------------------------

RTM_NEWLINK = 16
IFLA_IFNAME = 3
IFLA_LINK = 5
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
IFF_UP = 0x1


def _ifname(name: str) -> bytes:
    raw = name.encode()
    if not raw or len(raw) >= 16 or b"/" in raw or b"\0" in raw:
        raise ValueError(f"bad interface name {name!r}")
    return raw + b"\0"


def encode_newlink(probe: LinkProbe, seq: int, parent_index: int = 0) -> bytes:
    """The RTM_NEWLINK request (create, exclusive, ack) that creates ``probe``'s link."""
    info = nlattr(IFLA_INFO_KIND, probe.kind.encode())
    data = b"".join(nlattr(k, v) for k, v in probe.data)
    if probe.peer is not None:
        peer = IFINFOMSG.pack(0, 0, 0, 0, 0) + nlattr(IFLA_IFNAME, _ifname(probe.peer))
        data += nlattr(VETH_INFO_PEER, peer)
    if data:
        info += nlattr(IFLA_INFO_DATA, data)
    attrs = nlattr(IFLA_IFNAME, _ifname(probe.ifname))
    if probe.on_parent:
        if parent_index <= 0:
            raise ValueError(f"{probe.kind} needs a parent link")
        attrs += nlattr(IFLA_LINK, struct.pack("=i", parent_index))
    attrs += nlattr(IFLA_LINKINFO, info)
    body = IFINFOMSG.pack(0, 0, 0, 0, 0) + attrs
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    return nlmsg(RTM_NEWLINK, flags, seq, body)


def decode_ack(reply: bytes, seq: int) -> int:
    """The errno of the kernel's answer to request ``seq`` (0: done)."""
    for kind, rseq, body in iter_messages(reply):
        if kind == NLMSG_ERROR and rseq == seq:
            if len(body) < 4:
                raise ValueError("truncated netlink error message")
            return ack_error(body)
    raise ValueError(f"no acknowledgement for netlink request {seq}")


# --- the child's report (pure) ----------------------------------------------


@dataclass
class Report:
    """What the probe child found: each feature, and each failure's error."""

    features: dict[str, bool] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def parse_report(text: str) -> Report:
    """Read the JSON the probe child wrote; refuse anything malformed."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ProbeError(f"probe: unreadable answer from the probe process: {exc}") from None
    if not isinstance(raw, dict):
        raise ProbeError("probe: the probe process answered with no object")
    if "fatal" in raw:
        raise ProbeError(f"probe: {raw['fatal']}")
    features = raw.get("features")
    if not isinstance(features, dict):
        raise ProbeError("probe: the probe process gave no features")
    report = Report()
    for name in FEATURE_NAMES:
        value = features.get(name)
        if not isinstance(value, bool):
            raise ProbeError(f"probe: no answer for feature {name}")
        report.features[name] = value
    errors = raw.get("errors", {})
    if isinstance(errors, dict):
        report.errors = {str(k): str(v) for k, v in errors.items()}
    return report


def format_features(features: dict[str, bool]) -> str:
    """The human table of ``appliance probe``: one feature a line."""
    lines = []
    for feature in FEATURES:
        if feature.name in features:
            mark = "yes" if features[feature.name] else "no"
            lines.append(f"{feature.name:<15} {mark:<4} {feature.description}")
    return "\n".join(lines) + "\n"


# --- running the probes (in the child) --------------------------------------


def _unshare_net() -> None:
    unshare = getattr(os, "unshare", None)
    if unshare is not None:  # Python 3.12+
        unshare(CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class _Rtnl:
    """A minimal rtnetlink client: create a link, bring it up."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
        self.sock.settimeout(2.0)
        self.sock.bind((0, 0))
        self.seq = 0

    def request(self, message: bytes, seq: int) -> int:
        self.sock.send(message)
        while True:
            reply = self.sock.recv(65536)
            try:
                return decode_ack(reply, seq)
            except ValueError:
                continue

    def newlink(self, probe: LinkProbe, parent_index: int = 0) -> int:
        self.seq += 1
        return self.request(encode_newlink(probe, self.seq, parent_index), self.seq)

    def set_up(self, index: int) -> int:
        self.seq += 1
        body = IFINFOMSG.pack(0, 0, index, IFF_UP, IFF_UP)
        flags = NLM_F_REQUEST | NLM_F_ACK
        return self.request(nlmsg(RTM_NEWLINK, flags, self.seq, body), self.seq)

    def close(self) -> None:
        self.sock.close()


def _probe_links(report: dict[str, object]) -> None:
    features: dict[str, bool] = report["features"]  # type: ignore[assignment]
    errors: dict[str, str] = report["errors"]  # type: ignore[assignment]
    rtnl = _Rtnl()
    try:
        rtnl.set_up(socket.if_nametoindex("lo"))
        parent = 0
        for name, probe in LINK_PROBES.items():
            if probe.on_parent and not parent:
                features[name] = False
                errors[name] = "no veth parent link"
                continue
            err = rtnl.newlink(probe, parent)
            features[name] = err == 0
            if err:
                errors[name] = os.strerror(err)
            elif name == "veth":
                parent = socket.if_nametoindex(probe.ifname)
                rtnl.set_up(parent)
    finally:
        rtnl.close()


def _probe_nft(report: dict[str, object]) -> None:
    features: dict[str, bool] = report["features"]  # type: ignore[assignment]
    errors: dict[str, str] = report["errors"]  # type: ignore[assignment]
    try:
        import nftables  # Debian: python3-nftables
    except ImportError:
        for name in NFT_PROBES:
            features[name] = False
            errors[name] = "the libnftables Python binding (python3-nftables) is missing"
        return
    nft = nftables.Nftables()
    dev = _VETH if features.get("veth") else "lo"
    for name, ruleset in NFT_PROBES.items():
        rc, _out, err = nft.cmd(ruleset.replace("{dev}", dev))
        features[name] = rc == 0
        if rc != 0:
            errors[name] = " ".join(str(err).split())[:300]


def _probe_sockets(report: dict[str, object]) -> None:
    features: dict[str, bool] = report["features"]  # type: ignore[assignment]
    errors: dict[str, str] = report["errors"]  # type: ignore[assignment]
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    except OSError as exc:
        features["af_packet"] = False
        errors["af_packet"] = exc.strerror or str(exc)
    else:
        sock.close()
        features["af_packet"] = True


def _child(write_fd: int) -> None:
    report: dict[str, object] = {"features": {}, "errors": {}}
    try:
        _unshare_net()
    except OSError as exc:
        report = {
            "fatal": "probing kernel features needs root (CAP_SYS_ADMIN): "
            f"cannot create a network namespace: {exc.strerror or exc}"
        }
    else:
        steps: tuple[Callable[[dict[str, object]], None], ...] = (
            _probe_links,
            _probe_nft,
            _probe_sockets,
        )
        for step in steps:
            try:
                step(report)
            except Exception as exc:  # a probe that breaks must not hide the others
                report["errors"][step.__name__] = repr(exc)  # type: ignore[index]
        features: dict[str, bool] = report["features"]  # type: ignore[assignment]
        for name in FEATURE_NAMES:
            features.setdefault(name, False)
    data = json.dumps(report).encode()
    view = memoryview(data)
    while view:
        written = os.write(write_fd, view)
        view = view[written:]


def probe_report(timeout: float = 60.0) -> Report:
    """Run every probe in a throw-away network namespace; answers plus reasons."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        status = 0
        try:
            os.close(read_fd)
            _child(write_fd)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    finished = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProbeError(f"probe: the probes did not finish within {timeout:g}s")
            ready, _, _ = select.select([read_fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(read_fd, 65536)
            if not chunk:
                finished = True
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        if not finished:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return parse_report(b"".join(chunks).decode(errors="replace"))


def probe_features(timeout: float = 60.0) -> dict[str, bool]:
    """Which optional kernel features the running kernel has, by trying each one.

    Needs root (it creates a network namespace). Raises :class:`ProbeError`.
    """
    return probe_report(timeout).features


def main() -> int:
    """``python -m appliance.probe [--json]``: the probe without the full CLI."""
    import sys

    try:
        report = probe_report()
    except ProbeError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    if "--json" in sys.argv[1:]:
        print(json.dumps(report.features, sort_keys=True))
    else:
        sys.stdout.write(format_features(report.features))
        if "-v" in sys.argv[1:]:
            for name, reason in sorted(report.errors.items()):
                print(f"{name}: {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# --- flow offload: the profile's wish, this kernel, these links ----------------

OFFLOAD_OFF = "off in the profile ([defaults].offload = false)"
NO_FLOWTABLE = (
    "this kernel has no nftables flowtable (nf_flow_table): forwarded flows stay on the "
    "forward path"
)
NO_DEVICES = "none of the zones' interfaces exists"


def _log_no_flowtable(why: str) -> None:
    """Say once that forwarded flows stay on the forward path (logging is imported here:
    a one-shot command that never asks has no need of it)."""
    import logging

    logging.getLogger("appliance.probe").warning("flow offload: %s (%s)", NO_FLOWTABLE, why)


@dataclass(frozen=True)
class Offload:
    """Where accepted forwarded flows are offloaded: the links the flowtable hooks (none:
    no offload, and ``reason`` says why)."""

    devices: tuple[str, ...] = ()
    reason: str | None = None


@functools.cache
def has_flowtable() -> bool:
    """Whether this kernel takes a flowtable, asked once per process.

    The kernel checks a flowtable on loopback in this process's own network namespace and
    commits nothing (a libnftables dry run: the transaction is aborted). Unlike the other
    probes it needs no namespace of its own, so it works in the daemon, whose unit grants
    only CAP_NET_ADMIN and forbids new namespaces. The answer, if no, is logged here."""
    try:
        import nftables  # Debian: python3-nftables
    except ImportError:
        _log_no_flowtable("python3-nftables is missing")
        return False
    nft = nftables.Nftables()
    nft.set_dry_run(True)
    rc, _out, err = nft.cmd(NFT_PROBES["flowtable"].replace("{dev}", "lo"))
    if rc != 0:
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
        _log_no_flowtable(first[:200])
        return False
    return True


def current_links() -> list[str]:
    """The names of the links of this process's network namespace."""
    return [name for _index, name in socket.if_nameindex()]


def offload_for(
    profile: Profile,
    flowtable: Callable[[], bool] | None = None,
    links: Callable[[], Iterable[str]] | None = None,
) -> Offload:
    """The offload of ``profile`` here: the zones' interfaces that exist, on a kernel with
    a flowtable, when ``[defaults].offload`` asks for it. The kernel's lack is logged once
    (the probe's answer is kept for the life of the process)."""
    from appliance.compile.ruleset import offload_devices

    if not profile.defaults.offload:
        return Offload(reason=OFFLOAD_OFF)
    if not (flowtable or has_flowtable)():
        return Offload(reason=NO_FLOWTABLE)
    devices = offload_devices(profile, (links or current_links)())
    return Offload(devices) if devices else Offload(reason=NO_DEVICES)


def require_kernel_support(
    profile: Profile, path: str, features: Callable[[], dict[str, bool]] | None = None
) -> None:
    """Refuse what this kernel cannot do (KernelError, one line, before anything changes):
    ``[inspect].mode = "inline"`` without the nftables ``queue`` statement, a ``vlan`` or
    ``vrf`` segment without 802.1Q or VRF links. Everything else needs only the table."""
    kinds = {segment.kind for segment in profile.segments} & {"vlan", "vrf"}
    if profile.inspect.mode != "inline" and not kinds:
        return
    found = (features or probe_features)()
    if profile.inspect.mode == "inline" and not found.get("queue", False):
        raise KernelError(
            f'{path}: inspect.mode: "inline" needs the nftables queue statement (NFQUEUE), '
            'which this kernel lacks; use mode "sample" or "mirror"'
        )
    for i, segment in enumerate(profile.segments):
        if segment.kind in kinds and not found.get(segment.kind, False):
            what = "802.1Q VLAN" if segment.kind == "vlan" else "VRF"
            raise KernelError(
                f"{path}: isolation.segments[{i}]: segment {segment.name!r} needs {what} "
                "links, which this kernel lacks (see `appliance probe`)"
            )
