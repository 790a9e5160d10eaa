"""Desired and observed table state, in one comparable form. Pure."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from appliance.compile.nftjson import Json, element_text
from appliance.compile.ruleset import (
    CONN_LIMIT_SETS,
    SYN_FLOOD_SETS,
    compile_profile,
    profile_elements,
    set_types,
)
from appliance.model.elements import Elements
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
    """The compiled profile: the table without elements, and each set's elements."""

    objects: list[Json]  # the table definition without elements
    elements: dict[str, Elements]  # set -> elements the profile puts there (packed)
    types: dict[str, str]  # set -> nft type
    name: str = ""
    # set -> the hub's elements (tagged ``hub``), for a policy that came in a bundle. None:
    # the policy has no hub elements, and hub-tagged elements in the kernel are run-time
    # state (kept, never drift), as a profile-driven apply must leave them.
    hub: dict[str, Elements] | None = None
    # The profile's segments (their links are put in place with the table). None: the policy
    # leaves whatever segment links there are as they are (the failsafe does).
    segments: tuple[Segment, ...] | None = None

    def __post_init__(self) -> None:
        # Elements given as texts (a saved state, a test) are packed here.
        object.__setattr__(self, "elements", self._packed(self.elements))
        if self.hub is not None:
            object.__setattr__(self, "hub", self._packed(self.hub))

    def _packed(self, given: Mapping[str, Iterable[str]]) -> dict[str, Elements]:
        return packed_elements(self.objects, self.types, given)

    def interval(self, name: str) -> bool:
        """Whether set ``name`` is an interval set."""
        return "interval" in set_flags(self.objects, name)

    def empty(self, name: str) -> Elements:
        return Elements(self.types.get(name, "ifname"), self.interval(name))

    @property
    def structure(self) -> list[Json]:
        return normalize(self.objects)

    @property
    def table_hash(self) -> str:
        """Hash of structure and profile elements: equal tables, equal hashes."""
        doc: dict[str, object] = {
            "structure": self.structure,
            "elements": {k: v.digest() for k, v in sorted(self.elements.items())},
        }
        if self.hub is not None:
            doc["hub"] = {k: v.digest() for k, v in sorted(self.hub.items()) if v}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def packed_elements(
    objects: list[Json], types: Mapping[str, str], given: Mapping[str, Iterable[str]]
) -> dict[str, Elements]:
    """Each set's elements packed (``given`` as canonical texts, or already packed)."""
    packed: dict[str, Elements] = {}
    for name, items in given.items():
        if isinstance(items, Elements):
            packed[name] = items
        else:
            interval = "interval" in set_flags(objects, name)
            packed[name] = Elements.of(types.get(name, "ifname"), interval, items)
    return packed


def set_flags(objects: list[Json], name: str) -> list[str]:
    for obj in objects:
        body = obj.get("set")
        if body and body["name"] == name:
            return list(body.get("flags", []))
    return []


@dataclass
class Observed:
    """The table as read back from the kernel (``objects`` None: absent)."""

    objects: list[Json] | None  # None: the table is absent
    # set -> its run-time elements: those without the ``profile`` or ``hub`` tag (few)
    elements: dict[str, dict[str, Element]] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    # set -> tag (``profile``, ``hub``) -> the elements carrying it, packed
    tagged: dict[str, dict[str, Elements]] = field(default_factory=dict)

    @property
    def present(self) -> bool:
        return self.objects is not None

    @property
    def structure(self) -> list[Json]:
        return normalize(self.objects or [])

    def with_tag(self, name: str, tag: str) -> Elements | None:
        return self.tagged.get(name, {}).get(tag)

    def texts(self, name: str) -> list[str]:
        """Every element of set ``name`` as text (tagged ones first): for a small set."""
        texts = [text for items in self.tagged.get(name, {}).values() for text in items]
        return texts + list(self.elements.get(name, {}))

    def holds(self, name: str, text: str) -> bool:
        """Whether set ``name`` holds the element ``text``."""
        tagged = self.tagged.get(name, {}).values()
        return text in self.elements.get(name, {}) or any(text in items for items in tagged)

    def count(self, name: str) -> int:
        """How many elements set ``name`` holds."""
        tagged = sum(len(items) for items in self.tagged.get(name, {}).values())
        return tagged + len(self.elements.get(name, {}))


def desired_from_profile(profile: Profile, offload_devices: tuple[str, ...] = ()) -> Desired:
    return Desired(
        objects=compile_profile(profile, offload_devices),
        elements=profile_elements(profile),
        types=set_types(profile),
        name=profile.name,
        segments=profile.segments,
    )


def wanted_elements(desired: Desired, name: str) -> Elements:
    """Every element the policy puts in set ``name``: the profile's and the hub's."""
    own = desired.elements.get(name)
    if own is None:
        own = desired.empty(name)
    if desired.hub is None or not desired.hub.get(name):
        return own
    return own.join(desired.hub[name])


def managed_tags(desired: Desired) -> tuple[str, ...]:
    """Element comments this policy owns: a tagged element it no longer lists is stale."""
    return (PROFILE_TAG,) if desired.hub is None else (PROFILE_TAG, HUB_TAG)


def runtime_elements(desired: Desired, observed: Observed, name: str) -> dict[str, Element]:
    """The elements of set ``name`` in the kernel that ``desired`` does not own: those added
    at run time, and the hub's when the policy has no hub elements."""
    found = observed.elements.get(name, {})
    unowned = [
        (tag, items)
        for tag, items in observed.tagged.get(name, {}).items()
        if tag not in managed_tags(desired) and items
    ]
    if not unowned:
        return found
    found = dict(found)
    for tag, items in unowned:
        for text in items:
            found[text] = Element(text, _COMMENTS.get(tag, tag))
    return found


def desired_with_hub(
    profile: Profile, effective: Profile, offload_devices: tuple[str, ...] = ()
) -> Desired:
    """The table of a bundle: ``profile`` is the bundle's own, ``effective`` the same with
    the hub's elements added to its sets. Elements the profile lists keep the ``profile``
    tag; the rest are the hub's."""
    desired = desired_from_profile(effective, offload_devices)
    own = profile_elements(profile)
    elements: dict[str, Elements] = {}
    hub: dict[str, Elements] = {}
    for name, items in desired.elements.items():
        mine = own.get(name)
        if not mine:  # all the hub's: the effective set's own object, not a copy
            elements[name], hub[name] = desired.empty(name), items
            continue
        elements[name] = items.common(mine)
        hub[name] = items.minus(elements[name])
    return Desired(desired.objects, elements, desired.types, desired.name, hub, desired.segments)


def observed_from_listing(listing: list[Json] | None) -> Observed:
    if listing is None:
        return Observed(objects=None)
    objects: list[Json] = []
    elements: dict[str, dict[str, Element]] = {}
    tagged: dict[str, dict[str, Elements]] = {}
    types: dict[str, str] = {}
    for obj in listing:
        kind, body = next(iter(obj.items()))
        if kind == "set":
            name, set_type = body["name"], body["type"]
            types[name] = set_type
            interval = "interval" in body.get("flags", [])
            runtime: dict[str, Element] = {}
            by_tag: dict[str, list[str]] = {}
            # the listing's element dicts are not kept: tagged elements are packed, the
            # run-time ones kept as one compact Element each
            for elem in (parse_element(e) for e in body.pop("elem", [])):
                if elem.comment in _COMMENTS and elem.timeout is None and elem.expires is None:
                    by_tag.setdefault(elem.comment, []).append(elem.text)
                else:
                    runtime[elem.text] = elem
            elements[name] = runtime
            tagged[name] = {
                tag: Elements.of(set_type, interval, texts) for tag, texts in by_tag.items()
            }
        objects.append(obj)
    return Observed(objects=objects, elements=elements, types=types, tagged=tagged)


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
