"""Addresses, ports and set elements: parsing and canonical forms."""

from __future__ import annotations

import ipaddress

import pytest

from appliance.model.values import (
    AddrRange,
    HostPort,
    PortRange,
    SetRef,
    canonical_element,
    element_family,
    family_of,
    parse_addr_item,
    parse_address,
    parse_host_port,
    parse_network,
    parse_port,
    parse_port_item,
    valid_ifname,
    valid_name,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.0.0.1", "10.0.0.1/32"),
        (" 192.168.1.0/24 ", "192.168.1.0/24"),
        ("fd00::/64", "fd00::/64"),
        ("fd00:0:0::1", "fd00::1/128"),
        ("0.0.0.0/0", "0.0.0.0/0"),
    ],
)
def test_parse_network(text: str, expected: str) -> None:
    assert str(parse_network(text)) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("10.0.0.1/8", "host bits"),
        ("fd00::1/64", "host bits"),
        ("10.0.0.300/24", "bad address or network '10.0.0.300/24'"),
        ("10.0.0.0/33", "bad address or network"),
        ("example.com", "bad address or network"),
        ("", "bad address or network"),
        (10, "expected an address or network string"),
    ],
)
def test_parse_network_bad(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_network(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.0/8", ipaddress.ip_network("10.0.0.0/8")),
        ("@blocklist", SetRef("blocklist")),
        (
            "10.0.0.5-10.0.0.9",
            AddrRange(ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("10.0.0.9")),
        ),
        (
            "fd00::1-fd00::9",
            AddrRange(ipaddress.ip_address("fd00::1"), ipaddress.ip_address("fd00::9")),
        ),
        ("2001:db8::1", ipaddress.ip_network("2001:db8::1/128")),
    ],
)
def test_parse_addr_item(value: str, expected: object) -> None:
    assert parse_addr_item(value) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("10.0.0.9-10.0.0.5", "reversed"),
        ("10.0.0.1-fd00::1", "mixes IPv4 and IPv6"),
        ("@1bad", "bad set name"),
        ("@has-dash", "bad set name"),
        ("nonsense", "bad address or network"),
        (["10.0.0.1"], "expected an address"),
    ],
)
def test_parse_addr_item_bad(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_addr_item(value)


def test_addr_range_family_and_text() -> None:
    rng = parse_addr_item("fd00::1-fd00::9")
    assert isinstance(rng, AddrRange)
    assert rng.family == "ipv6"
    assert str(rng) == "fd00::1-fd00::9"
    assert family_of(rng) == "ipv6"
    assert family_of(ipaddress.ip_network("10.0.0.0/8")) == "ipv4"


def test_parse_address() -> None:
    assert parse_address(" 10.0.0.1 ") == ipaddress.ip_address("10.0.0.1")
    with pytest.raises(ValueError, match=r"bad address '10\.0\.0\.0/24'"):
        parse_address("10.0.0.0/24")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (80, 80),
        ("443", 443),
        (0, 0),
        (65535, 65535),
        ("8000-8100", PortRange(8000, 8100)),
        ("53-53", PortRange(53, 53)),
        ("@web", SetRef("web")),
    ],
)
def test_parse_port_item(value: object, expected: object) -> None:
    assert parse_port_item(value) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("9000-80", "port range '9000-80' is reversed"),
        (70000, "out of range"),
        (-1, "out of range"),
        ("http", "bad port 'http'"),
        (True, "bad port"),
        (80.5, "bad port"),
        ("80-", "bad port"),
    ],
)
def test_parse_port_item_bad(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_port_item(value)


def test_parse_port() -> None:
    assert parse_port("22") == 22
    with pytest.raises(ValueError):
        parse_port(None)


@pytest.mark.parametrize(
    ("set_type", "interval", "value", "expected"),
    [
        ("ipv4_addr", False, "10.0.0.1", "10.0.0.1"),
        ("ipv4_addr", False, "10.0.0.1/32", "10.0.0.1"),
        ("ipv4_addr", True, "10.0.0.0/8", "10.0.0.0/8"),
        ("ipv4_addr", True, "10.0.0.0-10.0.0.255", "10.0.0.0/24"),
        ("ipv4_addr", True, "10.0.0.1-10.0.0.5", "10.0.0.1-10.0.0.5"),
        ("ipv4_addr", False, "10.0.0.7-10.0.0.7", "10.0.0.7"),
        ("ipv6_addr", False, "FD00:0::1", "fd00::1"),
        ("ipv6_addr", True, "fd00::/64", "fd00::/64"),
        ("inet_service", False, 80, "80"),
        ("inet_service", False, "443", "443"),
        ("inet_service", True, "8000-8100", "8000-8100"),
        ("inet_service", False, "22-22", "22"),
        ("ifname", False, "eth0", "eth0"),
    ],
)
def test_canonical_element(set_type: str, interval: bool, value: object, expected: str) -> None:
    assert canonical_element(set_type, interval, value) == expected


@pytest.mark.parametrize(
    ("set_type", "interval", "value", "fragment"),
    [
        ("ipv4_addr", True, "fd00::/64", "'fd00::/64' is not an ipv4_addr element"),
        ("ipv6_addr", False, "10.0.0.1", "'10.0.0.1' is not an ipv6_addr element"),
        ("ipv4_addr", False, "10.0.0.0/8", "needs interval = true"),
        ("ipv4_addr", False, "10.0.0.1-10.0.0.5", "needs interval = true"),
        ("ipv4_addr", True, "fd00::1-fd00::2", "is not an ipv4_addr element"),
        ("ipv4_addr", True, "10.0.0.1/8", "host bits"),
        ("ipv4_addr", False, 167772161, "expected an address string"),
        ("inet_service", False, "8000-8100", "needs interval = true"),
        ("inet_service", True, "@ports", "cannot be a set reference"),
        ("inet_service", True, 70000, "out of range"),
        ("ifname", False, "eth*", "bad interface name"),
        ("ifname", False, "a-very-long-interface", "bad interface name"),
        ("ether_addr", False, "00:11:22:33:44:55", "unknown set type"),
    ],
)
def test_canonical_element_bad(set_type: str, interval: bool, value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        canonical_element(set_type, interval, value)


@pytest.mark.parametrize(
    ("set_type", "family"),
    [("ipv4_addr", "ipv4"), ("ipv6_addr", "ipv6"), ("inet_service", None), ("ifname", None)],
)
def test_element_family(set_type: str, family: str | None) -> None:
    assert element_family(set_type) == family


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("lan", True),
        ("slice_embb", True),
        ("edge-gateway", True),
        ("a.b", True),
        ("A1", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("1lan", False),
        ("_lan", False),
        ("", False),
        ("has space", False),
        ("lan/1", False),
    ],
)
def test_valid_name(name: str, ok: bool) -> None:
    assert valid_name(name) is ok


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("eth0", True),
        ("enp0s31f6", True),
        ("eth0.100", True),
        ("eth*", True),
        ("ap-slice-embb", True),
        ("a" * 15, True),
        ("a" * 16, False),
        ("a" * 14 + "*", True),
        ("*", False),
        ("", False),
        ("eth 0", False),
        ("eth/0", False),
    ],
)
def test_valid_ifname(name: str, ok: bool) -> None:
    assert valid_ifname(name) is ok


def test_set_ref_text() -> None:
    assert str(SetRef("blocklist")) == "@blocklist"
    assert str(PortRange(1, 2)) == "1-2"


@pytest.mark.parametrize(
    ("set_type", "elements", "expected"),
    [
        ("ipv4_addr", ["10.0.0.1", "10.0.0.2"], ["10.0.0.1", "10.0.0.2"]),
        ("ipv4_addr", ["10.1.0.0/16", "10.0.0.0/8"], ["10.0.0.0/8"]),
        ("ipv4_addr", ["10.0.0.5", "10.0.0.0/24", "10.0.1.0/24"], ["10.0.0.0/24", "10.0.1.0/24"]),
        ("ipv4_addr", ["10.0.0.0-10.0.0.9", "10.0.0.5-10.0.0.20"], ["10.0.0.0-10.0.0.20"]),
        ("ipv4_addr", ["10.0.0.0-10.0.0.200", "10.0.0.100-10.0.0.255"], ["10.0.0.0/24"]),
        ("ipv6_addr", ["2001:db8::/32", "2001:db8:1::1"], ["2001:db8::/32"]),
        ("inet_service", ["8000-8100", "8080", "9000"], ["8000-8100", "9000"]),
        ("ifname", ["eth0", "eth0"], ["eth0", "eth0"]),
    ],
)
def test_merge_overlaps(set_type: str, elements: list[str], expected: list[str]) -> None:
    from appliance.model.values import merge_overlaps

    assert merge_overlaps(set_type, elements) == expected


@pytest.mark.parametrize(
    "text",
    [
        "10.0.0.1",
        "10.0.0.0/24",
        "0.0.0.0/0",
        "255.255.255.255",
        "192.168.001.1",
        "10.0.0.1/8",
        "10.0.0.256",
        "10.0.0.0/33",
        "1.2.3.4/32",
    ],
)
def test_ipv4_fast_path_agrees_with_ipaddress(text: str) -> None:
    """The fast path gives what the full path gives, errors included."""
    from appliance.model import values

    def full(value: str) -> str:
        net = values.parse_network(value)
        return str(net.network_address) if net.prefixlen == 32 else str(net)

    try:
        expected = full(text)
    except ValueError:
        with pytest.raises(ValueError):
            values.canonical_element("ipv4_addr", True, text)
        return
    assert values.canonical_element("ipv4_addr", True, text) == expected


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        ("127.0.0.1:9469", "127.0.0.1", 9469, "127.0.0.1:9469"),
        ("[::1]:9469", "::1", 9469, "[::1]:9469"),
        ("metrics.example:80", "metrics.example", 80, "metrics.example:80"),
    ],
)
def test_host_port(text: str, host: str, port: int, shown: str) -> None:
    address = parse_host_port(text)
    assert address == HostPort(host, port)
    assert str(address) == shown


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("9469", "expected HOST:PORT"),
        ("::1:9469", "expected HOST:PORT"),
        ("[zz]:9469", "not an IPv6 address"),
        ("10.0.0.300:1", "not an IPv4 address"),
        ("bad_host:1", "not a host name"),
        ("127.0.0.1:70000", "out of range 1-65535"),
        ("127.0.0.1:0", "out of range 1-65535"),
        (":8080", "expected HOST:PORT"),
        ("127.0.0.1:x", "expected HOST:PORT"),
    ],
)
def test_host_port_refused(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_host_port(text)


def test_host_port_any_host_and_port() -> None:
    assert parse_host_port(":0", any_host=True, any_port=True) == HostPort("", 0)
