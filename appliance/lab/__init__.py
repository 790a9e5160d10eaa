"""A throw-away lab of network namespaces (wan, appliance, lan, mec) for demos and tests."""

from __future__ import annotations

from appliance.lab import netns, topology
from appliance.lab.topology import DEFAULT_PREFIX


def up(prefix: str = DEFAULT_PREFIX) -> None:
    """Create the lab, or repair a half-built one. Idempotent."""
    netns.up(prefix)


def down(prefix: str = DEFAULT_PREFIX) -> None:
    """Remove the lab; quiet if there is none."""
    netns.down(prefix)


__all__ = ["DEFAULT_PREFIX", "down", "netns", "topology", "up"]
