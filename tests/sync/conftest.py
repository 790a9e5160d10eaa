"""Helpers for the hub tests: keys, a small profile, a publisher and servers on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appliance.storage import atomic_write
from appliance.sync import bundle as B
from appliance.sync import keys

PROFILE_DOC: dict[str, object] = {
    "version": 1,
    "name": "edge",
    "zones": {"lan": {"interfaces": ["eth1"]}},
    "sets": {
        "blocklist": {"type": "ipv4_addr", "interval": True},
        "ports": {"type": "inet_service"},
    },
    "rules": [
        {"name": "drop-bl", "from": "any", "to": "any", "saddr": ["@blocklist"], "action": "drop"}
    ],
}

PROFILE_TOML = """version = 1
name = "edge"

[zones.lan]
interfaces = ["eth1"]

[sets.blocklist]
type = "ipv4_addr"
interval = true

[sets.ports]
type = "inet_service"

[[rules]]
name = "drop-bl"
from = "any"
to = "any"
saddr = ["@blocklist"]
action = "drop"
"""


@pytest.fixture(scope="session")
def key1() -> keys.PrivateKey:
    return keys.generate()


@pytest.fixture(scope="session")
def key2() -> keys.PrivateKey:
    return keys.generate()


def build(
    version: int,
    blocklist: Sequence[str] = (),
    expires: float | None = None,
    base_dir: Path = Path("/"),
) -> bytes:
    sets = {"blocklist": list(blocklist)} if blocklist else {}
    return B.build_bundle(PROFILE_DOC, sets, version, expires or time.time() + 3600, base_dir)


def sign(data: bytes, *signers: keys.PrivateKey, existing: str = "") -> bytes:
    text = existing
    for key in signers:
        text = B.sign_text(text, key, data)
    return text.encode()


@dataclass
class Publisher:
    """Writes bundle pairs into ``root/path`` the way build + sign do."""

    root: Path
    path: str
    signers: list[keys.PrivateKey] = field(default_factory=list)

    @property
    def directory(self) -> Path:
        return self.root / self.path

    def publish(
        self,
        version: int,
        blocklist: Sequence[str] = (),
        expires: float | None = None,
        data: bytes | None = None,
        subdir: str = "",
    ) -> bytes:
        data = build(version, blocklist, expires) if data is None else data
        target = self.directory / subdir if subdir else self.directory
        atomic_write(target / B.BUNDLE_FILE, data, 0o644)
        if self.signers:
            atomic_write(target / B.SIG_FILE, sign(data, *self.signers), 0o644)
        return data


@pytest.fixture
def publisher(tmp_path: Path, key1: keys.PrivateKey) -> Publisher:
    root = tmp_path / "hub"
    (root / "site" / "edge-1").mkdir(parents=True)
    return Publisher(root, "site/edge-1", [key1])


def run(coro: object, timeout: float = 60) -> object:
    """Run a coroutine in a fresh loop with an overall bound."""

    async def bounded() -> object:
        return await asyncio.wait_for(coro, timeout)  # type: ignore[arg-type]

    return asyncio.run(bounded())


@pytest.fixture
def hub_root(publisher: Publisher) -> Iterator[Path]:
    yield publisher.root
