"""``appliance uninstall``: take the appliance out of the kernel.

What goes: the table (``inet appliance``) and the segment links the appliance owns (those
whose alias marks them, see :mod:`appliance.reconcile.segments`), with the namespaces it
created for them. Nothing else on the machine is touched, and the state directory (the last
good policy) stays. Without ``--yes`` the command only says what it would remove. It is an
operator's command, never part of stopping the daemon: a stopped daemon leaves its table
enforcing (fail closed).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from appliance.compile.nftjson import TABLE_FAMILY, TABLE_NAME, Json
from appliance.errors import ApplianceError
from appliance.reconcile.segments import ObservedLinks, Step, plan_segments

EXIT_OK = 0


class DaemonRunning(ApplianceError):
    """A daemon answers on the control socket: it would put everything back."""

    exit_code = 1


@dataclass(frozen=True)
class Removal:
    """What uninstalling removes: the table (if present), then the segment steps."""

    table: bool
    steps: list[Step] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.table and not self.steps

    def describe(self) -> list[str]:
        lines = [f"- table {TABLE_FAMILY} {TABLE_NAME}"] if self.table else []
        return lines + [step.describe() for step in self.steps]

    def table_commands(self) -> list[Json]:
        if not self.table:
            return []
        return [{"delete": {"table": {"family": TABLE_FAMILY, "name": TABLE_NAME}}}]


def plan_removal(table_present: bool, observed: ObservedLinks) -> Removal:
    """Everything of the appliance's in what was observed: a profile without segments,
    planned against the kernel, removes exactly the links (and created namespaces) it owns."""
    return Removal(table_present, plan_segments([], observed).remove)


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    help = "remove the appliance's table and the segment links it owns (with --yes)"
    p = sub.add_parser("uninstall", parents=[common], help=help, description=help)
    p.add_argument(
        "--yes", action="store_true", help="remove; without it, only print what would go"
    )
    p.set_defaults(handler=cmd_uninstall)


def cmd_uninstall(args: argparse.Namespace) -> int:
    from appliance.adapters.links import LinkBackend
    from appliance.adapters.nft import NftBackend

    _refuse_if_daemon(args.control_socket)
    nft = NftBackend()
    links = LinkBackend()
    removal = plan_removal(nft.list_table() is not None, links.observe())
    if removal.empty:
        print("nothing to remove")
        return EXIT_OK
    if not args.yes:
        print("would remove:")
        for line in removal.describe():
            print(f"  {line}")
        print("nothing removed: run `appliance uninstall --yes` to remove it")
        return EXIT_OK
    # The table first: the rules naming the segments' links go before the links do.
    nft.run(removal.table_commands())
    links.run(removal.steps)
    for line in removal.describe():
        print(f"removed {line.lstrip('- ')}")
    print(f"the last good policy stays in {args.state_dir}")
    return EXIT_OK


def _refuse_if_daemon(control_socket: str) -> None:
    from appliance.daemon.control import NoDaemon, request

    try:
        request(control_socket, {"op": "status"}, timeout=5.0)
    except NoDaemon:
        return
    except ApplianceError:
        pass  # something answers, if oddly: still a daemon
    raise DaemonRunning(
        f"a daemon answers on {control_socket}: stop it first (it would put the table back)"
    )
