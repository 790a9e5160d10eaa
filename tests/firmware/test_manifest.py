"""Firmware manifests: signed by a trusted key, no rollback, the image's size and SHA-256."""

from __future__ import annotations

import hashlib

import pytest

from appliance.firmware import manifest as M
from appliance.sync import keys

IMAGE = b"slot image\n" * 1000


def signed(
    version: int = 2, image: bytes = IMAGE, key: keys.PrivateKey | None = None
) -> tuple[keys.PrivateKey, bytes, bytes]:
    key = key or keys.generate()
    data = M.build(version, "slot.img", len(image), hashlib.sha256(image).hexdigest())
    return key, data, M.sign("", key, data).encode()


def test_good_manifest_verifies() -> None:
    key, data, sig = signed()
    manifest = M.verify(data, sig, [key.public], running_version=1)
    assert manifest == M.Manifest(2, "slot.img", len(IMAGE), hashlib.sha256(IMAGE).hexdigest())
    assert M.check_signature(data, sig, [key.public]) == key.public.id
    M.check_image(manifest, [IMAGE[:100], IMAGE[100:]])


def test_signature_by_another_key_is_refused() -> None:
    _, data, sig = signed()
    with pytest.raises(M.ManifestError, match="bad signature: no signature by a trusted key"):
        M.verify(data, sig, [keys.generate().public], running_version=1)


def test_changed_manifest_is_refused() -> None:
    key, data, sig = signed(version=2)
    tampered = data.replace(b'"version":2', b'"version":9')
    with pytest.raises(M.ManifestError, match="signature does not verify"):
        M.verify(tampered, sig, [key.public], running_version=1)


@pytest.mark.parametrize("sig", [None, b"", b"garbage\n"])
def test_missing_or_malformed_signature_is_refused(sig: bytes | None) -> None:
    key, data, _ = signed()
    with pytest.raises(M.ManifestError, match="bad signature"):
        M.verify(data, sig, [key.public], running_version=1)


def test_no_trusted_key_refuses_everything() -> None:
    _, data, sig = signed()
    with pytest.raises(M.ManifestError, match="no trusted firmware key"):
        M.verify(data, sig, [], running_version=1)


@pytest.mark.parametrize("running", [2, 3])
def test_rollback_and_reinstall_are_refused(running: int) -> None:
    key, data, sig = signed(version=2)
    with pytest.raises(
        M.ManifestError, match=f"rollback: version 2 is not above the running {running}"
    ):
        M.verify(data, sig, [key.public], running_version=running)


def test_wrong_hash_is_refused() -> None:
    key, data, sig = signed()
    manifest = M.verify(data, sig, [key.public], running_version=1)
    other = IMAGE[:-1] + b"X"
    with pytest.raises(M.ManifestError, match=r"SHA-256 .* is not the manifest"):
        M.check_image(manifest, [other])


@pytest.mark.parametrize("image", [IMAGE[:-1], IMAGE + b"x"])
def test_wrong_size_is_refused(image: bytes) -> None:
    key, data, sig = signed()
    manifest = M.verify(data, sig, [key.public], running_version=1)
    with pytest.raises(M.ManifestError, match=r"slot\.img: .*bytes"):
        M.check_image(manifest, [image])


def test_image_larger_than_the_slot_is_refused() -> None:
    key, data, sig = signed()
    with pytest.raises(M.ManifestError, match="does not fit the slot"):
        M.verify(data, sig, [key.public], running_version=1, slot_size=len(IMAGE) - 1)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b"[]", "expected a JSON object"),
        (b'{"version":2}', "image: missing"),
        (b'{"version":2,"image":"a","size":1,"sha256":"' + b"0" * 64 + b'","x":1}', "x: unknown"),
        (b'{"version":0,"image":"a","size":1,"sha256":"' + b"0" * 64 + b'"}', "version:"),
        (b'{"version":true,"image":"a","size":1,"sha256":"' + b"0" * 64 + b'"}', "version:"),
        (b'{"version":2,"image":"../a","size":1,"sha256":"' + b"0" * 64 + b'"}', "image:"),
        (b'{"version":2,"image":"a","size":1,"sha256":"ABC"}', "sha256:"),
        (b"{not json", "bad JSON"),
    ],
)
def test_malformed_manifest_is_refused_after_the_signature(doc: bytes, message: str) -> None:
    key = keys.generate()
    sig = M.sign("", key, doc).encode()
    with pytest.raises(M.ManifestError, match=message):
        M.verify(doc, sig, [key.public], running_version=1)
