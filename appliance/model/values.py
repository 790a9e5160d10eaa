"""Addresses, networks, ranges, ports and set elements: parsing and canonical forms.

Canonical forms are what the kernel prints back, so elements read from the kernel and
elements from a profile compare equal: a host is ``10.0.0.1`` (not ``10.0.0.1/32``), a
range that is exactly one prefix is that prefix, IPv6 is compressed.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal, get_args

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Family = Literal["ipv4", "ipv6"]
SetType = Literal["ipv4_addr", "ipv6_addr", "inet_service", "ifname"]
SET_TYPES: tuple[str, ...] = get_args(SetType)
FAMILY_OF_SET_TYPE: dict[str, Family] = {"ipv4_addr": "ipv4", "ipv6_addr": "ipv6"}

_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}\*?$|^[A-Za-z0-9_.:@-]{0,14}\*$")
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_BRACKETED = re.compile(r"\[([^\]]*)\]:([0-9]+)")


@dataclass(frozen=True, order=True)
class SetRef:
    """``@name``: a reference to a named set."""

    name: str

    def __str__(self) -> str:
        return f"@{self.name}"


@dataclass(frozen=True)
class AddrRange:
    """``first-last``, both of one family, first <= last."""

    first: IPAddress
    last: IPAddress

    @property
    def family(self) -> Family:
        return "ipv4" if self.first.version == 4 else "ipv6"

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


@dataclass(frozen=True)
class PortRange:
    """A range of ports, both ends included."""

    first: int
    last: int

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


AddrItem = IPNetwork | AddrRange | SetRef
PortItem = int | PortRange | SetRef


def family_of(item: IPNetwork | AddrRange | IPAddress) -> Family:
    if isinstance(item, AddrRange):
        return item.family
    return "ipv4" if item.version == 4 else "ipv6"


def parse_network(text: str) -> IPNetwork:
    """An address (as a /32 or /128) or a network with no host bits set."""
    if not isinstance(text, str):
        raise ValueError(f"expected an address or network string, got {text!r}")
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            raise ValueError(f"network {text!r} has host bits set") from None
        raise ValueError(f"bad address or network {text!r}") from None


def parse_address(text: str) -> IPAddress:
    if not isinstance(text, str):
        raise ValueError(f"expected an address string, got {text!r}")
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(f"bad address {text!r}") from None


def parse_addr_range(text: str) -> AddrRange:
    first_text, _, last_text = text.partition("-")
    first, last = parse_address(first_text), parse_address(last_text)
    if first.version != last.version:
        raise ValueError(f"range {text!r} mixes IPv4 and IPv6")
    if int(first) > int(last):
        raise ValueError(f"range {text!r} is reversed")
    return AddrRange(first, last)


def parse_addr_item(value: object) -> AddrItem:
    """One entry of ``saddr``/``daddr``/``never_block``: address, network, range or ``@set``."""
    if not isinstance(value, str):
        raise ValueError(f"expected an address, network, range or @set, got {value!r}")
    text = value.strip()
    if text.startswith("@"):
        return SetRef(_set_name(text[1:]))
    if "-" in text and "/" not in text:
        return parse_addr_range(text)
    return parse_network(text)


def parse_port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"bad port {value!r}")
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"bad port {value!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {value!r} is out of range 0-65535")
    return port


def parse_port_item(value: object) -> PortItem:
    """One entry of ``sport``/``dport``: ``80``, ``"8000-8100"`` or ``"@set"``."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("@"):
            return SetRef(_set_name(text[1:]))
        if "-" in text:
            first_text, _, last_text = text.partition("-")
            first, last = parse_port(first_text), parse_port(last_text)
            if first > last:
                raise ValueError(f"port range {value!r} is reversed")
            return PortRange(first, last)
    return parse_port(value)


def _set_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,62}", name):
        raise ValueError(f"bad set name {name!r}")
    return name


def valid_name(name: str) -> bool:
    """Names of zones, sets, rules and segments: a letter, then letters, digits, _ . -."""
    return bool(re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,62}", name))


def valid_ifname(name: str) -> bool:
    """An interface name, or a prefix ending in ``*``."""
    return isinstance(name, str) and bool(_IFNAME.fullmatch(name)) and name != "*"


_OCTET = r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}(?:/(3[0-2]|[12]?\d))?$")


def _fast_ipv4(text: str, interval: bool) -> str | None:
    """Canonical text of a plain IPv4 address or network, or None to take the full path.

    Blocklists are mostly these; ipaddress costs several times more per element. The
    pattern admits only canonical octets (no leading zeros, at most 255).
    """
    match = _IPV4.match(text)
    if not match:
        return None
    prefix = match.group(5)
    if prefix is None:
        return text
    address = text[: text.index("/")]
    length = int(prefix)
    if length == 32:
        return address
    a, b, c, d = match.group(1, 2, 3, 4)
    value = (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)
    if value & ((1 << (32 - length)) - 1) or not interval:
        return None  # host bits set, or a network without interval: the full path words it
    return text


def canonical_element(set_type: str, interval: bool, value: object) -> str:
    """The canonical text of one set element; ValueError naming the value if it does not fit."""
    if set_type == "ipv4_addr" and isinstance(value, str):
        fast = _fast_ipv4(value.strip(), interval)
        if fast is not None:
            return fast
    if set_type in FAMILY_OF_SET_TYPE:
        if not isinstance(value, str):
            raise ValueError(f"expected an address string, got {value!r}")
        text = value.strip()
        family = FAMILY_OF_SET_TYPE[set_type]
        if "-" in text and "/" not in text:
            rng = parse_addr_range(text)
            if rng.family != family:
                raise ValueError(f"{text!r} is not an {set_type} element")
            if not interval and rng.first != rng.last:
                raise ValueError(f"range {text!r} needs interval = true")
            return _canonical_range(rng.first, rng.last)
        net = parse_network(text)
        if family_of(net) != family:
            raise ValueError(f"{text!r} is not an {set_type} element")
        if net.num_addresses > 1 and not interval:
            raise ValueError(f"network {text!r} needs interval = true")
        return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
    if set_type == "inet_service":
        item = parse_port_item(value)
        if isinstance(item, SetRef):
            raise ValueError(f"a set element cannot be a set reference: {value!r}")
        if isinstance(item, PortRange):
            if item.first == item.last:
                return str(item.first)
            if not interval:
                raise ValueError(f"port range {value!r} needs interval = true")
            return str(item)
        return str(item)
    if set_type == "ifname":
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", value):
            raise ValueError(f"bad interface name {value!r}")
        return value
    raise ValueError(f"unknown set type {set_type!r}")


def _canonical_range(first: IPAddress, last: IPAddress) -> str:
    if first == last:
        return str(first)
    nets = list(ipaddress.summarize_address_range(first, last))  # type: ignore[arg-type]
    if len(nets) == 1:
        return str(nets[0])
    return f"{first}-{last}"


def element_family(set_type: str) -> Family | None:
    return FAMILY_OF_SET_TYPE.get(set_type)


def element_bounds(set_type: str, text: str) -> tuple[int, int]:
    """The first and last value an element covers (addresses as integers, ports as ports)."""
    if set_type == "inet_service":
        first, _, last = text.partition("-")
        return int(first), int(last or first)
    if set_type == "ipv4_addr" and "-" not in text:
        addr, _, length = text.partition("/")
        a, b, c, d = (int(part) for part in addr.split("."))
        value = (a << 24) | (b << 16) | (c << 8) | d
        return value, value | ((1 << (32 - int(length or 32))) - 1)
    if "/" in text:
        net = ipaddress.ip_network(text)
        return int(net.network_address), int(net.broadcast_address)
    if "-" in text:
        first, _, last = text.partition("-")
        return int(ipaddress.ip_address(first)), int(ipaddress.ip_address(last))
    value = int(ipaddress.ip_address(text))
    return value, value


def merge_overlaps(set_type: str, elements: list[str]) -> list[str]:
    """Interval set elements with overlaps merged: the kernel refuses overlapping intervals,
    and feeds often list a network and hosts inside it. Elements that do not overlap
    anything are kept as they are (adjacent ones are not joined)."""
    if set_type not in ("ipv4_addr", "ipv6_addr", "inet_service") or len(elements) < 2:
        return list(elements)
    spans = sorted((element_bounds(set_type, text), text) for text in elements)
    if all(spans[i][0][1] < spans[i + 1][0][0] for i in range(len(spans) - 1)):
        return list(elements)  # nothing overlaps: keep the given order
    merged: list[tuple[int, int, str | None]] = []  # first, last, original text if untouched
    for (first, last), text in spans:
        if merged and first <= merged[-1][1]:
            prev_first, prev_last, _ = merged[-1]
            if last <= prev_last:
                continue  # inside the previous one
            merged[-1] = (prev_first, last, None)
        else:
            merged.append((first, last, text))
    return [
        text if text is not None else _span_text(set_type, first, last)
        for first, last, text in merged
    ]


def _span_text(set_type: str, first: int, last: int) -> str:
    if set_type == "inet_service":
        return str(first) if first == last else f"{first}-{last}"
    make = ipaddress.IPv4Address if set_type == "ipv4_addr" else ipaddress.IPv6Address
    return _canonical_range(make(first), make(last))


@dataclass(frozen=True)
class HostPort:
    """A listening or connecting address: ``HOST:PORT`` or ``[IPv6]:PORT``."""

    host: str  # an IPv4 or IPv6 address (no brackets), a host name, or "" (every address)
    port: int

    @property
    def url_host(self) -> str:
        """The host as a URL or ``HOST:PORT`` text writes it (IPv6 in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    def __str__(self) -> str:
        return f"{self.url_host}:{self.port}"


def parse_host_port(text: str, *, any_host: bool = False, any_port: bool = False) -> HostPort:
    """``HOST:PORT`` or ``[IPv6]:PORT``; ValueError with a one-line reason.

    HOST is an IPv4 address, a host name or a bracketed IPv6 address; ``any_host`` also takes
    an empty HOST (every address), ``any_port`` also port 0 (one the kernel picks).
    """
    bad = f"bad listen address {text!r} (expected HOST:PORT or [IPv6]:PORT)"
    match = _BRACKETED.fullmatch(text)
    if text.startswith("["):
        if not match:
            raise ValueError(bad)
        host, port_text = match.groups()
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{bad}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or (not host and not any_host) or ":" in host:
            raise ValueError(bad)
        if not re.fullmatch(r"[0-9]+", port_text):
            raise ValueError(bad)
        if re.fullmatch(r"[0-9.]+", host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(f"{bad}: {host!r} is not an IPv4 address") from None
        elif host and not _HOSTNAME.fullmatch(host):
            raise ValueError(f"{bad}: {host!r} is not a host name")
    port = int(port_text)
    low = 0 if any_port else 1
    if not low <= port <= 65535:
        raise ValueError(f"{bad}: port {port} is out of range {low}-65535")
    return HostPort(host, port)
