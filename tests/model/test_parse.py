"""Profile parsing and validation: bad profiles name the key path, good ones build the model."""

from __future__ import annotations

import ipaddress
import json
import textwrap
from pathlib import Path

import pytest

from appliance.errors import ProfileError
from appliance.model.parse import format_key_path, load_profile, parse_profile
from appliance.model.profile import (
    Defaults,
    DnsTunnelDetector,
    GtpDetector,
    Inspect,
    MetricsSpec,
    PortScanDetector,
    Protect,
    SynFloodDetector,
    Zone,
)
from appliance.model.values import PortRange, SetRef
from appliance.units import Rate

HEAD = 'version = 1\nname = "t"\n'

WAN_LAN = """
[zones.wan]
interfaces = ["eth0"]
[zones.lan]
interfaces = ["eth1"]
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load_text(tmp_path: Path, text: str, name: str = "p.toml") -> ProfileError:
    path = write(tmp_path, name, text)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    return info.value


def rule(body: str) -> str:
    """A profile with zones wan and lan and one rule with ``body``."""
    return HEAD + WAN_LAN + '[[rules]]\nname = "r"\n' + body + "\n"


def segment(body: str) -> str:
    return HEAD + "[[isolation.segments]]\n" + body + "\n"


def toml(*lines: str) -> str:
    return HEAD + "\n".join(lines) + "\n"


def fwd(*extra: str, **parts: str) -> str:
    """A profile with zones wan and lan and one forward; ``parts`` replace its keys."""
    keys = {
        "HEAD": HEAD + WAN_LAN,
        "NAME": 'name = "f"',
        "FROM": 'from = "wan"',
        "DPORT": "dport = 80",
        "TO_ADDR": 'to_addr = "10.0.0.2"',
    }
    keys.update(parts)
    head = keys.pop("HEAD")
    return head + "[[forwards]]\n" + "\n".join([*keys.values(), *extra]) + "\n"


VLAN_A = 'name = "a"\nkind = "vlan"\nparent = "eth1"\nvlan_id = 10'
NETNS_A = 'name = "a"\nkind = "netns"\nnetns = "a"'
V4SET = '[sets.bl]\ntype = "ipv4_addr"'
HUB_URL = 'url = "https://hub.example.net/x/"'

PORT_SETS = """
[sets.ports]
type = "inet_service"
[sets.v4]
type = "ipv4_addr"
"""

KEY_FILE = "keys/hub.pub"

# (case id, profile text, key path expected in the message, fragment of the message)
BAD: list[tuple[str, str, str, str]] = [
    # top level
    ("unknown-top-key", HEAD + "bogus = 1\n", "bogus", "unknown key 'bogus'"),
    ("version-2", 'version = 2\nname = "t"\n', "version", "unsupported version 2"),
    ("version-missing", 'name = "t"\n', "version", "required"),
    ("version-string", 'version = "1"\nname = "t"\n', "version", "expected an integer"),
    ("name-missing", "version = 1\n", "name", "required"),
    ("name-bad", 'version = 1\nname = "1st"\n', "name", "'1st'"),
    ("name-type", "version = 1\nname = 5\n", "name", "expected a string"),
    ("name-array", 'version = 1\nname = ["t"]\n', "name", "expected a string, got an array"),
    ("name-date", "version = 1\nname = 1979-05-27\n", "name", "date/time"),
    ("defaults-bad", HEAD + '[defaults]\ninput = "allow"\n', "defaults.input", "'allow'"),
    ("defaults-unknown", HEAD + '[defaults]\ninbound = "drop"\n', "defaults.inbound", "unknown"),
    ("defaults-type", HEAD + "defaults = 1\n", "defaults", "expected a table"),
    # zones
    ("zones-type", HEAD + "zones = 5\n", "zones", "expected a table"),
    (
        "zone-unknown-key",
        HEAD + '[zones.lan]\ninterface = ["eth1"]\n',
        "zones.lan.interface",
        "unknown key 'interface'",
    ),
    ("zone-name-any", HEAD + '[zones.any]\ninterfaces = ["eth1"]\n', "zones.any", "reserved"),
    ("zone-name-self", HEAD + '[zones.self]\ninterfaces = ["eth1"]\n', "zones.self", "reserved"),
    ("zone-name-bad", HEAD + '[zones."bad name"]\n', 'zones."bad name"', "bad zone name"),
    (
        "zone-ifname-long",
        HEAD + '[zones.lan]\ninterfaces = ["abcdefghijklmnopq"]\n',
        "zones.lan.interfaces[0]",
        "bad interface name 'abcdefghijklmnopq'",
    ),
    (
        "zone-interfaces-type",
        HEAD + '[zones.lan]\ninterfaces = "eth1"\n',
        "zones.lan.interfaces",
        "expected an array",
    ),
    (
        "zone-bad-network",
        HEAD + '[zones.lan]\nnetworks = ["10.0.0.300/24"]\n',
        "zones.lan.networks[0]",
        "bad address or network '10.0.0.300/24'",
    ),
    (
        "zone-host-bits",
        HEAD + '[zones.lan]\nnetworks = ["10.0.0.0/8", "10.1.2.3/16"]\n',
        "zones.lan.networks[1]",
        "host bits",
    ),
    (
        "zone-masquerade-type",
        HEAD + '[zones.wan]\ninterfaces = ["eth0"]\nmasquerade = "yes"\n',
        "zones.wan.masquerade",
        "expected true or false",
    ),
    (
        "masquerade-no-interfaces",
        toml("[zones.wan]", 'networks = ["0.0.0.0/0"]', "masquerade = true"),
        "zones.wan.masquerade",
        "needs interfaces",
    ),
    # sets
    ("set-type-bad", HEAD + '[sets.bl]\ntype = "ipv4"\n', "sets.bl.type", "'ipv4'"),
    ("set-type-missing", HEAD + "[sets.bl]\ninterval = true\n", "sets.bl.type", "required"),
    (
        "set-unknown-key",
        HEAD + '[sets.bl]\ntype = "ipv4_addr"\nflags = []\n',
        "sets.bl.flags",
        "unknown key",
    ),
    (
        "set-v6-in-v4",
        toml(V4SET, "interval = true", 'elements = ["fd00::/64"]'),
        "sets.bl.elements[0]",
        "'fd00::/64' is not an ipv4_addr element",
    ),
    (
        "set-v4-in-v6",
        HEAD + '[sets.bl]\ntype = "ipv6_addr"\nelements = ["::1", "10.0.0.1"]\n',
        "sets.bl.elements[1]",
        "'10.0.0.1' is not an ipv6_addr element",
    ),
    (
        "set-network-needs-interval",
        toml(V4SET, 'elements = ["10.0.0.0/8"]'),
        "sets.bl.elements[0]",
        "interval",
    ),
    (
        "set-bad-element",
        HEAD + '[sets.bl]\ntype = "ipv4_addr"\nelements = ["10.0.0.256"]\n',
        "sets.bl.elements[0]",
        "'10.0.0.256'",
    ),
    (
        "set-bad-port-element",
        HEAD + '[sets.p]\ntype = "inet_service"\nelements = [80, 99999]\n',
        "sets.p.elements[1]",
        "99999",
    ),
    (
        "set-bad-timeout",
        HEAD + '[sets.bl]\ntype = "ipv4_addr"\ntimeout = "1 hour"\n',
        "sets.bl.timeout",
        "bad duration '1 hour'",
    ),
    (
        "set-timeout-int",
        HEAD + '[sets.bl]\ntype = "ipv4_addr"\ntimeout = 3600\n',
        "sets.bl.timeout",
        "expected a string",
    ),
    (
        "set-size-zero",
        HEAD + '[sets.bl]\ntype = "ipv4_addr"\nsize = 0\n',
        "sets.bl.size",
        "out of range",
    ),
    (
        "set-over-size",
        toml(V4SET, "size = 1", 'elements = ["10.0.0.1", "10.0.0.2"]'),
        "sets.bl.elements",
        "size = 1",
    ),
    (
        "set-interval-type",
        HEAD + '[sets.bl]\ntype = "ipv4_addr"\ninterval = 1\n',
        "sets.bl.interval",
        "expected true or false",
    ),
    (
        "set-reserved-prefix",
        HEAD + '[sets.ap_mine]\ntype = "ipv4_addr"\n',
        "sets.ap_mine",
        "reserved",
    ),
    (
        "set-reserved-autoblock",
        HEAD + '[sets.autoblock_v4]\ntype = "ipv4_addr"\n',
        "sets.autoblock_v4",
        "reserved",
    ),
    (
        "set-name-dash",
        HEAD + '[sets.block-list]\ntype = "ipv4_addr"\n',
        "sets.block-list",
        "bad set name",
    ),
    # rules
    ("rules-type", HEAD + 'rules = "all"\n', "rules", "expected an array"),
    ("rule-unknown-key", rule('action = "accept"\nport = 22'), "rules[0].port", "unknown key"),
    ("rule-name-missing", HEAD + '[[rules]]\naction = "accept"\n', "rules[0].name", "required"),
    (
        "rule-duplicate-name",
        rule('action = "accept"\n[[rules]]\nname = "r"\naction = "drop"'),
        "rules[1].name",
        "also rules[0]",
    ),
    (
        "rule-unknown-zone-from",
        rule('from = "dmz"\naction = "accept"'),
        "rules[0].from",
        "unknown zone 'dmz'",
    ),
    (
        "rule-unknown-zone-to",
        rule('to = "dmz"\naction = "accept"'),
        "rules[0].to",
        "unknown zone 'dmz'",
    ),
    (
        "rule-self-to-self",
        rule('from = "self"\nto = "self"\naction = "accept"'),
        "rules[0].to",
        "self",
    ),
    ("rule-bad-proto", rule('proto = "gre"\naction = "accept"'), "rules[0].proto", "'gre'"),
    (
        "rule-unknown-set",
        rule('saddr = ["@nope"]\naction = "drop"'),
        "rules[0].saddr[0]",
        "unknown set '@nope'",
    ),
    (
        "rule-saddr-wrong-set-type",
        rule('saddr = ["@ports"]\naction = "drop"') + PORT_SETS,
        "rules[0].saddr[0]",
        "not an address set",
    ),
    (
        "rule-dport-wrong-set-type",
        rule('proto = "tcp"\ndport = [22, "@v4"]\naction = "drop"') + PORT_SETS,
        "rules[0].dport[1]",
        "not inet_service",
    ),
    (
        "rule-bad-daddr",
        rule('daddr = ["10.0.0.1", "10.0.0.0/33"]\naction = "accept"'),
        "rules[0].daddr[1]",
        "'10.0.0.0/33'",
    ),
    (
        "rule-daddr-host-bits",
        rule('daddr = ["192.168.1.1/24"]\naction = "accept"'),
        "rules[0].daddr[0]",
        "host bits",
    ),
    (
        "rule-bad-port",
        rule('proto = "tcp"\ndport = [70000]\naction = "accept"'),
        "rules[0].dport[0]",
        "70000",
    ),
    (
        "rule-bad-port-text",
        rule('proto = "tcp"\ndport = ["http"]\naction = "accept"'),
        "rules[0].dport[0]",
        "'http'",
    ),
    (
        "rule-reversed-range",
        rule('proto = "tcp"\ndport = [80, "9000-80"]\naction = "accept"'),
        "rules[0].dport[1]",
        "port range '9000-80' is reversed",
    ),
    (
        "rule-sport-without-proto",
        rule('sport = [53]\naction = "accept"'),
        "rules[0].sport",
        "proto",
    ),
    (
        "rule-dport-icmp",
        rule('proto = "icmp"\ndport = [53]\naction = "accept"'),
        "rules[0].dport",
        "proto",
    ),
    (
        "rule-bad-limit",
        rule('limit = "50 per second"\naction = "accept"'),
        "rules[0].limit",
        "bad rate '50 per second'",
    ),
    ("rule-action-missing", rule('proto = "tcp"'), "rules[0].action", "required"),
    ("rule-action-bad", rule('action = "allow"'), "rules[0].action", "'allow'"),
    (
        "rule-log-type",
        rule('action = "accept"\nlog = "yes"'),
        "rules[0].log",
        "expected true or false",
    ),
    (
        "rule-icmp-only-v6",
        rule('proto = "icmp"\ndaddr = ["fd00::/64"]\naction = "accept"'),
        "rules[0].daddr",
        "can never match",
    ),
    (
        "rule-icmpv6-only-v4",
        rule('proto = "icmpv6"\nsaddr = "10.0.0.0/8"\naction = "accept"'),
        "rules[0].saddr",
        "can never match",
    ),
    (
        "rule-families-disjoint",
        rule('saddr = ["10.0.0.0/8"]\ndaddr = ["fd00::1"]\naction = "accept"'),
        "rules[0].daddr",
        "can never match",
    ),
    ("rule-table-type", HEAD + "rules = [1]\n", "rules[0]", "expected a table"),
    (
        "rule-dport-float",
        rule('proto = "tcp"\ndport = [80.5]\naction = "accept"'),
        "rules[0].dport[0]",
        "80.5",
    ),
    # forwards
    ("forward-from-any", fwd(FROM='from = "any"'), "forwards[0].from", "'any'"),
    ("forward-from-missing", fwd(FROM=""), "forwards[0].from", "required"),
    (
        "forward-name-clash",
        rule('action = "accept"') + fwd(NAME='name = "r"', HEAD=""),
        "forwards[0].name",
        "rules[0]",
    ),
    ("forward-duplicate", fwd() + fwd(HEAD=""), "forwards[1].name", "also forwards[0]"),
    (
        "forward-to-network",
        fwd(TO_ADDR='to_addr = "10.0.0.0/24"'),
        "forwards[0].to_addr",
        "'10.0.0.0/24'",
    ),
    ("forward-proto", fwd('proto = "icmp"'), "forwards[0].proto", "'icmp'"),
    ("forward-dport-missing", fwd(DPORT=""), "forwards[0].dport", "required"),
    ("forward-dport-reversed", fwd(DPORT='dport = "90-80"'), "forwards[0].dport", "reversed"),
    ("forward-to-port-zero", fwd("to_port = 0"), "forwards[0].to_port", "out of range"),
    # protect
    ("protect-invalid", HEAD + '[protect]\ninvalid = "reject"\n', "protect.invalid", "'reject'"),
    (
        "protect-spoofing-type",
        HEAD + '[protect]\nspoofing = "strict"\n',
        "protect.spoofing",
        "expected true or false",
    ),
    (
        "protect-block-timeout",
        HEAD + '[protect]\nblock_timeout = "10 minutes"\n',
        "protect.block_timeout",
        "bad duration",
    ),
    (
        "protect-conn-limit",
        HEAD + "[protect]\nconn_limit = 0\n",
        "protect.conn_limit",
        "out of range",
    ),
    (
        "protect-syn-flood",
        HEAD + '[protect]\nsyn_flood = "200/fortnight"\n',
        "protect.syn_flood",
        "bad rate",
    ),
    (
        "protect-never-block-set",
        HEAD + PORT_SETS + '[protect]\nnever_block = ["@ports"]\n',
        "protect.never_block[0]",
        "not an address set",
    ),
    (
        "protect-never-block-bad",
        HEAD + '[protect]\nnever_block = ["192.0.2.1", "nonsense"]\n',
        "protect.never_block[1]",
        "'nonsense'",
    ),
    ("protect-unknown", HEAD + "[protect]\nsynflood = 1\n", "protect.synflood", "unknown key"),
    # inspect
    ("inspect-mode", HEAD + '[inspect]\nmode = "tap"\n', "inspect.mode", "'tap'"),
    (
        "inspect-mirror-no-interfaces",
        HEAD + '[inspect]\nmode = "mirror"\n',
        "inspect.interfaces",
        "mirror",
    ),
    (
        "inspect-sample-zero",
        HEAD + "[inspect]\nsample_packets = 0\n",
        "inspect.sample_packets",
        "out of range 1-1000",
    ),
    (
        "inspect-sample-big",
        HEAD + "[inspect]\nsample_packets = 1001\n",
        "inspect.sample_packets",
        "out of range 1-1000",
    ),
    (
        "inspect-rules-missing",
        HEAD + '[inspect]\nrules = ["rules/none.rules"]\n',
        "inspect.rules[0]",
        "none.rules",
    ),
    (
        "inspect-home-net",
        HEAD + '[inspect]\nhome_net = ["10.0.0.1/8"]\n',
        "inspect.home_net[0]",
        "host bits",
    ),
    ("inspect-block-type", HEAD + '[inspect]\nblock = "yes"\n', "inspect.block", "true or false"),
    (
        "inspect-encryption-handling",
        HEAD + '[inspect]\nencryption_handling = "bypass"\n',
        "inspect.encryption_handling",
        "'bypass'",
    ),
    (
        "detector-unknown",
        HEAD + "[inspect.detectors]\nbrute_force = {}\n",
        "inspect.detectors.brute_force",
        "unknown key 'brute_force'",
    ),
    (
        "detector-unknown-key",
        HEAD + "[inspect.detectors]\nport_scan = { port = 20 }\n",
        "inspect.detectors.port_scan.port",
        "unknown key",
    ),
    (
        "detector-not-table",
        HEAD + "[inspect.detectors]\nport_scan = true\n",
        "inspect.detectors.port_scan",
        "expected a table",
    ),
    (
        "detector-window",
        HEAD + '[inspect.detectors]\nport_scan = { window = "soon" }\n',
        "inspect.detectors.port_scan.window",
        "bad duration 'soon'",
    ),
    (
        "detector-ports-zero",
        HEAD + "[inspect.detectors]\nport_scan = { ports = 0 }\n",
        "inspect.detectors.port_scan.ports",
        "out of range",
    ),
    (
        "detector-syn-rate",
        HEAD + '[inspect.detectors]\nsyn_flood = { rate = "fast" }\n',
        "inspect.detectors.syn_flood.rate",
        "bad rate 'fast'",
    ),
    (
        "detector-entropy",
        HEAD + "[inspect.detectors]\ndns_tunnel = { max_entropy = 0 }\n",
        "inspect.detectors.dns_tunnel.max_entropy",
        "above zero",
    ),
    (
        "detector-max-label",
        HEAD + '[inspect.detectors]\ndns_tunnel = { max_label = "52" }\n',
        "inspect.detectors.dns_tunnel.max_label",
        "expected an integer",
    ),
    (
        "detector-ue-pools",
        HEAD + '[inspect.detectors]\ngtp = { ue_pools = ["10.45.0.0/99"] }\n',
        "inspect.detectors.gtp.ue_pools[0]",
        "'10.45.0.0/99'",
    ),
    # isolation
    ("isolation-unknown", HEAD + "[isolation]\nsegs = []\n", "isolation.segs", "unknown key"),
    (
        "segment-kind",
        segment('name = "s"\nkind = "bridge"'),
        "isolation.segments[0].kind",
        "'bridge'",
    ),
    ("segment-kind-missing", segment('name = "s"'), "isolation.segments[0].kind", "required"),
    (
        "segment-name-missing",
        segment('kind = "vrf"\ntable = 10'),
        "isolation.segments[0].name",
        "required",
    ),
    (
        "vlan-without-vlan-id",
        segment('name = "s"\nkind = "vlan"\nparent = "eth1"'),
        "isolation.segments[0].vlan_id",
        "required",
    ),
    (
        "vlan-id-5000",
        segment('name = "s"\nkind = "vlan"\nparent = "eth1"\nvlan_id = 5000'),
        "isolation.segments[0].vlan_id",
        "out of range 1-4094",
    ),
    (
        "vlan-without-parent",
        segment('name = "s"\nkind = "vlan"\nvlan_id = 10'),
        "isolation.segments[0].parent",
        "required",
    ),
    (
        "vlan-parent-wildcard",
        segment('name = "s"\nkind = "vlan"\nparent = "eth*"\nvlan_id = 10'),
        "isolation.segments[0].parent",
        "'eth*'",
    ),
    (
        "segment-vrf-not-vrf",
        segment('name = "a"\nkind = "vlan"\nparent = "eth1"\nvlan_id = 10\nvrf = "b"')
        + '[[isolation.segments]]\nname = "b"\nkind = "netns"\nnetns = "b"\n',
        "isolation.segments[0].vrf",
        "not a vrf segment",
    ),
    (
        "segment-vrf-unknown",
        segment(VLAN_A + '\nvrf = "x"'),
        "isolation.segments[0].vrf",
        "unknown segment 'x'",
    ),
    (
        "segment-name-long",
        segment('name = "abcdefghijklm"\nkind = "vrf"\ntable = 10'),
        "isolation.segments[0].name",
        "12",
    ),
    (
        "segment-duplicate",
        segment('name = "a"\nkind = "vrf"\ntable = 10')
        + '[[isolation.segments]]\nname = "a"\nkind = "vrf"\ntable = 11\n',
        "isolation.segments[1].name",
        "also isolation.segments[0]",
    ),
    (
        "segment-key-of-other-kind",
        segment(VLAN_A + "\ntable = 5"),
        "isolation.segments[0].table",
        "only to vrf",
    ),
    (
        "segment-unknown-key",
        segment('name = "a"\nkind = "vrf"\ntable = 10\nmtu = 1500'),
        "isolation.segments[0].mtu",
        "unknown key",
    ),
    (
        "vrf-table-main",
        segment('name = "a"\nkind = "vrf"\ntable = 254'),
        "isolation.segments[0].table",
        "reserved",
    ),
    (
        "vrf-table-zero",
        segment('name = "a"\nkind = "vrf"\ntable = 0'),
        "isolation.segments[0].table",
        "out of range",
    ),
    (
        "netns-missing",
        segment('name = "a"\nkind = "netns"'),
        "isolation.segments[0].netns",
        "required",
    ),
    (
        "netns-bad-name",
        segment('name = "a"\nkind = "netns"\nnetns = "../etc"'),
        "isolation.segments[0].netns",
        "'../etc'",
    ),
    (
        "segment-bad-address",
        segment(NETNS_A + '\naddresses = ["10.100.0.1/33"]'),
        "isolation.segments[0].addresses[0]",
        "'10.100.0.1/33'",
    ),
    (
        "segment-peer-on-vlan",
        segment(VLAN_A + "\npeer_addresses = []"),
        "isolation.segments[0].peer_addresses",
        "only to netns",
    ),
    (
        "segment-zone-self",
        segment('name = "a"\nkind = "netns"\nnetns = "a"\nzone = "self"'),
        "isolation.segments[0].zone",
        "reserved",
    ),
    (
        "segments-type",
        HEAD + "[isolation]\nsegments = 1\n",
        "isolation.segments",
        "expected an array",
    ),
    # hub
    (
        "hub-url-scheme",
        HEAD + '[hub]\nurl = "ftp://hub/x/"\ntrust = ["k.pub"]\n',
        "hub.url",
        "'ftp://hub/x/'",
    ),
    (
        "hub-url-slash",
        HEAD + '[hub]\nurl = "https://hub.example.net/x"\ntrust = ["k.pub"]\n',
        "hub.url",
        "must end with /",
    ),
    ("hub-url-missing", HEAD + '[hub]\ntrust = ["k.pub"]\n', "hub.url", "required"),
    (
        "hub-trust-empty",
        HEAD + '[hub]\nurl = "https://hub.example.net/x/"\ntrust = []\n',
        "hub.trust",
        "at least one",
    ),
    (
        "hub-trust-missing-file",
        toml("[hub]", HUB_URL, 'trust = ["none.pub"]'),
        "hub.trust[0]",
        "none.pub",
    ),
    (
        "hub-poll",
        toml("[hub]", HUB_URL, f'trust = ["{KEY_FILE}"]', 'poll = "often"'),
        "hub.poll",
        "bad duration 'often'",
    ),
    (
        "hub-timeout",
        toml("[hub]", HUB_URL, f'trust = ["{KEY_FILE}"]', 'timeout = "500ms"'),
        "hub.timeout",
        "between 1s and 10m",
    ),
    # metrics
    (
        "metrics-no-port",
        HEAD + '[metrics]\nlisten = "localhost"\n',
        "metrics.listen",
        "'localhost'",
    ),
    (
        "metrics-port-range",
        HEAD + '[metrics]\nlisten = "127.0.0.1:70000"\n',
        "metrics.listen",
        "out of range",
    ),
    ("metrics-bare-v6", HEAD + '[metrics]\nlisten = "::1:9469"\n', "metrics.listen", "'::1:9469'"),
    ("metrics-bad-v6", HEAD + '[metrics]\nlisten = "[zz]:9469"\n', "metrics.listen", "IPv6"),
    ("metrics-bad-v4", HEAD + '[metrics]\nlisten = "10.0.0.300:9469"\n', "metrics.listen", "IPv4"),
    # syntax
    ("toml-syntax", HEAD + "[zones.lan\n", "", "line 3"),
    ("toml-duplicate-key", HEAD + 'name = "u"\n', "", "line 3"),
]


@pytest.mark.parametrize(
    ("text", "key", "fragment"), [case[1:] for case in BAD], ids=[case[0] for case in BAD]
)
def test_bad_profile(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    write(tmp_path, KEY_FILE, "AAAA\n")
    err = load_text(tmp_path, text)
    message = str(err)
    assert "\n" not in message
    assert err.key == key
    assert message.startswith(f"{tmp_path / 'p.toml'}: {key + ': ' if key else ''}")
    assert fragment in err.message


def test_enough_bad_cases() -> None:
    assert len(BAD) >= 50
    assert len({case[0] for case in BAD}) == len(BAD)


def test_error_message_format(tmp_path: Path) -> None:
    err = load_text(
        tmp_path, rule('proto = "tcp"\ndport = [80, "9000-80"]\naction = "accept"'), "x.toml"
    )
    assert str(err) == f"{tmp_path / 'x.toml'}: rules[0].dport[1]: port range '9000-80' is reversed"


def test_syntax_error_is_one_line(tmp_path: Path) -> None:
    err = load_text(tmp_path, HEAD + 'rules = [\n  { name = "a" \n')
    assert "\n" not in str(err)
    assert "TOML syntax error" in str(err)
    assert "line" in str(err)


def test_missing_profile(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(tmp_path / "absent.toml")


def test_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_bytes(b'version = 1\nname = "\xff"\n')
    with pytest.raises(ProfileError, match="UTF-8"):
        load_profile(tmp_path / "p.toml")


# --------------------------------------------------------------------------------------
# extends and elements_file


def test_extends_loop(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", HEAD + 'extends = "b.toml"\n')
    write(tmp_path, "b.toml", 'extends = "a.toml"\n')
    with pytest.raises(ProfileError) as info:
        load_profile(tmp_path / "a.toml")
    assert info.value.key == "extends"
    assert "loop" in info.value.message
    assert "a.toml -> " in info.value.message and "b.toml" in info.value.message


def test_extends_self(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", HEAD + 'extends = "./a.toml"\n')
    with pytest.raises(ProfileError, match="extends: extends loop"):
        load_profile(tmp_path / "a.toml")


def test_extends_missing_file(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", HEAD + 'extends = "nothere.toml"\n')
    with pytest.raises(ProfileError) as info:
        load_profile(tmp_path / "a.toml")
    assert info.value.key == "extends"
    assert "nothere.toml" in info.value.message
    assert info.value.path == str(tmp_path / "a.toml")


def test_extends_type(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", HEAD + "extends = 1\n")
    with pytest.raises(ProfileError, match="extends: expected a file path"):
        load_profile(tmp_path / "a.toml")


def test_extends_syntax_error_names_base(tmp_path: Path) -> None:
    write(tmp_path, "base.toml", "[zones\n")
    write(tmp_path, "a.toml", HEAD + 'extends = "base.toml"\n')
    with pytest.raises(ProfileError) as info:
        load_profile(tmp_path / "a.toml")
    assert info.value.path == str(tmp_path / "base.toml")


def test_error_in_base_names_base_file(tmp_path: Path) -> None:
    write(tmp_path, "base/common.toml", '[zones.lan]\nnetworks = ["10.0.0.300/24"]\n')
    write(tmp_path, "a.toml", HEAD + 'extends = "base/common.toml"\n[zones.wan]\n')
    with pytest.raises(ProfileError) as info:
        load_profile(tmp_path / "a.toml")
    assert info.value.path == str(tmp_path / "base" / "common.toml")
    assert info.value.key == "zones.lan.networks[0]"


def test_error_in_child_of_merged_table_names_child(tmp_path: Path) -> None:
    write(tmp_path, "base.toml", '[zones.wan]\ninterfaces = ["eth0"]\n')
    write(tmp_path, "a.toml", HEAD + 'extends = "base.toml"\n[zones.wan]\nmasquerade = "on"\n')
    with pytest.raises(ProfileError) as info:
        load_profile(tmp_path / "a.toml")
    assert info.value.path == str(tmp_path / "a.toml")
    assert info.value.key == "zones.wan.masquerade"


def test_extends_deep_merge(tmp_path: Path) -> None:
    write(
        tmp_path,
        "base.toml",
        """
        version = 1
        name = "base"
        [defaults]
        input = "reject"
        forward = "accept"
        [zones.wan]
        interfaces = ["eth0"]
        masquerade = true
        [zones.lan]
        interfaces = ["eth1"]
        networks = ["10.0.0.0/8"]
        [protect]
        conn_limit = 100
        [[rules]]
        name = "base-rule"
        action = "drop"
        """,
    )
    write(
        tmp_path,
        "site/edge.toml",
        """
        name = "edge"
        extends = "../base.toml"
        [defaults]
        forward = "drop"
        [zones.lan]
        networks = ["192.168.0.0/16"]
        [zones.dmz]
        interfaces = ["eth2"]
        [protect]
        spoofing = true
        [[rules]]
        name = "child-rule"
        from = "lan"
        to = "wan"
        action = "accept"
        """,
    )
    profile = load_profile(tmp_path / "site" / "edge.toml")
    assert profile.name == "edge"
    assert profile.version == 1
    assert profile.defaults == Defaults(input="reject", forward="drop", output="accept")
    assert [zone.name for zone in profile.zones] == ["wan", "lan", "dmz"]
    assert profile.zone("wan") == Zone("wan", ("eth0",), (), True)
    lan = profile.zone("lan")
    assert lan.interfaces == ("eth1",)
    assert lan.networks == (ipaddress.ip_network("192.168.0.0/16"),)  # arrays replaced
    assert [r.name for r in profile.rules] == ["child-rule"]  # [[rules]] replaced
    assert profile.protect.conn_limit == 100 and profile.protect.spoofing is True


def test_extends_chain(tmp_path: Path) -> None:
    write(tmp_path, "c.toml", 'version = 1\n[zones.c]\ninterfaces = ["ethc"]\n')
    write(tmp_path, "b.toml", 'extends = "c.toml"\n[zones.b]\ninterfaces = ["ethb"]\n')
    write(tmp_path, "a.toml", 'name = "a"\nextends = "b.toml"\n[zones.a]\ninterfaces = ["etha"]\n')
    profile = load_profile(tmp_path / "a.toml")
    assert [zone.name for zone in profile.zones] == ["c", "b", "a"]


def test_extends_error_in_grandparent(tmp_path: Path) -> None:
    write(tmp_path, "c.toml", 'version = 1\n[sets.s]\ntype = "ipv5_addr"\n')
    write(tmp_path, "b.toml", 'extends = "c.toml"\n[zones.b]\ninterfaces = ["ethb"]\n')
    write(tmp_path, "a.toml", 'name = "a"\nextends = "b.toml"\n')
    with pytest.raises(ProfileError) as info:
        load_profile(tmp_path / "a.toml")
    assert info.value.path == str(tmp_path / "c.toml")
    assert info.value.key == "sets.s.type"


def test_extends_paths_relative_to_naming_file(tmp_path: Path) -> None:
    write(tmp_path, "common/lists/bl.txt", "203.0.113.7\n")
    write(tmp_path, "common/rules/base.rules", "")
    write(
        tmp_path,
        "common/base.toml",
        """
        [sets.bl]
        type = "ipv4_addr"
        elements_file = "lists/bl.txt"
        [inspect]
        rules = ["rules/base.rules"]
        """,
    )
    write(tmp_path, "a.toml", HEAD + 'extends = "common/base.toml"\n')
    profile = load_profile(tmp_path / "a.toml")
    assert tuple(profile.set("bl").elements) == ("203.0.113.7",)
    assert profile.inspect.rules == (str(tmp_path / "common" / "rules" / "base.rules"),)


def test_elements_file_with_comments(tmp_path: Path) -> None:
    write(
        tmp_path,
        "lists/bl.txt",
        """
        # blocklist, one element a line

        198.51.100.0/24
          10.9.0.0/16   # trailing comment
        203.0.113.0/24
        198.51.100.5-198.51.100.9
        """,
    )
    write(
        tmp_path,
        "p.toml",
        HEAD
        + '[sets.bl]\ntype = "ipv4_addr"\ninterval = true\n'
        + 'elements = ["203.0.113.0/24"]\nelements_file = "lists/bl.txt"\n',
    )
    profile = load_profile(tmp_path / "p.toml")
    # The range lies inside 198.51.100.0/24: overlaps are merged, the result sorted.
    assert tuple(profile.set("bl").elements) == (
        "10.9.0.0/16",
        "198.51.100.0/24",
        "203.0.113.0/24",
    )


def test_elements_file_missing(tmp_path: Path) -> None:
    text = HEAD + '[sets.bl]\ntype = "ipv4_addr"\nelements_file = "lists/none.txt"\n'
    err = load_text(tmp_path, text)
    assert err.key == "sets.bl.elements_file"
    assert "none.txt" in err.message


def test_elements_file_bad_line(tmp_path: Path) -> None:
    write(tmp_path, "lists/bl.txt", "# header\n10.0.0.1\n\nfd00::1\n")
    text = HEAD + '[sets.bl]\ntype = "ipv4_addr"\nelements_file = "lists/bl.txt"\n'
    err = load_text(tmp_path, text)
    assert err.key == "sets.bl.elements_file"
    assert f"{tmp_path / 'lists' / 'bl.txt'}:4: " in err.message
    assert "'fd00::1' is not an ipv4_addr element" in err.message
    assert "\n" not in str(err)


def test_elements_file_over_size(tmp_path: Path) -> None:
    write(tmp_path, "lists/p.txt", "80\n443\n8080\n")
    text = HEAD + '[sets.p]\ntype = "inet_service"\nsize = 2\nelements_file = "lists/p.txt"\n'
    err = load_text(tmp_path, text)
    assert err.key == "sets.p.elements"
    assert "3 elements" in err.message


# --------------------------------------------------------------------------------------
# Good profiles

FULL = """
version = 1
name = "edge-gateway"

[defaults]
input = "drop"
forward = "drop"
output = "accept"

[zones.wan]
interfaces = ["eth0"]
masquerade = true

[zones.lan]
interfaces = ["eth1", "lan*"]
networks = ["192.168.10.0/24", "fd00:10::/64"]

[zones.mec]

[sets.blocklist]
type = "ipv4_addr"
interval = true
timeout = "1h"
size = 1000000
elements = ["203.0.113.0/24", "198.51.100.7/32", "10.0.0.1-10.0.0.1", "10.1.0.0-10.1.255.255"]
elements_file = "lists/blocklist.txt"

[sets.core_peers]
type = "ipv4_addr"
elements = ["192.0.2.10"]

[sets.web_ports]
type = "inet_service"
interval = true
elements = [80, "443", "8000-8100", "9000-9000"]

[[rules]]
name = "lan-web-out"
from = "lan"
to = "wan"
proto = "tcp"
saddr = ["10.0.0.0/8", "@blocklist"]
daddr = []
sport = []
dport = [80, 443, "8000-8100", "@web_ports"]
limit = "50/second"
action = "accept"
log = false

[[rules]]
name = "ping-self"
from = "any"
to = "self"
proto = "icmp"
action = "accept"
log = true

[[rules]]
name = "embb-to-mec"
from = "slice_embb"
to = "mec"
daddr = "10.50.0.0/24"
action = "reject"

[[forwards]]
name = "mec-app"
from = "wan"
proto = "tcp"
dport = 8443
to_addr = "10.45.0.10"
to_port = 443

[[forwards]]
name = "udp-range"
from = "wan"
proto = "udp"
dport = "5000-5010"
to_addr = "fd00:45::10"

[protect]
invalid = "drop"
spoofing = true
syn_flood = "200/second"
conn_limit = 200
block_timeout = "10m"
never_block = ["192.0.2.1", "@core_peers"]

[inspect]
mode = "sample"
sample_packets = 8
interfaces = []
rules = ["rules/edge.rules"]
alerts = "/var/log/appliance/eve.json"
block = true
home_net = ["10.0.0.0/8"]
[inspect.detectors]
port_scan = { ports = 20, window = "10s" }
syn_flood = { rate = "500/second" }
dns_tunnel = { max_label = 52, max_entropy = 4.0 }
gtp = { ue_pools = ["10.45.0.0/16"] }

[[isolation.segments]]
name = "slice-embb"
kind = "vlan"
parent = "eth1"
vlan_id = 100
addresses = ["10.100.0.1/24"]
zone = "slice_embb"
vrf = "vrf-embb"

[[isolation.segments]]
name = "vrf-embb"
kind = "vrf"
table = 100

[[isolation.segments]]
name = "mec-app1"
kind = "netns"
netns = "mec-app1"
addresses = ["10.50.0.1/24", "fd00:50:0:0::1/64"]
peer_addresses = ["10.50.0.10/24"]
zone = "mec"

[hub]
url = "https://hub.example.net/v1/edge-gw-01/"
trust = ["keys/hub.pub"]
poll = "30s"

[metrics]
listen = "127.0.0.1:9469"
"""


@pytest.fixture
def full_profile_path(tmp_path: Path) -> Path:
    write(tmp_path, "lists/blocklist.txt", "# feed\n198.51.100.0/24\n203.0.113.0/24\n")
    write(tmp_path, "rules/edge.rules", "")
    write(tmp_path, "keys/hub.pub", "AAAA\n")
    return write(tmp_path, "edge.toml", FULL)


def test_full_profile(full_profile_path: Path, tmp_path: Path) -> None:
    p = load_profile(full_profile_path)
    net = ipaddress.ip_network
    assert (p.version, p.name, p.source) == (1, "edge-gateway", str(full_profile_path))
    assert p.defaults == Defaults()
    assert p.has_policy

    assert [z.name for z in p.zones] == ["wan", "lan", "mec", "slice_embb"]
    assert p.zone("wan").masquerade is True
    assert p.zone("lan").interfaces == ("eth1", "lan*")
    assert p.zone("lan").networks == (net("192.168.10.0/24"), net("fd00:10::/64"))
    assert p.zone("mec") == Zone("mec", ("ap-mec-app1",), (), False, None)
    assert p.zone("slice_embb") == Zone("slice_embb", ("ap-slice-embb",), segment="slice-embb")

    bl = p.set("blocklist")
    assert (bl.type, bl.interval, bl.timeout, bl.size, bl.family) == (
        "ipv4_addr",
        True,
        3600.0,
        1000000,
        "ipv4",
    )
    # 198.51.100.7 lies inside 198.51.100.0/24 from the file: overlaps are merged.
    assert tuple(bl.elements) == (
        "10.0.0.1",
        "10.1.0.0/16",
        "198.51.100.0/24",
        "203.0.113.0/24",
    )
    assert tuple(p.set("web_ports").elements) == ("80", "443", "8000-8100", "9000")
    assert p.set("core_peers").interval is False

    web, ping, embb = p.rules
    assert (web.name, web.index, web.from_zone, web.to_zone, web.proto) == (
        "lan-web-out",
        0,
        "lan",
        "wan",
        "tcp",
    )
    assert web.saddr == (net("10.0.0.0/8"), SetRef("blocklist"))
    assert web.dport == (80, 443, PortRange(8000, 8100), SetRef("web_ports"))
    assert web.limit == Rate(50, "second")
    assert (web.action, web.log) == ("accept", False)
    assert (ping.index, ping.from_zone, ping.to_zone, ping.proto, ping.log) == (
        1,
        "any",
        "self",
        "icmp",
        True,
    )
    assert embb.daddr == (net("10.50.0.0/24"),)
    assert (embb.proto, embb.action, embb.limit) == ("any", "reject", None)

    mec, udp = p.forwards
    assert (mec.name, mec.from_zone, mec.proto, mec.dport, mec.to_port) == (
        "mec-app",
        "wan",
        "tcp",
        8443,
        443,
    )
    assert mec.to_addr == ipaddress.ip_address("10.45.0.10")
    assert (udp.index, udp.proto, udp.dport, udp.to_port) == (1, "udp", PortRange(5000, 5010), None)

    assert p.protect == Protect(
        invalid="drop",
        spoofing=True,
        syn_flood=Rate(200, "second"),
        conn_limit=200,
        block_timeout=600.0,
        never_block=(net("192.0.2.1/32"), SetRef("core_peers")),
    )

    ins = p.inspect
    assert (ins.mode, ins.sample_packets, ins.interfaces, ins.block) == ("sample", 8, (), True)
    assert ins.rules == (str(tmp_path / "rules" / "edge.rules"),)
    assert ins.alerts == "/var/log/appliance/eve.json"
    assert ins.home_net == (net("10.0.0.0/8"),)
    assert ins.detectors.port_scan == PortScanDetector(20, 10.0)
    assert ins.detectors.syn_flood == SynFloodDetector(Rate(500, "second"))
    assert ins.detectors.dns_tunnel == DnsTunnelDetector(52, 4.0, None)
    assert ins.detectors.gtp == GtpDetector((net("10.45.0.0/16"),))

    embb_seg, vrf_seg, mec_seg = p.segments
    assert (embb_seg.kind, embb_seg.link, embb_seg.parent, embb_seg.vlan_id) == (
        "vlan",
        "ap-slice-embb",
        "eth1",
        100,
    )
    assert (embb_seg.addresses, embb_seg.zone, embb_seg.vrf) == (
        ("10.100.0.1/24",),
        "slice_embb",
        "vrf-embb",
    )
    assert (vrf_seg.kind, vrf_seg.table, vrf_seg.link) == ("vrf", 100, "ap-vrf-embb")
    assert (mec_seg.netns, mec_seg.addresses, mec_seg.peer_addresses) == (
        "mec-app1",
        ("10.50.0.1/24", "fd00:50::1/64"),
        ("10.50.0.10/24",),
    )

    assert p.hub is not None
    assert p.hub.url == "https://hub.example.net/v1/edge-gw-01/"
    assert p.hub.trust == (str(tmp_path / "keys" / "hub.pub"),)
    assert p.hub.poll == 30.0
    assert p.metrics == MetricsSpec("127.0.0.1:9469")
    assert (p.metrics.host, p.metrics.port) == ("127.0.0.1", 9469)


def test_defaults_applied(tmp_path: Path) -> None:
    p = load_profile(write(tmp_path, "p.toml", HEAD))
    assert p.defaults == Defaults(input="drop", forward="drop", output="accept")
    assert p.inspect == Inspect()
    assert p.inspect.mode == "off"
    assert p.protect == Protect()
    assert p.protect.block_timeout == 600.0
    assert (p.zones, p.sets, p.rules, p.forwards, p.segments) == ((), (), (), (), ())
    assert p.hub is None and p.metrics is None
    assert not p.has_policy


def test_partial_defaults(tmp_path: Path) -> None:
    p = load_profile(write(tmp_path, "p.toml", HEAD + '[defaults]\nforward = "accept"\n'))
    assert p.defaults == Defaults(input="drop", forward="accept", output="accept")


def test_offload_is_asked_for_in_defaults(tmp_path: Path) -> None:
    assert load_profile(write(tmp_path, "a.toml", HEAD)).defaults.offload is False
    p = load_profile(write(tmp_path, "b.toml", HEAD + "[defaults]\noffload = true\n"))
    assert p.defaults == Defaults(offload=True)
    err = load_text(tmp_path, HEAD + '[defaults]\noffload = "yes"\n', "c.toml")
    assert err.key == "defaults.offload" and "true or false" in err.message
    err = load_text(tmp_path, HEAD + "[defaults]\nfastpath = true\n", "d.toml")
    assert "fastpath" in str(err)


def test_inspect_table_without_mode_samples(tmp_path: Path) -> None:
    p = load_profile(write(tmp_path, "p.toml", HEAD + "[inspect]\nblock = false\n"))
    assert p.inspect.mode == "sample"
    assert p.inspect.block is False
    assert p.inspect.home_net is None
    assert p.inspect.detectors.port_scan is None
    assert p.inspect.encryption_handling == "track-only"  # Suricata's default
    text = HEAD + '[inspect]\nencryption_handling = "full"\n'
    assert load_profile(write(tmp_path, "f.toml", text)).inspect.encryption_handling == "full"


def test_empty_detector_tables_use_defaults(tmp_path: Path) -> None:
    text = HEAD + "[inspect.detectors]\nport_scan = {}\nsyn_flood = {}\ndns_tunnel = {}\ngtp = {}\n"
    d = load_profile(write(tmp_path, "p.toml", text)).inspect.detectors
    assert d.port_scan == PortScanDetector()
    assert d.syn_flood == SynFloodDetector()
    assert d.dns_tunnel == DnsTunnelDetector()
    assert d.gtp == GtpDetector()


def test_mirror_mode(tmp_path: Path) -> None:
    text = HEAD + '[inspect]\nmode = "mirror"\ninterfaces = ["span0"]\n'
    ins = load_profile(write(tmp_path, "p.toml", text)).inspect
    assert (ins.mode, ins.interfaces) == ("mirror", ("span0",))


def test_segment_zones(tmp_path: Path) -> None:
    text = HEAD + textwrap.dedent(
        """
        [zones.lan]
        interfaces = ["eth1"]
        [zones.wan]
        interfaces = ["eth0"]
        masquerade = true
        [[isolation.segments]]
        name = "b"
        kind = "netns"
        netns = "nsb"
        zone = "apps"
        [[isolation.segments]]
        name = "a"
        kind = "vlan"
        parent = "eth1"
        vlan_id = 7
        zone = "lan"
        [[isolation.segments]]
        name = "c"
        kind = "netns"
        netns = "nsc"
        zone = "apps"
        [[isolation.segments]]
        name = "v"
        kind = "vrf"
        table = 1000
        addresses = ["127.0.0.1/8"]
        [[rules]]
        name = "apps-out"
        from = "apps"
        to = "wan"
        action = "accept"
        """
    )
    p = load_profile(write(tmp_path, "p.toml", text))
    assert [z.name for z in p.zones] == ["lan", "wan", "apps"]
    assert p.zone("lan") == Zone("lan", ("eth1", "ap-a"))
    assert p.zone("apps") == Zone("apps", ("ap-b", "ap-c"), segment="b")
    assert [s.link for s in p.segments] == ["ap-b", "ap-a", "ap-c", "ap-v"]
    assert p.segments[3].addresses == ("127.0.0.1/8",)
    assert p.rules[0].from_zone == "apps"


def test_masquerade_satisfied_by_segment_link(tmp_path: Path) -> None:
    text = HEAD + textwrap.dedent(
        """
        [zones.up]
        masquerade = true
        [[isolation.segments]]
        name = "up"
        kind = "vlan"
        parent = "eth0"
        vlan_id = 10
        zone = "up"
        """
    )
    assert load_profile(write(tmp_path, "p.toml", text)).zone("up").interfaces == ("ap-up",)


def test_single_string_addresses_and_ports(tmp_path: Path) -> None:
    text = rule('proto = "udp"\nsaddr = "10.0.0.0/8"\ndport = 53\naction = "accept"')
    r = load_profile(write(tmp_path, "p.toml", text)).rules[0]
    assert r.saddr == (ipaddress.ip_network("10.0.0.0/8"),)
    assert r.dport == (53,)


def test_address_ranges_in_rules(tmp_path: Path) -> None:
    text = rule('saddr = ["10.0.0.5-10.0.0.9"]\naction = "accept"')
    r = load_profile(write(tmp_path, "p.toml", text)).rules[0]
    assert str(r.saddr[0]) == "10.0.0.5-10.0.0.9"


def test_set_elements_deduplicated(tmp_path: Path) -> None:
    text = HEAD + '[sets.s]\ntype = "ipv6_addr"\nelements = ["fd00:0::1", "fd00::1/128", "::1"]\n'
    assert tuple(load_profile(write(tmp_path, "p.toml", text)).set("s").elements) == (
        "::1",
        "fd00::1",
    )


def test_ifname_set(tmp_path: Path) -> None:
    text = HEAD + '[sets.ifs]\ntype = "ifname"\nelements = ["eth0", "wg0"]\n'
    assert tuple(load_profile(write(tmp_path, "p.toml", text)).set("ifs").elements) == (
        "eth0",
        "wg0",
    )


def test_hub_only_profile(tmp_path: Path) -> None:
    write(tmp_path, "keys/a.pub", "AAAA\n")
    write(tmp_path, "keys/b.pub", "BBBB\n")
    text = HEAD + textwrap.dedent(
        """
        [hub]
        url = "file:///srv/hub/edge/"
        trust = ["keys/a.pub", "keys/b.pub"]
        poll = "5m"
        timeout = "8s"
        [metrics]
        listen = "[::1]:9469"
        """
    )
    p = load_profile(write(tmp_path, "p.toml", text))
    assert not p.has_policy
    assert p.hub is not None
    assert p.hub.url == "file:///srv/hub/edge/"
    assert p.hub.trust == (str(tmp_path / "keys/a.pub"), str(tmp_path / "keys/b.pub"))
    assert p.hub.poll == 300.0
    assert p.hub.timeout == 8.0
    assert p.metrics is not None
    assert (p.metrics.host, p.metrics.port) == ("::1", 9469)


@pytest.mark.parametrize("listen", ["0.0.0.0:9469", "localhost:1", "[::]:65535", "node-1.lan:80"])
def test_metrics_listen_ok(tmp_path: Path, listen: str) -> None:
    text = HEAD + f'[metrics]\nlisten = "{listen}"\n'
    metrics = load_profile(write(tmp_path, "p.toml", text)).metrics
    assert metrics == MetricsSpec(listen)


def test_metrics_default_listen(tmp_path: Path) -> None:
    p = load_profile(write(tmp_path, "p.toml", HEAD + "[metrics]\n"))
    assert p.metrics == MetricsSpec()


# --------------------------------------------------------------------------------------
# parse_profile: an already merged document (a hub bundle's profile)


def test_parse_profile_dict(tmp_path: Path) -> None:
    write(tmp_path, "state/rules/edge.rules", "")
    data = {
        "version": 1,
        "name": "bundle",
        "zones": {"lan": {"interfaces": ["eth1"]}},
        "sets": {"bl": {"type": "ipv4_addr", "interval": True, "elements": ["10.0.0.0/8"]}},
        "rules": [{"name": "a", "from": "lan", "saddr": ["@bl"], "action": "drop"}],
        "inspect": {"rules": ["rules/edge.rules"]},
    }
    data = json.loads(json.dumps(data))
    p = parse_profile(data, "bundle.json", tmp_path / "state")
    assert p.source == "bundle.json"
    assert tuple(p.set("bl").elements) == ("10.0.0.0/8",)
    assert p.inspect.rules == (str(tmp_path / "state" / "rules" / "edge.rules"),)


def test_parse_profile_same_as_load(full_profile_path: Path, tmp_path: Path) -> None:
    import tomllib

    data = tomllib.loads(FULL)
    data["sets"]["blocklist"].pop("elements_file")
    p = parse_profile(data, "bundle.json", tmp_path)
    loaded = load_profile(full_profile_path)
    assert p.rules == loaded.rules
    assert p.zones == loaded.zones
    assert p.segments == loaded.segments


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"version": 1, "name": "b", "extends": "base.toml"}, "extends"),
        (
            {"version": 1, "name": "b", "sets": {"s": {"type": "ipv4_addr", "elements_file": "x"}}},
            "sets.s.elements_file",
        ),
        (
            {"version": 1, "name": "b", "rules": [{"name": "a", "action": "jump"}]},
            "rules[0].action",
        ),
        ({"version": 1}, "name"),
    ],
)
def test_parse_profile_errors(tmp_path: Path, data: dict[str, object], key: str) -> None:
    with pytest.raises(ProfileError) as info:
        parse_profile(data, "bundle.json", tmp_path)
    assert info.value.key == key
    assert str(info.value).startswith(f"bundle.json: {key}: ")


def test_parse_profile_not_a_table(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="expected a table"):
        parse_profile([], "bundle.json", tmp_path)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (("rules", 0, "name"), "rules[0].name"),
        (("zones", "a.b", "interfaces", 1), 'zones."a.b".interfaces[1]'),
        (("isolation", "segments", 2, "vlan_id"), "isolation.segments[2].vlan_id"),
        ((), ""),
    ],
)
def test_format_key_path(path: tuple[str | int, ...], text: str) -> None:
    assert format_key_path(path) == text
