"""Run a scenario (:mod:`appliance.lab.scenarios`) in a lab that is up, and report it."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from appliance.adapters.nsexec import run_in_netns
from appliance.lab import traffic
from appliance.lab.scenarios import Probe, Scenario, SeenBy, SetAdd, SetDel, Step, Wait
from appliance.lab.topology import Lab

PROBE_TIMEOUT = 1.0


@dataclass(frozen=True)
class StepResult:
    step: Step
    ok: bool
    observed: str


def appliance_command(appliance_cmd: Sequence[str] | None = None) -> list[str]:
    return list(appliance_cmd) if appliance_cmd else [sys.executable, "-m", "appliance"]


def run_appliance(
    lab: Lab, args: Sequence[str], state_dir: str, appliance_cmd: Sequence[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``appliance ARGS`` inside the lab's appliance namespace, with private state paths."""
    cmd = [
        *appliance_command(appliance_cmd),
        *args,
        "--netns",
        lab.ns("appliance"),
        "--state-dir",
        state_dir,
        "--control-socket",
        f"{state_dir}/control.sock",  # never a daemon of the host
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def address(lab: Lab, probe: Probe) -> str:
    if probe.dst == "appliance":
        return lab.addr("appliance", probe.family, toward=probe.toward or "lan")
    return lab.addr(probe.dst, probe.family)


def describe(lab: Lab, probe: Probe) -> str:
    where = address(lab, probe)
    what = "icmp" if probe.proto == "icmp" else f"{probe.proto}/{probe.port}"
    if probe.proto == "icmp" and probe.family == 6:
        what = "icmpv6"
    return f"{probe.src} -> {probe.dst} {where} {what}"


def run_probe(lab: Lab, probe: Probe, timeout: float = PROBE_TIMEOUT) -> str:
    ns = lab.ns(probe.src)
    addr = address(lab, probe)
    if probe.proto == "tcp":
        return traffic.tcp_connect(ns, addr, probe.port, timeout)
    if probe.proto == "udp":
        return traffic.udp_probe(ns, addr, probe.port, timeout)
    return traffic.ping(ns, addr, timeout)


@contextlib.contextmanager
def servers(lab: Lab, scenario: Scenario) -> Iterator[dict[tuple[str, str, int], traffic.Server]]:
    """Start the scenario's servers; keyed by (role, proto, port)."""
    with contextlib.ExitStack() as stack:
        found: dict[tuple[str, str, int], traffic.Server] = {}
        for spec in scenario.servers:
            server = stack.enter_context(traffic.serve(lab.ns(spec.role), spec.proto, spec.ports))
            protos = ("tcp", "udp") if spec.proto == "both" else (spec.proto,)
            for proto in protos:
                for port in spec.ports:
                    found[(spec.role, proto, port)] = server
        yield found


def run_steps(
    lab: Lab,
    scenario: Scenario,
    state_dir: str,
    out: TextIO,
    appliance_cmd: Sequence[str] | None = None,
) -> list[StepResult]:
    """Run every step of ``scenario`` (servers included), printing one line per step."""
    results: list[StepResult] = []
    with servers(lab, scenario) as running:
        for step in scenario.steps:
            result = _run_step(lab, scenario, step, running, state_dir, appliance_cmd)
            results.append(result)
            _print_result(lab, scenario, result, out)
    return results


def run_probes(
    lab: Lab, scenario: Scenario, probes: Sequence[Probe], out: TextIO
) -> list[StepResult]:
    """Run ``probes`` with the scenario's servers, printing one line per probe."""
    results: list[StepResult] = []
    with servers(lab, scenario):
        for probe in probes:
            observed = run_probe(lab, probe)
            ok = scenario.observe_only or observed == probe.expect
            result = StepResult(probe, ok, observed)
            results.append(result)
            _print_result(lab, scenario, result, out)
    return results


def _run_step(
    lab: Lab,
    scenario: Scenario,
    step: Step,
    running: dict[tuple[str, str, int], traffic.Server],
    state_dir: str,
    appliance_cmd: Sequence[str] | None,
) -> StepResult:
    if isinstance(step, Probe):
        observed = run_probe(lab, step)
        return StepResult(step, scenario.observe_only or observed == step.expect, observed)
    if isinstance(step, (SetAdd, SetDel)):
        args = ["set", "add" if isinstance(step, SetAdd) else "del", step.set, *step.elements]
        if isinstance(step, SetAdd) and step.timeout:
            args += ["--timeout", step.timeout]
        done = run_appliance(lab, args, state_dir, appliance_cmd)
        observed = f"exit {done.returncode}"
        if done.returncode != 0:
            observed += ": " + (done.stderr.strip() or done.stdout.strip())
        return StepResult(step, done.returncode == 0, observed)
    if isinstance(step, Wait):
        time.sleep(step.seconds)
        return StepResult(step, True, f"{step.seconds:g}s")
    assert isinstance(step, SeenBy)
    server = running[(step.role, step.proto, step.port)]
    peers = server.peers(step.proto, step.port)
    return StepResult(step, step.peer in peers, ", ".join(dict.fromkeys(peers)) or "nothing")


def _print_result(lab: Lab, scenario: Scenario, result: StepResult, out: TextIO) -> None:
    step = result.step
    mark = "  " if scenario.observe_only else ("ok" if result.ok else "!!")
    if isinstance(step, Probe):
        line = f"{describe(lab, step):<48} {result.observed:<8}"
        if not scenario.observe_only:
            line = f"{step.title}\n       {line}"
            if not result.ok:
                line += f" (expected {step.expect})"
        print(f"  [{mark}] {line.rstrip()}", file=out, flush=True)
    elif isinstance(step, (SetAdd, SetDel)):
        extra = f" --timeout {step.timeout}" if isinstance(step, SetAdd) and step.timeout else ""
        action = "add" if isinstance(step, SetAdd) else "del"
        cmd = f"appliance set {action} {step.set} {' '.join(step.elements)}{extra}"
        print(f"  [{mark}] {step.title}\n       $ {cmd}: {result.observed}", file=out, flush=True)
    elif isinstance(step, Wait):
        print(f"  [..] {step.title} (waiting {result.observed})", file=out, flush=True)
    elif isinstance(step, SeenBy):
        line = f"{step.title}\n       {step.role} server saw: {result.observed}"
        if not result.ok:
            line += f" (expected {step.peer})"
        print(f"  [{mark}] {line}", file=out, flush=True)


def _list_counters() -> Any:
    import nftables  # the libnftables binding; only inside the namespace's child

    nft = nftables.Nftables()
    nft.set_json_output(True)
    rc, output, error = nft.cmd("list counters table inet appliance")
    if rc != 0:
        raise RuntimeError(error.strip() or f"nft exited {rc}")
    return json.loads(output)


def _delete_rule(comment: str) -> tuple[str, int] | None:
    import nftables  # the libnftables binding; only inside the namespace's child

    nft = nftables.Nftables()
    nft.set_json_output(True)
    nft.set_handle_output(True)
    rc, output, error = nft.cmd("list table inet appliance")
    if rc != 0:
        raise RuntimeError(error.strip() or f"nft exited {rc}")
    for item in json.loads(output).get("nftables", []):
        rule = item.get("rule")
        if rule and rule.get("comment") == comment:
            chain, handle = str(rule["chain"]), int(rule["handle"])
            rc, _, error = nft.cmd(f"delete rule inet appliance {chain} handle {handle}")
            if rc != 0:
                raise RuntimeError(error.strip() or f"nft exited {rc}")
            return chain, handle
    return None


def delete_rule(lab: Lab, comment: str) -> tuple[str, int] | None:
    """Delete the first kernel rule of profile rule ``comment`` behind the daemon's back, as
    ``nft delete rule`` would; (chain, handle), or None if there is no such rule."""
    return run_in_netns(lab.ns("appliance"), _delete_rule, comment, timeout=30.0)


def _rule_comments() -> list[str]:
    import nftables

    nft = nftables.Nftables()
    nft.set_json_output(True)
    rc, output, error = nft.cmd("list table inet appliance")
    if rc != 0:
        raise RuntimeError(error.strip() or f"nft exited {rc}")
    return [
        str(item["rule"]["comment"])
        for item in json.loads(output).get("nftables", [])
        if "rule" in item and item["rule"].get("comment")
    ]


def rule_comments(lab: Lab) -> list[str]:
    """The comment of every rule of ``table inet appliance`` (a profile rule's name)."""
    return run_in_netns(lab.ns("appliance"), _rule_comments, timeout=30.0)


def counters(lab: Lab) -> list[tuple[str, int, int]]:
    """The named counters of ``table inet appliance`` in the appliance namespace."""
    data = run_in_netns(lab.ns("appliance"), _list_counters, timeout=30.0)
    found: list[tuple[str, int, int]] = []
    for item in data.get("nftables", []):
        body = item.get("counter")
        if body:
            found.append((str(body["name"]), int(body["packets"]), int(body["bytes"])))
    return found


def print_counters(lab: Lab, out: TextIO) -> None:
    rows = counters(lab)
    print("\nper-rule counters (table inet appliance):", file=out)
    print(f"  {'counter':<24} {'packets':>8} {'bytes':>10}", file=out)
    for name, packets, nbytes in rows:
        print(f"  {name:<24} {packets:>8} {nbytes:>10}", file=out)
    out.flush()
