"""The TUF client workflow over any fetch function, and the trusted files kept on disk.

:func:`refresh` takes the steps of TUF's client workflow in order, each file fetched with
the bound its parent names (a root or a timestamp with a fixed cap; snapshot, targets and
the bundle with the exact length signed for): the chain of roots (``N+1.root.json`` until
there is none, at most :data:`tuf.MAX_ROOT_ROTATIONS`), ``timestamp.json``, then, only when
the timestamp is new, ``N.snapshot.json``, ``N.targets.json`` and the bundle by its hash.
``timestamp.json`` is fetched first (it is what a long poll waits on) and checked after the
root chain, under the newest root; when the hub said with it which root is its newest
(``newest_root``), the chain is asked for only past the trusted root: that answer is worth
what a 404 for ``N+1.root.json`` is, from the same hub.
``fetch(name, cap)`` returns the bytes or None when the file is absent; it raises on
transport failures. Files already trusted are kept in the state directory
(:class:`TrustStore`), so rollback protection survives restarts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.sync import tuf
from appliance.sync.bundle import BUNDLE_FILE, FULL_DIR, HTTP_ERROR, BundleError
from appliance.sync.store import write_synced

Fetch = Callable[[str, int], Awaitable[bytes | None]]
TRUST_FILES = ("root", "timestamp", "snapshot", "targets")


@dataclass(frozen=True)
class Update:
    changed: bool  # a new timestamp: targets may name another bundle
    bundle: bytes | None = None  # the bundle named by targets (verified), when changed
    roots: int = 0  # roots followed in this update


async def refresh(
    trusted: tuf.Trusted,
    fetch: Fetch,
    have: str = "",
    name: str = BUNDLE_FILE,
    newest_root: Callable[[], int | None] | None = None,
) -> Update:
    """One update; BundleError (a sync word and a reason) on any refusal, leaving what is
    trusted as it was for the steps that failed. ``have``: the SHA-256 of the bundle in
    force; the bundle is fetched when targets name another one (also when an earlier
    update stopped after targets: a version counts as fetched only once its bundle is).
    ``newest_root``: the newest root version the hub announced with the timestamp, or
    None (a static server: the next root is asked for)."""
    timestamp = await fetch("timestamp.json", tuf.MAX_TIMESTAMP_BYTES)
    roots = 0
    announced = newest_root() if newest_root is not None else None
    if announced is None or announced > trusted.root.version:
        for _ in range(tuf.MAX_ROOT_ROTATIONS):
            data = await fetch(f"{trusted.root.version + 1}.root.json", tuf.MAX_ROOT_BYTES)
            if data is None:
                break
            trusted.update_root(data)
            roots += 1
    trusted.check_root_fresh()
    if timestamp is None:
        raise BundleError(HTTP_ERROR, "timestamp.json: HTTP 404 (not on the hub)")
    changed = trusted.update_timestamp(timestamp)
    if not changed and _complete(trusted):
        trusted.check_fresh(trusted.snapshot)
        trusted.check_fresh(trusted.targets)
        if trusted.target(name)["hashes"]["sha256"] == have:
            return Update(False, roots=roots)
        return Update(True, await fetch_target(trusted, fetch, name), roots)
    entry = trusted.snapshot_meta()
    trusted.update_snapshot(
        await _required(fetch, f"{entry['version']}.snapshot.json", _cap(entry))
    )
    entry = trusted.targets_meta()
    trusted.update_targets(await _required(fetch, f"{entry['version']}.targets.json", _cap(entry)))
    if trusted.target(name)["hashes"]["sha256"] == have:
        return Update(True, roots=roots)
    return Update(True, await fetch_target(trusted, fetch, name), roots)


async def fetch_target(trusted: tuf.Trusted, fetch: Fetch, name: str = BUNDLE_FILE) -> bytes:
    entry = trusted.target(name)
    folder, _, base = name.rpartition("/")
    path = f"{folder + '/' if folder else ''}{entry['hashes']['sha256']}.{base}"
    data = await _required(fetch, path, int(entry["length"]))
    trusted.check_target(name, data)
    return data


async def _required(fetch: Fetch, path: str, cap: int) -> bytes:
    """The fetched file; BundleError (http_error) when the hub does not have it: a file
    missing from the hub is a publishing or serving fault, not a forgery."""
    data = await fetch(path, cap)
    if data is None:
        raise BundleError(HTTP_ERROR, f"{path}: HTTP 404 (not on the hub)")
    return data


FULL_TARGET = f"{FULL_DIR}/{BUNDLE_FILE}"


def _complete(trusted: tuf.Trusted) -> bool:
    """Snapshot and targets are the ones the trusted timestamp names."""
    snapshot, targets = trusted.snapshot, trusted.targets
    return (
        snapshot is not None
        and targets is not None
        and snapshot.version == trusted.snapshot_meta()["version"]
        and targets.version == trusted.targets_meta()["version"]
    )


def _cap(entry: dict[str, object]) -> int:
    length = entry.get("length")
    return length if isinstance(length, int) else tuf.MAX_META_BYTES


class TrustStore:
    """``STATE/hub/tuf/{root,timestamp,snapshot,targets}.json``: the files last trusted."""

    def __init__(self, directory: str | Path) -> None:
        self.root = Path(directory)
        self._kept: dict[str, bytes] = {}  # what each file holds, as last read or written

    def load(self, initial_root: bytes, now: float) -> tuf.Trusted:
        """The trusted set: the stored root (else the installed one), then the stored
        timestamp, snapshot and targets as floors (a file that no longer verifies is
        dropped, with those after it)."""
        stored = self._read("root")
        trusted = None
        if stored is not None:
            with contextlib.suppress(BundleError):
                trusted = tuf.Trusted(stored, now)
                installed = tuf.parse(initial_root, tuf.ROOT, tuf.MAX_ROOT_BYTES)
                if installed.version > trusted.root.version:
                    trusted = None  # a newer root installed by hand wins
        if trusted is None:
            trusted = tuf.Trusted(initial_root, now)
        try:
            for role, step in (
                ("timestamp", trusted.update_timestamp),
                ("snapshot", trusted.update_snapshot),
                ("targets", trusted.update_targets),
            ):
                data = self._read(role)
                if data is None:
                    break
                step(data, fresh=False)
        except BundleError:
            pass
        return trusted

    def save(self, trusted: tuf.Trusted) -> None:
        """Write the files that changed (an update changes three: timestamp, snapshot,
        targets), each replaced whole by a rename after its bytes are synced, and the
        directory synced once for all of them."""
        changed = [
            (role, meta.data)
            for role, meta in (
                ("root", trusted.root),
                ("timestamp", trusted.timestamp),
                ("snapshot", trusted.snapshot),
                ("targets", trusted.targets),
            )
            if meta is not None and self._kept.get(role) != meta.data
        ]
        if not changed:
            return
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory = str(self.root)
        for role, data in changed:
            write_synced(f"{directory}/.{role}.json.new", data)
            os.replace(f"{directory}/.{role}.json.new", f"{directory}/{role}.json")
            self._kept[role] = data
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read(self, role: str) -> bytes | None:
        try:
            data = (self.root / f"{role}.json").read_bytes()
        except OSError:
            return None
        self._kept[role] = data
        return data
