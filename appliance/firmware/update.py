"""Write a verified slot image to the slot that is not running, then put it on trial.

Nothing is written unless the manifest is signed by a trusted key, is newer than the
running firmware and names an image of the right size and SHA-256. The image is hashed
again while it is written; the boot state changes only when both passes match.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ApplianceError
from appliance.firmware import bootstate, grubenv
from appliance.firmware import manifest as M
from appliance.storage import atomic_write
from appliance.sync.keys import PublicKey

CHUNK = 1024 * 1024


class UpdateRefused(ApplianceError):
    """The update was refused; nothing was written."""

    exit_code = 2


class UpdateFailed(ApplianceError):
    """Writing the slot failed: the slot is not switched to."""

    exit_code = 1


@dataclass(frozen=True)
class UpdateResult:
    version: int
    slot: str
    device: str
    bytes: int
    tries: int
    key_id: str


def read_manifest(path: Path) -> tuple[bytes, bytes | None]:
    try:
        data = _read_small(path)
    except OSError as exc:
        raise UpdateRefused(f"{path}: {exc.strerror or exc}") from None
    try:
        sig: bytes | None = _read_small(Path(f"{path}.sig"))
    except FileNotFoundError:
        sig = None
    except OSError as exc:
        raise UpdateRefused(f"{path}.sig: {exc.strerror or exc}") from None
    return data, sig


def _read_small(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(M.MAX_MANIFEST_BYTES + 1)


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def verify(
    manifest_path: Path,
    trust: Sequence[PublicKey],
    running_version: int,
    slot_size: int | None = None,
) -> tuple[M.Manifest, str, Path]:
    """The manifest, the signing key's id and the image's path; UpdateRefused if not good."""
    data, sig = read_manifest(manifest_path)
    try:
        key_id = M.check_signature(data, sig, trust)
        manifest = M.check(data, running_version, slot_size)
        image = manifest_path.parent / manifest.image
        M.check_image(manifest, _chunks(image))
    except M.ManifestError as exc:
        raise UpdateRefused(f"{manifest_path}: {exc.reason}") from None
    except OSError as exc:
        raise UpdateRefused(f"{manifest_path}: image: {exc.strerror or exc}") from None
    return manifest, key_id, image


def write_slot(manifest: M.Manifest, image: Path, device: str) -> None:
    """Copy the image to the device, hashing it again on the way; fsync."""
    digest = hashlib.sha256()
    written = 0
    try:
        fd = os.open(device, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise UpdateFailed(f"{device}: {exc.strerror or exc}") from None
    try:
        for chunk in _chunks(image):
            digest.update(chunk)
            view = memoryview(chunk)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            written += len(chunk)
        os.fsync(fd)
    except OSError as exc:
        raise UpdateFailed(f"{device}: writing the slot: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if written != manifest.size or digest.hexdigest() != manifest.sha256:
        raise UpdateFailed(f"{image}: changed while it was written: the slot is not switched to")


def read_env(path: Path) -> dict[str, str]:
    try:
        return grubenv.parse(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, grubenv.EnvError) as exc:
        raise UpdateFailed(f"{path}: {exc}") from None


def write_env(path: Path, env: dict[str, str]) -> None:
    atomic_write(path, grubenv.encode(env), mode=0o644)


def update(
    manifest_path: Path,
    trust: Sequence[PublicKey],
    running_slot: str,
    running_version: int,
    device: str,
    slot_size: int | None,
    env_path: Path,
    tries: int = bootstate.DEFAULT_TRIES,
) -> UpdateResult:
    env = read_env(env_path)
    state = bootstate.read(env)
    target = bootstate.target(running_slot)
    try:
        bootstate.switch(state, running_slot, tries)  # refuse early: nothing written yet
    except bootstate.BootStateError as exc:
        raise UpdateRefused(str(exc)) from None
    manifest, key_id, image = verify(manifest_path, trust, running_version, slot_size)
    write_slot(manifest, image, device)
    write_env(env_path, bootstate.write(env, bootstate.switch(state, running_slot, tries)))
    return UpdateResult(manifest.version, target, device, manifest.size, tries, key_id)
