"""The box's layout: the running slot from the command line, partitions by GPT name."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.firmware import system


def test_running_slot_from_the_command_line() -> None:
    assert system.running_slot("appliance.slot=B ro console=ttyAMA0") == "B"
    with pytest.raises(system.FirmwareError, match="not booted from the firmware image"):
        system.running_slot("root=/dev/vda ro")


def test_partition_by_gpt_name_from_sysfs(tmp_path: Path) -> None:
    for name, partname, sectors in (
        ("vda", None, 100),
        ("vda2", "root-a", 8),
        ("vda3", "root-b", 16),
    ):
        entry = tmp_path / name
        entry.mkdir()
        uevent = "MAJOR=254\nDEVTYPE=partition\n" + (f"PARTNAME={partname}\n" if partname else "")
        (entry / "uevent").write_text(uevent)
        (entry / "size").write_text(f"{sectors}\n")
    assert system.partition("root-b", tmp_path) == system.Partition("/dev/vda3", 16 * 512)
    with pytest.raises(system.FirmwareError, match="no partition named 'state'"):
        system.partition("state", tmp_path)


def test_version_and_trust_files(tmp_path: Path) -> None:
    (tmp_path / "version").write_text("7\n")
    assert system.running_version(tmp_path / "version") == 7
    (tmp_path / "version").write_text("seven\n")
    with pytest.raises(system.FirmwareError, match="not a whole number"):
        system.running_version(tmp_path / "version")
    (tmp_path / "b.pub").write_text("x")
    (tmp_path / "a.pub").write_text("x")
    assert system.trust_files(tmp_path) == [str(tmp_path / "a.pub"), str(tmp_path / "b.pub")]
