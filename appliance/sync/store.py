"""The last bundle applied, kept in the state directory so the daemon enforces it at boot.

Layout under ``STATE_DIR/hub/``: a generation directory per saved bundle holding
``bundle.json`` and ``bundle.json.sig`` exactly as fetched (under TUF, the ``targets.json``
that vouched for the bundle stands in the signature's place), ``meta.json`` (ETags, time) and,
for a delta bundle, ``resolved.json`` (the sets as they stood after it). ``current`` is a
symlink to the generation in force, replaced by rename: a crash leaves the old pair or the
new pair, never one file of each. ``appliance bundle verify STATE_DIR/hub/current`` checks
a stored signed pair like any bundle directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.sync.bundle import (
    BUNDLE_FILE,
    SIG_FILE,
    Bundle,
    BundleError,
    check_signature,
    encode_document,
    parse_bundle,
)
from appliance.sync.keys import PublicKey

HUB_DIR = "hub"
CURRENT = "current"
META = "meta.json"
RESOLVED = "resolved.json"


@dataclass(frozen=True)
class Stored:
    bundle: Bundle
    signature: bytes
    etag: str  # of bundle.json, as the hub sent it ("" if none)
    sig_etag: str  # of bundle.json.sig
    saved_at: float
    stale: bool  # expired since it was applied: still enforced, reported as stale


class StoreError(Exception):
    pass


class BundleStore:
    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.root = Path(state_dir) / HUB_DIR

    @property
    def current(self) -> Path:
        return self.root / CURRENT

    def save(
        self,
        bundle: Bundle,
        signature: bytes,
        etag: str = "",
        sig_etag: str = "",
        now: float | None = None,
    ) -> None:
        """Keep ``bundle`` (its exact bytes and signature) as the last good, atomically."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"gen-{bundle.version}-{secrets.token_hex(4)}"
        gen = self.root / name
        gen.mkdir(mode=0o700)
        try:
            # The generation directory is private until ``current`` points at it, so plain
            # writes (each synced) are enough; the rename of the symlink is the commit.
            _write(gen / BUNDLE_FILE, bundle.data)
            _write(gen / SIG_FILE, signature)
            if bundle.deltas:
                _write(gen / RESOLVED, encode_document(bundle.resolved_document()))
            meta = {
                "etag": etag,
                "sig_etag": sig_etag,
                "saved_at": time.time() if now is None else now,
                "version": bundle.version,
                "sha256": bundle.sha256,
            }
            _write(gen / META, json.dumps(meta, sort_keys=True).encode() + b"\n")
            _fsync_dir(gen)
            link = self.root / f".{CURRENT}.{secrets.token_hex(4)}"
            os.symlink(name, link)
            os.replace(link, self.current)
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(gen, ignore_errors=True)
            raise
        self._sweep(keep=name)

    def load(self, trust: tuple[PublicKey, ...] | None, now: float, base_dir: Path) -> Stored:
        """The last good bundle; StoreError if there is none or it does not check out.

        With ``trust``, the stored signature is checked again (a key removed from the trust
        list since disowns the bundles it signed).
        """
        try:
            gen = self.current.resolve(strict=True)
            data = (gen / BUNDLE_FILE).read_bytes()
            signature = (gen / SIG_FILE).read_bytes()
            meta = json.loads((gen / META).read_text())
        except FileNotFoundError:
            raise StoreError("no bundle stored") from None
        except (OSError, ValueError) as exc:
            raise StoreError(f"stored bundle unreadable: {exc}") from None
        try:
            if trust is not None:
                check_signature(data, signature, trust)
            bundle = parse_bundle(data, base_dir)
            if bundle.deltas:
                resolved = parse_bundle((gen / RESOLVED).read_bytes(), base_dir)
                if resolved.version != bundle.version:
                    raise StoreError("stored bundle: resolved sets do not match its version")
                bundle = dataclasses.replace(bundle, elements=resolved.elements)
        except BundleError as exc:
            raise StoreError(f"stored bundle refused: {exc.result}: {exc}") from None
        except OSError as exc:
            raise StoreError(f"stored bundle unreadable: {exc}") from None
        return Stored(
            bundle=bundle,
            signature=signature,
            etag=_text(meta, "etag"),
            sig_etag=_text(meta, "sig_etag"),
            saved_at=float(meta.get("saved_at", 0)),
            stale=bundle.expired(now),
        )

    def _sweep(self, keep: str) -> None:
        root = str(self.root)
        for name in os.listdir(root):
            if name.startswith("gen-") and name != keep:
                _remove_generation(f"{root}/{name}")
            elif name.startswith(f".{CURRENT}."):
                with contextlib.suppress(OSError):
                    os.unlink(f"{root}/{name}")


def _remove_generation(path: str) -> None:
    """An old generation: its few plain files, then the directory (else the slow way)."""
    try:
        for name in os.listdir(path):
            os.unlink(f"{path}/{name}")
        os.rmdir(path)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


def _text(meta: Any, key: str) -> str:
    value = meta.get(key, "") if isinstance(meta, dict) else ""
    return value if isinstance(value, str) else ""


def _write(path: Path, data: bytes) -> None:
    write_synced(path, data, replace=False)


def write_synced(path: Path | str, data: bytes, replace: bool = True) -> None:
    """``data`` in a new file at ``path`` (mode 0600), synced to disk. A file already there
    (a leftover of a crash) is replaced, or refused unless ``replace``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        if not replace:
            raise
        os.unlink(path)
        fd = os.open(path, flags, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
