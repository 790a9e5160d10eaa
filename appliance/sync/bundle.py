"""Bundles: build, sign and verify. Pure: bytes and keys in, bytes or a verdict out.

``bundle.json`` is ``{"version", "expires", "profile", "sets"}``; ``bundle.json.sig`` holds
lines ``KEYID BASE64SIG``, each an Ed25519 signature of the exact bytes of ``bundle.json``.

Verification order (the first failure wins, and names one result of the sync vocabulary):
the size, a signature by a trusted key (before anything parses the bytes), the schema and
the profile, the expiry (no grace), the version against the running one (rollback), and for
``add``/``del`` deltas the base version.

A set's elements are packed (:class:`~appliance.model.elements.Elements`) as soon as they
are read, one array of the document at a time: a bundle with a 1,000,000-element set holds
them as the profile's own sets are held, never as a tuple of texts. The signature and the
hash cover the exact bytes, checked before anything is parsed.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, get_args

from appliance.errors import ProfileError, UsageError
from appliance.model.elements import Elements
from appliance.model.intervals import Collector, width_of
from appliance.model.parse import parse_profile
from appliance.model.profile import Profile, SetSpec
from appliance.model.values import canonical_element, element_bounds, merge_overlaps
from appliance.sync import setarrays
from appliance.sync.keys import PrivateKey, PublicKey
from appliance.sync.transport import TransportFailure
from appliance.units import parse_duration

BUNDLE_FILE = "bundle.json"
SIG_FILE = "bundle.json.sig"
FULL_DIR = "full"  # a delta bundle's directory holds the same version as a full bundle here

# The results of a sync, as the hub metrics and the status name them (docs/hub.md).
Outcome = Literal[
    TransportFailure,
    "applied",
    "not_modified",
    "bad_signature",
    "no_signature",
    "rollback",
    "expired",
    "apply_failed",
]
APPLIED: Final = "applied"
NOT_MODIFIED: Final = "not_modified"
BAD_SIGNATURE: Final = "bad_signature"
NO_SIGNATURE: Final = "no_signature"
ROLLBACK: Final = "rollback"
EXPIRED: Final = "expired"
MALFORMED: Final = "malformed"
TOO_LARGE: Final = "too_large"
UNREACHABLE: Final = "unreachable"
HTTP_ERROR: Final = "http_error"
APPLY_FAILED: Final = "apply_failed"
RESULTS: tuple[Outcome, ...] = get_args(Outcome)

MAX_BUNDLE_BYTES = 64 * 1024 * 1024
MAX_SIG_BYTES = 16 * 1024
MAX_SIG_LINES = 32
TOP_KEYS = ("version", "expires", "profile", "sets")
LOCAL_ONLY_KEYS = ("hub", "metrics")  # a bundle never points the appliance elsewhere
_RFC3339_Z = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d{1,9})?Z")
_KEYID = re.compile(r"[0-9a-f]{16}")


class BundleError(ValueError):
    """A bundle is refused: ``result`` is the sync result word, ``str()`` the one-line reason."""

    def __init__(self, result: Outcome, reason: str) -> None:
        assert result in RESULTS
        self.result = result
        self.reason = " ".join(reason.split())
        super().__init__(self.reason)


class WrongBase(BundleError):
    """A delta whose base is not the running version: the full bundle is needed."""


# --------------------------------------------------------------------------------------
# The bundle model


@dataclass(frozen=True)
class SetDelta:
    base: int
    add: Elements
    delete: Elements


@dataclass(frozen=True)
class Bundle:
    """A parsed, signature-checked bundle.

    ``elements`` holds each set's hub elements (packed) as they stand after this bundle (a
    delta resolved against the running bundle); ``deltas`` the sets this bundle changed by
    delta.
    """

    version: int
    expires: float  # seconds since the epoch
    profile_doc: dict[str, Any]
    profile: Profile
    elements: dict[str, Elements]
    deltas: dict[str, SetDelta] = field(default_factory=dict)
    sha256: str = ""
    data: bytes = b""

    @property
    def is_delta(self) -> bool:
        return bool(self.deltas)

    @property
    def expires_text(self) -> str:
        return format_time(self.expires)

    def expired(self, now: float) -> bool:
        return now >= self.expires

    def effective_profile(self) -> Profile:
        """The bundle's profile with the hub's elements added to its sets' own."""
        sets: list[SetSpec] = []
        for spec in self.profile.sets:
            hub = self.elements.get(spec.name)
            if not hub:
                sets.append(spec)
                continue
            merged = spec.elements.merge(hub) if spec.elements else hub  # no copy: hub alone
            sets.append(dataclasses.replace(spec, elements=merged))
        return dataclasses.replace(self.profile, sets=tuple(sets))

    def resolved_document(self) -> dict[str, Any]:
        """This bundle as a full bundle document (deltas resolved): what a store reloads."""
        return {
            "version": self.version,
            "expires": format_time(self.expires),
            "profile": self.profile_doc,
            "sets": {name: {"full": list(items)} for name, items in self.elements.items()},
        }


@dataclass(frozen=True)
class BundleVerdict:
    """What to do with a fetched pair: ``result`` is a sync result word.

    ``bundle`` is set when the result is ``applied`` (ready to apply) and for ``not_modified``
    (the running bundle). ``wrong_base`` marks a delta whose base is not the running version:
    fetch the full bundle instead.
    """

    result: Outcome
    reason: str = ""
    bundle: Bundle | None = None
    key_id: str = ""
    wrong_base: bool = False


# --------------------------------------------------------------------------------------
# Times


def format_time(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object) -> float:
    """An RFC 3339 UTC time ending in ``Z`` to seconds since the epoch; ValueError if not."""
    if not isinstance(text, str):
        raise ValueError(f"expected an RFC 3339 UTC time string, got {text!r}")
    match = _RFC3339_Z.fullmatch(text)
    if not match:
        raise ValueError(f"bad time {text!r} (expected RFC 3339 UTC, e.g. 2030-01-31T12:00:00Z)")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = float(match.group(7) or 0)
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"bad time {text!r}: {exc}") from None
    return moment.timestamp() + fraction


def expiry_time(text: str, now: float) -> float:
    """``--expires``: a duration from ``now`` (7d, 12h) or an RFC 3339 UTC time; UsageError
    if neither."""
    try:
        return now + parse_duration(text)
    except ValueError:
        pass
    try:
        return parse_time(text)
    except ValueError:
        raise UsageError(
            f"--expires: bad duration or time {text!r} (e.g. 7d, 12h or 2030-01-31T00:00:00Z)"
        ) from None


# --------------------------------------------------------------------------------------
# Building


def profile_for_bundle(document: Mapping[str, Any]) -> dict[str, Any]:
    """A merged profile document without the local-only sections ([hub], [metrics])."""
    return {k: v for k, v in document.items() if k not in LOCAL_ONLY_KEYS and k != "extends"}


def canonical_set_elements(
    profile: Profile, name: str, items: Iterable[object], where: str = "", merge: bool = True
) -> list[str]:
    """Elements for the profile's set ``name``, canonical and deduplicated (with ``merge``,
    overlaps merged in interval sets); ValueError naming the offending item."""
    spec = _set_of(profile, name)
    out: dict[str, None] = {}
    for i, item in enumerate(items):
        try:
            out.setdefault(canonical_element(spec.type, spec.interval, item))
        except ValueError as exc:
            place = where or f"{name}[{i}]"
            raise ValueError(f"{place}: {exc}") from None
    return merge_overlaps(spec.type, list(out)) if spec.interval and merge else list(out)


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_HOST = re.compile(rf"\s*{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}\s*\Z")  # as canonical


def packed_set_elements(
    profile: Profile, name: str, items: Iterable[object], where: str = ""
) -> Elements:
    """:func:`canonical_set_elements` packed as they come (no list of texts): overlapping
    and adjacent ranges of an interval set merged, as the kernel holds them."""
    spec = _set_of(profile, name)
    width = width_of(spec.type)
    collector = Collector(width) if width is not None else None
    names: dict[str, None] = {}
    hosts = spec.type == "ipv4_addr" and collector is not None
    for i, item in enumerate(items):
        if hosts and isinstance(item, str):
            match = _IPV4_HOST.match(item)
            if match is not None:  # a plain IPv4 address: straight to its value
                a, b, c, d = match.groups()
                value = (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)
                assert collector is not None
                collector.add(value, value)
                continue
        try:
            text = canonical_element(spec.type, spec.interval, item)
            if collector is None:
                names.setdefault(text)
            else:
                collector.add(*element_bounds(spec.type, text))
        except ValueError as exc:
            place = where or f"{name}[{i}]"
            raise ValueError(f"{place}: {exc}") from None
    if collector is None:
        return Elements(spec.type, spec.interval, names=names)
    return Elements(spec.type, spec.interval, collector.finish())


def _set_of(profile: Profile, name: str) -> SetSpec:
    try:
        return profile.set(name)
    except KeyError:
        known = ", ".join(s.name for s in profile.sets) or "none"
        raise ValueError(f"{name!r} is not a set of the profile (its sets: {known})") from None


def read_element_lines(text: str, filename: str) -> list[tuple[str, str]]:
    """``(FILE:LINE, element)`` for each element line (``#`` comments and blanks skipped)."""
    out: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        item = line.split("#", 1)[0].strip()
        if item:
            out.append((f"{filename}:{number}", item))
    return out


def encode_document(document: Mapping[str, Any]) -> bytes:
    """Deterministic JSON bytes: fixed top-level order, no extra space, one trailing newline."""
    ordered = {key: document[key] for key in TOP_KEYS if key in document}
    text = json.dumps(ordered, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8") + b"\n"


def build_bundle(
    profile_doc: Mapping[str, Any],
    sets: Mapping[str, Sequence[str]],
    version: int,
    expires: float,
    base_dir: Path,
) -> bytes:
    """``bundle.json`` bytes for a full bundle; ValueError (one line) if anything is invalid."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"bad version {version!r}: an integer, 1 or more")
    doc = profile_for_bundle(profile_doc)
    try:
        profile = parse_profile(doc, "bundle profile", base_dir)
    except ProfileError as exc:
        raise ValueError(str(exc)) from None
    full = {name: canonical_set_elements(profile, name, items) for name, items in sets.items()}
    document = {
        "version": version,
        "expires": format_time(expires),
        "profile": doc,
        "sets": {name: {"full": full[name]} for name in sorted(full)},
    }
    data = encode_document(document)
    # What we write must be what we accept.
    parse_bundle(data, base_dir)
    return data


def build_delta(full_data: bytes, old: Bundle, base_dir: Path) -> bytes:
    """A delta bundle (same version, profile and expiry as ``full_data``) on top of ``old``."""
    new = parse_bundle(full_data, base_dir)
    if new.version <= old.version:
        raise ValueError(f"version {new.version} is not above the base version {old.version}")
    sets: dict[str, Any] = {}
    for name in sorted(set(new.elements) | set(old.elements)):
        before = old.elements.get(name)
        after = new.elements.get(name)
        if after is None:
            assert before is not None
            sets[name] = {"base": old.version, "add": [], "del": list(before)}
            continue
        if before is None:
            before = after.minus(after)
        sets[name] = {  # by value: what is added, what is taken away
            "base": old.version,
            "add": list(_without(after, before)),
            "del": list(_without(before, after)),
        }
    document = {
        "version": new.version,
        "expires": format_time(new.expires),
        "profile": new.profile_doc,
        "sets": sets,
    }
    data = encode_document(document)
    parse_bundle(data, base_dir)
    return data


# --------------------------------------------------------------------------------------
# Signatures


def parse_signatures(text: str) -> list[tuple[str, bytes]]:
    """``(key id, signature)`` per well-formed line; other lines are skipped (they cannot
    verify anyway). At most MAX_SIG_LINES lines are looked at."""
    out: list[tuple[str, bytes]] = []
    for line in text.splitlines()[:MAX_SIG_LINES]:
        parts = line.split()
        if len(parts) != 2 or not _KEYID.fullmatch(parts[0]):
            continue
        try:
            sig = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(sig) == 64:
            out.append((parts[0], sig))
    return out


def sign_text(existing: str, key: PrivateKey, data: bytes) -> str:
    """The signature file with this key's line added or replaced; other keys' lines kept."""
    own = key.public.id
    line = f"{own} {base64.b64encode(key.sign(data)).decode('ascii')}"
    lines: list[str] = []
    replaced = False
    for old in existing.splitlines():
        parts = old.split()
        if not parts:
            continue
        if parts[0] == own:
            if not replaced:
                lines.append(line)
                replaced = True
            continue
        lines.append(old.strip())
    if not replaced:
        lines.append(line)
    return "\n".join(lines) + "\n"


def check_signature(data: bytes, sig: bytes | None, trust: Sequence[PublicKey]) -> str:
    """The id of the trusted key whose line verifies ``data``; BundleError if none does."""
    if sig is None or not sig.strip():
        raise BundleError(NO_SIGNATURE, "no signature (bundle.json.sig missing or empty)")
    if len(sig) > MAX_SIG_BYTES:
        raise BundleError(TOO_LARGE, f"signature file over {MAX_SIG_BYTES} bytes")
    try:
        text = sig.decode("ascii")
    except UnicodeDecodeError:
        raise BundleError(BAD_SIGNATURE, "signature file is not ASCII text") from None
    lines = parse_signatures(text)
    if not lines:
        raise BundleError(BAD_SIGNATURE, "no well-formed signature line (KEYID BASE64SIG)")
    by_id: dict[str, list[PublicKey]] = {}
    for key in trust:
        by_id.setdefault(key.id, []).append(key)
    known = False
    for kid, signature in lines:
        for key in by_id.get(kid, ()):
            known = True
            if key.verify(signature, data):
                return kid
    ids = ", ".join(kid for kid, _ in lines)
    if known:
        raise BundleError(BAD_SIGNATURE, f"signature does not verify (key {ids})")
    raise BundleError(BAD_SIGNATURE, f"no signature by a trusted key (signed by {ids})")


# --------------------------------------------------------------------------------------
# Parsing


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def decode_json(data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(MALFORMED, f"not UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except RecursionError:
        raise BundleError(MALFORMED, "JSON nested too deeply") from None
    except ValueError as exc:
        raise BundleError(MALFORMED, f"bad JSON: {exc}") from None


def _string_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list):
        raise BundleError(MALFORMED, f"{where}: expected an array")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise BundleError(MALFORMED, f"{where}[{i}]: expected a string, got {item!r}")
    return value


def parse_bundle(data: bytes, base_dir: Path, max_bytes: int = MAX_BUNDLE_BYTES) -> Bundle:
    """Schema and profile checks (not the signature, not the time): BundleError(malformed)."""
    if len(data) > max_bytes:
        raise BundleError(TOO_LARGE, f"bundle over {max_bytes} bytes")
    # The sets' element arrays are read from the bytes one element at a time, packed as
    # they come (never a string object per element of the whole document at once).
    split = setarrays.split(data)
    arrays: dict[tuple[str, str], setarrays.Place] = {}
    if split is None:
        doc = decode_json(data)
    else:
        skeleton, arrays = split
        doc = decode_json(skeleton)
        del skeleton
    if not isinstance(doc, dict):
        raise BundleError(MALFORMED, "expected a JSON object")
    for key in doc:
        if key not in TOP_KEYS:
            raise BundleError(MALFORMED, f"unknown key {key!r}")
    for key in ("version", "expires", "profile"):
        if key not in doc:
            raise BundleError(MALFORMED, f"{key}: required")
    version = doc["version"]
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**63:
        raise BundleError(MALFORMED, f"version: expected an integer, 1 or more, got {version!r}")
    try:
        expires = parse_time(doc["expires"])
    except ValueError as exc:
        raise BundleError(MALFORMED, f"expires: {exc}") from None
    profile_doc = doc["profile"]
    if not isinstance(profile_doc, dict):
        raise BundleError(MALFORMED, "profile: expected an object")
    for key in (*LOCAL_ONLY_KEYS, "extends"):
        if key in profile_doc:
            raise BundleError(MALFORMED, f"profile.{key}: not allowed in a bundle")
    try:
        profile = parse_profile(profile_doc, "bundle", base_dir)
    except ProfileError as exc:
        raise BundleError(MALFORMED, f"profile: {exc.key}: {exc.message}") from None
    if not profile.has_policy:
        raise BundleError(MALFORMED, "profile: holds no policy (no zones, sets or rules)")
    sets_doc = doc.get("sets", {})
    if not isinstance(sets_doc, dict):
        raise BundleError(MALFORMED, "sets: expected an object")
    elements: dict[str, Elements] = {}
    deltas: dict[str, SetDelta] = {}
    for name, spec in sets_doc.items():
        where = f"sets.{name}"
        if not isinstance(spec, dict):
            raise BundleError(MALFORMED, f"{where}: expected an object")
        keys = set(spec)

        def items(key: str, name: str = name, spec: dict[str, Any] = spec) -> Iterable[str]:
            place = arrays.get((name, key))
            if place is not None and spec[key] == []:
                return setarrays.texts(data, place)
            return _string_list(spec[key], f"sets.{name}.{key}")

        try:
            if keys == {"full"}:
                elements[name] = packed_set_elements(profile, name, items("full"), where)
                spec["full"] = []  # the texts go as soon as they are packed
            elif keys == {"base", "add", "del"}:
                base = spec["base"]
                if isinstance(base, bool) or not isinstance(base, int) or base < 1:
                    raise BundleError(MALFORMED, f"{where}.base: expected an integer, 1 or more")
                if base >= version:
                    raise BundleError(
                        MALFORMED, f"{where}.base: {base} is not below the version {version}"
                    )
                add = packed_set_elements(profile, name, items("add"), where)
                delete = packed_set_elements(profile, name, items("del"), where)
                deltas[name] = SetDelta(base, add, delete)
            else:
                raise BundleError(
                    MALFORMED,
                    f"{where}: expected {{full}} or {{base, add, del}}, got {sorted(keys)}",
                )
        except ValueError as exc:
            if isinstance(exc, BundleError):
                raise
            raise BundleError(MALFORMED, str(exc)) from None
    if deltas and elements:
        raise BundleError(MALFORMED, "sets: a bundle is all full sets or all deltas")
    if len({d.base for d in deltas.values()}) > 1:
        raise BundleError(MALFORMED, "sets: deltas name different base versions")
    if not deltas:
        _check_sizes(profile, elements)
    return Bundle(
        version=version,
        expires=expires,
        profile_doc=profile_doc,
        profile=profile,
        elements=elements,
        deltas=deltas,
        sha256=hashlib.sha256(data).hexdigest(),
        data=data,
    )


def _check_sizes(profile: Profile, elements: Mapping[str, Elements]) -> None:
    for spec in profile.sets:
        if spec.size is None:
            continue
        hub = elements.get(spec.name)
        total = len(spec.elements.merge(hub) if hub else spec.elements)
        if total > spec.size:
            raise BundleError(
                MALFORMED, f"sets.{spec.name}: {total} elements do not fit in size = {spec.size}"
            )


def resolve_delta(bundle: Bundle, running: Bundle | None) -> Bundle:
    """A delta bundle applied on top of the running bundle: its full elements.

    BundleError(apply_failed) when the base is not the running version (fetch the full
    bundle instead).
    """
    if not bundle.deltas:
        return bundle
    base = next(iter(bundle.deltas.values())).base
    if running is None or running.version != base:
        have = "no bundle" if running is None else f"version {running.version}"
        raise WrongBase(APPLY_FAILED, f"delta on wrong base: base {base}, running {have}")
    elements: dict[str, Elements] = {}
    for spec in bundle.profile.sets:
        name = spec.name
        before = running.elements.get(name)
        delta = bundle.deltas.get(name)
        if delta is None:
            if before:
                elements[name] = before
            continue
        kept = _without(delta.add, delta.delete)
        if before is not None and before.set_type == kept.set_type:
            kept = _without(before, delta.delete).merge(kept)
        if kept:
            elements[name] = kept
    try:
        _check_sizes(bundle.profile, elements)
    except BundleError as exc:
        raise BundleError(APPLY_FAILED, exc.reason) from None
    return dataclasses.replace(bundle, elements=elements)


def _without(items: Elements, gone: Elements) -> Elements:
    """``items`` less every value ``gone`` covers (a range deleted from an interval set
    takes what it covers, however the set's elements were cut or merged)."""
    if items.spans is None or gone.spans is None:
        return items.minus(gone)
    return Elements(items.set_type, items.interval, items.spans.difference(gone.spans))


# --------------------------------------------------------------------------------------
# The decision


def verify(
    data: bytes,
    sig: bytes | None,
    trust: Sequence[PublicKey],
    now: float,
    base_dir: Path,
    running: Bundle | None = None,
    min_version: int | None = None,
    max_bytes: int = MAX_BUNDLE_BYTES,
    resolve: bool = True,
    authenticated: str = "",
) -> BundleVerdict:
    """Every check the daemon makes on a fetched pair, in order; never raises.

    ``running`` is the bundle in force (for rollback and deltas); ``min_version`` stands
    for a running version when only the number is known (versions below it are refused).
    ``resolve=False`` leaves a delta unresolved (checking a bundle without a running one).
    ``authenticated``: the bytes were already checked (TUF targets name their hash): no
    signature file, and this text stands for the key that vouched for them.
    """
    try:
        if len(data) > max_bytes:
            raise BundleError(TOO_LARGE, f"bundle over {max_bytes} bytes")
        kid = authenticated or check_signature(data, sig, trust)
        bundle = parse_bundle(data, base_dir, max_bytes)
        if bundle.expired(now):
            raise BundleError(
                EXPIRED, f"expired at {bundle.expires_text} (version {bundle.version})"
            )
        if running is not None:
            if bundle.version < running.version:
                raise BundleError(
                    ROLLBACK, f"version {bundle.version} is below the running {running.version}"
                )
            if bundle.version == running.version:
                if bundle.sha256 == running.sha256:
                    return BundleVerdict(NOT_MODIFIED, "same version, same bytes", running, kid)
                raise BundleError(
                    ROLLBACK,
                    f"version {bundle.version} is the running version but with other bytes",
                )
        if min_version is not None and bundle.version < min_version:
            raise BundleError(
                ROLLBACK, f"version {bundle.version} is below the minimum {min_version}"
            )
        if bundle.deltas and resolve:
            try:
                bundle = resolve_delta(bundle, running)
            except WrongBase as exc:
                return BundleVerdict(exc.result, exc.reason, None, kid, wrong_base=True)
        return BundleVerdict(APPLIED, "", bundle, kid)
    except BundleError as exc:
        return BundleVerdict(exc.result, exc.reason)
