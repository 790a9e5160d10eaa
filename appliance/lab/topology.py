"""The lab's desired shape: four network namespaces joined through the appliance. Pure.

::

    wan host  eth0 ---- eth0  appliance  eth1 ---- eth0  lan host
    198.51.100.2         198.51.100.1    192.168.10.1    192.168.10.10
    2001:db8:100::2      2001:db8:100::1 fd00:10::1      fd00:10::10
                                     eth2
                                      |
                                     eth0  mec host
                                     10.45.0.1 / 10.45.0.10
                                     fd00:45::1 / fd00:45::10

The appliance namespace forwards IPv4 and IPv6 with the kernel's reverse-path filter off (the
profile's ``[protect].spoofing`` is what gets tested), and every host routes everything
through it. IPv6 addresses are added without duplicate address detection so they are usable
at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DEFAULT_PREFIX = "lab-"

Role = Literal["wan", "appliance", "lan", "mec"]
HostRole = Literal["wan", "lan", "mec"]
ROLES: tuple[Role, ...] = ("wan", "appliance", "lan", "mec")
HOST_ROLES: tuple[HostRole, ...] = ("wan", "lan", "mec")

# Every host reaches the appliance through its own link; the name of the link on the
# appliance's side, and the addresses of both ends (appliance side first).
_LINKS: dict[HostRole, tuple[str, tuple[str, str], tuple[str, str]]] = {
    # role: (appliance ifname, (appliance v4, host v4), (appliance v6, host v6))
    "wan": ("eth0", ("198.51.100.1", "198.51.100.2"), ("2001:db8:100::1", "2001:db8:100::2")),
    "lan": ("eth1", ("192.168.10.1", "192.168.10.10"), ("fd00:10::1", "fd00:10::10")),
    "mec": ("eth2", ("10.45.0.1", "10.45.0.10"), ("fd00:45::1", "fd00:45::10")),
}
_V4_PREFIXLEN = 24
_V6_PREFIXLEN = 64
HOST_IFNAME = "eth0"  # a host's only link, in its own namespace


@dataclass(frozen=True)
class Address:
    """An interface address: ``address/prefixlen`` on ``ifname``."""

    ifname: str
    address: str
    prefixlen: int

    @property
    def family(self) -> Literal[4, 6]:
        return 6 if ":" in self.address else 4

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"


@dataclass(frozen=True)
class Route:
    """A default route (``0.0.0.0/0`` or ``::/0``) through ``gateway``."""

    gateway: str
    ifname: str

    @property
    def family(self) -> Literal[4, 6]:
        return 6 if ":" in self.gateway else 4


@dataclass(frozen=True)
class Namespace:
    role: Role
    name: str
    addresses: tuple[Address, ...]
    routes: tuple[Route, ...]
    sysctls: tuple[tuple[str, str], ...]  # (path under /proc/sys, value), set inside the namespace


@dataclass(frozen=True)
class Veth:
    """A veth pair: ``ifname_a`` in namespace ``ns_a`` and ``ifname_b`` in ``ns_b``."""

    ns_a: str
    ifname_a: str
    ns_b: str
    ifname_b: str


@dataclass(frozen=True)
class Lab:
    prefix: str
    namespaces: tuple[Namespace, ...]
    veths: tuple[Veth, ...]

    def ns(self, role: Role) -> str:
        """The namespace name of ``role``."""
        return self.namespace(role).name

    def namespace(self, role: Role) -> Namespace:
        for ns in self.namespaces:
            if ns.role == role:
                return ns
        raise KeyError(role)

    def addr(self, role: Role, family: int = 4, toward: HostRole | None = None) -> str:
        """The address of ``role`` (for the appliance: on the link ``toward`` that host)."""
        if role == "appliance":
            if toward is None:
                raise ValueError("the appliance has one address per link: say toward which host")
            ifname = appliance_ifname(toward)
        else:
            ifname = HOST_IFNAME
        for a in self.namespace(role).addresses:
            if a.ifname == ifname and a.family == family:
                return a.address
        raise KeyError((role, family))


def appliance_ifname(host: HostRole) -> str:
    """The name of the appliance's link toward ``host``."""
    return _LINKS[host][0]


def validate_prefix(prefix: str) -> None:
    """Namespace names become file names under /run/netns: keep them plain."""
    if not prefix or len(prefix) > 32:
        raise ValueError(f"lab prefix {prefix!r}: 1 to 32 characters")
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    if not set(prefix) <= allowed or prefix.startswith("."):
        raise ValueError(f"lab prefix {prefix!r}: letters, digits, '-', '_' and '.' only")


def lab(prefix: str = DEFAULT_PREFIX) -> Lab:
    """The desired lab for ``prefix`` (namespaces ``{prefix}wan``, ``{prefix}appliance``, ...)."""
    validate_prefix(prefix)
    appliance_name = f"{prefix}appliance"
    appliance_addrs: list[Address] = []
    hosts: list[Namespace] = []
    veths: list[Veth] = []
    for role in HOST_ROLES:
        ifname, (ap4, host4), (ap6, host6) = _LINKS[role]
        name = f"{prefix}{role}"
        appliance_addrs += [
            Address(ifname, ap4, _V4_PREFIXLEN),
            Address(ifname, ap6, _V6_PREFIXLEN),
        ]
        veths.append(Veth(appliance_name, ifname, name, HOST_IFNAME))
        hosts.append(
            Namespace(
                role=role,
                name=name,
                addresses=(
                    Address(HOST_IFNAME, host4, _V4_PREFIXLEN),
                    Address(HOST_IFNAME, host6, _V6_PREFIXLEN),
                ),
                routes=(Route(ap4, HOST_IFNAME), Route(ap6, HOST_IFNAME)),
                sysctls=(
                    # A host is a plain end system: it does not route (a new namespace
                    # starts with the IPv4 settings of the machine's, which may forward)
                    # and has no router advertisements to wait for.
                    ("net/ipv4/ip_forward", "0"),
                    ("net/ipv6/conf/all/accept_ra", "0"),
                    ("net/ipv6/conf/default/accept_ra", "0"),
                ),
            )
        )
    appliance = Namespace(
        role="appliance",
        name=appliance_name,
        addresses=tuple(appliance_addrs),
        routes=(),
        sysctls=(
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv6/conf/all/forwarding", "1"),
            ("net/ipv6/conf/default/forwarding", "1"),
            # The kernel's own reverse-path filter would hide the product's spoofing check.
            ("net/ipv4/conf/all/rp_filter", "0"),
            ("net/ipv4/conf/default/rp_filter", "0"),
            *((f"net/ipv4/conf/{_LINKS[h][0]}/rp_filter", "0") for h in HOST_ROLES),
        ),
    )
    wan, lan, mec = hosts
    return Lab(prefix=prefix, namespaces=(wan, appliance, lan, mec), veths=tuple(veths))
