"""GRUB's environment block (``grubenv``): 1024 bytes, ``NAME=VALUE`` lines, ``#`` padding.

GRUB reads and writes it at boot (``load_env``, ``save_env``); the system rewrites it
whole. Pure: bytes in, a dict out, and back.
"""

from __future__ import annotations

from collections.abc import Mapping

SIZE = 1024
HEADER = b"# GRUB Environment Block\n"
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


class EnvError(ValueError):
    """Not a GRUB environment block, or a value that cannot go into one."""


def parse(data: bytes) -> dict[str, str]:
    if len(data) != SIZE or not data.startswith(HEADER):
        raise EnvError(f"not a GRUB environment block ({len(data)} bytes)")
    out: dict[str, str] = {}
    for raw in data[len(HEADER) :].split(b"\n"):
        if not raw or raw.startswith(b"#"):
            continue
        name, sep, value = raw.partition(b"=")
        if not sep:
            continue
        out[name.decode("ascii", "replace")] = value.decode("utf-8", "replace")
    return out


def encode(env: Mapping[str, str]) -> bytes:
    body = b"".join(_line(name, value) for name, value in sorted(env.items()))
    data = HEADER + body
    if len(data) > SIZE:
        raise EnvError(f"environment too large for a {SIZE}-byte block")
    return data + b"#" * (SIZE - len(data))


def _line(name: str, value: str) -> bytes:
    if not name or not set(name) <= _NAME_CHARS:
        raise EnvError(f"bad variable name {name!r}")
    if "\\" in value or "\n" in value:
        raise EnvError(f"{name}: a value cannot hold a backslash or a line break")
    return f"{name}={value}\n".encode()
