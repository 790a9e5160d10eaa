"""Constructors for the libnftables JSON objects the compiler emits.

Every constructor returns exactly the form the kernel prints back with ``nft -j list``,
so what we load and what we read back compare without translation.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from appliance.model.values import AddrRange, IPNetwork, PortRange, SetRef

TABLE_FAMILY = "inet"
TABLE_NAME = "appliance"

Json = dict[str, Any]
ElementOp = Literal["add", "delete"]


def element_command(op: ElementOp, name: str, elems: list[object]) -> Json:
    """Add or delete ``elems`` (element JSON) in the appliance's set ``name``: one command."""
    return {
        op: {"element": {"family": TABLE_FAMILY, "table": TABLE_NAME, "name": name, "elem": elems}}
    }


def match(left: Json, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def meta(key: str) -> Json:
    return {"meta": {"key": key}}


def payload(protocol: str, field: str) -> Json:
    return {"payload": {"protocol": protocol, "field": field}}


def ct(key: str) -> Json:
    return {"ct": {"key": key}}


def verdict(name: str, target: str | None = None) -> Json:
    if name in ("jump", "goto"):
        return {name: {"target": target}}
    return {name: None}


def counter(name: str) -> Json:
    return {"counter": name}


def set_value(items: list[Any]) -> Any:
    """A single value as itself, several as an anonymous set, in the order the kernel lists them.

    Addresses and ports sort by value; symbolic constants (ICMP types) keep the order given,
    which callers write in numeric order.
    """
    if len(items) == 1:
        return items[0]
    return {"set": sorted(items, key=_sort_key)}


def _sort_key(item: Any) -> tuple[int, int, str]:
    if isinstance(item, int):
        return (0, item, "")
    if isinstance(item, dict) and "range" in item:
        first = item["range"][0]
        return (0, first, "") if isinstance(first, int) else (1, _addr_int(first), "")
    if isinstance(item, dict) and "prefix" in item:
        return (1, _addr_int(item["prefix"]["addr"]), "")
    try:
        return (1, _addr_int(item), "")
    except ValueError:
        return (2, 0, "")  # symbols: keep the given (numeric) order


def _addr_int(text: str) -> int:
    return int(ipaddress.ip_address(text))


def network_value(net: IPNetwork | AddrRange) -> Any:
    if isinstance(net, AddrRange):
        if net.first == net.last:
            return str(net.first)
        return {"range": [str(net.first), str(net.last)]}
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def port_value(port: int | PortRange) -> Any:
    if isinstance(port, PortRange):
        return port.first if port.first == port.last else {"range": [port.first, port.last]}
    return port


def set_ref(ref: SetRef | str) -> str:
    return f"@{ref.name}" if isinstance(ref, SetRef) else f"@{ref}"


def element_value(set_type: str, text: str) -> Any:
    """The JSON value of one canonical element text (see ``model.values.canonical_element``)."""
    if set_type == "inet_service":
        if "-" in text:
            first, last = text.split("-", 1)
            return {"range": [int(first), int(last)]}
        return int(text)
    if set_type == "ifname":
        return text
    if "/" in text:
        addr, length = text.split("/", 1)
        return {"prefix": {"addr": addr, "len": int(length)}}
    if "-" in text:
        first, last = text.split("-", 1)
        return {"range": [first, last]}
    return text


def element_text(value: Any) -> str:
    """The canonical text of an element as the kernel lists it (inverse of element_value)."""
    if isinstance(value, dict):
        if "elem" in value:
            return element_text(value["elem"]["val"])
        if "prefix" in value:
            prefix = value["prefix"]
            return _net_text(ipaddress.ip_network(f"{prefix['addr']}/{prefix['len']}"))
        if "range" in value:
            first, last = value["range"]
            if isinstance(first, int):
                return str(first) if first == last else f"{first}-{last}"
            first_addr, last_addr = ipaddress.ip_address(first), ipaddress.ip_address(last)
            nets: list[IPNetwork] = list(
                ipaddress.summarize_address_range(first_addr, last_addr)  # type: ignore[arg-type]
            )
            return _net_text(nets[0]) if len(nets) == 1 else f"{first_addr}-{last_addr}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if value.count(".") == 3 and value.replace(".", "").isdigit():
            return value  # an IPv4 address as the kernel prints it: already canonical
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            return value
    raise ValueError(f"unexpected set element {value!r}")


def _net_text(net: IPNetwork) -> str:
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
