"""What the lab demo shows for each shipped profile: traffic and the outcome to expect. Pure.

A scenario is a list of steps run in order: probes between the lab's hosts (``wan``,
``lan``, ``mec``, or the ``appliance`` itself), run-time set changes, waits, and checks of
the source address a server saw (to show NAT). The servers a scenario needs are listed
with it. Profiles are recognised by their ``name``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from appliance.lab.topology import HostRole, Role

Expect = Literal["open", "refused", "timeout"]
ProbeProto = Literal["tcp", "udp", "icmp"]


@dataclass(frozen=True)
class Probe:
    """Traffic from ``src`` to ``dst`` and the outcome the profile should give it."""

    title: str
    src: Role
    dst: Role
    proto: ProbeProto
    port: int
    expect: Expect
    family: Literal[4, 6] = 4
    toward: HostRole | None = None  # dst "appliance": its address on the link to this host


@dataclass(frozen=True)
class SetAdd:
    """``appliance set add SET ELEMENT... [--timeout DUR]`` inside the appliance namespace."""

    title: str
    set: str
    elements: tuple[str, ...]
    timeout: str | None = None


@dataclass(frozen=True)
class SetDel:
    """``appliance set del SET ELEMENT...`` inside the appliance namespace."""

    title: str
    set: str
    elements: tuple[str, ...]


@dataclass(frozen=True)
class Wait:
    title: str
    seconds: float


@dataclass(frozen=True)
class SeenBy:
    """The server in ``role`` on ``proto/port`` saw a connection from ``peer`` (after NAT)."""

    title: str
    role: Role
    proto: Literal["tcp", "udp"]
    port: int
    peer: str


Step = Probe | SetAdd | SetDel | Wait | SeenBy


@dataclass(frozen=True)
class Server:
    role: Role
    proto: Literal["tcp", "udp", "both"]
    ports: tuple[int, ...]


@dataclass(frozen=True)
class Scenario:
    profile: str  # the profile's name
    servers: tuple[Server, ...]
    steps: tuple[Step, ...]
    observe_only: bool = False  # show the outcomes, expect nothing
    drift_rule: str | None = None  # the demo deletes one of this rule's kernel rules


EDGE_GATEWAY = Scenario(
    profile="edge-gateway",
    servers=(
        Server("wan", "both", (25, 53, 80, 443)),
        Server("mec", "tcp", (22, 443)),
        Server("lan", "tcp", (22,)),
        Server("appliance", "tcp", (22,)),
    ),
    steps=(
        Probe("lan browses the web", "lan", "wan", "tcp", 443, "open"),
        Probe("lan browses the web over IPv6", "lan", "wan", "tcp", 80, "open", 6),
        SeenBy("the web server sees the appliance (masquerade)", "wan", "tcp", 443, "198.51.100.1"),
        Probe("lan asks DNS", "lan", "wan", "udp", 53, "open"),
        Probe("lan tries SMTP out: rejected at once", "lan", "wan", "tcp", 25, "refused"),
        Probe("lan uses the MEC app directly", "lan", "mec", "tcp", 443, "open"),
        Probe("management SSH from the lan", "lan", "appliance", "tcp", 22, "open", toward="lan"),
        Probe(
            "SSH from the internet: dropped", "wan", "appliance", "tcp", 22, "timeout", toward="wan"
        ),
        Probe("the internet into the lan: dropped", "wan", "lan", "tcp", 22, "timeout"),
        Probe(
            "the internet into the lan over IPv6: dropped", "wan", "lan", "tcp", 22, "timeout", 6
        ),
        Probe(
            "the published MEC app (wan:8443 -> 10.45.0.10:443)",
            "wan",
            "appliance",
            "tcp",
            8443,
            "open",
            toward="wan",
        ),
        SeenBy("the MEC app sees the real client", "mec", "tcp", 443, "198.51.100.2"),
        Probe("MEC server fetches updates", "mec", "wan", "tcp", 443, "open"),
        Probe("MEC server tries plain HTTP out: dropped", "mec", "wan", "tcp", 80, "timeout"),
        Probe(
            "the internet pings the appliance", "wan", "appliance", "icmp", 0, "open", toward="wan"
        ),
        SetAdd("blocklist the wan host", "blocklist", ("198.51.100.2",)),
        Probe(
            "the blocklisted host pings again: dropped",
            "wan",
            "appliance",
            "icmp",
            0,
            "timeout",
            toward="wan",
        ),
        SetDel("take the wan host off the blocklist", "blocklist", ("198.51.100.2",)),
        SetAdd("automatic block of the wan host for 3s", "autoblock_v4", ("198.51.100.2",), "3s"),
        Probe(
            "the blocked host tries the MEC app: dropped",
            "wan",
            "appliance",
            "tcp",
            8443,
            "timeout",
            toward="wan",
        ),
        Wait("the automatic block expires", 3.5),
        Probe(
            "the MEC app answers it again", "wan", "appliance", "tcp", 8443, "open", toward="wan"
        ),
    ),
    drift_rule="lan-web-out",
)

MEC_NODE = Scenario(
    profile="mec-node",
    servers=(
        Server("mec", "both", (22, 443, 9050)),
        Server("wan", "tcp", (22, 80)),
        Server("lan", "tcp", (22,)),
        Server("appliance", "tcp", (22,)),
    ),
    steps=(
        Probe("a UE reaches the app", "wan", "mec", "tcp", 443, "open"),
        Probe("a UE reaches the app over IPv6", "wan", "mec", "tcp", 443, "open", 6),
        SeenBy("the app sees the UE's own address (no NAT)", "mec", "tcp", 443, "198.51.100.2"),
        Probe("a UE reaches the app over QUIC", "wan", "mec", "udp", 443, "open"),
        Probe("a UE reaches the video relay range", "wan", "mec", "tcp", 9050, "open"),
        Probe("a UE tries SSH to the app: dropped", "wan", "mec", "tcp", 22, "timeout"),
        Probe("ops deploys over SSH", "lan", "mec", "tcp", 22, "open"),
        Probe("a UE tries the ops network: dropped", "wan", "lan", "tcp", 22, "timeout"),
        Probe("the app calls out: rejected at once", "mec", "wan", "tcp", 80, "refused"),
        Probe("management SSH from ops", "lan", "appliance", "tcp", 22, "open", toward="lan"),
        Probe(
            "SSH to the node from the mobile side: dropped",
            "wan",
            "appliance",
            "tcp",
            22,
            "timeout",
            toward="wan",
        ),
    ),
)

IOT_GATEWAY = Scenario(
    profile="iot-gateway",
    servers=(
        Server("wan", "both", (80, 123, 443, 8883)),
        Server("mec", "tcp", (1883, 22)),
        Server("lan", "tcp", (22,)),
    ),
    steps=(
        Probe("a sensor reports to the cloud (MQTT/TLS)", "lan", "wan", "tcp", 8883, "open"),
        SeenBy("the cloud sees the gateway (masquerade)", "wan", "tcp", 8883, "198.51.100.1"),
        Probe("a sensor reports over IPv6 HTTPS", "lan", "wan", "tcp", 443, "open", 6),
        Probe("a sensor sets its clock", "lan", "wan", "udp", 123, "open"),
        Probe("a sensor tries plain HTTP: rejected", "lan", "wan", "tcp", 80, "refused"),
        Probe("a sensor tries an unlisted resolver: rejected", "lan", "wan", "udp", 53, "refused"),
        Probe("a sensor publishes to the local broker", "lan", "mec", "tcp", 1883, "open"),
        Probe(
            "a sensor tries SSH on the broker host: rejected", "lan", "mec", "tcp", 22, "refused"
        ),
        Probe("the internet into the devices: dropped", "wan", "lan", "tcp", 22, "timeout"),
    ),
)

UPF_N6 = Scenario(
    profile="upf-n6",
    servers=(
        Server("appliance", "udp", (2152, 8805)),
        Server("wan", "tcp", (443,)),
        Server("mec", "tcp", (22,)),
        Server("lan", "udp", (2152,)),
    ),
    steps=(
        Probe("the SMF speaks PFCP", "lan", "appliance", "udp", 8805, "open", toward="lan"),
        Probe("the gNB sends GTP-U", "lan", "appliance", "udp", 2152, "open", toward="lan"),
        Probe(
            "PFCP from the data network: dropped",
            "wan",
            "appliance",
            "udp",
            8805,
            "timeout",
            toward="wan",
        ),
        Probe(
            "GTP-U from the data network: dropped",
            "wan",
            "appliance",
            "udp",
            2152,
            "timeout",
            toward="wan",
        ),
        Probe("a UE browses", "mec", "wan", "tcp", 443, "open"),
        SeenBy("the data network sees the UPF (masquerade)", "wan", "tcp", 443, "198.51.100.1"),
        Probe("the data network into a UE: dropped", "wan", "mec", "tcp", 22, "timeout"),
        Probe("a UE tries the core: rejected", "mec", "lan", "udp", 2152, "refused"),
        SetAdd("an automatic block hits the SMF", "autoblock_v4", ("192.168.10.10",), "5s"),
        Probe(
            "PFCP keeps flowing (core peers are never blocked)",
            "lan",
            "appliance",
            "udp",
            8805,
            "open",
            toward="lan",
        ),
    ),
)

SCENARIOS: dict[str, Scenario] = {
    s.profile: s for s in (EDGE_GATEWAY, MEC_NODE, IOT_GATEWAY, UPF_N6)
}


# For a profile the demo does not know: show what passes, without expectations.
def _survey_steps() -> tuple[Step, ...]:
    pairs: tuple[tuple[Role, Role], ...] = (
        ("lan", "wan"),
        ("wan", "lan"),
        ("lan", "mec"),
        ("mec", "wan"),
        ("wan", "mec"),
        ("lan", "appliance"),
        ("wan", "appliance"),
    )
    kinds: tuple[tuple[ProbeProto, int], ...] = (("tcp", 22), ("tcp", 443), ("icmp", 0))
    families: tuple[Literal[4, 6], ...] = (4, 6)
    steps: list[Step] = []
    for src, dst in pairs:
        toward: HostRole | None = None
        if dst == "appliance" and src != "appliance":
            toward = src
        for proto, port in kinds:
            for family in families:
                title = f"{src} -> {dst} {proto}/{port}"
                steps.append(Probe(title, src, dst, proto, port, "open", family, toward))
    return tuple(steps)


SURVEY = Scenario(
    profile="",
    observe_only=True,
    servers=(
        Server("wan", "both", (22, 80, 443)),
        Server("lan", "both", (22, 80, 443)),
        Server("mec", "both", (22, 80, 443)),
        Server("appliance", "tcp", (22, 443)),
    ),
    steps=_survey_steps(),
)
