"""Entering a named network namespace (``--netns``) for the whole process."""

from __future__ import annotations

import ctypes
import os

from appliance.errors import ApplianceError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"


def enter_netns(name: str) -> None:
    """Move this process into ``/run/netns/NAME`` (as ``ip netns exec`` does for netlink).

    Call before opening any netlink or nftables socket; sockets opened afterwards live in
    that namespace. Raises ApplianceError with one line if the namespace does not exist.
    """
    if not name or "/" in name or name in (".", ".."):
        raise ApplianceError(f"--netns: bad namespace name {name!r}")
    path = os.path.join(NETNS_RUN_DIR, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ApplianceError(f"--netns: no network namespace {name!r} ({path})") from None
    except PermissionError:
        raise ApplianceError(f"--netns: permission denied opening {path} (needs root)") from None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise ApplianceError(f"--netns: cannot enter {name!r}: {os.strerror(err)}")
    finally:
        os.close(fd)
