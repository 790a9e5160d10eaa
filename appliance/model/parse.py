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

import dataclasses
import difflib
import functools
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from appliance.errors import ProfileError
from appliance.model import elements_fast
from appliance.model.elements import Elements
from appliance.model.elements_file import ElementsFileError, iter_lines, read_elements_bytes
from appliance.model.intervals import Collector, width_of
from appliance.model.profile import (
    AUTOBLOCK_SETS,
    ENCRYPTION_HANDLINGS,
    FORWARD_PROTOS,
    INSPECT_DECLARED_MODE,
    INSPECT_MODES,
    INVALID_VERDICTS,
    PORT_PROTOS,
    PROTOS,
    RESERVED_ZONE_NAMES,
    SEGMENT_KINDS,
    SELF,
    VERDICTS,
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
    element_bounds,
    element_family,
    family_of,
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

SET_PREFIX_RESERVED = "ap_"
SEGMENT_LINK_PREFIX = "ap-"
SEGMENT_NAME_MAX = 15 - len(SEGMENT_LINK_PREFIX)
HUB_SCHEMES = ("https://", "http://", "file://")
RESERVED_VRF_TABLES = (253, 254, 255)  # default, main, local
HUB_TIMEOUT_RANGE = (1.0, 600.0)  # seconds: one exchange with the hub

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
ISOLATION_KEYS = ("segments",)

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
    """Where a profile is being read from: errors name its file and line."""

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
# Option tables: one per section, (key, parser, model field, required), defaults from the
# model's dataclasses


Parser = Callable[["_Ctx", KeyPath, Any], Any]
_MODEL_DEFAULT: Any = object()


@dataclass(frozen=True)
class _Key:
    """One key of a section: its parser (context, key path, value) and its model field.

    ``required`` is None for an optional key (absent: the model's default, or ``default``),
    else the hint after "required". Hand-written checks that span several keys follow the
    table in each section's function.
    """

    name: str
    parse: Parser
    field: str = ""  # the model's field; "" when it is the key's name
    required: str | None = None
    default: Any = _MODEL_DEFAULT


def _options(
    ctx: _Ctx, path: KeyPath, value: Any, keys: Sequence[_Key], model: type
) -> dict[str, Any]:
    """The section at ``path`` read through ``keys``: model field -> value.

    Unknown keys are refused first; then each key is parsed in table order, a missing one
    taking the model's default (or the key's own).
    """
    table = _table(ctx, path, value, [key.name for key in keys])
    defaults = _model_defaults(model)
    out: dict[str, Any] = {}
    for key in keys:
        field_name = key.field or key.name
        if key.name in table:
            out[field_name] = key.parse(ctx, (*path, key.name), table[key.name])
        elif key.required is not None:
            raise ctx.error((*path, key.name), f"required{key.required}")
        elif key.default is not _MODEL_DEFAULT:
            out[field_name] = key.default
        else:
            out[field_name] = defaults[field_name]
    return out


@functools.cache
def _model_defaults(model: type) -> dict[str, Any]:
    """The defaults of a model's fields (all immutable: frozen dataclasses, tuples)."""
    out: dict[str, Any] = {}
    for item in dataclasses.fields(model):
        if item.default is not dataclasses.MISSING:
            out[item.name] = item.default
        elif item.default_factory is not dataclasses.MISSING:
            out[item.name] = item.default_factory()
    return out


def _choice(choices: Collection[str]) -> Parser:
    return lambda ctx, path, value: _str(ctx, path, value, choices)


def _integer(low: int | None = None, high: int | None = None) -> Parser:
    return lambda ctx, path, value: _int(ctx, path, value, low, high)


def _file_path(ctx: _Ctx, path: KeyPath, value: Any) -> str:
    text = _str(ctx, path, value)
    if not text.strip():
        raise ctx.error(path, "expected a file path, got an empty string")
    return text


def _named(what: str) -> Parser:
    return lambda ctx, path, value: _name(ctx, path, value, what)


def _ifnames(wildcard: bool) -> Parser:
    """Interface names, each at most once."""

    def parse(ctx: _Ctx, path: KeyPath, value: Any) -> tuple[str, ...]:
        names: list[str] = []
        for i, item in enumerate(_list(ctx, path, value)):
            ifname = _ifname(ctx, (*path, i), item, wildcard)
            if ifname in names:
                raise ctx.error((*path, i), f"interface {ifname!r} listed twice")
            names.append(ifname)
        return tuple(names)

    return parse


# --------------------------------------------------------------------------------------
# The profile


@dataclass
class _ZoneDraft:
    """A zone while the profile's zones and segments are gathered."""

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


_DEFAULTS_KEYS = (
    *(_Key(chain, _choice(VERDICTS)) for chain in ("input", "forward", "output")),
    _Key("offload", _bool),
)
_ZONE_KEYS = (
    _Key("interfaces", _ifnames(wildcard=True)),
    _Key("networks", lambda ctx, path, value: _networks(ctx, path, value)),
    _Key("masquerade", _bool),
)


def _parse_defaults(ctx: _Ctx, value: Any) -> Defaults:
    return Defaults(**_options(ctx, ("defaults",), value, _DEFAULTS_KEYS, Defaults))


def _parse_zones(ctx: _Ctx, value: Any) -> dict[str, _ZoneDraft]:
    zones: dict[str, _ZoneDraft] = {}
    if not isinstance(value, dict):
        raise ctx.error(("zones",), f"expected a table of zones, got {_describe(value)}")
    for name, spec in value.items():
        path: KeyPath = ("zones", name)
        _zone_name(ctx, path, name)
        options = _options(ctx, path, spec, _ZONE_KEYS, Zone)
        zones[name] = _ZoneDraft(
            name, list(options["interfaces"]), options["networks"], options["masquerade"]
        )
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


_SET_KEYS = (
    _Key("type", _choice(SET_TYPES), required=""),
    _Key("interval", _bool),
    _Key("timeout", _duration),
    _Key("size", _integer(1, 2**32 - 1)),
    _Key("elements", lambda ctx, path, value: _list(ctx, path, value)),
    _Key("elements_file", lambda ctx, path, value: value, default=None),  # read below
)


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
        options = _options(ctx, path, spec, _SET_KEYS, SetSpec)
        set_type, interval, size = options["type"], options["interval"], options["size"]
        collector = _ElementCollector(set_type, interval)
        for i, item in enumerate(options["elements"] or ()):
            try:
                collector.add_value(item)
            except ValueError as exc:
                raise ctx.error((*path, "elements", i), str(exc)) from None
        if options["elements_file"] is not None:
            key = (*path, "elements_file")
            if not ctx.file_refs:
                raise ctx.error(key, "not allowed here: the elements must be listed in elements")
            _read_elements(ctx, key, options["elements_file"], collector)
        merged = collector.finish()
        if size is not None and len(merged) > size:
            raise ctx.error(
                (*path, "elements"),
                f"{len(merged)} elements do not fit in size = {size}",
            )
        sets[name] = SetSpec(
            name=name,
            type=set_type,
            interval=interval,
            timeout=options["timeout"],
            size=size,
            elements=merged,
        )
    return sets


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# A canonical IPv4 address or network, surrounding blanks allowed (as in a list's lines).
_IPV4_ELEMENT = re.compile(
    rf"\s*{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}(?:/(3[0-2]|[12]?[0-9]))?\s*\Z"
)


class _ElementCollector:
    """A set's elements gathered one canonical text at a time, packed as they come."""

    def __init__(self, set_type: str, interval: bool) -> None:
        self.set_type = set_type
        self.interval = interval
        width = width_of(set_type)
        self.spans = Collector(width) if width is not None else None
        self.names: dict[str, None] = {}
        self.packed: Elements | None = None  # a file's elements read at C speed

    def add(self, text: str) -> None:
        if self.spans is None:
            self.names.setdefault(text)
        else:
            self.spans.add(*element_bounds(self.set_type, text))

    def add_value(self, value: Any) -> None:
        """``value`` as given (ValueError naming it if it does not fit): a plain IPv4
        address or network straight to its bounds, anything else through its canonical
        text."""
        if self.set_type == "ipv4_addr" and self.spans is not None and isinstance(value, str):
            match = _IPV4_ELEMENT.match(value)
            if match is not None:
                a, b, c, d, length = match.groups()
                address = (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)
                host = (1 << (32 - int(length))) - 1 if length else 0
                if not address & host and (self.interval or not host):
                    self.spans.add(address, address | host)
                    return
        self.add(canonical_element(self.set_type, self.interval, value))

    def finish(self) -> Elements:
        if self.spans is None:
            return Elements(self.set_type, self.interval, names=self.names)
        collected = Elements(self.set_type, self.interval, self.spans.finish())
        if self.packed is None:
            return collected
        return collected.merge(self.packed) if collected else self.packed


def _read_elements(ctx: _Ctx, path: KeyPath, value: Any, collector: _ElementCollector) -> None:
    name = _str(ctx, path, value)
    if not name.strip():
        raise ctx.error(path, "expected a file path, got an empty string")
    filename = ctx.path(name)
    try:
        # At C speed only where the last apply's files are remembered (`appliance apply`):
        # it holds every line as a string at once (over 200 bytes an element at its peak),
        # which a daemon that holds a large set in a few bytes an element cannot afford.
        if collector.spans is not None and collector.packed is None and elements_fast.active():
            data = read_elements_bytes(str(filename))
            packed = elements_fast.read(str(filename), collector.set_type, collector.interval, data)
            if packed is not None:  # else the lines one by one, for their errors
                collector.packed = packed
                return
        for number, line in enumerate(iter_lines(str(filename)), start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                collector.add_value(text)
            except ValueError as exc:
                raise ctx.error(path, f"{filename}:{number}: {exc}") from None
    except OSError as exc:
        raise ctx.error(path, f"cannot read {filename!r}: {_os_reason(exc)}") from None
    except ElementsFileError as exc:  # not a regular file, too large, too slow, not UTF-8
        raise ctx.error(path, str(exc)) from None


def _segment_name(ctx: _Ctx, path: KeyPath, value: Any) -> str:
    name = _name(ctx, path, value, "segment")
    if len(name) > SEGMENT_NAME_MAX:
        raise ctx.error(
            path,
            f"segment name {name!r} is longer than {SEGMENT_NAME_MAX} characters"
            f" (its link {SEGMENT_LINK_PREFIX}{name} must fit in 15)",
        )
    return name


def _netns_name(ctx: _Ctx, path: KeyPath, value: Any) -> str:
    netns = _str(ctx, path, value)
    if not _NETNS_NAME.fullmatch(netns) or netns in (".", ".."):
        raise ctx.error(path, f"bad network namespace name {netns!r}")
    return netns


_SEGMENT_COMMON_KEYS = (
    _Key("name", _segment_name, required=""),
    _Key("kind", _choice(SEGMENT_KINDS), required=""),
    _Key("addresses", lambda ctx, path, value: _interface_addresses(ctx, path, value)),
    _Key("zone", lambda ctx, path, value: _zone_name(ctx, path, value)),
    _Key("vrf", _named("segment")),
)
_SEGMENT_KIND_KEYS: dict[str, tuple[_Key, ...]] = {
    "vlan": (
        _Key("parent", lambda ctx, path, value: _ifname(ctx, path, value, False), required=""),
        _Key("vlan_id", _integer(1, 4094), required=""),
    ),
    "vrf": (_Key("table", _integer(1, 2**32 - 1), required=""),),
    "netns": (
        _Key("netns", _netns_name, required=""),
        _Key("peer_addresses", lambda ctx, path, value: _interface_addresses(ctx, path, value)),
    ),
}


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
        name = _segment_name(ctx, (*path, "name"), _require(ctx, path, spec, "name"))
        if name in seen:
            raise ctx.error(
                (*path, "name"),
                f"duplicate segment name {name!r} (also isolation.segments[{seen[name]}])",
            )
        seen[name] = i
        kind = _str(ctx, (*path, "kind"), _require(ctx, path, spec, "kind"), SEGMENT_KINDS)
        _segment_keys_apply(ctx, path, spec, kind)
        keys = _SEGMENT_COMMON_KEYS + _SEGMENT_KIND_KEYS[kind]
        segment = Segment(
            link=SEGMENT_LINK_PREFIX + name, **_options(ctx, path, spec, keys, Segment)
        )
        if segment.table is not None:
            if segment.table in RESERVED_VRF_TABLES:
                raise ctx.error(
                    (*path, "table"),
                    f"table {segment.table} is reserved (253 default, 254 main, 255 local)",
                )
            vrf_table = segment.table
            _used_once(ctx, (*path, "table"), vrf_table, vrf_tables, i, f"table {vrf_table}")
        if kind == "vrf" and segment.vrf is not None:
            raise ctx.error((*path, "vrf"), "a vrf segment cannot be enslaved to a vrf")
        if segment.netns is not None:
            namespace = f"namespace {segment.netns!r}"
            _used_once(ctx, (*path, "netns"), segment.netns, netns_names, i, namespace)
        segments.append(segment)

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


def _used_once(
    ctx: _Ctx, path: KeyPath, value: Any, seen: dict[Any, int], index: int, what: str
) -> None:
    """``value`` of segment ``index`` is not that of an earlier segment (``seen``)."""
    if value in seen:
        raise ctx.error(path, f"{what} is already used by isolation.segments[{seen[value]}]")
    seen[value] = index


def _segment_keys_apply(ctx: _Ctx, path: KeyPath, spec: dict[str, Any], kind: str) -> None:
    """Every key of a segment is known, and belongs to its kind (or to every kind)."""
    common = [key.name for key in _SEGMENT_COMMON_KEYS]
    by_kind = {k: [key.name for key in keys] for k, keys in _SEGMENT_KIND_KEYS.items()}
    _table(ctx, path, spec, common + [name for names in by_kind.values() for name in names])
    for key in spec:
        if key not in common and key not in by_kind[kind]:
            owner = next(k for k, names in by_kind.items() if key in names)
            raise ctx.error(
                (*path, key), f"{key!r} does not apply to kind = {kind!r} (only to {owner})"
            )


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


def _rule_keys(zones: Mapping[str, _ZoneDraft], sets: Mapping[str, SetSpec]) -> tuple[_Key, ...]:
    def addresses(ctx: _Ctx, path: KeyPath, value: Any) -> tuple[AddrItem, ...]:
        return _addr_items(ctx, path, value, sets)

    def ports(ctx: _Ctx, path: KeyPath, value: Any) -> tuple[PortItem, ...]:
        return _port_items(ctx, path, value, sets)

    def zone(ctx: _Ctx, path: KeyPath, value: Any) -> str:
        return _zone_ref(ctx, path, value, zones, True)

    return (
        _Key("name", _named("rule"), required=""),
        _Key("from", zone, field="from_zone"),
        _Key("to", zone, field="to_zone"),
        _Key("proto", _choice(PROTOS)),
        _Key("saddr", addresses),
        _Key("daddr", addresses),
        _Key("sport", ports),
        _Key("dport", ports),
        _Key("limit", _rate),
        _Key("action", _choice(VERDICTS), required=" (accept, drop or reject)"),
        _Key("log", _bool),
    )


def _parse_rules(
    ctx: _Ctx, value: Any, zones: Mapping[str, _ZoneDraft], sets: Mapping[str, SetSpec]
) -> list[Rule]:
    keys = _rule_keys(zones, sets)
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for i, spec in enumerate(_list(ctx, ("rules",), value)):
        path: KeyPath = ("rules", i)
        rule = Rule(index=i, **_options(ctx, path, spec, keys, Rule))
        if rule.name in seen:
            raise ctx.error(
                (*path, "name"),
                f"duplicate rule name {rule.name!r} (also rules[{seen[rule.name]}])",
            )
        seen[rule.name] = i
        if rule.from_zone == SELF and rule.to_zone == SELF:
            raise ctx.error(
                (*path, "to"), 'from = "self" and to = "self": the appliance to itself is loopback'
            )
        for key, items in (("sport", rule.sport), ("dport", rule.dport)):
            if items and rule.proto not in PORT_PROTOS:
                raise ctx.error(
                    (*path, key), f"ports need proto = tcp, udp or sctp (proto is {rule.proto!r})"
                )
        _check_families(ctx, path, rule.proto, rule.saddr, rule.daddr, sets)
        rules.append(rule)
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
    ctx: _Ctx, path: KeyPath, value: Any, sets: Mapping[str, SetSpec]
) -> tuple[PortItem, ...]:
    out: list[PortItem] = []
    for i, item in enumerate(_list(ctx, path, value, single=(str, int))):
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


def _forward_port(ctx: _Ctx, path: KeyPath, value: Any) -> PortItem:
    try:
        port = parse_port_item(value)
    except ValueError as exc:
        raise ctx.error(path, str(exc)) from None
    if isinstance(port, SetRef):
        raise ctx.error(path, f"expected a port or range, got {value!r}")
    if (port.first if isinstance(port, PortRange) else port) == 0:
        raise ctx.error(path, f"port 0 cannot be forwarded: {value!r}")
    return port


def _one_address(ctx: _Ctx, path: KeyPath, value: Any) -> IPAddress:
    text = _str(ctx, path, value)
    try:
        return parse_address(text)
    except ValueError:
        raise ctx.error(path, f"bad address {text!r} (one address, not a network)") from None


def _parse_forwards(
    ctx: _Ctx, value: Any, zones: Mapping[str, _ZoneDraft], rules: list[Rule]
) -> list[Forward]:
    keys = (
        _Key("name", _named("forward"), required=""),
        _Key(
            "from",
            lambda ctx, path, value: _zone_ref(ctx, path, value, zones, False),
            field="from_zone",
            required="",
        ),
        _Key("proto", _choice(FORWARD_PROTOS)),
        _Key("dport", _forward_port, required=""),
        _Key("to_addr", _one_address, required=""),
        _Key("to_port", _integer(1, 65535)),
    )
    rule_names = {rule.name: rule.index for rule in rules}
    seen: dict[str, int] = {}
    forwards: list[Forward] = []
    for i, spec in enumerate(_list(ctx, ("forwards",), value)):
        path: KeyPath = ("forwards", i)
        forward = Forward(index=i, **_options(ctx, path, spec, keys, Forward))
        name = forward.name
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
        forwards.append(forward)
    return forwards


# --------------------------------------------------------------------------------------
# Protect, inspect, hub, metrics


def _parse_protect(ctx: _Ctx, value: Any, sets: Mapping[str, SetSpec]) -> Protect:
    keys = (
        _Key("invalid", _choice(INVALID_VERDICTS)),
        _Key("spoofing", _bool),
        _Key("syn_flood", _rate),
        _Key("conn_limit", _integer(1)),
        _Key("block_timeout", _duration),
        _Key("never_block", lambda ctx, path, value: _addr_items(ctx, path, value, sets)),
    )
    return Protect(**_options(ctx, ("protect",), value, keys, Protect))


def _existing_files(what: str) -> Parser:
    def parse(ctx: _Ctx, path: KeyPath, value: Any) -> tuple[str, ...]:
        items = _list(ctx, path, value)
        return tuple(_existing_file(ctx, (*path, i), item, what) for i, item in enumerate(items))

    return parse


def _existing_file(ctx: _Ctx, path: KeyPath, value: Any, what: str) -> str:
    filename = ctx.path(_file_path(ctx, path, value))
    if not os.path.exists(filename):
        raise ctx.error(path, f"{what} {filename!r} does not exist")
    if not os.path.isfile(filename):
        raise ctx.error(path, f"{what} {filename!r} is not a regular file")
    return filename


def _detector(model: type, keys: tuple[_Key, ...]) -> Parser:
    return lambda ctx, path, value: model(**_options(ctx, path, value, keys, model))


_DETECTOR_KEYS = (
    _Key(
        "port_scan",
        _detector(PortScanDetector, (_Key("ports", _integer(1, 65535)), _Key("window", _duration))),
    ),
    _Key("syn_flood", _detector(SynFloodDetector, (_Key("rate", _rate),))),
    _Key(
        "dns_tunnel",
        _detector(
            DnsTunnelDetector,
            (
                _Key("max_label", _integer(1)),
                _Key("max_entropy", _positive_float),
                _Key("rate", _rate),
            ),
        ),
    ),
    _Key("gtp", _detector(GtpDetector, (_Key("ue_pools", _networks),))),
)
_INSPECT_KEYS = (
    _Key("mode", _choice(INSPECT_MODES), default=INSPECT_DECLARED_MODE),
    _Key("sample_packets", _integer(1, 1000)),
    _Key("interfaces", _ifnames(wildcard=False)),
    _Key("rules", _existing_files("rule file")),
    _Key("alerts", _file_path),
    _Key("block", _bool),
    _Key("home_net", _networks),
    _Key("strict", _bool),
    _Key("classification", lambda c, p, v: _existing_file(c, p, v, "classification file")),
    _Key("reference", lambda c, p, v: _existing_file(c, p, v, "reference file")),
    _Key("stream_depth", _integer(0, 16 << 20)),
    _Key("encryption_handling", _choice(ENCRYPTION_HANDLINGS)),
    _Key(
        "detectors",
        lambda ctx, path, value: Detectors(**_options(ctx, path, value, _DETECTOR_KEYS, Detectors)),
    ),
)


def _parse_inspect(ctx: _Ctx, value: Any) -> Inspect:
    path: KeyPath = ("inspect",)
    inspect = Inspect(**_options(ctx, path, value, _INSPECT_KEYS, Inspect))
    if inspect.mode == "mirror" and not inspect.interfaces:
        raise ctx.error(
            (*path, "interfaces"), 'mode = "mirror" needs at least one interface to read'
        )
    return inspect


def _hub_url(ctx: _Ctx, path: KeyPath, value: Any) -> str:
    url = _str(ctx, path, value)
    if not url.startswith(HUB_SCHEMES):
        raise ctx.error(path, f"bad hub url {url!r}: expected https://, http:// or file://")
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and not parts.netloc:
        raise ctx.error(path, f"bad hub url {url!r}: no host")
    if parts.scheme == "file" and parts.path in ("", "/"):
        raise ctx.error(path, f"bad hub url {url!r}: no directory")
    if not url.endswith("/") or parts.query or parts.fragment:
        raise ctx.error(
            path, f"bad hub url {url!r}: it names a bundle directory and must end with /"
        )
    return url


def _trust(ctx: _Ctx, path: KeyPath, value: Any) -> tuple[str, ...]:
    if not _list(ctx, path, value):
        raise ctx.error(path, "needs at least one trusted public key")
    files: tuple[str, ...] = _existing_files("key file")(ctx, path, value)
    return files


def _hub_timeout(ctx: _Ctx, path: KeyPath, value: Any) -> float:
    timeout = _duration(ctx, path, value)
    if not HUB_TIMEOUT_RANGE[0] <= timeout <= HUB_TIMEOUT_RANGE[1]:
        raise ctx.error(path, "the hub timeout must be between 1s and 10m")
    return timeout


def _hub_file(what: str) -> Parser:
    return lambda ctx, path, value: _existing_file(ctx, path, value, what)


def _hub_proxy(ctx: _Ctx, path: KeyPath, value: Any) -> str:
    proxy = _str(ctx, path, value)
    parts = urlsplit(proxy)
    if parts.scheme != "http" or not parts.hostname:
        raise ctx.error(path, f"bad proxy {proxy!r}: expected http://HOST:PORT")
    return proxy


_HUB_KEYS = (
    _Key("url", _hub_url, required=""),
    _Key("trust", _trust, default=()),
    _Key("poll", _duration),
    _Key("timeout", _hub_timeout),
    _Key("root", _hub_file("TUF root")),
    _Key("ca", _hub_file("CA bundle")),
    _Key("client_cert", _hub_file("client certificate")),
    _Key("client_key", _hub_file("client key")),
    _Key("proxy", _hub_proxy),
    _Key("key", _hub_file("key file")),
)


def _parse_hub(ctx: _Ctx, value: Any) -> Hub:
    hub = Hub(**_options(ctx, ("hub",), value, _HUB_KEYS, Hub))
    if not hub.trust and hub.root is None:
        raise ctx.error(("hub", "trust"), "required (trusted public keys), or [hub].root")
    if (hub.client_cert is None) != (hub.client_key is None):
        raise ctx.error(("hub", "client_cert"), "client_cert and client_key go together")
    return hub


def _listen(ctx: _Ctx, path: KeyPath, value: Any) -> str:
    listen = _str(ctx, path, value)
    try:
        parse_host_port(listen)
    except ValueError as exc:
        raise ctx.error(path, str(exc)) from None
    return listen


_METRICS_KEYS = (_Key("listen", _listen),)


def _parse_metrics(ctx: _Ctx, value: Any) -> MetricsSpec:
    return MetricsSpec(**_options(ctx, ("metrics",), value, _METRICS_KEYS, MetricsSpec))
