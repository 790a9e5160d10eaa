"""Profile files to a validated :class:`Profile`. Pure apart from reading the profile's files.

Every error is a :class:`ProfileError` naming the file, the key path (``rules[2].dport[1]``)
and the offending value, on one line.

``extends`` merges tables deeply, the extending file winning key by key. Arrays, including
``[[rules]]``, ``[[forwards]]`` and ``[[isolation.segments]]``, are replaced as a whole, never
concatenated: a profile that sets ``rules`` or ``zones.lan.networks`` states the complete
list, and the order of first-match rules stays under one file's control. Keys merged in
from a base file keep their position; new keys follow. Paths (``extends``,
``elements_file``, ``[inspect].rules``, ``[hub].trust``) are relative to the file that
names them, so a base file can sit next to its own lists and keys.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from appliance.errors import ProfileError
from appliance.model.profile import (
    ANY,
    AUTOBLOCK_SETS,
    PORT_PROTOS,
    PROTOS,
    RESERVED_ZONE_NAMES,
    SELF,
    Defaults,
    Detectors,
    DnsTunnelDetector,
    Forward,
    GtpDetector,
    Hub,
    Inspect,
    MetricsSpec,
    PortScanDetector,
    Profile,
    Protect,
    Rule,
    Segment,
    SetSpec,
    SynFloodDetector,
    Zone,
)
from appliance.model.values import (
    SET_TYPES,
    AddrItem,
    Family,
    IPAddress,
    IPNetwork,
    PortItem,
    PortRange,
    SetRef,
    canonical_element,
    element_family,
    family_of,
    merge_overlaps,
    parse_addr_item,
    parse_address,
    parse_host_port,
    parse_network,
    parse_port_item,
    valid_ifname,
    valid_name,
)
from appliance.units import Rate, parse_duration, parse_rate

__all__ = [
    "PROFILE_VERSION",
    "format_key_path",
    "load_profile",
    "load_profile_document",
    "parse_profile",
]

PROFILE_VERSION = 1

KeyPath = tuple[str | int, ...]

VERDICTS = ("accept", "drop", "reject")
SET_PREFIX_RESERVED = "ap_"
SEGMENT_LINK_PREFIX = "ap-"
SEGMENT_NAME_MAX = 15 - len(SEGMENT_LINK_PREFIX)
SEGMENT_KINDS = ("vlan", "vrf", "netns")
INSPECT_MODES = ("sample", "mirror", "inline", "off")
HUB_SCHEMES = ("https://", "http://", "file://")
RESERVED_VRF_TABLES = (253, 254, 255)  # default, main, local

TOP_KEYS = (
    "version",
    "name",
    "extends",
    "defaults",
    "zones",
    "sets",
    "rules",
    "forwards",
    "protect",
    "inspect",
    "isolation",
    "hub",
    "metrics",
)
DEFAULTS_KEYS = ("input", "forward", "output")
ZONE_KEYS = ("interfaces", "networks", "masquerade")
SET_KEYS = ("type", "interval", "timeout", "size", "elements", "elements_file")
RULE_KEYS = (
    "name",
    "from",
    "to",
    "proto",
    "saddr",
    "daddr",
    "sport",
    "dport",
    "limit",
    "action",
    "log",
)
FORWARD_KEYS = ("name", "from", "proto", "dport", "to_addr", "to_port")
PROTECT_KEYS = ("invalid", "spoofing", "syn_flood", "conn_limit", "block_timeout", "never_block")
INSPECT_KEYS = (
    "mode",
    "sample_packets",
    "interfaces",
    "rules",
    "alerts",
    "block",
    "home_net",
    "detectors",
)
DETECTOR_KEYS: dict[str, tuple[str, ...]] = {
    "port_scan": ("ports", "window"),
    "syn_flood": ("rate",),
    "dns_tunnel": ("max_label", "max_entropy", "rate"),
    "gtp": ("ue_pools",),
}
ISOLATION_KEYS = ("segments",)
SEGMENT_COMMON_KEYS = ("name", "kind", "addresses", "zone", "vrf")
SEGMENT_KIND_KEYS: dict[str, tuple[str, ...]] = {
    "vlan": ("parent", "vlan_id"),
    "vrf": ("table",),
    "netns": ("netns", "peer_addresses"),
}
SEGMENT_KEYS = SEGMENT_COMMON_KEYS + tuple(k for keys in SEGMENT_KIND_KEYS.values() for k in keys)
HUB_KEYS = ("url", "trust", "poll", "timeout")
METRICS_KEYS = ("listen",)

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_NETNS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")


# --------------------------------------------------------------------------------------
# Public entry points


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Read the profile at ``path`` (and what it extends and names) into a validated Profile."""
    source = os.fspath(path)
    data, origins = _load_file(source, (), None)
    ctx = _Ctx(source, origins, Path(os.path.dirname(os.path.abspath(source))), file_refs=True)
    return _build(ctx, data)


def load_profile_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The profile at ``path`` as one self-contained document, validated first.

    ``extends`` is merged and every ``elements_file`` is inlined into its set's ``elements``
    (canonical, overlaps merged, as the kernel gets them), so :func:`parse_profile` accepts
    the result. File paths (``[inspect].rules``, ``[hub].trust``) are absolute.
    """
    profile = load_profile(path)
    data, _ = _load_file(os.fspath(path), (), None)
    sets = data.get("sets", {})
    for name, spec in sets.items():
        if "elements_file" in spec:
            del spec["elements_file"]
            spec["elements"] = list(profile.set(name).elements)
    return data


def parse_profile(data: Mapping[str, Any], source: str, base_dir: Path) -> Profile:
    """Validate an already-merged profile document (a hub bundle's profile, for instance).

    ``extends`` and ``elements_file`` must already be resolved: both are errors here.
    Relative ``[inspect].rules`` and ``[hub].trust`` paths are taken from ``base_dir``.
    """
    if not isinstance(data, Mapping):
        raise ProfileError(source, "", f"expected a table, got {_describe(data)}")
    ctx = _Ctx(source, {}, Path(base_dir), file_refs=False)
    return _build(ctx, dict(data))


def format_key_path(path: KeyPath) -> str:
    """``("rules", 2, "dport", 1)`` -> ``rules[2].dport[1]``; odd keys are quoted."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if _BARE_KEY.fullmatch(part) else json.dumps(part)
            out += f".{text}" if out else text
    return out


# --------------------------------------------------------------------------------------
# Files: reading, extends, relative paths


def _load_file(
    display: str, stack: tuple[tuple[str, str], ...], referrer: str | None
) -> tuple[dict[str, Any], dict[KeyPath, str]]:
    """Read one file and what it extends: the merged document and where merged keys came from.

    ``stack`` holds (real path, display path) of the files that led here; ``referrer`` is the
    file whose ``extends`` named this one.
    """
    real = os.path.realpath(display)
    if any(seen == real for seen, _ in stack):
        assert referrer is not None
        chain = " -> ".join([shown for _, shown in stack] + [display])
        raise ProfileError(referrer, "extends", f"extends loop: {chain}")
    try:
        with open(display, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        if referrer is not None:
            raise ProfileError(
                referrer, "extends", f"cannot read {display!r}: {_os_reason(exc)}"
            ) from None
        raise ProfileError(display, "", f"cannot read profile: {_os_reason(exc)}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProfileError(display, "", f"not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        message = " ".join(str(exc).split())
        raise ProfileError(display, "", f"TOML syntax error: {message}") from None

    directory = os.path.dirname(os.path.abspath(display))
    _absolutize_paths(data, directory)
    extends = data.pop("extends", None)
    if extends is None:
        return data, {}
    if not isinstance(extends, str) or not extends.strip():
        raise ProfileError(
            display, "extends", f"expected a file path string, got {_describe(extends)}"
        )
    base_display = extends
    if not os.path.isabs(extends):
        base_display = os.path.normpath(os.path.join(os.path.dirname(display), extends))
    base, base_origins = _load_file(base_display, (*stack, (real, display)), display)
    origins: dict[KeyPath, str] = {}
    merged = _merge(base, data, (), base_display, base_origins, origins)
    return merged, origins


def _merge(
    base: dict[str, Any],
    over: dict[str, Any],
    path: KeyPath,
    base_file: str,
    base_origins: Mapping[KeyPath, str],
    origins: dict[KeyPath, str],
) -> dict[str, Any]:
    """Deep merge of tables, ``over`` winning; arrays and scalars are replaced whole.

    Records in ``origins`` the file of each key taken from ``base``.
    """
    result = dict(base)
    for key in base:
        if key in over:
            continue
        key_path = (*path, key)
        origins[key_path] = _lookup_origin(base_origins, key_path) or base_file
        for sub, origin in base_origins.items():
            if len(sub) > len(key_path) and sub[: len(key_path)] == key_path:
                origins[sub] = origin
    for key, value in over.items():
        old = base.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            result[key] = _merge(old, value, (*path, key), base_file, base_origins, origins)
        else:
            result[key] = value
    return result


def _lookup_origin(origins: Mapping[KeyPath, str], path: KeyPath) -> str | None:
    for end in range(len(path), 0, -1):
        found = origins.get(path[:end])
        if found is not None:
            return found
    return None


def _absolutize_paths(data: dict[str, Any], directory: str) -> None:
    """Make the file paths one file names absolute, relative to that file's directory.

    Values of the wrong type are left alone for validation to report.
    """

    def absolute(value: Any) -> Any:
        if isinstance(value, str) and value.strip():
            return os.path.normpath(os.path.join(directory, value))
        return value

    sets = data.get("sets")
    if isinstance(sets, dict):
        for spec in sets.values():
            if isinstance(spec, dict) and "elements_file" in spec:
                spec["elements_file"] = absolute(spec["elements_file"])
    inspect = data.get("inspect")
    if isinstance(inspect, dict) and isinstance(inspect.get("rules"), list):
        inspect["rules"] = [absolute(item) for item in inspect["rules"]]
    hub = data.get("hub")
    if isinstance(hub, dict) and isinstance(hub.get("trust"), list):
        hub["trust"] = [absolute(item) for item in hub["trust"]]


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


# --------------------------------------------------------------------------------------
# Validation context and typed accessors


@dataclass
class _Ctx:
    source: str
    origins: dict[KeyPath, str]
    base_dir: Path
    file_refs: bool  # elements_file allowed (a file on disk, not a bundle)

    def error(self, path: KeyPath, message: str) -> ProfileError:
        source = _lookup_origin(self.origins, path) or self.source
        return ProfileError(source, format_key_path(path), message.replace("\n", " "))

    def path(self, value: str) -> str:
        return os.path.normpath(os.path.join(self.base_dir, value))


def _describe(value: object) -> str:
    kind = _type_name(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"{_show(value)} ({kind})"


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, datetime | date | time):
        return "date/time"
    return type(value).__name__


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _table(ctx: _Ctx, path: KeyPath, value: Any, allowed: Collection[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ctx.error(path, f"expected a table, got {_describe(value)}")
    for key in value:
        if key not in allowed:
            hint = difflib.get_close_matches(key, list(allowed), n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ctx.error((*path, key), f"unknown key {key!r}{extra}")
    return value


def _str(ctx: _Ctx, path: KeyPath, value: Any, choices: Collection[str] | None = None) -> str:
    if not isinstance(value, str):
        raise ctx.error(path, f"expected a string, got {_describe(value)}")
    if choices is not None and value not in choices:
        raise ctx.error(path, f"{value!r} is not one of {_or_list(choices)}")
    return value


def _bool(ctx: _Ctx, path: KeyPath, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ctx.error(path, f"expected true or false, got {_describe(value)}")
    return value


def _int(
    ctx: _Ctx, path: KeyPath, value: Any, low: int | None = None, high: int | None = None
) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ctx.error(path, f"expected an integer, got {_describe(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            raise ctx.error(path, f"{value} is out of range: must be at least {low}")
        if low is None:
            raise ctx.error(path, f"{value} is out of range: must be at most {high}")
        raise ctx.error(path, f"{value} is out of range {low}-{high}")
    return value


def _positive_float(ctx: _Ctx, path: KeyPath, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ctx.error(path, f"expected a number, got {_describe(value)}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ctx.error(path, f"{value} is out of range: must be a finite number above zero")
    return number


def _list(ctx: _Ctx, path: KeyPath, value: Any, single: tuple[type, ...] = ()) -> list[Any]:
    """An array; a lone value of a type in ``single`` stands for a one-item array."""
    if isinstance(value, list):
        return value
    if isinstance(value, single) and not isinstance(value, bool):
        return [value]
    raise ctx.error(path, f"expected an array, got {_describe(value)}")


def _str_list(ctx: _Ctx, path: KeyPath, value: Any) -> list[str]:
    items = _list(ctx, path, value)
    return [_str(ctx, (*path, i), item) for i, item in enumerate(items)]


def _duration(ctx: _Ctx, path: KeyPath, value: Any) -> float:
    try:
        return parse_duration(_str(ctx, path, value))
    except ValueError as exc:
        raise ctx.error(path, str(exc)) from None


def _rate(ctx: _Ctx, path: KeyPath, value: Any) -> Rate:
    try:
        return parse_rate(_str(ctx, path, value))
    except ValueError as exc:
        raise ctx.error(path, str(exc)) from None


def _name(ctx: _Ctx, path: KeyPath, value: Any, what: str) -> str:
    name = _str(ctx, path, value)
    if not valid_name(name):
        raise ctx.error(
            path,
            f"bad {what} name {name!r} (a letter, then letters, digits, _ . -; at most 63)",
        )
    return name


def _ifname(ctx: _Ctx, path: KeyPath, value: Any, wildcard: bool = True) -> str:
    name = _str(ctx, path, value)
    if not valid_ifname(name) or (not wildcard and name.endswith("*")):
        extra = "; a trailing * matches a prefix" if wildcard else ""
        raise ctx.error(path, f"bad interface name {name!r} (at most 15 characters{extra})")
    return name


def _networks(ctx: _Ctx, path: KeyPath, value: Any) -> tuple[IPNetwork, ...]:
    out: list[IPNetwork] = []
    for i, item in enumerate(_list(ctx, path, value)):
        try:
            out.append(parse_network(item))
        except ValueError as exc:
            raise ctx.error((*path, i), str(exc)) from None
    return tuple(out)


def _or_list(choices: Collection[str]) -> str:
    items = list(choices)
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " or " + items[-1]


def _require(ctx: _Ctx, path: KeyPath, table: Mapping[str, Any], key: str, hint: str = "") -> Any:
    if key not in table:
        raise ctx.error((*path, key), f"required{hint}")
    return table[key]


# --------------------------------------------------------------------------------------
# The profile


@dataclass
class _ZoneDraft:
    name: str
    interfaces: list[str] = field(default_factory=list)
    networks: tuple[IPNetwork, ...] = ()
    masquerade: bool = False
    segment: str | None = None

    def freeze(self) -> Zone:
        return Zone(
            name=self.name,
            interfaces=tuple(self.interfaces),
            networks=self.networks,
            masquerade=self.masquerade,
            segment=self.segment,
        )


def _build(ctx: _Ctx, data: dict[str, Any]) -> Profile:
    if "extends" in data:
        raise ctx.error(("extends",), "not allowed here: extends must be resolved beforehand")
    _table(ctx, (), data, TOP_KEYS)

    version = _int(ctx, ("version",), _require(ctx, (), data, "version", " (version = 1)"))
    if version != PROFILE_VERSION:
        raise ctx.error(
            ("version",), f"unsupported version {version} (this appliance reads version 1)"
        )
    name = _name(ctx, ("name",), _require(ctx, (), data, "name"), "profile")

    defaults = _parse_defaults(ctx, data.get("defaults", {}))
    zones = _parse_zones(ctx, data.get("zones", {}))
    sets = _parse_sets(ctx, data.get("sets", {}))
    segments = _parse_isolation(ctx, data.get("isolation", {}), zones)
    for zone in zones.values():
        if zone.masquerade and not zone.interfaces:
            raise ctx.error(
                ("zones", zone.name, "masquerade"),
                f"masquerade needs interfaces: zone {zone.name!r} has none",
            )
    rules = _parse_rules(ctx, data.get("rules", []), zones, sets)
    forwards = _parse_forwards(ctx, data.get("forwards", []), zones, rules)
    protect = _parse_protect(ctx, data.get("protect", {}), sets)
    inspect = _parse_inspect(ctx, data["inspect"]) if "inspect" in data else Inspect()
    hub = _parse_hub(ctx, data["hub"]) if "hub" in data else None
    metrics = _parse_metrics(ctx, data["metrics"]) if "metrics" in data else None

    return Profile(
        version=version,
        name=name,
        source=ctx.source,
        defaults=defaults,
        zones=tuple(zone.freeze() for zone in zones.values()),
        sets=tuple(sets.values()),
        rules=tuple(rules),
        forwards=tuple(forwards),
        protect=protect,
        inspect=inspect,
        segments=tuple(segments),
        hub=hub,
        metrics=metrics,
    )


def _parse_defaults(ctx: _Ctx, value: Any) -> Defaults:
    path: KeyPath = ("defaults",)
    table = _table(ctx, path, value, DEFAULTS_KEYS)
    fields = {
        key: _str(ctx, (*path, key), table[key], VERDICTS) for key in DEFAULTS_KEYS if key in table
    }
    return Defaults(**cast(dict[str, Any], fields))


def _parse_zones(ctx: _Ctx, value: Any) -> dict[str, _ZoneDraft]:
    zones: dict[str, _ZoneDraft] = {}
    if not isinstance(value, dict):
        raise ctx.error(("zones",), f"expected a table of zones, got {_describe(value)}")
    for name, spec in value.items():
        path: KeyPath = ("zones", name)
        _zone_name(ctx, path, name)
        table = _table(ctx, path, spec, ZONE_KEYS)
        zone = _ZoneDraft(name)
        if "interfaces" in table:
            items = _list(ctx, (*path, "interfaces"), table["interfaces"])
            for i, item in enumerate(items):
                ifname = _ifname(ctx, (*path, "interfaces", i), item)
                if ifname in zone.interfaces:
                    raise ctx.error((*path, "interfaces", i), f"interface {ifname!r} listed twice")
                zone.interfaces.append(ifname)
        if "networks" in table:
            zone.networks = _networks(ctx, (*path, "networks"), table["networks"])
        if "masquerade" in table:
            zone.masquerade = _bool(ctx, (*path, "masquerade"), table["masquerade"])
        zones[name] = zone
    return zones


def _zone_name(ctx: _Ctx, path: KeyPath, value: Any) -> str:
    name = _name(ctx, path, value, "zone")
    if name in RESERVED_ZONE_NAMES:
        raise ctx.error(path, f"zone name {name!r} is reserved (self and any are built in)")
    return name


def _valid_set_name(name: str) -> bool:
    try:
        return isinstance(parse_addr_item("@" + name), SetRef)
    except ValueError:
        return False


def _parse_sets(ctx: _Ctx, value: Any) -> dict[str, SetSpec]:
    sets: dict[str, SetSpec] = {}
    if not isinstance(value, dict):
        raise ctx.error(("sets",), f"expected a table of sets, got {_describe(value)}")
    for name, spec in value.items():
        path: KeyPath = ("sets", name)
        if not _valid_set_name(name):
            raise ctx.error(
                path, f"bad set name {name!r} (a letter, then letters, digits and _; at most 63)"
            )
        if name.startswith(SET_PREFIX_RESERVED) or name in AUTOBLOCK_SETS:
            raise ctx.error(
                path,
                f"set name {name!r} is reserved (autoblock_v4, autoblock_v6 and ap_* belong"
                " to the appliance)",
            )
        table = _table(ctx, path, spec, SET_KEYS)
        set_type = _str(ctx, (*path, "type"), _require(ctx, path, table, "type"), SET_TYPES)
        interval = _bool(ctx, (*path, "interval"), table.get("interval", False))
        timeout = (
            _duration(ctx, (*path, "timeout"), table["timeout"]) if "timeout" in table else None
        )
        size = _int(ctx, (*path, "size"), table["size"], 1, 2**32 - 1) if "size" in table else None
        elements: dict[str, None] = {}
        for i, item in enumerate(_list(ctx, (*path, "elements"), table.get("elements", []))):
            try:
                elements.setdefault(canonical_element(set_type, interval, item))
            except ValueError as exc:
                raise ctx.error((*path, "elements", i), str(exc)) from None
        if "elements_file" in table:
            key = (*path, "elements_file")
            if not ctx.file_refs:
                raise ctx.error(key, "not allowed here: the elements must be listed in elements")
            for element in _read_elements(ctx, key, table["elements_file"], set_type, interval):
                elements.setdefault(element)
        merged = merge_overlaps(set_type, list(elements)) if interval else list(elements)
        if size is not None and len(merged) > size:
            raise ctx.error(
                (*path, "elements"),
                f"{len(merged)} elements do not fit in size = {size}",
            )
        sets[name] = SetSpec(
            name=name,
            type=cast(Any, set_type),
            interval=interval,
            timeout=timeout,
            size=size,
            elements=tuple(merged),
        )
    return sets


def _read_elements(
    ctx: _Ctx, path: KeyPath, value: Any, set_type: str, interval: bool
) -> list[str]:
    name = _str(ctx, path, value)
    if not name.strip():
        raise ctx.error(path, "expected a file path, got an empty string")
    filename = ctx.path(name)
    try:
        with open(filename, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise ctx.error(path, f"cannot read {filename!r}: {_os_reason(exc)}") from None
    except UnicodeDecodeError as exc:
        raise ctx.error(path, f"{filename}: not UTF-8 text (byte {exc.start})") from None
    out: list[str] = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            out.append(canonical_element(set_type, interval, text))
        except ValueError as exc:
            raise ctx.error(path, f"{filename}:{number}: {exc}") from None
    return out


def _parse_isolation(ctx: _Ctx, value: Any, zones: dict[str, _ZoneDraft]) -> list[Segment]:
    table = _table(ctx, ("isolation",), value, ISOLATION_KEYS)
    items = _list(ctx, ("isolation", "segments"), table.get("segments", []))
    segments: list[Segment] = []
    seen: dict[str, int] = {}
    vrf_tables: dict[int, int] = {}
    netns_names: dict[str, int] = {}
    for i, spec in enumerate(items):
        path: KeyPath = ("isolation", "segments", i)
        if not isinstance(spec, dict):
            raise ctx.error(path, f"expected a table, got {_describe(spec)}")
        name = _name(ctx, (*path, "name"), _require(ctx, path, spec, "name"), "segment")
        if len(name) > SEGMENT_NAME_MAX:
            raise ctx.error(
                (*path, "name"),
                f"segment name {name!r} is longer than {SEGMENT_NAME_MAX} characters"
                f" (its link {SEGMENT_LINK_PREFIX}{name} must fit in 15)",
            )
        if name in seen:
            raise ctx.error(
                (*path, "name"),
                f"duplicate segment name {name!r} (also isolation.segments[{seen[name]}])",
            )
        seen[name] = i
        kind = _str(ctx, (*path, "kind"), _require(ctx, path, spec, "kind"), SEGMENT_KINDS)
        _table(ctx, path, spec, SEGMENT_KEYS)
        for key in spec:
            if key not in SEGMENT_COMMON_KEYS and key not in SEGMENT_KIND_KEYS[kind]:
                owner = next(k for k, keys in SEGMENT_KIND_KEYS.items() if key in keys)
                raise ctx.error(
                    (*path, key), f"{key!r} does not apply to kind = {kind!r} (only to {owner})"
                )
        link = SEGMENT_LINK_PREFIX + name
        parent: str | None = None
        vlan_id: int | None = None
        table_id: int | None = None
        netns: str | None = None
        if kind == "vlan":
            parent = _ifname(ctx, (*path, "parent"), _require(ctx, path, spec, "parent"), False)
            vlan_id = _int(ctx, (*path, "vlan_id"), _require(ctx, path, spec, "vlan_id"), 1, 4094)
        elif kind == "vrf":
            table_id = _int(ctx, (*path, "table"), _require(ctx, path, spec, "table"), 1, 2**32 - 1)
            if table_id in RESERVED_VRF_TABLES:
                raise ctx.error(
                    (*path, "table"),
                    f"table {table_id} is reserved (253 default, 254 main, 255 local)",
                )
            if table_id in vrf_tables:
                raise ctx.error(
                    (*path, "table"),
                    f"table {table_id} is already used by isolation.segments"
                    f"[{vrf_tables[table_id]}]",
                )
            vrf_tables[table_id] = i
            if "vrf" in spec:
                raise ctx.error((*path, "vrf"), "a vrf segment cannot be enslaved to a vrf")
        else:
            netns = _str(ctx, (*path, "netns"), _require(ctx, path, spec, "netns"))
            if not _NETNS_NAME.fullmatch(netns) or netns in (".", ".."):
                raise ctx.error((*path, "netns"), f"bad network namespace name {netns!r}")
            if netns in netns_names:
                raise ctx.error(
                    (*path, "netns"),
                    f"namespace {netns!r} is already used by isolation.segments"
                    f"[{netns_names[netns]}]",
                )
            netns_names[netns] = i
        addresses = _interface_addresses(ctx, (*path, "addresses"), spec.get("addresses", []))
        peer = _interface_addresses(ctx, (*path, "peer_addresses"), spec.get("peer_addresses", []))
        vrf = _name(ctx, (*path, "vrf"), spec["vrf"], "segment") if "vrf" in spec else None
        zone_name = _zone_name(ctx, (*path, "zone"), spec["zone"]) if "zone" in spec else None
        segments.append(
            Segment(
                name=name,
                kind=cast(Any, kind),
                link=link,
                parent=parent,
                vlan_id=vlan_id,
                addresses=addresses,
                zone=zone_name,
                vrf=vrf,
                table=table_id,
                netns=netns,
                peer_addresses=peer,
            )
        )

    by_name = {segment.name: segment for segment in segments}
    for i, segment in enumerate(segments):
        path = ("isolation", "segments", i)
        if segment.vrf is not None:
            target = by_name.get(segment.vrf)
            if target is None:
                raise ctx.error((*path, "vrf"), f"unknown segment {segment.vrf!r}")
            if target.kind != "vrf":
                raise ctx.error(
                    (*path, "vrf"),
                    f"segment {segment.vrf!r} is a {target.kind} segment, not a vrf segment",
                )
        if segment.zone is not None:
            zone = zones.get(segment.zone)
            if zone is None:
                zone = zones[segment.zone] = _ZoneDraft(segment.zone, segment=segment.name)
            zone.interfaces.append(segment.link)
    return segments


def _interface_addresses(ctx: _Ctx, path: KeyPath, value: Any) -> tuple[str, ...]:
    out: list[str] = []
    for i, item in enumerate(_list(ctx, path, value)):
        text = _str(ctx, (*path, i), item)
        try:
            iface = ipaddress.ip_interface(text.strip())
        except ValueError:
            raise ctx.error((*path, i), f"bad interface address {text!r}") from None
        if iface.ip.is_unspecified or iface.ip.is_multicast:
            raise ctx.error((*path, i), f"{text!r} cannot be an interface address")
        canonical = str(iface)
        if canonical in out:
            raise ctx.error((*path, i), f"address {text!r} listed twice")
        out.append(canonical)
    return tuple(out)


# --------------------------------------------------------------------------------------
# Rules and forwards


def _parse_rules(
    ctx: _Ctx, value: Any, zones: Mapping[str, _ZoneDraft], sets: Mapping[str, SetSpec]
) -> list[Rule]:
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for i, spec in enumerate(_list(ctx, ("rules",), value)):
        path: KeyPath = ("rules", i)
        table = _table(ctx, path, spec, RULE_KEYS)
        name = _name(ctx, (*path, "name"), _require(ctx, path, table, "name"), "rule")
        if name in seen:
            raise ctx.error(
                (*path, "name"), f"duplicate rule name {name!r} (also rules[{seen[name]}])"
            )
        seen[name] = i
        from_zone = _zone_ref(ctx, (*path, "from"), table.get("from", ANY), zones, True)
        to_zone = _zone_ref(ctx, (*path, "to"), table.get("to", ANY), zones, True)
        if from_zone == SELF and to_zone == SELF:
            raise ctx.error(
                (*path, "to"), 'from = "self" and to = "self": the appliance to itself is loopback'
            )
        proto = _str(ctx, (*path, "proto"), table.get("proto", "any"), PROTOS)
        saddr = _addr_items(ctx, (*path, "saddr"), table.get("saddr", []), sets)
        daddr = _addr_items(ctx, (*path, "daddr"), table.get("daddr", []), sets)
        sport = _port_items(ctx, (*path, "sport"), table.get("sport", []), sets, proto)
        dport = _port_items(ctx, (*path, "dport"), table.get("dport", []), sets, proto)
        _check_families(ctx, path, proto, saddr, daddr, sets)
        limit = _rate(ctx, (*path, "limit"), table["limit"]) if "limit" in table else None
        action = _str(
            ctx,
            (*path, "action"),
            _require(ctx, path, table, "action", " (accept, drop or reject)"),
            VERDICTS,
        )
        log = _bool(ctx, (*path, "log"), table.get("log", False))
        rules.append(
            Rule(
                name=name,
                index=i,
                from_zone=from_zone,
                to_zone=to_zone,
                proto=cast(Any, proto),
                saddr=saddr,
                daddr=daddr,
                sport=sport,
                dport=dport,
                limit=limit,
                action=cast(Any, action),
                log=log,
            )
        )
    return rules


def _zone_ref(
    ctx: _Ctx, path: KeyPath, value: Any, zones: Mapping[str, _ZoneDraft], builtin: bool
) -> str:
    name = _str(ctx, path, value)
    if name in RESERVED_ZONE_NAMES:
        if builtin:
            return name
        raise ctx.error(path, f"{name!r} is not allowed here: name a zone")
    if name not in zones:
        known = ", ".join(zones) or "none declared"
        extra = "; or self, any" if builtin else ""
        raise ctx.error(path, f"unknown zone {name!r} (zones: {known}{extra})")
    return name


def _addr_items(
    ctx: _Ctx, path: KeyPath, value: Any, sets: Mapping[str, SetSpec]
) -> tuple[AddrItem, ...]:
    out: list[AddrItem] = []
    for i, item in enumerate(_list(ctx, path, value, single=(str,))):
        try:
            parsed = parse_addr_item(item)
        except ValueError as exc:
            raise ctx.error((*path, i), str(exc)) from None
        if isinstance(parsed, SetRef):
            spec = _set_ref(ctx, (*path, i), parsed, sets)
            if element_family(spec.type) is None:
                raise ctx.error(
                    (*path, i),
                    f"set {str(parsed)!r} is of type {spec.type}, not an address set"
                    " (ipv4_addr or ipv6_addr)",
                )
        out.append(parsed)
    return tuple(out)


def _port_items(
    ctx: _Ctx, path: KeyPath, value: Any, sets: Mapping[str, SetSpec], proto: str
) -> tuple[PortItem, ...]:
    items = _list(ctx, path, value, single=(str, int))
    if items and proto not in PORT_PROTOS:
        raise ctx.error(path, f"ports need proto = tcp, udp or sctp (proto is {proto!r})")
    out: list[PortItem] = []
    for i, item in enumerate(items):
        try:
            parsed = parse_port_item(item)
        except ValueError as exc:
            raise ctx.error((*path, i), str(exc)) from None
        if isinstance(parsed, SetRef):
            spec = _set_ref(ctx, (*path, i), parsed, sets)
            if spec.type != "inet_service":
                raise ctx.error(
                    (*path, i), f"set {str(parsed)!r} is of type {spec.type}, not inet_service"
                )
        out.append(parsed)
    return tuple(out)


def _set_ref(ctx: _Ctx, path: KeyPath, ref: SetRef, sets: Mapping[str, SetSpec]) -> SetSpec:
    spec = sets.get(ref.name)
    if spec is None:
        raise ctx.error(path, f"unknown set {str(ref)!r}")
    return spec


def _families(items: tuple[AddrItem, ...], sets: Mapping[str, SetSpec]) -> set[Family]:
    out: set[Family] = set()
    for item in items:
        if isinstance(item, SetRef):
            family = element_family(sets[item.name].type)
            if family is not None:
                out.add(family)
        else:
            out.add(family_of(item))
    return out


def _check_families(
    ctx: _Ctx,
    path: KeyPath,
    proto: str,
    saddr: tuple[AddrItem, ...],
    daddr: tuple[AddrItem, ...],
    sets: Mapping[str, SetSpec],
) -> None:
    families: set[Family] = {"ipv4", "ipv6"}
    if saddr:
        families &= _families(saddr, sets)
    if daddr:
        key = (*path, "daddr")
        if not families & _families(daddr, sets):
            raise ctx.error(key, "can never match: saddr and daddr share no address family")
        families &= _families(daddr, sets)
    where = "daddr" if daddr else "saddr"
    if proto == "icmp" and families == {"ipv6"}:
        raise ctx.error((*path, where), 'can never match: proto = "icmp" with only IPv6 addresses')
    if proto == "icmpv6" and families == {"ipv4"}:
        raise ctx.error(
            (*path, where), 'can never match: proto = "icmpv6" with only IPv4 addresses'
        )


def _parse_forwards(
    ctx: _Ctx, value: Any, zones: Mapping[str, _ZoneDraft], rules: list[Rule]
) -> list[Forward]:
    rule_names = {rule.name: rule.index for rule in rules}
    seen: dict[str, int] = {}
    forwards: list[Forward] = []
    for i, spec in enumerate(_list(ctx, ("forwards",), value)):
        path: KeyPath = ("forwards", i)
        table = _table(ctx, path, spec, FORWARD_KEYS)
        name = _name(ctx, (*path, "name"), _require(ctx, path, table, "name"), "forward")
        if name in seen:
            raise ctx.error(
                (*path, "name"), f"duplicate forward name {name!r} (also forwards[{seen[name]}])"
            )
        if name in rule_names:
            raise ctx.error(
                (*path, "name"),
                f"name {name!r} is also the name of rules[{rule_names[name]}]"
                " (rules and forwards share counter names)",
            )
        seen[name] = i
        from_zone = _zone_ref(
            ctx, (*path, "from"), _require(ctx, path, table, "from"), zones, False
        )
        proto = _str(ctx, (*path, "proto"), table.get("proto", "tcp"), ("tcp", "udp"))
        dport_path = (*path, "dport")
        dport_value = _require(ctx, path, table, "dport")
        try:
            dport = parse_port_item(dport_value)
        except ValueError as exc:
            raise ctx.error(dport_path, str(exc)) from None
        if isinstance(dport, SetRef):
            raise ctx.error(dport_path, f"expected a port or range, got {dport_value!r}")
        if (dport.first if isinstance(dport, PortRange) else dport) == 0:
            raise ctx.error(dport_path, f"port 0 cannot be forwarded: {dport_value!r}")
        to_addr_text = _str(ctx, (*path, "to_addr"), _require(ctx, path, table, "to_addr"))
        try:
            to_addr: IPAddress = parse_address(to_addr_text)
        except ValueError:
            raise ctx.error(
                (*path, "to_addr"), f"bad address {to_addr_text!r} (one address, not a network)"
            ) from None
        to_port = (
            _int(ctx, (*path, "to_port"), table["to_port"], 1, 65535)
            if "to_port" in table
            else None
        )
        forwards.append(
            Forward(
                name=name,
                index=i,
                from_zone=from_zone,
                proto=cast(Any, proto),
                dport=dport,
                to_addr=to_addr,
                to_port=to_port,
            )
        )
    return forwards


# --------------------------------------------------------------------------------------
# Protect, inspect, hub, metrics


def _parse_protect(ctx: _Ctx, value: Any, sets: Mapping[str, SetSpec]) -> Protect:
    path: KeyPath = ("protect",)
    table = _table(ctx, path, value, PROTECT_KEYS)
    defaults = Protect()
    return Protect(
        invalid=cast(
            Any, _str(ctx, (*path, "invalid"), table.get("invalid", "drop"), ("drop", "accept"))
        ),
        spoofing=_bool(ctx, (*path, "spoofing"), table.get("spoofing", False)),
        syn_flood=_rate(ctx, (*path, "syn_flood"), table["syn_flood"])
        if "syn_flood" in table
        else None,
        conn_limit=_int(ctx, (*path, "conn_limit"), table["conn_limit"], 1)
        if "conn_limit" in table
        else None,
        block_timeout=_duration(ctx, (*path, "block_timeout"), table["block_timeout"])
        if "block_timeout" in table
        else defaults.block_timeout,
        never_block=_addr_items(ctx, (*path, "never_block"), table.get("never_block", []), sets),
    )


def _parse_inspect(ctx: _Ctx, value: Any) -> Inspect:
    path: KeyPath = ("inspect",)
    table = _table(ctx, path, value, INSPECT_KEYS)
    defaults = Inspect()
    mode = _str(ctx, (*path, "mode"), table.get("mode", "sample"), INSPECT_MODES)
    sample_packets = _int(
        ctx,
        (*path, "sample_packets"),
        table.get("sample_packets", defaults.sample_packets),
        1,
        1000,
    )
    interfaces: list[str] = []
    for i, item in enumerate(_list(ctx, (*path, "interfaces"), table.get("interfaces", []))):
        ifname = _ifname(ctx, (*path, "interfaces", i), item, wildcard=False)
        if ifname in interfaces:
            raise ctx.error((*path, "interfaces", i), f"interface {ifname!r} listed twice")
        interfaces.append(ifname)
    if mode == "mirror" and not interfaces:
        raise ctx.error(
            (*path, "interfaces"), 'mode = "mirror" needs at least one interface to read'
        )
    rules: list[str] = []
    for i, item in enumerate(_list(ctx, (*path, "rules"), table.get("rules", []))):
        rules.append(_existing_file(ctx, (*path, "rules", i), item, "rule file"))
    alerts = _str(ctx, (*path, "alerts"), table.get("alerts", defaults.alerts))
    if not alerts.strip():
        raise ctx.error((*path, "alerts"), "expected a file path, got an empty string")
    block = _bool(ctx, (*path, "block"), table.get("block", defaults.block))
    home_net = (
        _networks(ctx, (*path, "home_net"), table["home_net"]) if "home_net" in table else None
    )
    detectors = _parse_detectors(ctx, table.get("detectors", {}))
    return Inspect(
        mode=cast(Any, mode),
        sample_packets=sample_packets,
        interfaces=tuple(interfaces),
        rules=tuple(rules),
        alerts=alerts,
        block=block,
        home_net=home_net,
        detectors=detectors,
    )


def _existing_file(ctx: _Ctx, path: KeyPath, value: Any, what: str) -> str:
    text = _str(ctx, path, value)
    if not text.strip():
        raise ctx.error(path, "expected a file path, got an empty string")
    filename = ctx.path(text)
    if not os.path.exists(filename):
        raise ctx.error(path, f"{what} {filename!r} does not exist")
    if not os.path.isfile(filename):
        raise ctx.error(path, f"{what} {filename!r} is not a regular file")
    return filename


def _parse_detectors(ctx: _Ctx, value: Any) -> Detectors:
    path: KeyPath = ("inspect", "detectors")
    table = _table(ctx, path, value, DETECTOR_KEYS)
    port_scan: PortScanDetector | None = None
    syn_flood: SynFloodDetector | None = None
    dns_tunnel: DnsTunnelDetector | None = None
    gtp: GtpDetector | None = None
    if "port_scan" in table:
        key = (*path, "port_scan")
        spec = _table(ctx, key, table["port_scan"], DETECTOR_KEYS["port_scan"])
        base = PortScanDetector()
        port_scan = PortScanDetector(
            ports=_int(ctx, (*key, "ports"), spec.get("ports", base.ports), 1, 65535),
            window=_duration(ctx, (*key, "window"), spec["window"])
            if "window" in spec
            else base.window,
        )
    if "syn_flood" in table:
        key = (*path, "syn_flood")
        spec = _table(ctx, key, table["syn_flood"], DETECTOR_KEYS["syn_flood"])
        syn_flood = (
            SynFloodDetector(rate=_rate(ctx, (*key, "rate"), spec["rate"]))
            if "rate" in spec
            else SynFloodDetector()
        )
    if "dns_tunnel" in table:
        key = (*path, "dns_tunnel")
        spec = _table(ctx, key, table["dns_tunnel"], DETECTOR_KEYS["dns_tunnel"])
        dns = DnsTunnelDetector()
        dns_tunnel = DnsTunnelDetector(
            max_label=_int(ctx, (*key, "max_label"), spec.get("max_label", dns.max_label), 1),
            max_entropy=_positive_float(
                ctx, (*key, "max_entropy"), spec.get("max_entropy", dns.max_entropy)
            ),
            rate=_rate(ctx, (*key, "rate"), spec["rate"]) if "rate" in spec else None,
        )
    if "gtp" in table:
        key = (*path, "gtp")
        spec = _table(ctx, key, table["gtp"], DETECTOR_KEYS["gtp"])
        gtp = GtpDetector(ue_pools=_networks(ctx, (*key, "ue_pools"), spec.get("ue_pools", [])))
    return Detectors(port_scan=port_scan, syn_flood=syn_flood, dns_tunnel=dns_tunnel, gtp=gtp)


def _parse_hub(ctx: _Ctx, value: Any) -> Hub:
    path: KeyPath = ("hub",)
    table = _table(ctx, path, value, HUB_KEYS)
    url = _str(ctx, (*path, "url"), _require(ctx, path, table, "url"))
    if not url.startswith(HUB_SCHEMES):
        raise ctx.error(
            (*path, "url"), f"bad hub url {url!r}: expected https://, http:// or file://"
        )
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and not parts.netloc:
        raise ctx.error((*path, "url"), f"bad hub url {url!r}: no host")
    if parts.scheme == "file" and parts.path in ("", "/"):
        raise ctx.error((*path, "url"), f"bad hub url {url!r}: no directory")
    if not url.endswith("/") or parts.query or parts.fragment:
        raise ctx.error(
            (*path, "url"),
            f"bad hub url {url!r}: it names a bundle directory and must end with /",
        )
    trust_path = (*path, "trust")
    items = _list(ctx, trust_path, _require(ctx, path, table, "trust", " (trusted public keys)"))
    if not items:
        raise ctx.error(trust_path, "needs at least one trusted public key")
    trust = tuple(
        _existing_file(ctx, (*trust_path, i), item, "key file") for i, item in enumerate(items)
    )
    poll = _duration(ctx, (*path, "poll"), table["poll"]) if "poll" in table else 30.0
    timeout = 30.0
    if "timeout" in table:
        timeout = _duration(ctx, (*path, "timeout"), table["timeout"])
        if not 1.0 <= timeout <= 600.0:
            raise ctx.error((*path, "timeout"), "the hub timeout must be between 1s and 10m")
    return Hub(url=url, trust=trust, poll=poll, timeout=timeout)


def _parse_metrics(ctx: _Ctx, value: Any) -> MetricsSpec:
    path: KeyPath = ("metrics",)
    table = _table(ctx, path, value, METRICS_KEYS)
    if "listen" not in table:
        return MetricsSpec()
    key = (*path, "listen")
    listen = _str(ctx, key, table["listen"])
    try:
        parse_host_port(listen)
    except ValueError as exc:
        raise ctx.error(key, str(exc)) from None
    return MetricsSpec(listen=listen)
