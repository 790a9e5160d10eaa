"""``appliance inspect --pcap FILE [--rules FILE]... [--profile PROFILE]``: the offline mode."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from appliance.errors import ApplianceError

HELP = "run the inspection engine over a pcap; alerts as EVE JSON lines on stdout"


def add_parser(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register ``inspect`` on the CLI's subparsers (the engine loads only when it runs)."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "inspect", parents=[common], help=HELP, description=HELP
    )
    parser.set_defaults(handler=cmd_inspect)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pcap", required=True, metavar="FILE", help="pcap or pcapng file")
    parser.add_argument(
        "--rules",
        action="append",
        default=[],
        metavar="FILE",
        help="a signature file, added to the profile's [inspect].rules (repeatable)",
    )
    parser.add_argument(
        "--profile", metavar="PROFILE", help="take rules, detectors and $HOME_NET from it"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse the rules when one cannot be run (default: skip it with a warning)",
    )
    parser.add_argument(
        "--stats", action="store_true", help="print packet and decoder-error counts to stderr"
    )


def cmd_inspect(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from appliance.inspect.engine import InspectionConfig, InspectionEngine
    from appliance.inspect.eve import eve_line
    from appliance.inspect.pcap import read_capture
    from appliance.inspect.settle import settle

    out = out if out is not None else sys.stdout
    profile = None
    if args.profile:
        from appliance.model.parse import load_profile

        profile = load_profile(args.profile)
    config = InspectionConfig.from_profile(profile, args.rules, strict=args.strict)
    for skipped in config.skipped:
        print(skipped.warning, file=sys.stderr)
    engine = InspectionEngine(config)
    settle()  # the rule set, kept out of the collector's passes
    try:
        handle = open(args.pcap, "rb")  # noqa: SIM115 - closed below, after the generator
    except OSError as exc:
        raise ApplianceError(f"{args.pcap}: cannot read: {exc.strerror}") from None
    with handle:
        write = out.write
        for ts, data, linktype in read_capture(handle, args.pcap):
            # (read for each packet: the compiled fast path's own process once it is loaded)
            for alert in engine.process(ts, data, linktype):
                write(eve_line(alert) + "\n")
    out.flush()
    if args.stats:
        stats = engine.stats
        print(
            f"packets {stats.packets} decoded {stats.decoded} alerts {stats.alerts} "
            f"flows {len(engine.flows)}",
            file=sys.stderr,
        )
        for reason, number in sorted(stats.errors.items()):
            print(f"decoder {reason} {number}", file=sys.stderr)
    return 0
