"""Firmware update manifests: build, sign and verify. Pure: bytes and keys in, a verdict out.

``firmware.json`` is ``{"version": N, "image": NAME, "size": BYTES, "sha256": HEX}``: the
image is a root file system for one slot, in the manifest's directory.
``firmware.json.sig`` holds lines ``KEYID BASE64SIG``, Ed25519 signatures of the exact
bytes of ``firmware.json``, as for bundles.

Verification order (the first failure wins): a signature by a trusted key (before anything
parses the bytes), the schema, the version against the running one (no rollback, no
reinstall), the size against the slot, then the image's size and SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from appliance.sync import bundle as B
from appliance.sync.keys import PrivateKey, PublicKey

MANIFEST_FILE = "firmware.json"
SIG_FILE = "firmware.json.sig"
MAX_MANIFEST_BYTES = 64 * 1024
KEYS = ("version", "image", "size", "sha256")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ManifestError(ValueError):
    """A manifest or its image is refused; ``str()`` is the one-line reason."""

    def __init__(self, reason: str) -> None:
        self.reason = " ".join(reason.split())
        super().__init__(self.reason)


@dataclass(frozen=True)
class Manifest:
    version: int
    image: str  # a file name in the manifest's directory
    size: int
    sha256: str


def build(version: int, image: str, size: int, sha256: str) -> bytes:
    """The bytes of ``firmware.json`` (canonical: sorted keys, one line)."""
    manifest = Manifest(version, image, size, sha256)
    _check(manifest)
    doc = {"version": version, "image": image, "size": size, "sha256": sha256}
    return (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode()


def sign(existing_sig: str, key: PrivateKey, data: bytes) -> str:
    """The signature file with this key's line added or replaced."""
    return B.sign_text(existing_sig, key, data)


def check_signature(data: bytes, sig: bytes | None, trust: Sequence[PublicKey]) -> str:
    """The id of the trusted key that signed ``data``; ManifestError if none did."""
    if not trust:
        raise ManifestError("no trusted firmware key")
    try:
        return B.check_signature(data, sig, trust)
    except B.BundleError as exc:
        reason = exc.reason.replace("bundle.json.sig", SIG_FILE)
        raise ManifestError(f"bad signature: {reason}") from None


def parse(data: bytes) -> Manifest:
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{MANIFEST_FILE}: over {MAX_MANIFEST_BYTES} bytes")
    try:
        doc = B.decode_json(data)
    except B.BundleError as exc:
        raise ManifestError(f"{MANIFEST_FILE}: {exc.reason}") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{MANIFEST_FILE}: expected a JSON object")
    unknown = sorted(set(doc) - set(KEYS))
    if unknown:
        raise ManifestError(f"{MANIFEST_FILE}: {unknown[0]}: unknown key")
    for key in KEYS:
        if key not in doc:
            raise ManifestError(f"{MANIFEST_FILE}: {key}: missing")
    manifest = Manifest(doc["version"], doc["image"], doc["size"], doc["sha256"])
    _check(manifest)
    return manifest


def _check(m: Manifest) -> None:
    for key in ("version", "size"):
        value = getattr(m, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ManifestError(f"{MANIFEST_FILE}: {key}: expected a whole number, 1 or more")
    if not isinstance(m.image, str) or not _IMAGE_NAME.fullmatch(m.image):
        raise ManifestError(f"{MANIFEST_FILE}: image: expected a plain file name")
    if not isinstance(m.sha256, str) or not _SHA256.fullmatch(m.sha256):
        raise ManifestError(f"{MANIFEST_FILE}: sha256: expected 64 lowercase hex digits")


def verify(
    data: bytes,
    sig: bytes | None,
    trust: Sequence[PublicKey],
    running_version: int,
    slot_size: int | None = None,
) -> Manifest:
    """The manifest, if a trusted key signed it, its version is above the running one and
    its image fits the slot; ManifestError otherwise. The image itself: ``check_image``."""
    check_signature(data, sig, trust)
    return check(data, running_version, slot_size)


def check(data: bytes, running_version: int, slot_size: int | None = None) -> Manifest:
    """``verify`` after the signature (checked already): parse, rollback, slot size."""
    manifest = parse(data)
    if manifest.version <= running_version:
        raise ManifestError(
            f"rollback: version {manifest.version} is not above the running {running_version}"
        )
    if slot_size is not None and manifest.size > slot_size:
        raise ManifestError(
            f"image of {manifest.size} bytes does not fit the slot ({slot_size} bytes)"
        )
    return manifest


def check_image(manifest: Manifest, chunks: Iterable[bytes]) -> None:
    """The image's bytes (in chunks) against the manifest's size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > manifest.size:
            raise ManifestError(f"{manifest.image}: over the manifest's {manifest.size} bytes")
        digest.update(chunk)
    if size != manifest.size:
        raise ManifestError(f"{manifest.image}: {size} bytes, the manifest says {manifest.size}")
    if digest.hexdigest() != manifest.sha256:
        raise ManifestError(f"{manifest.image}: SHA-256 {digest.hexdigest()} is not the manifest's")
