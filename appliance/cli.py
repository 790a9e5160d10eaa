"""The ``appliance`` command: argparse front, each command a thin call into the layers."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from appliance import __version__
from appliance.daemon.defaults import INSPECT_QUEUE, RESYNC_INTERVAL
from appliance.errors import ApplianceError, UsageError

if TYPE_CHECKING:
    from appliance.engine import Engine, Known
    from appliance.model.elements_fast import Parsed
    from appliance.model.profile import Profile
    from appliance.reconcile.state import Desired

DEFAULT_STATE_DIR = "/var/lib/appliance"
DEFAULT_CONTROL_SOCKET = "/run/appliance/control.sock"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_CHANGES = 3
EXIT_NOT_INTENDED = 4  # status: the daemon runs, but not the intended policy


def main(argv: Sequence[str] | None = None) -> int:
    code = run_command(argv)
    if argv is None and not gc.isenabled():
        # A one-shot command (apply, plan) turned the cyclic collector off: what it made
        # lives until the process ends. The interpreter's last collection would walk every
        # object left (8 ms after a large delta) to free cycles that hold nothing open:
        # the command closed its files and sockets before returning. It is skipped.
        gc.freeze()
    return code


def run_command(argv: Sequence[str] | None = None) -> int:
    """The command ``argv`` (default: the process's arguments), its exit status."""
    parser = build_parser(named_command(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_INVALID
    try:
        if args.netns:
            from appliance.adapters.netns import enter_netns

            enter_netns(args.netns)
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except ApplianceError as exc:
        print(f"appliance: {exc}" if not _located(exc) else str(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # a bug: still one line, the traceback only on request
        if os.environ.get("APPLIANCE_DEBUG"):
            raise
        print(f"appliance: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _located(exc: ApplianceError) -> bool:
    """Profile and rule-file errors start with their own location."""
    from appliance.errors import ProfileError, RuleFileError

    return isinstance(exc, (ProfileError, RuleFileError))


def _common_options(defaults: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after the command's name. The command's
    copy has no defaults (argparse.SUPPRESS): else it would overwrite what was given
    before the name (``appliance --netns X apply`` must act inside X)."""
    common = argparse.ArgumentParser(add_help=False)

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    common.add_argument(
        "--netns", metavar="NAME", default=default(None), help="act inside this network namespace"
    )
    common.add_argument("--state-dir", default=default(DEFAULT_STATE_DIR), metavar="DIR")
    common.add_argument("--control-socket", default=default(DEFAULT_CONTROL_SOCKET), metavar="PATH")
    return common


# The commands of this module: when the command line names one, only its parser is built
# (the others, and the modules that add theirs, cost every command's start).
OWN_COMMANDS = frozenset(
    ("check", "compile", "plan", "apply", "confirm", "set", "run", "status", "lab", "probe")
)
_VALUED = ("--netns", "--state-dir", "--control-socket")


def named_command(argv: Sequence[str]) -> str | None:
    """The command of :data:`OWN_COMMANDS` that ``argv`` names, or None (no command,
    another one, or an option before it that is not one of the common options written
    out, such as --help or an abbreviation: then every parser is built)."""
    k = 0
    while k < len(argv):
        arg = argv[k]
        if arg in _VALUED:
            k += 2
        elif arg.startswith(tuple(f"{option}=" for option in _VALUED)):
            k += 1
        else:
            return arg if arg in OWN_COMMANDS else None
    return None


class _Unbuilt:
    """A command's parser left out (see :func:`build_parser`): its arguments are not added."""

    def add_argument(self, *args: object, **kwargs: object) -> None:
        pass


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; ``only``: with that command's parser alone (one of
    :data:`OWN_COMMANDS`), which parses its command line as the whole one does."""
    common = _common_options(defaults=False)
    parser = argparse.ArgumentParser(
        prog="appliance",
        description="Security appliance: nftables policy, segmentation, inspection, hub sync.",
        parents=[_common_options(defaults=True)],
    )
    parser.add_argument("--version", action="version", version=f"appliance {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        if only is not None and name != only:
            return _Unbuilt()  # type: ignore[return-value]
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    p = command("check", cmd_check, "parse and validate a profile; nothing touches the kernel")
    p.add_argument("profile")

    p = command("compile", cmd_compile, "print the ruleset a profile compiles to")
    p.add_argument("profile", nargs="?")
    p.add_argument(
        "--failsafe", action="store_true", help="the built-in failsafe table, as `nft -f` loads it"
    )
    p.add_argument("--json", action="store_true", help="libnftables JSON instead of nft syntax")

    p = command("plan", cmd_plan, "show what applying a profile would change in the kernel")
    p.add_argument("profile")

    p = command("apply", cmd_apply, "apply a profile once, atomically, without a daemon")
    p.add_argument("profile")
    p.add_argument(
        "--confirm", metavar="DUR", help="roll back unless `appliance confirm` comes in DUR"
    )

    command("confirm", cmd_confirm, "keep the ruleset applied with --confirm")

    p = command("set", cmd_set, "change or list a set's elements at run time")
    p.add_argument("action", choices=("add", "del", "list"))
    p.add_argument("set")
    p.add_argument("elements", nargs="*")
    p.add_argument("--timeout", metavar="DUR")

    p = command("run", cmd_run, "the daemon: enforce a profile, repair drift, serve status")
    p.add_argument("--profile", default="/etc/appliance/profile.toml", metavar="PROFILE")
    p.add_argument(
        "--resync-interval",
        type=float,
        default=RESYNC_INTERVAL,
        metavar="SEC",
        help="seconds between read-backs of the table (drift repair); default %(default)g",
    )
    p.add_argument(
        "--confirm", metavar="DUR", help="roll a reload back unless `appliance confirm` in DUR"
    )
    p.add_argument(
        "--metrics-listen", metavar="ADDR:PORT", help="overrides the profile's [metrics].listen"
    )
    p.add_argument(
        "--no-monitor",
        action="store_true",
        help="find drift by the periodic read-back only, without the kernel's nf_tables events",
    )
    p.add_argument("--alerts", metavar="FILE", help="EVE alert file; overrides [inspect].alerts")
    p.add_argument(
        "--inspect-queue",
        type=int,
        default=INSPECT_QUEUE,
        metavar="N",
        help="packets waiting for the inspection engine before samples are dropped; "
        "default %(default)s",
    )

    p = command("status", cmd_status, "state of the running daemon, over its control socket")
    p.add_argument("--json", action="store_true")

    p = command("lab", cmd_lab, "a throw-away lab of network namespaces for demos and tests")
    p.add_argument("action", choices=("up", "down", "demo"))
    p.add_argument("--prefix", default="lab-", help="namespace name prefix (default lab-)")
    p.add_argument("--profile", default=None, help="demo: the profile to enforce")

    p = command("probe", cmd_probe, "which optional kernel features this kernel has")
    p.add_argument("--json", action="store_true")
    if only is not None:
        return parser

    from appliance.sync.commands import add_parsers as add_sync_parsers

    add_sync_parsers(sub, common)  # bundle keygen|build|sign|verify, hub serve
    from appliance.firmware.commands import add_parser as add_firmware_parser

    add_firmware_parser(sub, common)  # firmware sign|verify|update|status|boot-check

    from appliance.inspect.commands import add_parser as add_inspect_parser

    add_inspect_parser(sub, common)  # inspect --pcap FILE [--rules FILE]... [--profile P]

    from appliance.uninstall import add_parser as add_uninstall_parser

    add_uninstall_parser(sub, common)  # uninstall [--yes]

    p = sub.add_parser("_rollback-watch", parents=[common])
    p.add_argument("--token", required=True)
    p.set_defaults(handler=cmd_rollback_watch)
    return parser


# ---- commands --------------------------------------------------------------------------


def _load(path: str) -> Profile:
    from appliance.model.parse import load_profile

    return load_profile(path)


def _desired(path: str, for_kernel: bool = False, here: bool = False) -> Desired:
    """The compiled profile; ``for_kernel``: also refuse what this kernel cannot do;
    ``for_kernel`` or ``here``: as this kernel and its links would hold it (flow offload)."""
    from appliance.compile.ruleset import as_profile_error
    from appliance.reconcile.state import desired_from_profile

    profile = _load(path)
    # The probe is imported only for a profile that asks what it answers (inline
    # inspection, segments, offload): else the kernel needs only the table.
    if for_kernel and (profile.inspect.mode == "inline" or profile.segments):
        from appliance.probe import require_kernel_support

        require_kernel_support(profile, path)
    devices: tuple[str, ...] = ()
    if (for_kernel or here) and profile.defaults.offload:  # this kernel's flowtable and links
        from appliance.probe import offload_for

        devices = offload_for(profile).devices
    with as_profile_error(path):
        return desired_from_profile(profile, devices)


def _engine() -> Engine:
    from appliance.adapters.links import LinkBackend
    from appliance.adapters.nft import NftBackend
    from appliance.engine import Engine

    return Engine(NftBackend(), LinkBackend())


def _duration_option(option: str, text: str | None) -> float | None:
    """Seconds of a duration option, None when absent; UsageError naming the option."""
    if not text:
        return None
    from appliance.units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def cmd_check(args: argparse.Namespace) -> int:
    desired = _desired(args.profile)
    print(f"{args.profile}: ok ({desired.name}, table hash {desired.table_hash})")
    return EXIT_OK


def _print_failsafe(args: argparse.Namespace) -> int:
    from appliance.daemon.failsafe import failsafe_desired
    from appliance.daemon.state import boot_script

    if not args.failsafe:
        raise UsageError("compile: a PROFILE, or --failsafe")
    if args.profile is not None or args.json:
        raise UsageError("compile --failsafe takes no PROFILE and no --json")
    sys.stdout.write(boot_script(failsafe_desired()))
    return EXIT_OK


def cmd_compile(args: argparse.Namespace) -> int:
    from appliance.compile.nftjson import element_command
    from appliance.compile.render import render_table
    from appliance.compile.ruleset import element_json

    if args.failsafe or args.profile is None:
        return _print_failsafe(args)
    desired = _desired(args.profile)
    elements = {
        name: [element_json(desired.types[name], text) for text in sorted(items)]
        for name, items in desired.elements.items()
    }
    if args.json:
        commands = [{"add": obj} for obj in desired.objects]
        for name, elems in elements.items():
            if elems:
                commands.append(element_command("add", name, elems))
        print(json.dumps({"nftables": commands}, indent=2))
    else:
        sys.stdout.write(render_table(desired.objects, elements))
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    desired, known, _files = _desired_after_last(args, here=True)
    engine = _engine()
    engine.known = known
    plan = engine.plan(desired)
    segments = engine.plan_segments(desired)
    lines = plan.describe() + (segments.describe() if segments is not None else [])
    if not plan.changed and not (segments is not None and segments.changed):
        print("\n".join(["no changes", *lines]))
        return EXIT_OK
    print("\n".join(lines))
    return EXIT_CHANGES


def cmd_apply(args: argparse.Namespace) -> int:
    desired, known, parsed = _desired_after_last(args, for_kernel=True)
    engine = _engine()
    seconds = _duration_option("--confirm", args.confirm)
    engine.known = known
    if seconds is not None:
        from appliance import confirm

        previous = engine.observe()
        previous_links = confirm.links_snapshot(engine.links)
    plan, segments = engine.apply(desired)
    _keep_applied(args, engine, parsed)
    changed = plan.changed or (segments is not None and segments.changed)
    for line in segments.waiting if segments is not None else []:
        print(f"appliance: {line}", file=sys.stderr)
    if seconds is not None:
        from appliance import confirm

        confirm.arm(args.state_dir, previous, seconds, args.netns, previous_links)
        print(
            f"applied {desired.name} ({desired.table_hash}); rolls back in {args.confirm} "
            "unless `appliance confirm`"
        )
        return EXIT_OK
    print(f"applied {desired.name} ({desired.table_hash})" if changed else "no changes")
    return EXIT_OK


def _recall_applied(args: argparse.Namespace, engine: Engine) -> None:
    """Start from what the last apply here left in the sets, while no transaction
    happened since (see appliance.applied)."""
    from appliance import applied

    engine.known = applied.load(args.state_dir, args.netns)


def _desired_after_last(
    args: argparse.Namespace, for_kernel: bool = False, here: bool = False
) -> tuple[Desired, Known | None, dict[str, Parsed]]:
    """The compiled profile, with what the last apply here left: the sets' elements (an
    engine starts from them while no transaction happened since) and the elements files
    as they were (a large file is diffed against its last version: only its changed lines
    are parsed); and the files parsed now, for the record (see appliance.applied).
    One-shot (``apply``, ``plan``): the cyclic garbage collector is off from here (what
    these commands make lives until they exit; its passes over a large set's objects
    cost more than the little it would free; nor is there a last collection at exit)."""
    gc.disable()
    from appliance import applied
    from appliance.model import elements_fast

    known, files = applied.load_record(args.state_dir, args.netns)
    with elements_fast.remembering(files) as parsed:
        desired = _desired(args.profile, for_kernel=for_kernel, here=here)
    return desired, known, parsed


def _keep_applied(
    args: argparse.Namespace, engine: Engine, files: Mapping[str, Parsed] | None = None
) -> None:
    """Keep what the sets hold now for the next apply here, and the last version of the
    elements ``files`` (nothing if the state directory cannot be written: the next apply
    reads the sets from the kernel and the files whole)."""
    from appliance import applied

    try:
        applied.save(args.state_dir, args.netns, engine.known_now(), files)
    except OSError as exc:
        print(f"appliance: {args.state_dir}: cannot keep the applied state: {exc}", file=sys.stderr)


def cmd_confirm(args: argparse.Namespace) -> int:
    from appliance import confirm

    answer = _daemon_request(args, {"op": "confirm"})
    if answer is not None and answer.get("ok"):
        print("confirmed")
        return EXIT_OK
    if confirm.confirm(args.state_dir):  # a one-shot `apply --confirm`
        print("confirmed")
        return EXIT_OK
    print("appliance: nothing to confirm", file=sys.stderr)
    return EXIT_FAILED


def cmd_rollback_watch(args: argparse.Namespace) -> int:
    from appliance import confirm

    engine = _engine()
    _recall_applied(args, engine)
    if confirm.wait_and_rollback(args.state_dir, args.token, engine, engine.links):
        _keep_applied(args, engine)
    return EXIT_OK


def cmd_set(args: argparse.Namespace) -> int:
    if _set_through_daemon(args):
        return EXIT_OK
    if not _net_admin():
        raise ApplianceError("set: permission denied (the kernel's sets need root)")
    engine = _engine()
    if args.action == "list":
        info = engine.set_info(args.set)
        for elem in sorted(info.elements, key=lambda e: e.text):
            extra = f" expires {elem.expires}s" if elem.expires is not None else ""
            print(f"{elem.text}{extra}")
        return EXIT_OK
    timeout = _duration_option("--timeout", args.timeout)
    before = engine.generation()
    try:
        _set_change(args, engine, timeout)
    finally:
        from appliance import applied

        applied.set_changed(args.state_dir, args.netns, args.set, before, engine.generation())
    return EXIT_OK


def _set_change(args: argparse.Namespace, engine: Engine, timeout: float | None) -> None:
    if args.action == "add":
        engine.set_add(args.set, args.elements, timeout)
        if args.set in ("autoblock_v4", "autoblock_v6") and _offloading():
            import logging  # as the daemon does: a block ends the source's offloaded flows

            from appliance.adapters.conntrack import end_flows

            end_flows(args.elements, logging.getLogger("appliance"))
    else:  # a --timeout here was refused before the daemon was asked
        engine.set_del(args.set, args.elements)


def _offloading() -> bool:
    """Whether the appliance's table here has its flowtable (``[defaults].offload``)."""
    import nftables

    from appliance.compile.nftjson import TABLE_FAMILY, TABLE_NAME
    from appliance.compile.ruleset import FLOWTABLE

    rc, _, _ = nftables.Nftables().cmd(f"list flowtable {TABLE_FAMILY} {TABLE_NAME} {FLOWTABLE}")
    return bool(rc == 0)


def _net_admin() -> bool:
    """Whether this process may change nftables (CAP_NET_ADMIN in its effective set)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 12))
    except (OSError, ValueError):
        pass
    return os.geteuid() == 0


def _daemon_request(args: argparse.Namespace, message: dict[str, object]) -> dict[str, Any] | None:
    """The daemon's answer on --control-socket, or None when no daemon answers there."""
    from appliance.daemon.control import NoDaemon, request

    try:
        return request(args.control_socket, message)
    except NoDaemon:
        return None


def _set_through_daemon(args: argparse.Namespace) -> bool:
    """Run ``set`` through the daemon; False when no daemon answers (go to the kernel)."""
    from appliance.daemon.control import checked

    if args.action != "add" and args.timeout:
        raise UsageError("--timeout goes with `set add`")
    op = {"add": "set_add", "del": "set_del", "list": "set_list"}[args.action]
    message: dict[str, object] = {"op": op, "set": args.set, "elements": list(args.elements)}
    if args.timeout:
        message["timeout"] = args.timeout
    answer = _daemon_request(args, message)
    if answer is None:
        return False
    checked(answer)
    for elem in answer.get("elements", []):
        extra = f" expires {elem['expires']}s" if elem.get("expires") is not None else ""
        print(f"{elem['text']}{extra}")
    return True


def cmd_run(args: argparse.Namespace) -> int:
    from appliance.daemon.service import DaemonConfig, run_daemon

    confirm_seconds = _duration_option("--confirm", args.confirm)
    if args.metrics_listen:
        from appliance.model.values import parse_host_port

        try:
            parse_host_port(args.metrics_listen, any_host=True, any_port=True)
        except ValueError as exc:
            raise UsageError(f"--metrics-listen: {exc}") from None
    if args.resync_interval <= 0:
        raise UsageError("--resync-interval: must be above 0")
    config = DaemonConfig(
        profile=args.profile,
        state_dir=args.state_dir,
        control_socket=args.control_socket,
        resync_interval=args.resync_interval,
        confirm_seconds=confirm_seconds,
        metrics_listen=args.metrics_listen,
        monitor=not args.no_monitor,
        alerts=args.alerts,
        inspect_queue=args.inspect_queue,
    )
    if args.inspect_queue < 1:
        raise UsageError("--inspect-queue: must be at least 1")
    return run_daemon(config)


def cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 when the intended policy is enforced, 4 when another one is (the failsafe,
    the last good in place of the profile, or an error since), 1 when no daemon answers."""
    from appliance.daemon.control import checked, request
    from appliance.daemon.health import not_ready

    status = checked(request(args.control_socket, {"op": "status"}))["status"]
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        for line in _status_lines(status):
            print(line)
    reason = not_ready(status.get("source"), status.get("last_error"))
    if reason is not None:
        print(f"appliance: not the intended policy: {reason}", file=sys.stderr)
        return EXIT_NOT_INTENDED
    return EXIT_OK


def _status_lines(status: dict[str, Any]) -> list[str]:
    import time

    applied = status.get("applied_at")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(applied)) if applied else "never"
    lines = [
        f"policy:        {status.get('policy')} ({status.get('source')})",
        f"table hash:    {status.get('table_hash')}",
        f"applied at:    {when}",
        f"last error:    {status.get('last_error') or 'none'}",
        f"uptime:        {status.get('uptime_seconds', 0):.0f}s",
        f"rss:           {status.get('rss_bytes', 0) / 1048576:.1f} MiB",
    ]
    repairs = status.get("drift_repairs") or {}
    lines.append(
        "drift repairs: "
        + (", ".join(f"{k} {v}" for k, v in sorted(repairs.items())) if repairs else "none")
    )
    if status.get("segments"):
        lines.append("segments:      " + ", ".join(status["segments"]))
    for waiting in status.get("segments_waiting") or []:
        lines.append(f"               {waiting}")
    if status.get("confirm_pending_until"):
        lines.append("confirm:       pending (`appliance confirm` keeps the reload)")
    hub = status.get("hub")
    if hub:
        lines += _hub_lines(hub)
    inspect = status.get("inspect") or {}
    if inspect.get("mode", "off") != "off":
        if inspect.get("running", True) and "received" in inspect:
            lines.append(
                f"inspect:       {inspect['mode']}: {inspect['received']} received, "
                f"{inspect['inspected']} inspected, {inspect['dropped']} dropped, "
                f"{inspect['alerts']} alerts, {inspect['blocks']} blocks"
            )
        else:
            lines.append(f"inspect:       {inspect['mode']}: not running: {inspect.get('error')}")
    offload = status.get("offload") or {}
    if offload.get("devices") or offload.get("reason"):
        devices = ", ".join(offload.get("devices") or [])
        lines.append(f"offload:       {('on: ' + devices) if devices else offload['reason']}")
    lines.append("sets:")
    for name, count in sorted((status.get("sets") or {}).items()):
        lines.append(f"  {name:<24} {count}")
    return lines


def _hub_lines(hub: dict[str, Any]) -> list[str]:
    if "url" not in hub:
        return [f"hub:           {hub.get('error')}"]
    version = hub.get("version")
    running = "no bundle" if version is None else f"bundle version {version}"
    if version is not None:
        running += f", expires {hub.get('expires')}"
        if hub.get("stale"):
            running += " (stale: expired, still enforced)"
        if not hub.get("enforced"):
            running += " (not enforced)"
    result = hub.get("result") or "not synced yet"
    if hub.get("error"):
        result += f": {hub['error']}"
    return [f"hub:           {hub.get('url')}: {running}", f"hub sync:      {result}"]


def cmd_lab(args: argparse.Namespace) -> int:
    from appliance import lab

    if args.action == "up":
        lab.up(args.prefix)
        return EXIT_OK
    if args.action == "down":
        lab.down(args.prefix)
        return EXIT_OK
    profile = args.profile or _default_demo_profile()
    return int(lab.demo(profile, prefix=args.prefix))


def _default_demo_profile() -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(here, "profiles", "edge-gateway.toml")


def cmd_probe(args: argparse.Namespace) -> int:
    from appliance.probe import probe_features

    features = probe_features()
    if args.json:
        print(json.dumps(features, sort_keys=True))
    else:
        width = max(len(name) for name in features)
        for name, present in sorted(features.items()):
            print(f"{name:<{width}}  {'yes' if present else 'no'}")
    return EXIT_OK
