"""Profile -> the definition of ``table inet appliance`` as libnftables JSON objects. Pure.

The table, in evaluation order:

- ``inspect`` (filter, prerouting, priority -175: after conntrack, before everything else):
  with ``[inspect].mode = "sample"`` the first ``sample_packets`` packets of every flow go
  to NFLOG group ``SAMPLE_GROUP`` (``snaplen`` bytes each); with ``"inline"`` they go to the
  NFQUEUE range ``INLINE_QUEUES`` (bypass: they pass while no reader is bound). Packets
  the policy later drops (a port scan's SYNs to closed ports) are sampled too.
- ``prerouting`` (filter, mangle priority): the reverse-path check of ``[protect].spoofing``.
- ``dstnat`` / ``srcnat`` (nat): ``[[forwards]]`` and zone ``masquerade``.
- ``input`` / ``forward`` / ``output`` (filter): loopback, the autoblock sets, neighbour
  discovery, invalid, established/related, the ICMP errors TCP needs, the SYN-rate and
  connection-count protections, then ``[[rules]]`` in file order, then the default.
- with ``[defaults].offload`` and devices to hook (the caller finds which of the zones'
  interfaces exist, on a kernel that has flowtables): the flowtable ``FLOWTABLE``, and in
  ``forward``, after the autoblock and invalid rules and before established/related, the
  rule that hands established TCP and UDP flows to it once their original direction has
  passed ``[inspect].sample_packets`` (the packets inspection samples are never offloaded).

Every profile rule becomes one or more kernel rules (one per combination of zone
membership alternatives: interface or network, IPv4 or IPv6), all carrying the rule name as
comment and sharing one named counter (and one named limit), so counters and limits are
per profile rule whatever the expansion.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from appliance.compile.nftjson import (
    TABLE_FAMILY,
    TABLE_NAME,
    Json,
    counter,
    ct,
    element_value,
    match,
    meta,
    network_value,
    payload,
    port_value,
    set_ref,
    set_value,
    verdict,
)
from appliance.errors import ProfileError
from appliance.model.elements import Elements
from appliance.model.profile import (
    ANY,
    PORT_PROTOS,
    SELF,
    Forward,
    Profile,
    Rule,
    SetSpec,
    Zone,
)
from appliance.model.values import (
    AddrItem,
    AddrRange,
    Family,
    PortItem,
    PortRange,
    SetRef,
    family_of,
)
from appliance.units import Rate

NEVER_BLOCK_SETS: dict[Family, str] = {"ipv4": "ap_never_block_v4", "ipv6": "ap_never_block_v6"}
AUTOBLOCK: dict[Family, str] = {"ipv4": "autoblock_v4", "ipv6": "autoblock_v6"}
SYN_FLOOD_SETS: dict[Family, str] = {"ipv4": "ap_syn_flood_v4", "ipv6": "ap_syn_flood_v6"}
CONN_LIMIT_SETS: dict[Family, str] = {"ipv4": "ap_conn_limit_v4", "ipv6": "ap_conn_limit_v6"}
REJECT_CHAIN = "ap_reject"
IP_PROTOCOL: dict[Family, str] = {"ipv4": "ip", "ipv6": "ip6"}
ADDR_SET_TYPE: dict[Family, str] = {"ipv4": "ipv4_addr", "ipv6": "ipv6_addr"}
LIMIT_BURST = 5  # nft's default burst, written out so the kernel lists it back unchanged
ND_TYPES = [
    "nd-router-solicit",
    "nd-router-advert",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
    "nd-redirect",
]
ICMP_ERRORS = ["destination-unreachable", "time-exceeded", "parameter-problem"]  # numeric order
ICMPV6_ERRORS = [
    "destination-unreachable",
    "packet-too-big",
    "time-exceeded",
    "parameter-problem",
]
BUILTIN_COUNTERS = (
    "ap_autoblock",
    "ap_invalid",
    "ap_spoofing",
    "ap_syn_flood",
    "ap_conn_limit",
    "ap_default_input",
    "ap_default_forward",
    "ap_default_output",
)
DYNAMIC_SET_SIZE = 65535
INSPECT_CHAIN = "inspect"
INSPECT_PRIORITY = -175  # after conntrack (-200), before mangle (-150) and dstnat (-100)
SAMPLE_GROUP = 0x4150  # NFLOG group of [inspect].mode = "sample" ("AP"); 0 is the kernel log
# Bytes of each sampled packet: a whole post-quantum TLS ClientHello (about 1.8-2 kB, its SNI
# anywhere in it, in one packet when GRO merged its segments), a DNS message, an HTTP head.
SAMPLE_SNAPLEN = 4096
INLINE_QUEUES = (0x4150, 0x4153)  # NFQUEUE numbers of [inspect].mode = "inline", fanned out
FLOWTABLE = "ap_fastpath"  # the flowtable of [defaults].offload
OFFLOAD_COMMENT = "builtin:offload"


class CompileError(ValueError):
    """A profile that validates but cannot be expressed (names the key path)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


@contextmanager
def as_profile_error(where: str) -> Iterator[None]:
    """A CompileError raised inside becomes a ProfileError at ``where`` (the profile's file
    or the policy's source), naming the same key path."""
    try:
        yield
    except CompileError as exc:
        raise ProfileError(where, exc.key, str(exc)) from None


@dataclass(frozen=True)
class Alt:
    """One way to satisfy a match: some expressions, possibly tied to one address family."""

    exprs: tuple[Json, ...] = ()
    family: Family | None = None


EVERYTHING = (Alt(),)


def table_object() -> Json:
    return {"table": {"family": TABLE_FAMILY, "name": TABLE_NAME}}


def _obj(kind: str, **fields: object) -> Json:
    return {kind: {"family": TABLE_FAMILY, "table": TABLE_NAME, **fields}}


def _rule(chain: str, exprs: Iterable[Json], comment: str) -> Json:
    return _obj("rule", chain=chain, expr=list(exprs), comment=comment)


def compile_profile(profile: Profile, offload_devices: Sequence[str] = ()) -> list[Json]:
    """The table definition: table, counters, limits, sets (without elements), flowtable,
    chains, rules.

    Deterministic: the same profile gives the same list, byte for byte once serialised.
    Set elements come separately from :func:`profile_elements`. ``offload_devices``: the
    links the flowtable hooks (from :func:`offload_devices`); none, or ``[defaults].offload``
    off: no flowtable.
    """
    return _Compiler(profile, offload_devices).build()


def offload_devices(profile: Profile, links: Iterable[str]) -> tuple[str, ...]:
    """The zones' interfaces among ``links`` (the links that exist), a trailing ``*``
    matching a prefix; never loopback nor a segment's own link (the daemon makes those
    with the table, so they may not exist when it loads). Sorted."""
    segment_links = {segment.link for segment in profile.segments}
    names = [zone_if for zone in profile.zones for zone_if in zone.interfaces]
    found = set()
    for link in links:
        if link == "lo" or link in segment_links:
            continue
        for name in names:
            if link == name or (name.endswith("*") and link.startswith(name[:-1])):
                found.add(link)
    return tuple(sorted(found))


def offloaded_devices(objects: Iterable[Json]) -> tuple[str, ...]:
    """The devices of the table's flowtable (compiled or listed); empty: no offload."""
    for obj in objects:
        body = obj.get("flowtable")
        if body is not None and body.get("name") == FLOWTABLE:
            dev = body.get("dev", [])
            return tuple([dev] if isinstance(dev, str) else dev)
    return ()


def without_offload(objects: Iterable[Json]) -> list[Json]:
    """``objects`` without the flowtable and the rule that fills it: the same policy for a
    kernel, or a moment (boot, before the links exist), where it cannot be hooked."""
    return [
        obj
        for obj in objects
        if "flowtable" not in obj
        and not ("rule" in obj and obj["rule"].get("comment") == OFFLOAD_COMMENT)
    ]


def profile_elements(profile: Profile) -> dict[str, Elements]:
    """The elements each set of the table holds by profile (packed), by set name."""
    elements: dict[str, Elements] = {spec.name: spec.elements for spec in profile.sets}
    for family, name in NEVER_BLOCK_SETS.items():
        literal = [
            network_text(item)
            for item in profile.protect.never_block
            if not isinstance(item, SetRef) and family_of(item) == family
        ]
        elements[name] = Elements.of(ADDR_SET_TYPE[family], True, literal)
    for family, name in AUTOBLOCK.items():
        elements[name] = Elements(ADDR_SET_TYPE[family], False)
    return elements


def network_text(item: AddrItem) -> str:
    if isinstance(item, AddrRange):
        return str(item) if item.first != item.last else str(item.first)
    if isinstance(item, SetRef):
        return str(item)
    return str(item.network_address) if item.prefixlen == item.max_prefixlen else str(item)


def set_types(profile: Profile) -> dict[str, str]:
    """The type of every set in the table, built-in ones included."""
    types: dict[str, str] = {spec.name: spec.type for spec in profile.sets}
    for family, name in AUTOBLOCK.items():
        types[name] = ADDR_SET_TYPE[family]
    for family, name in NEVER_BLOCK_SETS.items():
        types[name] = ADDR_SET_TYPE[family]
    return types


def element_json(set_type: str, text: str, timeout: float | None = None) -> object:
    value = element_value(set_type, text)
    if timeout is None:
        return value
    return {"elem": {"val": value, "timeout": max(1, round(timeout))}}


class _Compiler:
    def __init__(self, profile: Profile, offload_devices: Sequence[str] = ()) -> None:
        self.profile = profile
        self.offload = tuple(sorted(set(offload_devices))) if profile.defaults.offload else ()
        self.sets = {spec.name: spec for spec in profile.sets}
        self.objects: list[Json] = []
        self.rules: list[Json] = []

    # ---- top level -------------------------------------------------------------------

    def build(self) -> list[Json]:
        profile = self.profile
        self.objects.append(table_object())
        for name in self._counter_names():
            self.objects.append(_obj("counter", name=name))
        for rule in profile.rules:
            if rule.limit is not None:
                self.objects.append(_obj("limit", name=rule.name, **_limit_fields(rule.limit)))
        self._sets()
        self._flowtable()
        self._chains()
        return self.objects + self._rules_by_chain()

    def _rules_by_chain(self) -> list[Json]:
        """Rules grouped by chain, in chain order: the order the kernel lists them in."""
        order = [obj["chain"]["name"] for obj in self.objects if "chain" in obj]
        return sorted(self.rules, key=lambda rule: order.index(rule["rule"]["chain"]))

    def _counter_names(self) -> list[str]:
        names = [rule.name for rule in self.profile.rules]
        names += [fwd.name for fwd in self.profile.forwards]
        return names + list(BUILTIN_COUNTERS)

    def _sets(self) -> None:
        protect = self.profile.protect
        for family, name in AUTOBLOCK.items():
            self.objects.append(
                _obj(
                    "set",
                    name=name,
                    type=ADDR_SET_TYPE[family],
                    flags=["timeout"],
                    timeout=max(1, round(protect.block_timeout)),
                )
            )
        for family, name in NEVER_BLOCK_SETS.items():
            self.objects.append(
                _obj("set", name=name, type=ADDR_SET_TYPE[family], flags=["interval"])
            )
        if protect.syn_flood is not None:
            for family, name in SYN_FLOOD_SETS.items():
                self.objects.append(_dynamic_set(name, ADDR_SET_TYPE[family], timeout=60))
        if protect.conn_limit is not None:
            for family, name in CONN_LIMIT_SETS.items():
                self.objects.append(_dynamic_set(name, ADDR_SET_TYPE[family], timeout=None))
        for spec in self.profile.sets:
            self.objects.append(_profile_set(spec))

    def _chains(self) -> None:
        profile = self.profile
        defaults = profile.defaults
        self._inspect_chain()
        if profile.protect.spoofing:
            self._base_chain("prerouting", "filter", "prerouting", -150, "accept")
            self._spoofing()
        if profile.forwards:
            self._base_chain("dstnat", "nat", "prerouting", -100, "accept")
            for fwd in profile.forwards:
                self._dnat(fwd)
        masq_zones = [zone for zone in profile.zones if zone.masquerade]
        if masq_zones:
            self._base_chain("srcnat", "nat", "postrouting", 100, "accept")
            for zone in masq_zones:
                self._masquerade(zone)
        self._base_chain("input", "filter", "input", 0, _policy(defaults.input))
        self._base_chain("forward", "filter", "forward", 0, _policy(defaults.forward))
        self._base_chain("output", "filter", "output", 0, _policy(defaults.output))
        self.objects.append(_obj("chain", name=REJECT_CHAIN))

        self._input_head()
        self._forward_head()
        self._output_head()
        for rule in profile.rules:
            self._user_rule(rule)
        # Port forwards are accepted after [[rules]], so a drop rule (a blocklist) also
        # stops its sources from using a published port.
        for fwd in profile.forwards:
            self._forward_accept(fwd)
        for chain, action in (
            ("input", defaults.input),
            ("forward", defaults.forward),
            ("output", defaults.output),
        ):
            self._add(
                chain, [counter(f"ap_default_{chain}"), *_action(action)], f"defaults.{chain}"
            )
        self._add(
            REJECT_CHAIN,
            [match(meta("l4proto"), "tcp"), {"reject": {"type": "tcp reset"}}],
            "builtin:reject-tcp",
        )
        self._add(
            REJECT_CHAIN,
            [{"reject": {"type": "icmpx", "expr": "port-unreachable"}}],
            "builtin:reject",
        )

    def _inspect_chain(self) -> None:
        """The kernel's share of ``[inspect]``: which packets reach user space."""
        inspect = self.profile.inspect
        if inspect.mode not in ("sample", "inline"):
            return
        self._base_chain(INSPECT_CHAIN, "filter", "prerouting", INSPECT_PRIORITY, "accept")
        head = [
            match(meta("iif"), "lo", "!="),
            match({"ct": {"key": "packets", "dir": "original"}}, inspect.sample_packets, "<="),
        ]
        if inspect.mode == "sample":
            action: Json = {"log": {"group": SAMPLE_GROUP, "snaplen": SAMPLE_SNAPLEN}}
        else:
            first, last = INLINE_QUEUES
            action = {"queue": {"num": {"range": [first, last]}, "flags": ["bypass", "fanout"]}}
        self._add(INSPECT_CHAIN, [*head, action], f"inspect:{inspect.mode}")

    def _base_chain(self, name: str, kind: str, hook: str, prio: int, policy: str) -> None:
        self.objects.append(
            _obj("chain", name=name, type=kind, hook=hook, prio=prio, policy=policy)
        )

    def _add(self, chain: str, exprs: Iterable[Json], comment: str) -> None:
        self.rules.append(_rule(chain, exprs, comment))

    # ---- built-in heads ---------------------------------------------------------------

    def _input_head(self) -> None:
        self._add("input", [match(meta("iif"), "lo"), verdict("accept")], "builtin:loopback")
        self._autoblock("input")
        self._add(
            "input",
            [
                match(payload("icmpv6", "type"), set_value(ND_TYPES)),
                match(payload("ip6", "hoplimit"), 255),
                verdict("accept"),
            ],
            "builtin:icmpv6-nd",
        )
        self._invalid("input")
        self._established("input")
        self._icmp_errors("input")
        self._flood_protection("input")

    def _forward_head(self) -> None:
        self._autoblock("forward")
        self._invalid("forward")
        self._offload_rule()
        self._established("forward")
        self._icmp_errors("forward")
        self._flood_protection("forward")

    def _output_head(self) -> None:
        self._add("output", [match(meta("oif"), "lo"), verdict("accept")], "builtin:loopback")
        self._add(
            "output",
            [match(payload("icmpv6", "type"), set_value(ND_TYPES)), verdict("accept")],
            "builtin:icmpv6-nd",
        )
        self._established("output")
        self._icmp_errors("output")

    # ---- flow offload -----------------------------------------------------------------

    def _flowtable(self) -> None:
        if not self.offload:
            return
        # The kernel lists one device as a string, several as a list.
        dev: object = self.offload[0] if len(self.offload) == 1 else list(self.offload)
        self.objects.append(_obj("flowtable", name=FLOWTABLE, hook="ingress", prio=0, dev=dev))

    def _offload_rule(self) -> None:
        """Established TCP and UDP flows to the flowtable, past the inspection sample. The
        autoblock rules come first: a blocked source is dropped, never offloaded."""
        if not self.offload:
            return
        exprs = [
            match(meta("l4proto"), set_value(["tcp", "udp"])),
            match(ct("state"), "established", "in"),
        ]
        inspect = self.profile.inspect
        if inspect.mode in ("sample", "inline"):
            sampled = {"ct": {"key": "packets", "dir": "original"}}
            exprs.append(match(sampled, inspect.sample_packets, ">"))
        exprs.append({"flow": {"op": "add", "flowtable": f"@{FLOWTABLE}"}})
        self._add("forward", exprs, OFFLOAD_COMMENT)

    def _autoblock(self, chain: str) -> None:
        for family, name in AUTOBLOCK.items():
            saddr = payload(IP_PROTOCOL[family], "saddr")
            self._add(
                chain,
                [
                    match(saddr, f"@{name}"),
                    *self._never_block(family, "saddr"),
                    counter("ap_autoblock"),
                    verdict("drop"),
                ],
                "protect:autoblock",
            )

    def _never_block(self, family: Family, field: str) -> list[Json]:
        """Matches that exempt ``never_block`` addresses (in ``field``) from a drop."""
        left = payload(IP_PROTOCOL[family], field)
        exprs = [match(left, f"@{NEVER_BLOCK_SETS[family]}", "!=")]
        for item in self.profile.protect.never_block:
            if isinstance(item, SetRef) and self.sets[item.name].family == family:
                exprs.append(match(left, set_ref(item), "!="))
        return exprs

    def _invalid(self, chain: str) -> None:
        if self.profile.protect.invalid == "drop":
            self._add(
                chain,
                [match(ct("state"), "invalid", "in"), counter("ap_invalid"), verdict("drop")],
                "protect:invalid",
            )

    def _established(self, chain: str) -> None:
        self._add(
            chain,
            [match(ct("state"), ["established", "related"], "in"), verdict("accept")],
            "builtin:established",
        )

    def _icmp_errors(self, chain: str) -> None:
        self._add(
            chain,
            [match(payload("icmp", "type"), set_value(ICMP_ERRORS)), verdict("accept")],
            "builtin:icmp-errors",
        )
        self._add(
            chain,
            [match(payload("icmpv6", "type"), set_value(ICMPV6_ERRORS)), verdict("accept")],
            "builtin:icmp-errors",
        )

    def _flood_protection(self, chain: str) -> None:
        protect = self.profile.protect
        new = match(ct("state"), "new", "in")
        if protect.syn_flood is not None:
            syn_only = match({"&": [payload("tcp", "flags"), ["syn", "ack"]]}, "syn")
            limit = {"limit": {**_limit_fields(protect.syn_flood), "inv": True}}
            for family, name in SYN_FLOOD_SETS.items():
                saddr = payload(IP_PROTOCOL[family], "saddr")
                self._add(
                    chain,
                    [
                        new,
                        syn_only,
                        *self._never_block(family, "saddr"),
                        {
                            "set": {
                                "op": "update",
                                "elem": saddr,
                                "set": f"@{name}",
                                "stmt": [limit],
                            }
                        },
                        counter("ap_syn_flood"),
                        verdict("drop"),
                    ],
                    "protect:syn_flood",
                )
        if protect.conn_limit is not None:
            count = {"ct count": {"val": protect.conn_limit, "inv": True}}
            for family, name in CONN_LIMIT_SETS.items():
                saddr = payload(IP_PROTOCOL[family], "saddr")
                self._add(
                    chain,
                    [
                        new,
                        *self._never_block(family, "saddr"),
                        {"set": {"op": "add", "elem": saddr, "set": f"@{name}", "stmt": [count]}},
                        counter("ap_conn_limit"),
                        verdict("drop"),
                    ],
                    "protect:conn_limit",
                )

    def _spoofing(self) -> None:
        self._add(
            "prerouting",
            [
                match(payload("ip", "saddr"), "0.0.0.0"),
                match(payload("udp", "dport"), 67),
                verdict("accept"),
            ],
            "protect:spoofing-dhcp",
        )
        self._add(
            "prerouting",
            [match(payload("ip6", "saddr"), "::"), verdict("accept")],
            "protect:spoofing-dad",
        )
        self._add(
            "prerouting",
            [
                match(meta("iif"), "lo", "!="),
                match({"fib": {"result": "oif", "flags": ["saddr", "iif"]}}, False),
                counter("ap_spoofing"),
                verdict("drop"),
            ],
            "protect:spoofing",
        )

    # ---- NAT -------------------------------------------------------------------------

    def _dnat(self, fwd: Forward) -> None:
        family: Family = family_of(fwd.to_addr)
        nat: Json = {"family": IP_PROTOCOL[family], "addr": str(fwd.to_addr)}
        if fwd.to_port is not None:
            nat["port"] = fwd.to_port
        port = match(payload(fwd.proto, "dport"), port_value(_plain_port(fwd.dport)))
        # Only traffic addressed to the appliance itself is forwarded, not traffic passing
        # through it to the same port elsewhere.
        to_self = match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
        for alt in self._zone_alts(fwd.from_zone, "in"):
            if alt.family not in (None, family):
                continue
            self._add("dstnat", [*alt.exprs, to_self, port, {"dnat": nat}], fwd.name)

    def _forward_accept(self, fwd: Forward) -> None:
        family: Family = family_of(fwd.to_addr)
        port = fwd.to_port if fwd.to_port is not None else _plain_port(fwd.dport)
        for alt in self._zone_alts(fwd.from_zone, "in", filter_hook=True):
            if alt.family not in (None, family):
                continue
            self._add(
                "forward",
                [
                    match(ct("status"), "dnat", "in"),
                    *alt.exprs,
                    match(payload(IP_PROTOCOL[family], "daddr"), str(fwd.to_addr)),
                    match(payload(fwd.proto, "dport"), port_value(port)),
                    counter(fwd.name),
                    verdict("accept"),
                ],
                fwd.name,
            )

    def _masquerade(self, zone: Zone) -> None:
        for alt in _interface_alts(zone, "oifname"):
            self._add(
                "srcnat",
                [match(meta("nfproto"), "ipv4"), *alt.exprs, {"masquerade": None}],
                f"zones.{zone.name}.masquerade",
            )

    # ---- [[rules]] -------------------------------------------------------------------

    def _user_rule(self, rule: Rule) -> None:
        for chain, from_alts, to_alts in self._placements(rule):
            self._expand(rule, chain, from_alts, to_alts)

    def _placements(self, rule: Rule) -> list[tuple[str, tuple[Alt, ...], tuple[Alt, ...]]]:
        if rule.from_zone == SELF:
            return [("output", EVERYTHING, self._zone_alts(rule.to_zone, "out"))]
        from_alts = self._zone_alts(rule.from_zone, "in", filter_hook=True)
        if rule.to_zone == SELF:
            return [("input", from_alts, EVERYTHING)]
        if rule.to_zone == ANY:
            return [("input", from_alts, EVERYTHING), ("forward", from_alts, EVERYTHING)]
        return [("forward", from_alts, self._zone_alts(rule.to_zone, "out"))]

    def _expand(
        self, rule: Rule, chain: str, from_alts: tuple[Alt, ...], to_alts: tuple[Alt, ...]
    ) -> None:
        proto_alts = _proto_alts(rule)
        saddr_alts = self._addr_alts(rule.saddr, "saddr")
        daddr_alts = self._addr_alts(rule.daddr, "daddr")
        sport_alts = self._port_alts(rule, rule.sport, "sport")
        dport_alts = self._port_alts(rule, rule.dport, "dport")
        emitted = 0
        for combo in itertools.product(
            from_alts, to_alts, saddr_alts, daddr_alts, proto_alts, sport_alts, dport_alts
        ):
            family = _merge_families(alt.family for alt in combo)
            if family is False:
                continue
            exprs: list[Json] = [expr for alt in combo for expr in alt.exprs]
            if rule.action != "accept":
                exprs += self._set_exemptions(combo[2], combo[3])
            if rule.limit is not None:
                exprs.append({"limit": rule.name})
            exprs.append(counter(rule.name))
            if rule.log:
                exprs.append({"log": {"prefix": f"appliance {rule.name}: "}})
            exprs += _action(rule.action, rule.proto)
            self._add(chain, exprs, rule.name)
            emitted += 1
        if emitted == 0:
            raise CompileError(
                f"rules[{rule.index}]", f"rule {rule.name!r} can never match (address families)"
            )

    def _set_exemptions(self, saddr: Alt, daddr: Alt) -> list[Json]:
        """never_block: a drop or reject by set membership never hits those addresses."""
        exprs: list[Json] = []
        for alt, field in ((saddr, "saddr"), (daddr, "daddr")):
            uses_set = any(
                isinstance(e["match"]["right"], str) and e["match"]["right"].startswith("@")
                for e in alt.exprs
            )
            if uses_set and alt.family is not None:
                exprs += self._never_block(alt.family, field)
        return exprs

    def _zone_alts(
        self, zone_name: str, direction: str, filter_hook: bool = False
    ) -> tuple[Alt, ...]:
        """The alternatives that place a packet in a zone. ``filter_hook``: for the input and
        forward chains, where a packet that came in on a link enslaved to a VRF carries the
        VRF's link as its input interface, and the enslaved link as ``meta sdifname``."""
        if zone_name == ANY:
            return EVERYTHING
        zone = self.profile.zone(zone_name)
        alts = list(_interface_alts(zone, "iifname" if direction == "in" else "oifname"))
        if filter_hook and direction == "in":
            slaves = sorted(
                s.link for s in self.profile.segments if s.vrf and s.link in zone.interfaces
            )
            if slaves:
                alts.append(Alt((match(meta("sdifname"), set_value(slaves)),)))
        field = "saddr" if direction == "in" else "daddr"
        for family in ("ipv4", "ipv6"):
            nets = [net for net in zone.networks if family_of(net) == family]
            if nets:
                alts.append(
                    Alt(
                        (
                            match(
                                payload(IP_PROTOCOL[family], field),
                                set_value([network_value(n) for n in nets]),
                            ),
                        ),
                        family,  # type: ignore[arg-type]
                    )
                )
        if not alts:
            raise CompileError(f"zones.{zone.name}", "zone has neither interfaces nor networks")
        return tuple(alts)

    def _addr_alts(self, items: tuple[AddrItem, ...], field: str) -> tuple[Alt, ...]:
        if not items:
            return EVERYTHING
        alts: list[Alt] = []
        for family in ("ipv4", "ipv6"):
            literal = [
                network_value(item)
                for item in items
                if not isinstance(item, SetRef) and family_of(item) == family
            ]
            if literal:
                left = payload(IP_PROTOCOL[family], field)
                alts.append(Alt((match(left, set_value(literal)),), family))  # type: ignore[arg-type]
        for item in items:
            if isinstance(item, SetRef):
                set_family = self.sets[item.name].family
                assert set_family is not None
                left = payload(IP_PROTOCOL[set_family], field)
                alts.append(Alt((match(left, set_ref(item)),), set_family))
        return tuple(alts)

    def _port_alts(self, rule: Rule, items: tuple[PortItem, ...], field: str) -> tuple[Alt, ...]:
        if not items:
            return EVERYTHING
        if rule.proto not in PORT_PROTOS:
            raise CompileError(f"rules[{rule.index}].{field}", "ports need proto tcp, udp or sctp")
        alts: list[Alt] = []
        literal = [port_value(item) for item in items if not isinstance(item, SetRef)]
        if literal:
            alts.append(Alt((match(payload(rule.proto, field), set_value(literal)),)))
        for item in items:
            if isinstance(item, SetRef):
                alts.append(Alt((match(payload(rule.proto, field), set_ref(item)),)))
        return tuple(alts)


def _interface_alts(zone: Zone, key: str) -> tuple[Alt, ...]:
    exact = [name for name in zone.interfaces if not name.endswith("*")]
    alts = [Alt((match(meta(key), set_value(sorted(exact))),))] if exact else []
    alts += [Alt((match(meta(key), name),)) for name in zone.interfaces if name.endswith("*")]
    return tuple(alts)


def _proto_alts(rule: Rule) -> tuple[Alt, ...]:
    if rule.proto == "icmp":
        return (Alt((match(meta("l4proto"), "icmp"),), "ipv4"),)
    if rule.proto == "icmpv6":
        return (Alt((match(meta("l4proto"), "ipv6-icmp"),), "ipv6"),)
    if rule.proto in PORT_PROTOS and not rule.sport and not rule.dport:
        return (Alt((match(meta("l4proto"), rule.proto),)),)
    return EVERYTHING  # "any", or a port match that implies the protocol


def _merge_families(families: Iterable[Family | None]) -> Family | bool | None:
    """The one family all alternatives agree on, None if unconstrained, False on conflict."""
    found: Family | None = None
    for family in families:
        if family is None:
            continue
        if found is not None and family != found:
            return False
        found = family
    return found


def _plain_port(port: PortItem) -> int | PortRange:
    if isinstance(port, SetRef):
        raise CompileError("forwards", "a forward's dport cannot be a set")
    return port


def _policy(action: str) -> str:
    return "accept" if action == "accept" else "drop"


def _action(action: str, proto: str = "any") -> list[Json]:
    if action != "reject":
        return [verdict(action)]
    if proto == "tcp":
        return [{"reject": {"type": "tcp reset"}}]
    if proto in ("udp", "sctp", "icmp", "icmpv6"):
        return [{"reject": {"type": "icmpx", "expr": "port-unreachable"}}]
    return [verdict("jump", REJECT_CHAIN)]


def _limit_fields(rate: Rate) -> dict[str, object]:
    return {"rate": rate.count, "per": rate.per, "burst": LIMIT_BURST}


def _dynamic_set(name: str, set_type: str, timeout: int | None) -> Json:
    fields: dict[str, object] = {"name": name, "type": set_type, "size": DYNAMIC_SET_SIZE}
    if timeout is not None:
        fields["flags"] = ["timeout"]
        fields["timeout"] = timeout
    return _obj("set", **fields)


def _profile_set(spec: SetSpec) -> Json:
    fields: dict[str, object] = {"name": spec.name, "type": spec.type}
    flags = []
    if spec.interval:
        flags.append("interval")
    if spec.timeout is not None:
        flags.append("timeout")
    if flags:
        fields["flags"] = flags
    if spec.timeout is not None:
        fields["timeout"] = max(1, round(spec.timeout))
    if spec.size is not None:
        fields["size"] = spec.size
    return _obj("set", **fields)
