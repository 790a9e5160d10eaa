"""The profile model: frozen dataclasses, built by ``appliance.model.parse``. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from appliance.model.elements import Elements
from appliance.model.values import (
    AddrItem,
    HostPort,
    IPAddress,
    IPNetwork,
    PortItem,
    SetType,
    parse_host_port,
)
from appliance.units import Rate

Verdict = Literal["accept", "drop", "reject"]
Proto = Literal["tcp", "udp", "icmp", "icmpv6", "sctp", "any"]
PROTOS: tuple[str, ...] = get_args(Proto)
VERDICTS: tuple[str, ...] = get_args(Verdict)
PORT_PROTOS: tuple[str, ...] = ("tcp", "udp", "sctp")
ANY = "any"
SELF = "self"
ForwardProto = Literal["tcp", "udp"]
FORWARD_PROTOS: tuple[str, ...] = get_args(ForwardProto)
InvalidVerdict = Literal["drop", "accept"]
INVALID_VERDICTS: tuple[str, ...] = get_args(InvalidVerdict)
RESERVED_ZONE_NAMES: tuple[str, ...] = (ANY, SELF)
AUTOBLOCK_SETS: tuple[str, ...] = ("autoblock_v4", "autoblock_v6")


@dataclass(frozen=True)
class Defaults:
    """The chains' default verdicts, and whether forwarded flows are offloaded."""

    input: Verdict = "drop"
    forward: Verdict = "drop"
    output: Verdict = "accept"
    # Accepted forwarded TCP and UDP flows leave the forward path for the kernel's flowtable
    # once inspection has had its sample of them (where the kernel has a flowtable).
    offload: bool = False


@dataclass(frozen=True)
class Zone:
    """A named group of interfaces and networks that rules go from and to."""

    name: str
    interfaces: tuple[str, ...] = ()  # names; a trailing * matches a prefix
    networks: tuple[IPNetwork, ...] = ()  # membership also by source/destination address
    masquerade: bool = False
    segment: str | None = None  # set when the zone was created by a segment


@dataclass(frozen=True)
class SetSpec:
    """A named set of addresses or ports, its elements packed."""

    name: str
    type: SetType
    interval: bool = False
    timeout: float | None = None  # default element timeout, seconds
    size: int | None = None
    # elements + elements_file, packed (they read as canonical texts, in order). None: none.
    elements: Elements = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.elements is None or not isinstance(self.elements, Elements):
            texts = self.elements or ()
            object.__setattr__(self, "elements", Elements.of(self.type, self.interval, texts))

    @property
    def family(self) -> Literal["ipv4", "ipv6"] | None:
        return {"ipv4_addr": "ipv4", "ipv6_addr": "ipv6"}.get(self.type)  # type: ignore[return-value]


@dataclass(frozen=True)
class Rule:
    """One ``[[rules]]`` entry: a match from one zone to another, and its verdict."""

    name: str
    index: int  # position in [[rules]], 0-based
    from_zone: str = ANY  # a zone name, "self" or "any"
    to_zone: str = ANY
    proto: Proto = "any"
    saddr: tuple[AddrItem, ...] = ()
    daddr: tuple[AddrItem, ...] = ()
    sport: tuple[PortItem, ...] = ()
    dport: tuple[PortItem, ...] = ()
    limit: Rate | None = None
    action: Verdict = "accept"
    log: bool = False


@dataclass(frozen=True, kw_only=True)
class Forward:
    """Port forwarding: DNAT of traffic arriving from ``from_zone`` to ``to_addr:to_port``."""

    name: str
    index: int
    from_zone: str
    proto: ForwardProto = "tcp"
    dport: PortItem  # int or PortRange
    to_addr: IPAddress
    to_port: int | None = None  # None: keep the original port


@dataclass(frozen=True)
class Protect:
    """The ``[protect]`` table: invalid packets, spoofing, SYN floods, connection limits."""

    invalid: InvalidVerdict = "drop"
    spoofing: bool = False
    syn_flood: Rate | None = None  # per source address
    conn_limit: int | None = None  # concurrent connections per source
    block_timeout: float = 600.0  # seconds
    never_block: tuple[AddrItem, ...] = ()


@dataclass(frozen=True)
class PortScanDetector:
    """A source that tries ``ports`` ports within ``window`` seconds is a scan."""

    ports: int = 20
    window: float = 10.0


@dataclass(frozen=True)
class SynFloodDetector:
    """A source that opens connections faster than ``rate`` floods."""

    rate: Rate = field(default_factory=lambda: Rate(500, "second"))


@dataclass(frozen=True)
class DnsTunnelDetector:
    """Queries with long or random-looking labels look like a tunnel."""

    max_label: int = 52
    max_entropy: float = 4.0
    rate: Rate | None = None  # optional: queries per source above this rate


@dataclass(frozen=True)
class GtpDetector:
    """GTP-U traffic from user equipment outside ``ue_pools`` is flagged."""

    ue_pools: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class Detectors:
    """The detectors ``[inspect.detectors]`` turns on (None: off)."""

    port_scan: PortScanDetector | None = None
    syn_flood: SynFloodDetector | None = None
    dns_tunnel: DnsTunnelDetector | None = None
    gtp: GtpDetector | None = None


InspectMode = Literal["sample", "mirror", "inline", "off"]
INSPECT_MODES: tuple[str, ...] = get_args(InspectMode)
EncryptionHandling = Literal["track-only", "full"]
ENCRYPTION_HANDLINGS: tuple[str, ...] = get_args(EncryptionHandling)
# A profile without [inspect] inspects nothing (mode "off"); an [inspect] table that names no
# mode samples: declaring the table is asking for inspection.
INSPECT_DECLARED_MODE: InspectMode = "sample"


@dataclass(frozen=True)
class Inspect:
    """The ``[inspect]`` table: what packets user-space inspection sees, and its rules."""

    mode: InspectMode = "off"
    sample_packets: int = 8
    interfaces: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()  # absolute paths of signature files
    alerts: str = "/var/log/appliance/eve.json"
    block: bool = True
    home_net: tuple[IPNetwork, ...] | None = None  # None: every zone's networks
    detectors: Detectors = field(default_factory=Detectors)
    strict: bool = False  # a rule the engine cannot run refuses the set (else: skipped)
    classification: str | None = None  # a classification.config over the shipped classtypes
    reference: str | None = None  # a reference.config
    stream_depth: int = 65536  # bytes of each TCP direction reassembled for the rules (0: off)
    # "track-only" (Suricata's default): a TLS flow's payload is no longer inspected once it
    # carries application data (its handshake buffers and headers still are); "full": it is
    encryption_handling: EncryptionHandling = "track-only"


SegmentKind = Literal["vlan", "vrf", "netns"]
SEGMENT_KINDS: tuple[str, ...] = get_args(SegmentKind)


@dataclass(frozen=True)
class Segment:
    """A VLAN, VRF or network namespace the appliance creates, and its link."""

    name: str
    kind: SegmentKind
    link: str  # the appliance-side link this segment creates (marked with the "ap-" prefix)
    parent: str | None = None  # vlan
    vlan_id: int | None = None  # vlan
    addresses: tuple[str, ...] = ()  # interface addresses "10.100.0.1/24"
    zone: str | None = None
    vrf: str | None = None  # name of a vrf segment to enslave the link to
    table: int | None = None  # vrf
    netns: str | None = None  # netns
    peer_addresses: tuple[str, ...] = ()  # netns


@dataclass(frozen=True)
class Hub:
    """The ``[hub]`` table: where signed policy bundles come from, and how they are trusted."""

    url: str
    trust: tuple[str, ...]  # absolute paths of trusted public keys
    poll: float = 30.0
    timeout: float = 30.0  # the deadline of one exchange with the hub (beyond a long poll's wait)
    root: str | None = None  # a TUF root.json: TUF roles replace the signed pair and trust
    ca: str | None = None  # PEM CA bundle for https (default: the system's)
    client_cert: str | None = None  # mutual TLS, with client_key
    client_key: str | None = None
    proxy: str | None = None  # http://HOST:PORT
    key: str | None = None  # the appliance's Ed25519 key: signs its status reports


@dataclass(frozen=True)
class MetricsSpec:
    """Where the Prometheus metrics are served."""

    listen: str = "127.0.0.1:9469"

    @property
    def address(self) -> HostPort:
        return parse_host_port(self.listen)

    @property
    def host(self) -> str:
        return self.address.host

    @property
    def port(self) -> int:
        return self.address.port


@dataclass(frozen=True)
class Profile:
    """A whole profile, as parsed and checked."""

    version: int
    name: str
    source: str = "<memory>"  # the file it was loaded from
    defaults: Defaults = field(default_factory=Defaults)
    zones: tuple[Zone, ...] = ()  # declared zones first (file order), then segment zones
    sets: tuple[SetSpec, ...] = ()
    rules: tuple[Rule, ...] = ()
    forwards: tuple[Forward, ...] = ()
    protect: Protect = field(default_factory=Protect)
    inspect: Inspect = field(default_factory=Inspect)
    segments: tuple[Segment, ...] = ()
    hub: Hub | None = None
    metrics: MetricsSpec | None = None

    def zone(self, name: str) -> Zone:
        for zone in self.zones:
            if zone.name == name:
                return zone
        raise KeyError(name)

    def set(self, name: str) -> SetSpec:
        for spec in self.sets:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def has_policy(self) -> bool:
        """False for a hub-only local profile (``version``, ``name``, ``[hub]``, ``[metrics]``)."""
        return bool(self.zones or self.sets or self.rules or self.forwards or self.segments)
