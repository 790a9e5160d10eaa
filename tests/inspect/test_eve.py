"""EVE as SIEMs ingest it: the signature is the rule's msg exactly, the rule's metadata, the
sensor's host, the capture interface and the flow's Community ID, checked against the
alert event's JSON schema (Suricata's field names and types)."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

from appliance.inspect.communityid import community_id
from appliance.inspect.eve import eve_line
from appliance.model.profile import Detectors, PortScanDetector
from tests.inspect.test_cli import attack_traffic
from tests.inspect.traffic import engine, frames, http_get, tcp_session

SCHEMA = json.loads((Path(__file__).parent / "data" / "eve-alert.schema.json").read_text())
_TYPES = {"object": dict, "string": str, "integer": int, "array": list, "boolean": bool}


def violations(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """The JSON-schema subset the alert schema uses: type, required, properties,
    additionalProperties (false or a schema), items, pattern."""
    found: list[str] = []
    kind = schema.get("type")
    if (kind and not isinstance(value, _TYPES[kind])) or (kind == "integer" and value is True):
        return [f"{path}: expected {kind}, got {type(value).__name__}"]
    if "pattern" in schema and not re.search(schema["pattern"], value):
        found.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", ()):
            if key not in value:
                found.append(f"{path}: {key} missing")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                found += violations(item, props[key], f"{path}.{key}")
            elif extra is False:
                found.append(f"{path}: {key} not allowed")
            elif isinstance(extra, dict):
                found += violations(item, extra, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += violations(item, schema["items"], f"{path}[{i}]")
    return found


RULES = (
    'alert http any any -> any any (msg:"SQL injection in the URI"; content:"UNION"; '
    "http_uri; nocase; metadata: created_at 2026_01_01, signature_severity Major, "
    "created_at 2026_02_02; classtype:web-application-attack; sid:10; rev:2;)\n"
    'alert dns any any -> any any (msg:"a DNS name"; dns.query; content:"dnslog"; sid:11;)\n'
)


def events(packets: list[Any], detectors: Detectors | None = None) -> list[dict[str, Any]]:
    eng = engine(RULES, detectors)
    out = []
    for ts, data, linktype in frames(packets):
        for alert in eng.process(ts, data, linktype):
            alert.in_iface = "mirror0"
            out.append(json.loads(eve_line(alert, "edge-7")))
    return out


def test_alerts_validate_and_carry_what_siems_join_on() -> None:
    found = events(attack_traffic())
    assert {e["alert"]["signature_id"] for e in found} == {10, 11}
    for event in found:
        assert violations(event, SCHEMA) == []
        assert event["host"] == "edge-7" and event["in_iface"] == "mirror0"
        src, dst = (ipaddress.ip_address(event[k]).packed for k in ("src_ip", "dest_ip"))
        proto = {"TCP": 6, "UDP": 17}[event["proto"]]
        expected = community_id(src, dst, proto, event["src_port"], event["dest_port"])
        assert event["community_id"] == expected
    sql = next(e for e in found if e["alert"]["signature_id"] == 10)
    assert sql["alert"]["signature"] == "SQL injection in the URI"
    assert sql["alert"]["metadata"] == {
        "created_at": ["2026_01_01", "2026_02_02"],
        "signature_severity": ["Major"],
    }


def test_both_directions_have_one_community_id() -> None:
    packets = tcp_session(
        "198.51.100.7", "10.0.0.80", 40000, 80, [http_get("/")], [b"HTTP/1.1 200 OK\r\n\r\n"]
    )
    eng = engine('alert tcp any any -> any any (msg:"any"; flow:established; sid:1;)')
    ids = set()
    directions = set()
    for ts, data, linktype in frames(packets):
        for alert in eng.process(ts, data, linktype):
            event = json.loads(eve_line(alert))
            ids.add(event["community_id"])
            directions.add(event["direction"])
    assert directions == {"to_server", "to_client"} and len(ids) == 1


def test_detector_signature_is_its_msg_and_the_detail_goes_to_metadata() -> None:
    from scapy.all import IP, TCP, Ether  # type: ignore[attr-defined]

    syns = [
        Ether() / IP(src="198.51.100.9", dst="10.0.0.1") / TCP(dport=p, flags="S")
        for p in range(1, 40)
    ]
    found = events(syns, Detectors(port_scan=PortScanDetector(ports=5, window=10.0)))
    assert len(found) == 1
    alert = found[0]["alert"]
    assert ":" not in alert["signature"]
    assert alert["metadata"]["detail"] and violations(found[0], SCHEMA) == []
