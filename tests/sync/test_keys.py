"""Key files: PKCS#8 PEM private key (0600), base64 raw public key, refusal to overwrite."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from appliance.errors import UsageError
from appliance.sync import keys


def test_keypair_files(tmp_path: Path) -> None:
    path = tmp_path / "hub.key"
    key = keys.generate()
    kid = keys.write_keypair(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    pub = (tmp_path / "hub.key.pub").read_text()
    assert len(base64.b64decode(pub.strip())) == 32
    assert keys.load_public(tmp_path / "hub.key.pub") == keys.PublicKey(
        key.public.raw, str(tmp_path / "hub.key.pub")
    )
    assert keys.load_private(path).public.raw == key.public.raw
    assert kid == key.public.id


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "hub.key"
    first = keys.generate()
    keys.write_keypair(path, first)
    with pytest.raises(UsageError, match="exists"):
        keys.write_keypair(path, keys.generate())
    assert keys.load_private(path).public.raw == first.public.raw
    second = keys.generate()
    keys.write_keypair(path, second, force=True)
    assert keys.load_private(path).public.raw == second.public.raw
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_refuses_when_only_the_public_half_exists(tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_text("x\n")
    with pytest.raises(UsageError):
        keys.write_keypair(tmp_path / "k", keys.generate())
    assert not (tmp_path / "k").exists()


@pytest.mark.parametrize(
    ("text", "needle"),
    [("not base64!", "base64"), (base64.b64encode(b"short").decode(), "32-byte")],
)
def test_bad_public_keys(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "k.pub").write_text(text)
    with pytest.raises(keys.KeyFileError, match=needle):
        keys.load_public(tmp_path / "k.pub")


def test_bad_private_key(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("nope")
    with pytest.raises(keys.KeyFileError, match="PEM"):
        keys.load_private(tmp_path / "k")
    with pytest.raises(keys.KeyFileError, match="cannot read"):
        keys.load_private(tmp_path / "missing")
