"""A throw-away lab of network namespaces (wan, appliance, lan, mec) for demos and tests.

``up`` builds it (or repairs a half-built one), ``down`` removes it, ``demo`` builds it,
enforces a profile in the appliance namespace, shows allowed and blocked traffic and the
kernel's per-rule counters, and removes the lab again.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from typing import TextIO

from appliance.errors import UsageError
from appliance.lab import netns, topology
from appliance.lab.topology import DEFAULT_PREFIX


def _check_prefix(prefix: str) -> None:
    try:
        topology.validate_prefix(prefix)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def up(prefix: str = DEFAULT_PREFIX) -> None:
    """Create the lab, or repair a half-built one. Idempotent."""
    _check_prefix(prefix)
    netns.up(prefix)


def down(prefix: str = DEFAULT_PREFIX) -> None:
    """Remove the lab; quiet if there is none."""
    _check_prefix(prefix)
    netns.down(prefix)


def _profile_name(profile: str) -> str | None:
    try:
        from appliance.model.parse import load_profile

        return load_profile(profile).name
    except Exception:
        return None  # apply reports what is wrong with it


def demo(
    profile: str,
    prefix: str = DEFAULT_PREFIX,
    appliance_cmd: list[str] | None = None,
    out: TextIO | None = None,
) -> int:
    """Build the lab, apply ``profile`` in it, show traffic and counters, remove the lab.

    For the shipped profiles every probe has an expected outcome; the exit status is 0 if
    all of them held. For another profile it shows what passes and what does not.
    """
    from appliance.lab import runner
    from appliance.lab.scenarios import SCENARIOS, SURVEY

    _check_prefix(prefix)
    stream = out if out is not None else sys.stdout
    lab = topology.lab(prefix)
    say = _printer(stream)
    try:
        say(f"building the lab ({', '.join(ns.name for ns in lab.namespaces)})")
        netns.up(prefix)
        with tempfile.TemporaryDirectory(prefix="appliance-lab-") as state_dir:
            say(f"applying {profile} in {lab.ns('appliance')}")
            done = runner.run_appliance(lab, ["apply", profile], state_dir, appliance_cmd)
            for line in (done.stdout + done.stderr).strip().splitlines():
                say(f"  {line}")
            if done.returncode != 0:
                say(f"apply failed (exit {done.returncode})")
                return 1
            name = _profile_name(profile)
            scenario = SCENARIOS.get(name or "", SURVEY)
            if scenario.observe_only:
                say(f"no expectations known for profile {name!r}: showing what passes\n")
            else:
                say(f"traffic through the {scenario.profile} profile:\n")
            results = runner.run_steps(lab, scenario, state_dir, stream, appliance_cmd)
            runner.print_counters(lab, stream)
        failed = [r for r in results if not r.ok]
        if failed:
            say(f"\n{len(failed)} of {len(results)} expectations did not hold")
            return 1
        if not scenario.observe_only:
            say(f"\nall {len(results)} expectations held")
        return 0
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        say("removing the lab")
        netns.down(prefix)


def _printer(stream: TextIO) -> Callable[[str], None]:
    def say(text: str) -> None:
        print(text, file=stream, flush=True)

    return say


__all__ = ["DEFAULT_PREFIX", "demo", "down", "up"]
