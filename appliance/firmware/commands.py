"""``appliance firmware ...``: sign and verify slot images, update and check the A/B slots.

Building the parser imports nothing heavy; each command imports what it needs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.errors import UsageError

if TYPE_CHECKING:
    from appliance.sync.keys import PublicKey

APPLIANCE_UNIT = "appliance.service"
DEFAULT_CHECK_TIMEOUT = 300.0
MAX_RESTARTS = 3  # the service restarted this often without READY: it never gets there


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    from appliance.firmware.bootstate import DEFAULT_TRIES, MAX_TRIES

    p = sub.add_parser(
        "firmware", parents=[common], help="signed A/B updates of the arm64 firmware image"
    )
    actions = p.add_subparsers(dest="firmware_command", metavar="ACTION")
    actions.required = True

    s = actions.add_parser(
        "sign", parents=[common], help="write IMAGE's manifest (firmware.json) and sign it"
    )
    s.add_argument("image", help="a slot image (firmware/build.sh: slot.img)")
    s.add_argument("--version", required=True, type=int, metavar="N", dest="fw_version")
    s.add_argument("--key", required=True, metavar="KEYFILE", help="Ed25519 key (bundle keygen)")
    s.set_defaults(handler=cmd_sign)

    v = actions.add_parser(
        "verify", parents=[common], help="check a manifest and its image as an update would"
    )
    v.add_argument("manifest", metavar="MANIFEST")
    v.add_argument("--trust", required=True, action="append", metavar="PUB")
    v.add_argument("--running-version", type=int, default=0, metavar="N")
    v.set_defaults(handler=cmd_verify)

    u = actions.add_parser(
        "update", parents=[common], help="verify, write the other slot, boot it next on trial"
    )
    u.add_argument("manifest", metavar="MANIFEST")
    u.add_argument(
        "--trust", action="append", metavar="PUB", help="default: the image's trusted keys"
    )
    u.add_argument(
        "--tries",
        type=int,
        default=DEFAULT_TRIES,
        metavar="N",
        help=f"boots the new slot gets to reach READY (1 to {MAX_TRIES}, default {DEFAULT_TRIES})",
    )
    u.add_argument("--reboot", action="store_true", help="reboot into the new slot at once")
    u.set_defaults(handler=cmd_update)

    st = actions.add_parser("status", parents=[common], help="running slot, version, boot state")
    st.add_argument("--json", action="store_true")
    st.set_defaults(handler=cmd_status)

    b = actions.add_parser(
        "boot-check",
        parents=[common],
        help="mark the running slot good once the appliance is READY with the intended "
        "policy; a trial slot that never gets there reboots (the boot counter falls back)",
    )
    b.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_CHECK_TIMEOUT,
        metavar="SEC",
        help=f"wait at most SEC for READY (default {DEFAULT_CHECK_TIMEOUT:.0f})",
    )
    b.add_argument("--no-reboot", action="store_true", help="report only")
    b.set_defaults(handler=cmd_boot_check)


def cmd_sign(args: argparse.Namespace) -> int:
    import hashlib

    from appliance.firmware import manifest as M
    from appliance.storage import atomic_write
    from appliance.sync import keys

    image = Path(args.image)
    if args.fw_version < 1:
        raise UsageError("--version: a whole number, 1 or more")
    digest = hashlib.sha256()
    size = 0
    try:
        with open(image, "rb") as handle:
            while chunk := handle.read(1024 * 1024):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise UsageError(f"{image}: {exc.strerror or exc}") from None
    try:
        data = M.build(args.fw_version, image.name, size, digest.hexdigest())
    except M.ManifestError as exc:
        raise UsageError(f"{image}: {exc.reason}") from None
    key = keys.load_private(args.key)
    out = image.parent / M.MANIFEST_FILE
    atomic_write(out, data, mode=0o644)
    atomic_write(Path(f"{out}.sig"), M.sign("", key, data).encode(), mode=0o644)
    print(f"{out}: version {args.fw_version}, {image.name} ({size} bytes), key {key.public.id}")
    return 0


def _trust(paths: list[str] | None) -> list[PublicKey]:
    from appliance.firmware import system
    from appliance.sync import keys

    files = paths or system.trust_files()
    if not files:
        raise UsageError(f"no trusted key (--trust PUB, or {system.TRUST_DIR}/*.pub)")
    return list(keys.load_trust(tuple(files)))


def cmd_verify(args: argparse.Namespace) -> int:
    from appliance.firmware import update

    manifest, key_id, image = update.verify(
        Path(args.manifest), _trust(args.trust), args.running_version
    )
    print(
        f"{args.manifest}: good: version {manifest.version}, {image} "
        f"({manifest.size} bytes), signed by {key_id}"
    )
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from appliance.firmware import bootstate, system, update

    if not 1 <= args.tries <= bootstate.MAX_TRIES:
        raise UsageError(f"--tries: 1 to {bootstate.MAX_TRIES}")
    trust = _trust(args.trust)
    running = system.running_slot()
    target = system.partition(system.PARTITION_NAMES[bootstate.target(running)])
    result = update.update(
        Path(args.manifest),
        trust,
        running_slot=running,
        running_version=system.running_version(),
        device=target.device,
        slot_size=target.size,
        env_path=system.GRUBENV,
        tries=args.tries,
    )
    print(
        f"firmware: version {result.version} written to slot {result.slot} ({result.device}, "
        f"{result.bytes} bytes, signed by {result.key_id}); the next boot tries it "
        f"({result.tries} boot{'s' if result.tries > 1 else ''} to reach READY)",
        flush=True,
    )
    if args.reboot:
        subprocess.run(["systemctl", "reboot"], check=False)
    return 0


def _status() -> dict[str, object]:
    from appliance.firmware import bootstate, system, update

    running = system.running_slot()
    state = bootstate.read(update.read_env(system.GRUBENV))
    return {
        "running_slot": running,
        "version": system.running_version(),
        "good_slot": state.slot,
        "trial_slot": state.try_slot or None,
        "trial_boots_left": state.try_count if state.try_slot else None,
        "on_trial": state.on_trial(running),
        "failed_slot": state.failed_slot or None,
    }


def cmd_status(args: argparse.Namespace) -> int:
    status = _status()
    if args.json:
        print(json.dumps(status, sort_keys=True))
        return 0
    for key, value in status.items():
        print(f"{key + ':':18} {'-' if value is None else value}")
    return 0


def _service_state() -> tuple[str, int]:
    out = subprocess.run(
        ["systemctl", "show", APPLIANCE_UNIT, "--property=ActiveState,NRestarts"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    ).stdout
    fields = dict(line.partition("=")[::2] for line in out.splitlines())
    try:
        restarts = int(fields.get("NRestarts", "0") or 0)
    except ValueError:
        restarts = 0
    return fields.get("ActiveState", ""), restarts


def _intended_policy() -> tuple[bool, str]:
    """Whether ``appliance status`` says the intended policy is enforced (exit 0)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "appliance", "status"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        return False, "appliance status did not answer"
    lines = (done.stderr or done.stdout).strip().splitlines()
    return done.returncode == 0, lines[-1] if lines else f"status {done.returncode}"


def wait_ready(timeout: float) -> str:
    """``ready`` once the appliance is READY and enforces the intended policy (not the
    failsafe, no error), or why it does not (failed, restarting, timeout)."""
    deadline = time.monotonic() + timeout
    why = ""
    while True:
        state, restarts = _service_state()
        if state == "active":
            intended, why = _intended_policy()
            if intended:
                return "ready"
        if state == "failed":
            return f"{APPLIANCE_UNIT} failed"
        if restarts >= MAX_RESTARTS:
            return f"{APPLIANCE_UNIT} restarted {restarts} times without READY"
        if time.monotonic() >= deadline:
            return f"{APPLIANCE_UNIT} not READY within {timeout:.0f}s ({why or state})"
        time.sleep(1.0)


def cmd_boot_check(args: argparse.Namespace) -> int:
    from appliance.firmware import bootstate, system, update

    running = system.running_slot()
    version = system.running_version()
    verdict = wait_ready(args.timeout)
    env = update.read_env(system.GRUBENV)
    state = bootstate.read(env)
    if verdict == "ready":
        new = bootstate.mark_good(state, running)
        if new != state:
            update.write_env(system.GRUBENV, bootstate.write(env, new))
        print(f"firmware: slot {running} version {version} is good (appliance READY)", flush=True)
        return 0
    if state.on_trial(running) and not args.no_reboot:
        then = (
            f"slot {state.slot} boots next"
            if state.try_count == 0
            else f"{state.try_count} more boot(s) of this slot, then slot {state.slot}"
        )
        print(
            f"firmware: slot {running} version {version} on trial: {verdict}: rebooting ({then})",
            file=sys.stderr,
            flush=True,
        )
        subprocess.run(["systemctl", "reboot"], check=False)
        return 1
    print(f"firmware: slot {running} version {version}: {verdict}", file=sys.stderr, flush=True)
    return 1
