"""Where the firmware image keeps things on the box, and the block devices of the slots.

The layout is the image's (``firmware/build.sh``): GPT partitions named ``root-a``,
``root-b`` and ``state``; the kernel command line names the running slot
(``appliance.slot=A``); the state partition is mounted at ``/state`` with GRUB's
environment in ``/state/boot/grubenv``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ApplianceError

FIRMWARE_DIR = Path("/usr/lib/appliance-firmware")
VERSION_FILE = FIRMWARE_DIR / "version"
TRUST_DIR = FIRMWARE_DIR / "trust"
GRUBENV = Path("/state/boot/grubenv")
PARTITION_NAMES = {"A": "root-a", "B": "root-b"}
SYS_BLOCK = Path("/sys/class/block")


class FirmwareError(ApplianceError):
    """The box is not running the firmware image, or its layout is not the expected one."""


@dataclass(frozen=True)
class Partition:
    device: str
    size: int  # bytes


def running_slot(cmdline: str | None = None) -> str:
    if cmdline is None:
        try:
            cmdline = Path("/proc/cmdline").read_text()
        except OSError as exc:
            raise FirmwareError(f"/proc/cmdline: {exc.strerror}") from None
    for arg in cmdline.split():
        if arg.startswith("appliance.slot="):
            return arg.partition("=")[2]
    raise FirmwareError("not booted from the firmware image (no appliance.slot= in /proc/cmdline)")


def running_version(path: Path = VERSION_FILE) -> int:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise FirmwareError(f"{path}: {exc.strerror}") from None
    try:
        return int(text)
    except ValueError:
        raise FirmwareError(f"{path}: not a whole number") from None


def trust_files(directory: Path = TRUST_DIR) -> list[str]:
    try:
        return sorted(str(p) for p in directory.glob("*.pub"))
    except OSError:
        return []


def partition(name: str, sys_block: Path = SYS_BLOCK) -> Partition:
    """The block device whose GPT partition name is ``name`` (from sysfs, no udev needed)."""
    try:
        entries = sorted(sys_block.iterdir())
    except OSError as exc:
        raise FirmwareError(f"{sys_block}: {exc.strerror}") from None
    for entry in entries:
        try:
            uevent = (entry / "uevent").read_text()
        except OSError:
            continue
        if f"PARTNAME={name}" not in uevent.splitlines():
            continue
        try:
            sectors = int((entry / "size").read_text())
        except (OSError, ValueError):
            raise FirmwareError(f"{entry}: no size") from None
        return Partition(f"/dev/{entry.name}", sectors * 512)
    raise FirmwareError(f"no partition named {name!r}")


def device_size(path: str) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
