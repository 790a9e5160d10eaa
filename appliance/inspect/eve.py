"""Alerts and their EVE JSON form (one object a line, Suricata's field names)."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime
from typing import Any, Literal

from appliance.inspect.appproto import DNS_TYPES, DnsQuery, HttpRequest
from appliance.inspect.communityid import community_id
from appliance.inspect.decode import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_SCTP,
    PROTO_TCP,
    PROTO_UDP,
    Layer,
)
from appliance.inspect.flow import Flow

AlertAction = Literal["allowed", "blocked"]  # blocked: the engine asks for the source to be blocked
PROTO_NAMES = {
    PROTO_TCP: "TCP",
    PROTO_UDP: "UDP",
    PROTO_ICMP: "ICMP",
    PROTO_ICMPV6: "IPv6-ICMP",
    PROTO_SCTP: "SCTP",
    2: "IGMP",
    4: "IPIP",
    41: "IPv6",
    47: "GRE",
    50: "ESP",
    51: "AH",
}


class Alert:
    """One alert: what fired, on which packet, and what it would do."""

    __slots__ = (
        "action",
        "category",
        "detail",
        "dns",
        "flow",
        "gtp_layer",
        "http",
        "in_iface",
        "layer",
        "metadata",
        "msg",
        "rev",
        "severity",
        "sid",
        "tls_sni",
        "to_server",
        "ts",
    )

    def __init__(
        self,
        ts: float,
        sid: int,
        rev: int,
        msg: str,
        category: str,
        severity: int,
        action: AlertAction,
        layer: Layer,
        flow: Flow | None,
        to_server: bool,
    ) -> None:
        self.ts = ts
        self.sid = sid
        self.rev = rev
        self.msg = msg
        self.category = category
        self.severity = severity
        self.action = action
        self.layer = layer  # whose addresses and ports the alert reports
        self.flow = flow
        self.to_server = to_server
        self.detail = ""  # what a detector found (EVE: alert.metadata.detail)
        self.metadata: tuple[str, ...] = ()  # the rule's metadata ("key value" items)
        self.in_iface = ""  # the interface the packet was captured on, when known
        self.dns: DnsQuery | None = None
        self.tls_sni: bytes | None = None
        self.http: HttpRequest | None = None
        self.gtp_layer: Layer | None = None  # the GTP-U packet (outer) when one is involved


def ip_text(addr: bytes) -> str:
    return str(ipaddress.ip_address(addr))


def timestamp(ts: float) -> str:
    """Suricata's form: ``2026-01-31T12:00:00.000000+0000``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f%z")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


def rule_metadata(items: tuple[str, ...], detail: str = "") -> dict[str, list[str]]:
    """Suricata's ``alert.metadata``: each key with its values, in order."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, _, value = item.partition(" ")
        out.setdefault(key, []).append(value.strip())
    if detail:
        out.setdefault("detail", []).append(detail)
    return out


def to_eve(alert: Alert, host: str = "") -> dict[str, Any]:
    """The EVE object of an alert; ``host``: the sensor's name (Suricata's ``host``)."""
    layer = alert.layer
    event: dict[str, Any] = {"timestamp": timestamp(alert.ts)}
    if alert.flow is not None:
        event["flow_id"] = alert.flow.flow_id
    if host:
        event["host"] = host
    if alert.in_iface:
        event["in_iface"] = alert.in_iface
    event["event_type"] = "alert"
    event["src_ip"] = ip_text(layer.src)
    event["src_port"] = layer.sport
    event["dest_ip"] = ip_text(layer.dst)
    event["dest_port"] = layer.dport
    event["proto"] = PROTO_NAMES.get(layer.proto, str(layer.proto))
    if layer.icmp_type >= 0:
        event["icmp_type"] = layer.icmp_type
        event["icmp_code"] = layer.icmp_code
    event["community_id"] = community_id(
        layer.src,
        layer.dst,
        layer.proto,
        layer.sport,
        layer.dport,
        icmp_type=layer.icmp_type,
        icmp_code=layer.icmp_code,
    )
    event["direction"] = "to_server" if alert.to_server else "to_client"
    event["alert"] = {
        "action": alert.action,
        "gid": 1,
        "signature_id": alert.sid,
        "rev": alert.rev,
        "signature": alert.msg,
        "category": alert.category,
        "severity": alert.severity,
    }
    if alert.metadata or alert.detail:
        event["alert"]["metadata"] = rule_metadata(alert.metadata, alert.detail)
    if alert.flow is not None and alert.flow.app in ("http", "tls", "dns", "gtp"):
        event["app_proto"] = alert.flow.app
    if alert.dns is not None:
        query = alert.dns
        event["dns"] = {
            "type": "answer" if query.response else "query",
            "id": query.id,
            "rrname": _text(query.name),
            "rrtype": DNS_TYPES.get(query.qtype, str(query.qtype)),
        }
    if alert.tls_sni is not None:
        event["tls"] = {"sni": _text(alert.tls_sni)}
    if alert.http is not None:
        http: dict[str, Any] = {}
        if alert.http.host is not None:
            http["hostname"] = _text(alert.http.host)
        http["url"] = _text(alert.http.raw_uri)
        http["http_method"] = _text(alert.http.method)
        if alert.http.user_agent is not None:
            http["http_user_agent"] = _text(alert.http.user_agent)
        event["http"] = http
    outer = alert.gtp_layer
    if outer is not None and outer.gtp is not None:
        gtp: dict[str, Any] = {"teid": outer.gtp.teid}
        inner = outer.gtp.inner
        if inner is not None:
            gtp["inner_src_ip"] = ip_text(inner.src)
            gtp["inner_dest_ip"] = ip_text(inner.dst)
            if inner.proto in (PROTO_TCP, PROTO_UDP, PROTO_SCTP):
                gtp["inner_src_port"] = inner.sport
                gtp["inner_dest_port"] = inner.dport
            gtp["inner_proto"] = PROTO_NAMES.get(inner.proto, str(inner.proto))
        if outer.gtp.error is not None:
            gtp["error"] = outer.gtp.error
        event["gtp"] = gtp
    if outer is not None and outer is not layer:
        tunnel: dict[str, Any] = {"src_ip": ip_text(outer.src)}
        if outer.proto in (PROTO_UDP, PROTO_TCP):
            tunnel["src_port"] = outer.sport
        tunnel["dest_ip"] = ip_text(outer.dst)
        if outer.proto in (PROTO_UDP, PROTO_TCP):
            tunnel["dest_port"] = outer.dport
        tunnel["proto"] = PROTO_NAMES.get(outer.proto, str(outer.proto))
        tunnel["depth"] = layer.depth
        event["tunnel"] = tunnel
    return event


def eve_line(alert: Alert, host: str = "") -> str:
    return json.dumps(to_eve(alert, host), separators=(",", ":"))
