"""A throw-away lab of network namespaces (wan, appliance, lan, mec) for demos and tests.

``up`` builds it (or repairs a half-built one), ``down`` removes it, ``demo`` builds it,
runs the daemon (``appliance run``) on a profile in the appliance namespace, shows allowed
and blocked traffic, run-time set changes through the daemon, its status and metrics, a
drift repair and a clean stop, and removes the lab again.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from appliance.errors import ApplianceError, UsageError
from appliance.lab import topology
from appliance.lab.topology import DEFAULT_PREFIX
from appliance.model.profile import MetricsSpec

if TYPE_CHECKING:
    from appliance.lab.daemon import LabDaemon


def _check_prefix(prefix: str) -> None:
    try:
        topology.validate_prefix(prefix)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def up(prefix: str = DEFAULT_PREFIX) -> None:
    """Create the lab, or repair a half-built one. Idempotent."""
    from appliance.lab import netns  # pyroute2: only where the lab is built

    _check_prefix(prefix)
    netns.up(prefix)


def down(prefix: str = DEFAULT_PREFIX) -> None:
    """Remove the lab; quiet if there is none."""
    from appliance.lab import netns

    _check_prefix(prefix)
    netns.down(prefix)


def _metrics_listen(profile: str) -> str | None:
    try:
        from appliance.model.parse import load_profile

        metrics = load_profile(profile).metrics
    except Exception:
        return None  # the daemon reports what is wrong with it
    return metrics.listen if metrics is not None else None


def _rule_names(profile: str) -> list[str]:
    try:
        from appliance.model.parse import load_profile

        return [rule.name for rule in load_profile(profile).rules]
    except Exception:
        return []


DEMO_METRICS_LISTEN = MetricsSpec().listen  # the profile has no [metrics]: the default one
DEMO_METRICS = (
    "appliance_policy_version",
    "appliance_apply_total",
    "appliance_set_elements",
    "appliance_autoblock_elements",
    "appliance_drift_repairs_total",
    "appliance_rule_packets_total",
)
READY_TIMEOUT = 30.0
REPAIR_TIMEOUT = 15.0  # the read-back runs every 10 s at the latest; table events sooner


def demo(
    profile: str,
    prefix: str = DEFAULT_PREFIX,
    appliance_cmd: list[str] | None = None,
    out: TextIO | None = None,
) -> int:
    """Build the lab, run the daemon on ``profile`` in it, show traffic, status, metrics,
    a drift repair and a clean stop, and remove the lab (also on failure or Ctrl-C).

    For the shipped profiles every probe has an expected outcome; the exit status is 0 if
    all of them held and the daemon behaved. For another profile it shows what passes.
    """
    from appliance.lab import netns

    _check_prefix(prefix)
    stream = out if out is not None else sys.stdout
    lab = topology.lab(prefix)
    say = _printer(stream)
    try:
        say(f"building the lab ({', '.join(ns.name for ns in lab.namespaces)})")
        netns.up(prefix)
        with tempfile.TemporaryDirectory(prefix="appliance-lab-") as work:
            return _demo(lab, profile, work, appliance_cmd, say, stream)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except ApplianceError as exc:
        say(f"the demo failed: {exc}")
        return 1
    finally:
        say("removing the lab")
        netns.down(prefix)


def _demo(
    lab: topology.Lab,
    profile: str,
    work: str,
    appliance_cmd: list[str] | None,
    say: Callable[[str], None],
    stream: TextIO,
) -> int:
    from appliance.lab import runner
    from appliance.lab.daemon import DaemonFailed, LabDaemon
    from appliance.lab.scenarios import SCENARIOS, SURVEY, Probe

    ns = lab.ns("appliance")
    extra: list[str] = []
    if _metrics_listen(profile) is None:
        extra = ["--metrics-listen", DEMO_METRICS_LISTEN]
    problems: list[str] = []
    with LabDaemon(ns, profile, work, appliance_cmd, extra) as daemon:
        say(f"starting the daemon in {ns}:")
        say("  $ " + " ".join(["appliance", *daemon.command[daemon.command.index("run") :]]))
        try:
            seconds = daemon.start(READY_TIMEOUT)
        except DaemonFailed as exc:
            say(f"  {exc}; its last log lines:")
            for line in daemon.log_lines()[-10:]:
                say(f"    {line}")
            return 1
        status = daemon.status()
        say(f"  READY=1 after {seconds:.2f}s (pid {daemon.pid})")
        if status.get("source") != "profile":
            say(f"  the profile is not enforced: {status.get('last_error')}")
            say(f"  (the daemon enforces its {status.get('source')} policy instead)")
            _stop(daemon, say)
            return 1

        say("\n$ appliance status")
        _show(runner.run_appliance(lab, ["status"], work, appliance_cmd), say)

        name = status.get("policy")
        scenario = SCENARIOS.get(str(name), SURVEY)
        if scenario.observe_only:
            say(f"\nno expectations known for profile {name!r}: showing what passes")
        else:
            say(f"\ntraffic through the {scenario.profile} profile:")
        results = runner.run_steps(lab, scenario, work, stream, appliance_cmd)
        problems += [f"{r.step.title}: {r.observed}" for r in results if not r.ok]

        listen = status.get("metrics_listen")
        if listen:
            text = _show_metrics(ns, listen, say)
            if not scenario.observe_only and not _some_rule_matched(text):
                problems.append("no rule counted a packet in the metrics")
        else:
            say("\nno metrics listener (see the daemon's log)")
            problems.append("no metrics")

        candidates = [scenario.drift_rule] if scenario.drift_rule else []
        problems += _drift(lab, daemon, [*candidates, *_rule_names(profile)], listen, say)
        problems += _stop(daemon, say)

        kept = len(runner.rule_comments(lab))
        what = "" if scenario.observe_only else " and keeps enforcing:"
        say(f"  table inet appliance stays in the kernel ({kept} rules){what}")
        checks = [s for s in scenario.steps if isinstance(s, Probe)]
        after = [
            next((p for p in checks if p.expect == want), None) for want in ("open", "timeout")
        ]
        if not scenario.observe_only and any(after):
            done = runner.run_probes(lab, scenario, [p for p in after if p], stream)
            problems += [f"after the stop: {r.step.title}: {r.observed}" for r in done if not r.ok]
        total = len(results)
    if problems:
        say(f"\n{len(problems)} problem(s):")
        for problem in problems:
            say(f"  {problem}")
        return 1
    if not scenario.observe_only:
        say(f"\nall {total} expectations held; the daemon repaired drift and stopped cleanly")
    return 0


def _show(done: subprocess.CompletedProcess[str], say: Callable[[str], None]) -> None:
    for line in (done.stdout + done.stderr).rstrip().splitlines():
        say(f"  {line}")


def _show_metrics(ns: str, listen: str, say: Callable[[str], None]) -> str:
    from appliance.lab.daemon import metric_lines, scrape

    say(f"\nmetrics (GET http://{listen}/metrics, from inside {ns}):")
    text = scrape(ns, listen)
    for line in metric_lines(text, DEMO_METRICS):
        say(f"  {line}")
    return text


def _some_rule_matched(text: str) -> bool:
    from appliance.lab.daemon import metric_lines

    return any(
        float(line.rsplit(" ", 1)[1]) > 0
        for line in metric_lines(text, ("appliance_rule_packets_total",))
    )


def _drift(
    lab: topology.Lab,
    daemon: LabDaemon,
    candidates: list[str],
    listen: str | None,
    say: Callable[[str], None],
) -> list[str]:
    """Delete a kernel rule of the first of the profile rules ``candidates`` that is in the
    table, behind the daemon's back, and wait for the repair."""
    from appliance.lab import runner
    from appliance.lab.daemon import metric_lines, scrape

    comments = set(runner.rule_comments(lab))
    rule = next((name for name in candidates if name in comments), None)
    if rule is None:
        return []  # a profile without rules of its own
    before = sum(daemon.status().get("drift_repairs", {}).values())
    say(f"\ndrift: a kernel rule of {rule!r} deleted behind the daemon's back")
    deleted = runner.delete_rule(lab, rule)
    if deleted is None:
        return [f"drift: no kernel rule of {rule!r} to delete"]
    chain, handle = deleted
    say(f"  $ nft delete rule inet appliance {chain} handle {handle}")
    started = time.monotonic()
    deadline = started + REPAIR_TIMEOUT
    while sum(daemon.status().get("drift_repairs", {}).values()) <= before:
        if time.monotonic() > deadline:
            return [f"drift: not repaired within {REPAIR_TIMEOUT:g}s"]
        time.sleep(0.05)
    took = time.monotonic() - started
    back = rule in runner.rule_comments(lab)
    say(f"  repaired after {took:.2f}s; the rule is {'back' if back else 'STILL MISSING'}")
    if listen:
        text = scrape(lab.ns("appliance"), listen)
        for line in metric_lines(text, ("appliance_drift_repairs_total",)):
            say(f"  {line}")
    say("  (a repair of the structure swaps the table in one transaction: counters restart)")
    return [] if back else [f"drift: {rule!r} not back after the repair"]


def _stop(daemon: LabDaemon, say: Callable[[str], None]) -> list[str]:
    say(f"\nstopping the daemon (SIGTERM to pid {daemon.pid})")
    code = daemon.stop()
    say(f"  exit status {code}")
    return [] if code == 0 else [f"the daemon exited {code} on SIGTERM"]


def _printer(stream: TextIO) -> Callable[[str], None]:
    def say(text: str) -> None:
        print(text, file=stream, flush=True)

    return say


__all__ = ["DEFAULT_PREFIX", "demo", "down", "up"]
