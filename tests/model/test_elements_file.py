"""elements_file: only a regular file, bounded in size; a FIFO or a device is a profile error
naming the key path, at once (never a read that does not end)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.errors import ProfileError
from appliance.model.elements_file import ElementsFileError, read_elements_text
from appliance.model.parse import load_profile

PROFILE = 'version = 1\nname = "t"\n[sets.bl]\ntype = "ipv4_addr"\nelements_file = "{path}"\n'


def _load_error(tmp_path: Path, elements: str) -> ProfileError:
    profile = tmp_path / "p.toml"
    profile.write_text(PROFILE.format(path=elements))
    with pytest.raises(ProfileError) as info:
        load_profile(profile)
    return info.value


def test_a_regular_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bl.txt"
    path.write_text("10.0.0.1\n# a comment\n")
    assert read_elements_text(str(path)) == "10.0.0.1\n# a comment\n"


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "bl.fifo"
    os.mkfifo(fifo)
    with pytest.raises(ElementsFileError, match="not a regular file \\(a FIFO\\)"):
        read_elements_text(str(fifo))
    err = _load_error(tmp_path, str(fifo))
    assert err.key == "sets.bl.elements_file"
    assert "not a regular file (a FIFO)" in err.message
    assert "\n" not in str(err)


def test_dev_zero_is_refused(tmp_path: Path) -> None:
    err = _load_error(tmp_path, "/dev/zero")
    assert err.key == "sets.bl.elements_file"
    assert "/dev/zero: not a regular file (a character device)" in err.message


def test_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    err = _load_error(tmp_path, "lists")
    assert err.key == "sets.bl.elements_file"
    assert "not a regular file (a directory)" in err.message or "Is a directory" in err.message


def test_a_file_above_the_bound_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    with open(path, "wb") as handle:
        handle.truncate(3 * 1024 * 1024)  # sparse: three MiB that cost nothing
    with pytest.raises(ElementsFileError, match="larger than 2 MiB"):
        read_elements_text(str(path), max_bytes=2 * 1024 * 1024)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bl.txt"
    path.write_bytes(b"10.0.0.1\n\xff\n")
    with pytest.raises(ElementsFileError, match="not UTF-8 text \\(byte 9\\)"):
        read_elements_text(str(path))
