"""The built-in failsafe policy, enforced when there is neither a valid profile nor a last
good one: default drop in input and forward, established/related and loopback accepted (as
in every table), SSH and the metrics port reachable, output open (the hub stays reachable).

It is a normal profile, compiled like any other, so it is a normal table.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from appliance.model.parse import parse_profile
from appliance.model.profile import MetricsSpec, Profile
from appliance.reconcile.state import Desired, desired_from_profile

FAILSAFE_NAME = "failsafe"
SSH_PORT = 22
DEFAULT_METRICS_PORT = MetricsSpec().port  # the port of the default [metrics].listen


def failsafe_document(metrics_port: int | None = DEFAULT_METRICS_PORT) -> dict[str, Any]:
    ports = sorted({SSH_PORT, *([metrics_port] if metrics_port else [])})
    return {
        "version": 1,
        "name": FAILSAFE_NAME,
        "defaults": {"input": "drop", "forward": "drop", "output": "accept"},
        "rules": [
            {
                "name": "failsafe-management",
                "from": "any",
                "to": "self",
                "proto": "tcp",
                "dport": ports,
                "action": "accept",
            }
        ],
    }


def failsafe_profile(metrics_port: int | None = DEFAULT_METRICS_PORT) -> Profile:
    return parse_profile(failsafe_document(metrics_port), "<failsafe>", Path("/"))


def failsafe_desired(metrics_port: int | None = DEFAULT_METRICS_PORT) -> Desired:
    """The failsafe table; segment links stay as they are (a MEC application keeps its
    link while the appliance waits for a policy it can use)."""
    return replace(desired_from_profile(failsafe_profile(metrics_port)), segments=None)
