"""A TUF repository in a hub directory: the publisher's side of :mod:`appliance.sync.tuf`.

The directory that serves ``bundle.json`` also holds the metadata, with consistent
snapshots, so that any static server or object store can serve it and no file a client may
be reading is ever rewritten (only ``timestamp.json`` is)::

    DIR/1.root.json 2.root.json ...  every root, in order (the chain a client follows)
    DIR/root.json                    the newest root (to install on an appliance)
    DIR/N.targets.json  DIR/N.snapshot.json  DIR/timestamp.json
    DIR/HASH.bundle.json  DIR/full/HASH.bundle.json   the targets, by content
    DIR/staged/root.json  DIR/staged/targets.json     waiting for their threshold

Offline roles (root, targets) are staged, then signed one key per call (the keys may sit on
different machines: the staged file travels), then published once the threshold is met.
Snapshot and timestamp are signed at publication by the online key; ``timestamp`` alone
renews freshness without touching the offline roles.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from appliance.errors import UsageError
from appliance.storage import atomic_write
from appliance.sync import tuf
from appliance.sync.bundle import BUNDLE_FILE, FULL_DIR, BundleError
from appliance.sync.keys import PrivateKey, PublicKey

STAGED = "staged"
TIMESTAMP_FILE = "timestamp.json"
TARGET_NAMES = (BUNDLE_FILE, f"{FULL_DIR}/{BUNDLE_FILE}")


class RepositoryError(UsageError):
    """A repository step that cannot be taken (one line, exit 2)."""


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise RepositoryError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _parse(path: Path, role: str) -> tuf.Metadata:
    try:
        return tuf.parse(_read(path), role, tuf.MAX_ROOT_BYTES)
    except BundleError as exc:
        raise RepositoryError(f"{path}: {exc.reason}") from None


def _write(path: Path, data: bytes) -> None:
    atomic_write(path, data, 0o644)


def latest_version(directory: Path, role: str) -> int:
    """The highest N of the published ``N.ROLE.json`` (0 if none)."""
    found = 0
    for entry in os.listdir(directory) if directory.is_dir() else ():
        head, _, rest = entry.partition(".")
        if rest == f"{role}.json" and head.isdigit():
            found = max(found, int(head))
    return found


def current_root(directory: Path) -> tuf.Metadata | None:
    version = latest_version(directory, tuf.ROOT)
    return _parse(directory / f"{version}.root.json", tuf.ROOT) if version else None


def _role_keys(root: tuf.Metadata) -> dict[str, tuple[list[PublicKey], int]]:
    keys = root.keys()
    roles: dict[str, tuple[list[PublicKey], int]] = {}
    for role in tuf.ROLES:
        spec = root.role_of(role)
        roles[role] = ([keys[k] for k in spec.keyids if k in keys], spec.threshold)
    return roles


def init(
    directory: Path,
    roles: Mapping[str, tuple[Iterable[PublicKey], int]],
    expires: float,
) -> Path:
    """Stage root version 1; each role's keys and threshold."""
    if current_root(directory) is not None:
        raise RepositoryError(f"{directory}: a root is already published (change it with key)")
    for role in tuf.ROLES:
        members, threshold = roles[role]
        if threshold < 1 or threshold > len(set(members)):
            raise RepositoryError(
                f"{role}: threshold {threshold} with {len(set(members))} distinct keys"
            )
    path = directory / STAGED / "root.json"
    _write(path, tuf.encode(tuf.root_signed(1, expires, roles)))
    return path


def change_keys(
    directory: Path,
    role: str,
    expires: float,
    add: Iterable[PublicKey] = (),
    revoke: Iterable[PublicKey] = (),
    threshold: int | None = None,
) -> Path:
    """Stage the next root with keys added to or revoked from ``role`` (or a new threshold).
    It must be signed by the threshold of the current root's keys and of its own."""
    root = current_root(directory)
    if root is None:
        raise RepositoryError(f"{directory}: no root published yet (init, sign, publish)")
    staged = directory / STAGED / "root.json"
    base = _parse(staged, tuf.ROOT) if staged.exists() else root
    roles = _role_keys(base)
    members, old_threshold = roles[role]
    revoked = {k.raw for k in revoke}
    members = [k for k in members if k.raw not in revoked]
    members += [k for k in add if k.raw not in {m.raw for m in members}]
    new_threshold = threshold or old_threshold
    if new_threshold > len(members):
        raise RepositoryError(f"{role}: threshold {new_threshold} with {len(members)} keys")
    roles[role] = (members, new_threshold)
    _write(staged, tuf.encode(tuf.root_signed(root.version + 1, expires, roles)))
    return staged


def stage_targets(directory: Path, expires: float) -> Path:
    """Stage the next targets.json: the length and hash of ``bundle.json`` (and of
    ``full/bundle.json`` when a delta is published)."""
    targets: dict[str, Any] = {}
    for name in TARGET_NAMES:
        path = directory / name
        if path.exists():
            targets[name] = tuf.file_meta(_read(path))
    if BUNDLE_FILE not in targets:
        raise RepositoryError(f"{directory / BUNDLE_FILE}: no bundle to publish")
    version = latest_version(directory, tuf.TARGETS) + 1
    signed = tuf.new_signed(tuf.TARGETS, version, expires, targets=targets)
    path = directory / STAGED / "targets.json"
    _write(path, tuf.encode(signed))
    return path


def sign(directory: Path, role: str, key: PrivateKey) -> tuple[Path, int, int]:
    """Add one key's signature to the staged ``role``; (path, valid signatures, threshold)."""
    if role not in (tuf.ROOT, tuf.TARGETS):
        raise RepositoryError(
            f"{role}: only root and targets are staged (snapshot and "
            "timestamp are signed at publication)"
        )
    path = directory / STAGED / f"{role}.json"
    data = _read(path)
    try:
        signed = tuf.add_signature(data, role, key)
    except BundleError as exc:
        raise RepositoryError(f"{path}: {exc.reason}") from None
    _write(path, signed)
    meta = tuf.parse(signed, role, tuf.MAX_ROOT_BYTES)
    staged_root = directory / STAGED / "root.json"
    if role == tuf.ROOT:
        root: tuf.Metadata | None = meta
    elif staged_root.exists():
        root = _parse(staged_root, tuf.ROOT)  # published together, before the targets
    else:
        root = current_root(directory)
    return (
        path,
        tuf.count_signatures(meta, root, role) if root else 0,
        root.role_of(role).threshold if root else 0,
    )


def publish(
    directory: Path,
    snapshot_key: PrivateKey,
    timestamp_key: PrivateKey,
    snapshot_expires: float,
    timestamp_expires: float,
) -> list[str]:
    """Publish what is staged and signed (root first, then targets and their files), then a
    new snapshot and timestamp. Returns what was written, in order."""
    written: list[str] = []
    root = current_root(directory)
    staged_root = directory / STAGED / "root.json"
    if staged_root.exists():
        new = _parse(staged_root, tuf.ROOT)
        try:
            if root is not None:
                tuf.check_threshold(new, root)
            tuf.check_threshold(new, new)
        except BundleError as exc:
            raise RepositoryError(f"{staged_root}: {exc.reason}") from None
        name = f"{new.version}.root.json"
        _write(directory / name, new.data)
        _write(directory / "root.json", new.data)
        staged_root.unlink()
        written.append(name)
        root = new
    if root is None:
        raise RepositoryError(f"{directory}: no root (init, sign, publish)")
    staged_targets = directory / STAGED / "targets.json"
    if staged_targets.exists():
        targets = _parse(staged_targets, tuf.TARGETS)
        try:
            tuf.check_threshold(targets, root)
        except BundleError as exc:
            raise RepositoryError(f"{staged_targets}: {exc.reason}") from None
        for target in TARGET_NAMES:
            entry = targets.target(target)
            if entry is None:
                continue
            data = _read(directory / target)
            try:
                tuf.check_file(data, entry, target)
            except BundleError as exc:
                raise RepositoryError(
                    f"{directory / target}: changed since staged: {exc.reason}"
                ) from None
            folder, _, base = target.rpartition("/")
            name = f"{folder + '/' if folder else ''}{entry['hashes']['sha256']}.{base}"
            _write(directory / name, data)
            written.append(name)
        name = f"{targets.version}.targets.json"
        _write(directory / name, targets.data)
        staged_targets.unlink()
        written.append(name)
    version = latest_version(directory, tuf.TARGETS)
    if not version:
        raise RepositoryError(f"{directory}: no targets published (targets, sign, publish)")
    targets_data = _read(directory / f"{version}.targets.json")
    snap_version = latest_version(directory, tuf.SNAPSHOT) + 1
    snapshot = tuf.sign_new(
        tuf.new_signed(
            tuf.SNAPSHOT,
            snap_version,
            snapshot_expires,
            meta={"targets.json": tuf.file_meta(targets_data, version)},
        ),
        snapshot_key,
    )
    _check_online(snapshot, root, tuf.SNAPSHOT)
    name = f"{snap_version}.snapshot.json"
    _write(directory / name, snapshot)
    written.append(name)
    written.append(timestamp(directory, timestamp_key, timestamp_expires))
    return written


def timestamp(directory: Path, key: PrivateKey, expires: float) -> str:
    """A new timestamp.json for the newest snapshot (freshness, nothing else changes)."""
    root = current_root(directory)
    snap_version = latest_version(directory, tuf.SNAPSHOT)
    if root is None or not snap_version:
        raise RepositoryError(f"{directory}: nothing published yet")
    snapshot = _read(directory / f"{snap_version}.snapshot.json")
    previous = 0
    if (directory / TIMESTAMP_FILE).exists():
        previous = _parse(directory / TIMESTAMP_FILE, tuf.TIMESTAMP).version
    data = tuf.sign_new(
        tuf.new_signed(
            tuf.TIMESTAMP,
            previous + 1,
            expires,
            meta={"snapshot.json": tuf.file_meta(snapshot, snap_version)},
        ),
        key,
    )
    _check_online(data, root, tuf.TIMESTAMP)
    _write(directory / TIMESTAMP_FILE, data)
    return TIMESTAMP_FILE


def _check_online(data: bytes, root: tuf.Metadata, role: str) -> None:
    try:
        tuf.check_threshold(tuf.parse(data, role), root)
    except BundleError as exc:
        raise RepositoryError(f"{role}: {exc.reason}") from None
