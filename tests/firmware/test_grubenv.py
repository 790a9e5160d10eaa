"""GRUB's environment block: the exact 1024-byte format grub-editenv and save_env use."""

from __future__ import annotations

import pytest

from appliance.firmware import grubenv


def test_round_trip_pads_to_1024_bytes() -> None:
    data = grubenv.encode({"slot": "B", "try_slot": "", "try_count": "2"})
    assert len(data) == 1024
    assert data.startswith(b"# GRUB Environment Block\nslot=B\ntry_count=2\ntry_slot=\n#")
    assert grubenv.parse(data) == {"slot": "B", "try_slot": "", "try_count": "2"}


def test_block_written_by_grub_editenv() -> None:
    body = b"# GRUB Environment Block\nslot=A\nsaved_entry=0\n"
    assert grubenv.parse(body + b"#" * (1024 - len(body))) == {"slot": "A", "saved_entry": "0"}


@pytest.mark.parametrize("data", [b"", b"# GRUB Environment Block\n", b"x" * 1024])
def test_not_a_block(data: bytes) -> None:
    with pytest.raises(grubenv.EnvError):
        grubenv.parse(data)


@pytest.mark.parametrize("env", [{"bad name": "x"}, {"a": "line\nbreak"}, {"a": "x" * 1100}])
def test_values_grub_cannot_read_back_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(grubenv.EnvError):
        grubenv.encode(env)
