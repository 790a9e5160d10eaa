"""TUF metadata and the client's trust decisions. Pure: bytes and keys in, state or an error out.

The format is The Update Framework's (specification 1.0): each role's file is
``{"signed": {...}, "signatures": [{"keyid", "sig"}]}``; a signature is Ed25519 over the
canonical JSON of ``signed`` (sorted keys, no spaces); a key is
``{"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": HEX}}`` and its id the
SHA-256 of its canonical JSON. Four roles: ``root`` (the keys and threshold of every role),
``targets`` (lengths and hashes of ``bundle.json`` and ``full/bundle.json``), ``snapshot``
(the version of ``targets.json``) and ``timestamp`` (the version and hash of
``snapshot.json``, short-lived, signed by an online key).

:class:`Trusted` follows the client workflow of the specification, section 5, one step per
method: the root chain (each new root signed by a threshold of the old root's keys and of its
own, version + 1), then timestamp, snapshot and targets, each checked for its threshold of
signatures, its length and hash against the file that names it, its version against the one
trusted before (rollback) and its expiry (freeze). A failure raises :class:`BundleError` with
a word of the sync vocabulary and changes nothing already trusted.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from appliance.sync.bundle import (
    BAD_SIGNATURE,
    EXPIRED,
    MALFORMED,
    ROLLBACK,
    TOO_LARGE,
    BundleError,
    decode_json,
    format_time,
    parse_time,
)
from appliance.sync.keys import PrivateKey, PublicKey

SPEC_VERSION: Final = "1.0.31"
ROLES: Final = ("root", "targets", "snapshot", "timestamp")
ROOT, TARGETS, SNAPSHOT, TIMESTAMP = ROLES
MAX_ROOT_BYTES: Final = 512 * 1024
MAX_TIMESTAMP_BYTES: Final = 16 * 1024
MAX_META_BYTES: Final = 2 * 1024 * 1024  # snapshot and targets, when no length is named
MAX_ROOT_ROTATIONS: Final = 32  # roots followed in one update (the specification's default)


def canonical(value: object) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8; no floats (TUF's canonical form)."""
    _no_floats(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _no_floats(value: object) -> None:
    if isinstance(value, float):
        raise BundleError(MALFORMED, "a float in metadata (canonical JSON has none)")
    if isinstance(value, dict):
        for item in value.values():
            _no_floats(item)
    elif isinstance(value, list):
        for item in value:
            _no_floats(item)


def key_document(key: PublicKey) -> dict[str, Any]:
    return {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": key.raw.hex()}}


def tuf_key_id(key: PublicKey) -> str:
    return hashlib.sha256(canonical(key_document(key))).hexdigest()


def file_meta(data: bytes, version: int | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"length": len(data), "hashes": {"sha256": _sha256(data)}}
    if version is not None:
        meta["version"] = version
    return meta


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Role:
    keyids: tuple[str, ...]
    threshold: int


@dataclass(frozen=True)
class Metadata:
    """One role's file, parsed; ``signed`` is the document the signatures cover."""

    role: str
    version: int
    expires: float
    signed: dict[str, Any]
    signatures: tuple[tuple[str, bytes], ...]
    data: bytes
    # What a root gives every later file's check (its keys, its roles), worked out once.
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def expired(self, now: float) -> bool:
        return now >= self.expires

    @property
    def expires_text(self) -> str:
        return format_time(self.expires)

    # root only
    def keys(self) -> dict[str, PublicKey]:
        found = self._cache.get("keys")
        if found is None:
            found = {}
            for kid, doc in _mapping(self.signed.get("keys"), "root: keys").items():
                key = _public_key(doc, f"root: keys.{kid}")
                if tuf_key_id(key) != kid:
                    raise BundleError(MALFORMED, f"root: key id {kid} is not the key's SHA-256")
                found[kid] = key
            self._cache["keys"] = found
        return dict(found)

    def role_of(self, name: str) -> Role:
        role = self._cache.get("role:" + name)
        if role is None:
            role = self._cache["role:" + name] = self._role_of(name)
        assert isinstance(role, Role)
        return role

    def _role_of(self, name: str) -> Role:
        roles = _mapping(self.signed.get("roles"), "root: roles")
        doc = _mapping(roles.get(name), f"root: roles.{name}")
        keyids = doc.get("keyids")
        threshold = doc.get("threshold")
        if not isinstance(keyids, list) or not all(isinstance(k, str) for k in keyids):
            raise BundleError(MALFORMED, f"root: roles.{name}.keyids is not a list of ids")
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise BundleError(MALFORMED, f"root: roles.{name}.threshold is not a positive integer")
        return Role(tuple(keyids), threshold)

    # timestamp, snapshot
    def meta(self, name: str) -> dict[str, Any]:
        meta = _mapping(self.signed.get("meta"), f"{self.role}: meta")
        entry = _mapping(meta.get(name), f"{self.role}: meta.{name}")
        version = entry.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise BundleError(MALFORMED, f"{self.role}: meta.{name}.version is not a version")
        return entry

    # targets
    def target(self, name: str) -> dict[str, Any] | None:
        targets = _mapping(self.signed.get("targets"), "targets: targets")
        entry = targets.get(name)
        if entry is None:
            return None
        entry = _mapping(entry, f"targets: targets.{name}")
        _length_and_hash(entry, f"targets: targets.{name}")
        return entry


def _mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BundleError(MALFORMED, f"{where} is not an object")
    return value


def _public_key(doc: object, where: str) -> PublicKey:
    doc = _mapping(doc, where)
    if doc.get("keytype") != "ed25519" or doc.get("scheme") != "ed25519":
        raise BundleError(MALFORMED, f"{where}: only ed25519 keys are supported")
    public = _mapping(doc.get("keyval"), f"{where}.keyval").get("public")
    try:
        raw = bytes.fromhex(public) if isinstance(public, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise BundleError(MALFORMED, f"{where}.keyval.public is not a 32-byte hex key")
    return PublicKey(raw, where)


def _length_and_hash(entry: Mapping[str, Any], where: str) -> tuple[int, str]:
    length = entry.get("length")
    hashes = entry.get("hashes")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise BundleError(MALFORMED, f"{where}.length is not a length")
    if not isinstance(hashes, dict) or not isinstance(hashes.get("sha256"), str):
        raise BundleError(MALFORMED, f"{where}.hashes has no sha256")
    return length, hashes["sha256"]


def parse(data: bytes, role: str, max_bytes: int = MAX_META_BYTES) -> Metadata:
    """Parse one role's file (signatures not checked yet)."""
    if len(data) > max_bytes:
        raise BundleError(TOO_LARGE, f"{role}.json over {max_bytes} bytes")
    try:
        document = decode_json(data)
    except BundleError as exc:
        raise BundleError(MALFORMED, f"{role}.json: {exc.reason}") from None
    document = _mapping(document, f"{role}.json")
    signed = _mapping(document.get("signed"), f"{role}.json: signed")
    if signed.get("_type") != role:
        raise BundleError(BAD_SIGNATURE, f"{role}.json: _type is {signed.get('_type')!r}")
    version = signed.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BundleError(MALFORMED, f"{role}.json: version is not a positive integer")
    try:
        expires = parse_time(signed.get("expires"))
    except ValueError as exc:
        raise BundleError(MALFORMED, f"{role}.json: expires: {exc}") from None
    raw_sigs = document.get("signatures")
    if not isinstance(raw_sigs, list):
        raise BundleError(MALFORMED, f"{role}.json: signatures is not a list")
    sigs: list[tuple[str, bytes]] = []
    for entry in raw_sigs:
        if not isinstance(entry, dict) or not isinstance(entry.get("keyid"), str):
            raise BundleError(MALFORMED, f"{role}.json: a signature without keyid")
        try:
            sigs.append((entry["keyid"], bytes.fromhex(str(entry.get("sig", "")))))
        except ValueError:
            raise BundleError(MALFORMED, f"{role}.json: a signature is not hex") from None
    return Metadata(role, version, expires, signed, tuple(sigs), data)


def count_signatures(meta: Metadata, root: Metadata, role: str | None = None) -> int:
    """How many distinct keys that ``root`` gives ``role`` signed ``meta`` (a key counts
    once however often it signed)."""
    spec = root.role_of(role or meta.role)
    keys = root.keys()
    payload = canonical(meta.signed)
    good: set[str] = set()
    for kid, sig in meta.signatures:
        if (
            kid in spec.keyids
            and kid in keys
            and kid not in good
            and _verify(keys[kid].raw, sig, payload)
        ):
            good.add(kid)
    return len(good)


@functools.lru_cache(maxsize=64)
def _ed25519(raw: bytes) -> Ed25519PublicKey:
    """The key object of a trusted key, loaded once (a fleet's roots hold a few keys)."""
    return Ed25519PublicKey.from_public_bytes(raw)


def _verify(raw: bytes, signature: bytes, payload: bytes) -> bool:
    """``signature`` is the Ed25519 signature of ``payload`` by the 32-byte key ``raw``."""
    try:
        _ed25519(raw).verify(signature, payload)
    except (InvalidSignature, ValueError):
        return False
    return True


def check_threshold(meta: Metadata, root: Metadata, role: str | None = None) -> None:
    """``meta`` carries signatures of at least the threshold of distinct keys that ``root``
    gives ``role``; BundleError (bad_signature) if not."""
    role = role or meta.role
    threshold = root.role_of(role).threshold
    good = count_signatures(meta, root, role)
    if good < threshold:
        raise BundleError(
            BAD_SIGNATURE,
            f"{meta.role}.json version {meta.version}: {good} of the {threshold} "
            f"signatures the {role} role needs (root version {root.version})",
        )


def check_file(data: bytes, entry: Mapping[str, Any], where: str) -> None:
    """``data`` has the length and SHA-256 ``entry`` names (mix-and-match, endless data)."""
    length, digest = _length_and_hash(entry, where)
    if len(data) != length:
        raise BundleError(BAD_SIGNATURE, f"{where}: {len(data)} bytes, {length} signed for")
    if _sha256(data) != digest:
        raise BundleError(BAD_SIGNATURE, f"{where}: SHA-256 is not the one signed for")


class Trusted:
    """The metadata a client trusts, updated step by step as section 5 of TUF says."""

    def __init__(self, root_data: bytes, now: float) -> None:
        root = parse(root_data, ROOT, MAX_ROOT_BYTES)
        check_threshold(root, root)  # the trusted root is believed, but must be consistent
        self.now = now
        self.root = root
        self.timestamp: Metadata | None = None
        self.snapshot: Metadata | None = None
        self.targets: Metadata | None = None

    # 5.3: the root chain
    def update_root(self, data: bytes) -> Metadata:
        new = parse(data, ROOT, MAX_ROOT_BYTES)
        check_threshold(new, self.root)  # the old root's threshold of keys ...
        check_threshold(new, new)  # ... and the new root's own
        if new.version != self.root.version + 1:
            raise BundleError(
                ROLLBACK, f"root.json version {new.version}, expected {self.root.version + 1}"
            )
        old = self.root
        self.root = new
        for role, attr in ((TIMESTAMP, "timestamp"), (SNAPSHOT, "snapshot"), (TARGETS, "targets")):
            if old.role_of(role).keyids != new.role_of(role).keyids:
                # Keys rotated (a compromise recovered): what they signed is trusted no more.
                setattr(self, attr, None)
                if role == TIMESTAMP:
                    self.snapshot = None
        return new

    def check_root_fresh(self) -> None:
        self.check_fresh(self.root)

    # 5.4: timestamp
    def update_timestamp(self, data: bytes, fresh: bool = True) -> bool:
        """True when the timestamp is new (snapshot and targets may have changed)."""
        if fresh:
            self.check_root_fresh()
        new = parse(data, TIMESTAMP, MAX_TIMESTAMP_BYTES)
        check_threshold(new, self.root)
        old = self.timestamp
        if old is not None:
            if new.version < old.version:
                raise BundleError(
                    ROLLBACK, f"timestamp.json version {new.version} is below {old.version}"
                )
            if new.meta("snapshot.json")["version"] < old.meta("snapshot.json")["version"]:
                raise BundleError(ROLLBACK, "timestamp.json names an older snapshot.json")
        if old is not None and new.version == old.version and new.data != old.data:
            raise BundleError(ROLLBACK, "timestamp.json: the same version with other contents")
        changed = old is None or new.version != old.version
        self.timestamp = new  # trusted even if expired: it is the floor against rollback
        if fresh:
            self.check_fresh(new)
        return changed

    def check_fresh(self, meta: Metadata | None) -> None:
        """Freeze: an expired file is a floor against rollback, never a reason to act."""
        if meta is not None and meta.expired(self.now):
            raise BundleError(
                EXPIRED, f"{meta.role}.json version {meta.version} expired {meta.expires_text}"
            )

    # 5.5: snapshot
    def snapshot_meta(self) -> dict[str, Any]:
        assert self.timestamp is not None
        return self.timestamp.meta("snapshot.json")

    def update_snapshot(self, data: bytes, fresh: bool = True) -> None:
        if fresh:
            self.check_fresh(self.timestamp)
        entry = self.snapshot_meta()
        if "length" in entry or "hashes" in entry:
            check_file(data, entry, "snapshot.json")
        new = parse(data, SNAPSHOT, int(entry.get("length", MAX_META_BYTES)))
        check_threshold(new, self.root)
        if new.version != entry["version"]:
            raise BundleError(
                BAD_SIGNATURE,
                f"snapshot.json version {new.version}, timestamp.json names {entry['version']}",
            )
        old = self.snapshot
        if old is not None:
            for name in _mapping(old.signed.get("meta"), "snapshot: meta"):
                try:
                    before, after = old.meta(name)["version"], new.meta(name)["version"]
                except BundleError:
                    raise BundleError(ROLLBACK, f"snapshot.json no longer lists {name}") from None
                if after < before:
                    raise BundleError(ROLLBACK, f"snapshot.json: {name} version {after} < {before}")
        self.snapshot = new
        if fresh:
            self.check_fresh(new)

    # 5.6: targets
    def targets_meta(self) -> dict[str, Any]:
        assert self.snapshot is not None
        return self.snapshot.meta("targets.json")

    def update_targets(self, data: bytes, fresh: bool = True) -> None:
        if fresh:
            self.check_fresh(self.snapshot)
        entry = self.targets_meta()
        if "length" in entry or "hashes" in entry:
            check_file(data, entry, "targets.json")
        new = parse(data, TARGETS, int(entry.get("length", MAX_META_BYTES)))
        check_threshold(new, self.root)
        if new.version != entry["version"]:
            raise BundleError(
                BAD_SIGNATURE,
                f"targets.json version {new.version}, snapshot.json names {entry['version']}",
            )
        if self.targets is not None and new.version < self.targets.version:
            raise BundleError(ROLLBACK, f"targets.json version {new.version} is older")
        self.targets = new
        if fresh:
            self.check_fresh(new)

    # 5.7: a target file
    def target(self, name: str) -> dict[str, Any]:
        if self.targets is None:
            raise BundleError(BAD_SIGNATURE, "no trusted targets.json")
        entry = self.targets.target(name)
        if entry is None:
            raise BundleError(BAD_SIGNATURE, f"{name} is not a target of targets.json")
        return entry

    def check_target(self, name: str, data: bytes) -> None:
        check_file(data, self.target(name), name)


# --------------------------------------------------------------------------------------
# Writing (the publisher's side)


def new_signed(role: str, version: int, expires: float, **fields: Any) -> dict[str, Any]:
    return {
        "_type": role,
        "spec_version": SPEC_VERSION,
        "version": version,
        "expires": format_time(expires),
        **fields,
    }


def root_signed(
    version: int,
    expires: float,
    roles: Mapping[str, tuple[Iterable[PublicKey], int]],
) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    role_docs: dict[str, Any] = {}
    for role in ROLES:
        members, threshold = roles[role]
        ids = []
        for key in members:
            kid = tuf_key_id(key)
            keys[kid] = key_document(key)
            ids.append(kid)
        role_docs[role] = {"keyids": sorted(set(ids)), "threshold": threshold}
    return new_signed(ROOT, version, expires, consistent_snapshot=True, keys=keys, roles=role_docs)


def encode(signed: Mapping[str, Any], signatures: Iterable[tuple[str, bytes]] = ()) -> bytes:
    document = {
        "signed": dict(signed),
        "signatures": [{"keyid": kid, "sig": sig.hex()} for kid, sig in signatures],
    }
    return json.dumps(document, indent=1, sort_keys=True).encode() + b"\n"


def add_signature(data: bytes, role: str, key: PrivateKey) -> bytes:
    """The role's file with this key's signature added (or replaced): one key, one call."""
    meta = parse(data, role, MAX_ROOT_BYTES if role == ROOT else MAX_META_BYTES)
    kid = tuf_key_id(key.public)
    sig = key.sign(canonical(meta.signed))
    others = [(k, s) for k, s in meta.signatures if k != kid]
    return encode(meta.signed, [*others, (kid, sig)])


def sign_new(signed: Mapping[str, Any], *keys: PrivateKey) -> bytes:
    payload = canonical(signed)
    return encode(signed, [(tuf_key_id(k.public), k.sign(payload)) for k in keys])
