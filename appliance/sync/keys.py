"""Ed25519 keys for bundles.

A private key file is PKCS#8 PEM (mode 0600); ``KEYFILE.pub`` holds the base64 of the
32-byte raw public key, one line. A key's id is the hex of the first 8 bytes of the
SHA-256 of the raw public key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from appliance.errors import ApplianceError, UsageError

PUBLIC_SUFFIX = ".pub"
MAX_KEY_FILE = 64 * 1024


class KeyFileError(ApplianceError):
    """A key file cannot be read or is not an Ed25519 key."""


def key_id(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).digest()[:8].hex()


@dataclass(frozen=True)
class PublicKey:
    raw: bytes  # 32 bytes
    source: str = ""

    @property
    def id(self) -> str:
        return key_id(self.raw)

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True

    def encode(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")


@dataclass(frozen=True)
class PrivateKey:
    key: Ed25519PrivateKey

    @property
    def public(self) -> PublicKey:
        raw = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return PublicKey(raw)

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)

    def pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def generate() -> PrivateKey:
    return PrivateKey(Ed25519PrivateKey.generate())


def public_path(keyfile: str | os.PathLike[str]) -> Path:
    return Path(os.fspath(keyfile) + PUBLIC_SUFFIX)


def write_keypair(keyfile: str | os.PathLike[str], key: PrivateKey, force: bool = False) -> str:
    """Write KEYFILE (0600, created exclusively unless ``force``) and KEYFILE.pub; the key id."""
    path = Path(keyfile)
    pub = public_path(path)
    if not force:
        for existing in (path, pub):
            if existing.exists() or existing.is_symlink():
                raise UsageError(f"{existing}: exists (use --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.new")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, key.pem())
        os.fsync(fd)
    finally:
        os.close(fd)
    if not force and path.exists():  # lost a race: never replace a key silently
        os.unlink(tmp)
        raise UsageError(f"{path}: exists (use --force to replace it)")
    os.replace(tmp, path)
    pub_tmp = pub.with_name(f".{pub.name}.new")
    pub_tmp.write_text(key.public.encode() + "\n")
    os.chmod(pub_tmp, 0o644)
    os.replace(pub_tmp, pub)
    return key.public.id


def load_private(keyfile: str | os.PathLike[str]) -> PrivateKey:
    data = _read(keyfile)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{keyfile}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{keyfile}: not an Ed25519 key")
    return PrivateKey(key)


def parse_public(text: str, source: str = "") -> PublicKey:
    """The base64 of a 32-byte raw public key (surrounding blank space ignored)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError(f"{source or 'public key'}: not base64") from None
    if len(raw) != 32:
        raise KeyFileError(
            f"{source or 'public key'}: expected a 32-byte Ed25519 public key, got {len(raw)}"
        )
    return PublicKey(raw, source)


def load_public(path: str | os.PathLike[str]) -> PublicKey:
    try:
        text = _read(path).decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not base64 text") from None
    return parse_public(text, os.fspath(path))


def load_trust(paths: list[str] | tuple[str, ...]) -> tuple[PublicKey, ...]:
    return tuple(load_public(p) for p in paths)


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE:
        raise KeyFileError(f"{path}: too large for a key file")
    return data
