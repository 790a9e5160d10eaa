"""An update writes the slot that is not running only after the manifest and the image
check out, then puts that slot on trial (a regular file stands in for the block device)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.firmware import grubenv, update
from appliance.firmware import manifest as M
from appliance.sync import keys

OLD = b"\xa5" * 8192


@pytest.fixture
def box(tmp_path: Path) -> dict[str, Path]:
    device = tmp_path / "root-b"
    device.write_bytes(OLD)
    env = tmp_path / "grubenv"
    env.write_bytes(grubenv.encode({"slot": "A"}))
    return {"dir": tmp_path, "device": device, "env": env}


def release(directory: Path, key: keys.PrivateKey, version: int, image: bytes) -> Path:
    import hashlib

    (directory / "slot.img").write_bytes(image)
    data = M.build(version, "slot.img", len(image), hashlib.sha256(image).hexdigest())
    (directory / "firmware.json").write_bytes(data)
    (directory / "firmware.json.sig").write_text(M.sign("", key, data))
    return directory / "firmware.json"


def run(
    box: dict[str, Path], manifest: Path, trust: list[keys.PublicKey], version: int = 1
) -> update.UpdateResult:
    return update.update(
        manifest,
        trust,
        running_slot="A",
        running_version=version,
        device=str(box["device"]),
        slot_size=8192,
        env_path=box["env"],
        tries=2,
    )


def test_good_update_writes_the_other_slot_and_puts_it_on_trial(box: dict[str, Path]) -> None:
    key = keys.generate()
    manifest = release(box["dir"], key, 2, b"new root" * 512)
    result = run(box, manifest, [key.public])
    assert (result.version, result.slot, result.bytes, result.key_id) == (
        2,
        "B",
        4096,
        key.public.id,
    )
    assert box["device"].read_bytes() == b"new root" * 512 + OLD[4096:]
    env = grubenv.parse(box["env"].read_bytes())
    assert env == {"slot": "A", "try_slot": "B", "try_count": "2", "failed_slot": ""}


def test_bad_signature_writes_nothing(box: dict[str, Path]) -> None:
    manifest = release(box["dir"], keys.generate(), 2, b"evil")
    env_before = box["env"].read_bytes()
    with pytest.raises(update.UpdateRefused, match="bad signature"):
        run(box, manifest, [keys.generate().public])
    assert box["device"].read_bytes() == OLD
    assert box["env"].read_bytes() == env_before


def test_image_not_matching_its_manifest_writes_nothing(box: dict[str, Path]) -> None:
    key = keys.generate()
    manifest = release(box["dir"], key, 2, b"new root")
    (box["dir"] / "slot.img").write_bytes(b"new ro0t")
    with pytest.raises(update.UpdateRefused, match="SHA-256"):
        run(box, manifest, [key.public])
    assert box["device"].read_bytes() == OLD


def test_rollback_writes_nothing(box: dict[str, Path]) -> None:
    key = keys.generate()
    manifest = release(box["dir"], key, 3, b"old root")
    with pytest.raises(update.UpdateRefused, match="rollback"):
        run(box, manifest, [key.public], version=3)
    assert box["device"].read_bytes() == OLD


def test_missing_image_is_refused(box: dict[str, Path]) -> None:
    key = keys.generate()
    manifest = release(box["dir"], key, 2, b"new root")
    (box["dir"] / "slot.img").unlink()
    with pytest.raises(update.UpdateRefused, match="image: No such file"):
        run(box, manifest, [key.public])


def test_cli_sign_then_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from appliance.cli import main

    key = tmp_path / "fw.key"
    keys.write_keypair(key, keys.generate())
    (tmp_path / "slot.img").write_bytes(b"root" * 100)
    assert (
        main(["firmware", "sign", str(tmp_path / "slot.img"), "--version", "4", "--key", str(key)])
        == 0
    )
    manifest = str(tmp_path / "firmware.json")
    assert main(["firmware", "verify", manifest, "--trust", f"{key}.pub"]) == 0
    assert "good: version 4" in capsys.readouterr().out
    assert (
        main(["firmware", "verify", manifest, "--trust", f"{key}.pub", "--running-version", "4"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.endswith("firmware.json: rollback: version 4 is not above the running 4")
    assert "\n" not in err
