"""``appliance bundle repo-*``: the TUF repository steps, one command per role's task.

repo-init DIR       stage root version 1: each role's public keys and threshold
repo-key DIR        stage the next root: add or revoke a role's keys, change a threshold
repo-targets DIR    stage targets.json for DIR/bundle.json (and full/bundle.json)
repo-sign DIR       add one key's signature to a staged root or targets (k of n: one
                    call per key, on the machine that holds it)
repo-publish DIR    publish what reached its threshold, with a new snapshot and timestamp
repo-timestamp DIR  a new timestamp only (the online key, from a timer)
"""

from __future__ import annotations

import argparse
from pathlib import Path

EXIT_OK = 0


def add_parsers(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    i = actions.add_parser("repo-init", parents=[common], help="stage a TUF root, version 1")
    i.add_argument("dir")
    for role in ("root", "targets", "snapshot", "timestamp"):
        i.add_argument(f"--{role}-key", required=True, action="append", metavar="PUB")
        i.add_argument(f"--{role}-threshold", type=int, default=1, metavar="K")
    i.add_argument("--expires", default="365d", metavar="DUR")
    i.set_defaults(handler=cmd_init)

    k = actions.add_parser("repo-key", parents=[common], help="stage the next root (keys)")
    k.add_argument("dir")
    k.add_argument("--role", required=True, choices=("root", "targets", "snapshot", "timestamp"))
    k.add_argument("--add", action="append", default=[], metavar="PUB")
    k.add_argument("--revoke", action="append", default=[], metavar="PUB")
    k.add_argument("--threshold", type=int, metavar="K")
    k.add_argument("--expires", default="365d", metavar="DUR")
    k.set_defaults(handler=cmd_key)

    t = actions.add_parser("repo-targets", parents=[common], help="stage targets.json")
    t.add_argument("dir")
    t.add_argument("--expires", default="90d", metavar="DUR")
    t.set_defaults(handler=cmd_targets)

    s = actions.add_parser("repo-sign", parents=[common], help="add one signature (k of n)")
    s.add_argument("dir")
    s.add_argument("--role", required=True, choices=("root", "targets"))
    s.add_argument("--key", required=True, metavar="KEYFILE")
    s.set_defaults(handler=cmd_sign)

    p = actions.add_parser("repo-publish", parents=[common], help="publish, snapshot, timestamp")
    p.add_argument("dir")
    p.add_argument("--snapshot-key", required=True, metavar="KEYFILE")
    p.add_argument("--timestamp-key", required=True, metavar="KEYFILE")
    p.add_argument("--snapshot-expires", default="7d", metavar="DUR")
    p.add_argument("--timestamp-expires", default="1d", metavar="DUR")
    p.set_defaults(handler=cmd_publish)

    ts = actions.add_parser("repo-timestamp", parents=[common], help="renew timestamp.json")
    ts.add_argument("dir")
    ts.add_argument("--key", required=True, metavar="KEYFILE")
    ts.add_argument("--expires", default="1d", metavar="DUR")
    ts.set_defaults(handler=cmd_timestamp)


def _when(text: str) -> float:
    import time

    from appliance.sync.bundle import expiry_time

    return expiry_time(text, time.time())


def cmd_init(args: argparse.Namespace) -> int:
    from appliance.sync import keys, repository

    roles = {}
    for role in ("root", "targets", "snapshot", "timestamp"):
        members = [keys.load_public(p) for p in getattr(args, f"{role}_key")]
        roles[role] = (members, getattr(args, f"{role}_threshold"))
    path = repository.init(Path(args.dir), roles, _when(args.expires))
    print(f"staged {path} (root version 1): sign it with repo-sign --role root")
    return EXIT_OK


def cmd_key(args: argparse.Namespace) -> int:
    from appliance.sync import keys, repository

    path = repository.change_keys(
        Path(args.dir),
        args.role,
        _when(args.expires),
        add=[keys.load_public(p) for p in args.add],
        revoke=[keys.load_public(p) for p in args.revoke],
        threshold=args.threshold,
    )
    print(f"staged {path}: sign it with the old root's keys and the new ones")
    return EXIT_OK


def cmd_targets(args: argparse.Namespace) -> int:
    from appliance.sync import repository

    path = repository.stage_targets(Path(args.dir), _when(args.expires))
    print(f"staged {path}: sign it with repo-sign --role targets")
    return EXIT_OK


def cmd_sign(args: argparse.Namespace) -> int:
    from appliance.sync import keys, repository

    path, count, threshold = repository.sign(Path(args.dir), args.role, keys.load_private(args.key))
    print(f"signed {path}: {count} of the {threshold} signatures needed")
    return EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    from appliance.sync import keys, repository

    written = repository.publish(
        Path(args.dir),
        keys.load_private(args.snapshot_key),
        keys.load_private(args.timestamp_key),
        _when(args.snapshot_expires),
        _when(args.timestamp_expires),
    )
    print("published " + " ".join(written))
    return EXIT_OK


def cmd_timestamp(args: argparse.Namespace) -> int:
    from appliance.sync import keys, repository

    name = repository.timestamp(Path(args.dir), keys.load_private(args.key), _when(args.expires))
    print(f"published {name}")
    return EXIT_OK
