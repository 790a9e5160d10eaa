"""Desired and observed table state, in one comparable form. Pure."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from appliance.compile.nftjson import Json, element_text
from appliance.compile.ruleset import (
    CONN_LIMIT_SETS,
    SYN_FLOOD_SETS,
    compile_profile,
    profile_elements,
    set_types,
)
from appliance.model.profile import Profile, Segment

PROFILE_TAG = "profile"  # element comment marking elements that come from the profile
HUB_TAG = "hub"  # element comment marking elements that come from a hub bundle's sets
DYNAMIC_SETS = frozenset(SYN_FLOOD_SETS.values()) | frozenset(CONN_LIMIT_SETS.values())
# One string object for each tag however many elements carry it (a read-back of a large set
# would otherwise hold one copy per element).
_COMMENTS = {PROFILE_TAG: PROFILE_TAG, HUB_TAG: HUB_TAG}


@dataclass(frozen=True, slots=True)
class Element:
    """One element as the kernel holds it (slots: a large set's read-back holds millions)."""

    text: str
    comment: str | None = None
    timeout: int | None = None  # seconds, when set per element
    expires: int | None = None  # seconds left


@dataclass(frozen=True)
class Desired:
    objects: list[Json]  # the table definition without elements
    elements: dict[str, frozenset[str]]  # set -> elements the profile puts there
    types: dict[str, str]  # set -> nft type
    name: str = ""
    # set -> the hub's elements (tagged ``hub``), for a policy that came in a bundle. None:
    # the policy has no hub elements, and hub-tagged elements in the kernel are run-time
    # state (kept, never drift), as a profile-driven apply must leave them.
    hub: dict[str, frozenset[str]] | None = None
    # The profile's segments (their links are put in place with the table). None: the policy
    # leaves whatever segment links there are as they are (the failsafe does).
    segments: tuple[Segment, ...] | None = None

    @property
    def structure(self) -> list[Json]:
        return normalize(self.objects)

    @property
    def table_hash(self) -> str:
        """Hash of structure and profile elements: equal tables, equal hashes."""
        doc: dict[str, object] = {
            "structure": self.structure,
            "elements": {k: sorted(v) for k, v in sorted(self.elements.items())},
        }
        if self.hub is not None:
            doc["hub"] = {k: sorted(v) for k, v in sorted(self.hub.items()) if v}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Observed:
    objects: list[Json] | None  # None: the table is absent
    elements: dict[str, dict[str, Element]] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)

    @property
    def present(self) -> bool:
        return self.objects is not None

    @property
    def structure(self) -> list[Json]:
        return normalize(self.objects or [])


def desired_from_profile(profile: Profile, offload_devices: tuple[str, ...] = ()) -> Desired:
    return Desired(
        objects=compile_profile(profile, offload_devices),
        elements={name: frozenset(items) for name, items in profile_elements(profile).items()},
        types=set_types(profile),
        name=profile.name,
        segments=profile.segments,
    )


def wanted_elements(desired: Desired, name: str) -> frozenset[str]:
    """Every element the policy puts in set ``name``: the profile's and the hub's."""
    own = desired.elements.get(name, frozenset())
    if desired.hub is None or not desired.hub.get(name):
        return own
    return own | desired.hub[name]


def managed_tags(desired: Desired) -> tuple[str, ...]:
    """Element comments this policy owns: a tagged element it no longer lists is stale."""
    return (PROFILE_TAG,) if desired.hub is None else (PROFILE_TAG, HUB_TAG)


def desired_with_hub(
    profile: Profile, effective: Profile, offload_devices: tuple[str, ...] = ()
) -> Desired:
    """The table of a bundle: ``profile`` is the bundle's own, ``effective`` the same with
    the hub's elements added to its sets. Elements the profile lists keep the ``profile``
    tag; the rest are the hub's."""
    desired = desired_from_profile(effective, offload_devices)
    own = profile_elements(profile)
    elements: dict[str, frozenset[str]] = {}
    hub: dict[str, frozenset[str]] = {}
    for name, items in desired.elements.items():
        mine = frozenset(own.get(name, ()))
        elements[name] = items & mine
        hub[name] = items - mine
    return Desired(desired.objects, elements, desired.types, desired.name, hub, desired.segments)


def observed_from_listing(listing: list[Json] | None) -> Observed:
    if listing is None:
        return Observed(objects=None)
    objects: list[Json] = []
    elements: dict[str, dict[str, Element]] = {}
    types: dict[str, str] = {}
    for obj in listing:
        kind, body = next(iter(obj.items()))
        if kind == "set":
            types[body["name"]] = body["type"]
            elements[body["name"]] = {
                elem.text: elem for elem in (parse_element(e) for e in body.pop("elem", []))
            }  # the listing's element dicts are not kept: only the compact Element per element
        objects.append(obj)
    return Observed(objects=objects, elements=elements, types=types)


def parse_element(value: object) -> Element:
    if isinstance(value, dict) and "elem" in value:
        body = value["elem"]
        comment = body.get("comment")
        return Element(
            text=element_text(body["val"]),
            comment=_COMMENTS.get(comment, comment),
            timeout=body.get("timeout"),
            expires=body.get("expires"),
        )
    return Element(text=element_text(value))


_VOLATILE = {"handle", "elem", "packets", "bytes"}


def normalize(objects: list[Json]) -> list[Json]:
    """Objects without what the kernel adds or changes at run time: handles, elements,
    counter values. What remains is the structure two tables must share to be equal."""
    result: list[Json] = []
    for obj in objects:
        kind, body = next(iter(obj.items()))
        if kind == "metainfo":
            continue
        if isinstance(body, dict):
            clean = {k: v for k, v in body.items() if k not in _VOLATILE}
            if kind == "flowtable":
                # The kernel takes a device out of a flowtable when the link goes away (and
                # never puts it back): which links are hooked is not the policy's shape.
                clean.pop("dev", None)
            if kind == "set" and "flags" in clean:
                flags = [f for f in clean["flags"] if f != "dynamic"]
                clean["flags"] = flags
                if not flags:
                    del clean["flags"]
            result.append({kind: clean})
        else:
            result.append({kind: body})
    return result
