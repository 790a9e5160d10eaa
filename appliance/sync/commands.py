"""``appliance bundle ...`` and ``appliance hub serve``: thin front ends to the sync modules.

Building the parser imports nothing heavy; each command imports what it needs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from appliance.errors import ApplianceError, ProfileError, UsageError

DEFAULT_LISTEN = "127.0.0.1:8080"
EXIT_OK = 0
EXIT_REJECTED = 1


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "bundle", parents=[common], help="build, sign and verify hub bundles (signed policy)"
    )
    actions = p.add_subparsers(dest="bundle_command", metavar="ACTION")
    actions.required = True

    k = actions.add_parser("keygen", parents=[common], help="new Ed25519 key: KEYFILE, KEYFILE.pub")
    k.add_argument("keyfile")
    k.add_argument("--force", action="store_true", help="replace an existing key")
    k.set_defaults(handler=cmd_keygen)

    b = actions.add_parser("build", parents=[common], help="write OUTDIR/bundle.json")
    b.add_argument("outdir")
    b.add_argument("--profile", required=True, metavar="P")
    b.add_argument(
        "--sets", action="append", default=[], metavar="NAME=FILE", help="hub elements of a set"
    )
    b.add_argument("--version", required=True, type=int, metavar="N", dest="bundle_version")
    b.add_argument(
        "--expires", required=True, metavar="DUR", help="from now (7d, 12h) or an RFC 3339 UTC time"
    )
    b.add_argument(
        "--delta-from",
        metavar="BUNDLE",
        help="write set deltas against this earlier bundle.json (full one in OUTDIR/full/)",
    )
    b.set_defaults(handler=cmd_build)

    s = actions.add_parser("sign", parents=[common], help="add or replace this key's signature")
    s.add_argument("outdir")
    s.add_argument("--key", required=True, metavar="KEYFILE")
    s.set_defaults(handler=cmd_sign)

    v = actions.add_parser(
        "verify", parents=[common], help="check a bundle as the daemon would (DIR or URL)"
    )
    v.add_argument("source", metavar="DIR|URL")
    v.add_argument("--trust", action="append", nargs="+", metavar="PUB")
    v.add_argument(
        "--root",
        metavar="ROOT_JSON",
        help="a TUF repository: the root.json an appliance trusts ([hub].root), not --trust",
    )
    v.add_argument("--min-version", type=int, metavar="N", help="refuse versions below N")
    v.set_defaults(handler=cmd_verify)

    from appliance.sync import repo_commands

    repo_commands.add_parsers(actions, common)

    h = sub.add_parser("hub", parents=[common], help="the reference hub server")
    hub_actions = h.add_subparsers(dest="hub_command", metavar="ACTION")
    hub_actions.required = True
    serve = hub_actions.add_parser(
        "serve", parents=[common], help="serve DIR/PATH/bundle.json(.sig) at /PATH/"
    )
    serve.add_argument("dir")
    serve.add_argument(
        "--listen", default=DEFAULT_LISTEN, metavar="ADDR", help=f"default {DEFAULT_LISTEN}"
    )
    serve.set_defaults(handler=cmd_hub_serve)


def cmd_keygen(args: argparse.Namespace) -> int:
    from appliance.sync import keys

    key = keys.generate()
    kid = keys.write_keypair(args.keyfile, key, force=args.force)
    print(f"{args.keyfile}: Ed25519 key {kid} (public key in {keys.public_path(args.keyfile)})")
    return EXIT_OK


def cmd_build(args: argparse.Namespace) -> int:
    from appliance.model.parse import load_profile_document, parse_profile
    from appliance.storage import atomic_write
    from appliance.sync import bundle as B

    if args.bundle_version < 1:
        raise UsageError("--version: an integer, 1 or more")
    expires = B.expiry_time(args.expires, time.time())
    if expires <= time.time():
        raise UsageError("--expires: already in the past")
    base_dir = Path(os.path.dirname(os.path.abspath(args.profile)))
    document = B.profile_for_bundle(load_profile_document(args.profile))
    try:
        profile = parse_profile(document, args.profile, base_dir)
    except ProfileError as exc:
        raise ProfileError(args.profile, exc.key, exc.message) from None
    sets: dict[str, list[str]] = {}
    for item in args.sets:
        name, sep, filename = item.partition("=")
        if not sep or not name or not filename:
            raise UsageError(f"--sets: expected NAME=FILE, got {item!r}")
        try:
            text = Path(filename).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--sets {name}: cannot read {filename}: {exc}") from None
        lines = B.read_element_lines(text, filename)
        items = sets.setdefault(name, [])
        for where, element in lines:
            try:
                B.canonical_set_elements(profile, name, [element], where)
            except ValueError as exc:
                raise UsageError(f"--sets {name}: {exc}") from None
            items.append(element)
    try:
        data = B.build_bundle(document, sets, args.bundle_version, expires, base_dir)
    except ValueError as exc:
        raise UsageError(f"bundle: {exc}") from None
    out = Path(args.outdir)
    written = [out / B.BUNDLE_FILE]
    if args.delta_from:
        try:
            old = B.parse_bundle(Path(args.delta_from).read_bytes(), base_dir)
            delta = B.build_delta(data, old, base_dir)
        except OSError as exc:
            raise UsageError(f"--delta-from: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise UsageError(f"--delta-from: {exc}") from None
        atomic_write(out / B.FULL_DIR / B.BUNDLE_FILE, data, 0o644)
        written.insert(0, out / B.FULL_DIR / B.BUNDLE_FILE)
        data = delta
    atomic_write(out / B.BUNDLE_FILE, data, 0o644)
    for path in written:
        print(f"wrote {path} (version {args.bundle_version}, expires {B.format_time(expires)})")
    return EXIT_OK


def cmd_sign(args: argparse.Namespace) -> int:
    from appliance.storage import atomic_write
    from appliance.sync import bundle as B
    from appliance.sync import keys

    key = keys.load_private(args.key)
    out = Path(args.outdir)
    targets = [out / B.FULL_DIR, out] if (out / B.FULL_DIR / B.BUNDLE_FILE).exists() else [out]
    for directory in targets:  # full/ first: it is in place before the delta is announced
        try:
            data = (directory / B.BUNDLE_FILE).read_bytes()
        except OSError as exc:
            raise ApplianceError(
                f"{directory / B.BUNDLE_FILE}: cannot read: {exc.strerror or exc}"
            ) from None
        sig_path = directory / B.SIG_FILE
        try:
            existing = sig_path.read_text(encoding="ascii")
        except FileNotFoundError:
            existing = ""
        except (OSError, UnicodeDecodeError) as exc:
            raise ApplianceError(f"{sig_path}: cannot read: {exc}") from None
        atomic_write(sig_path, B.sign_text(existing, key, data).encode("ascii"), 0o644)
        print(f"signed {directory / B.BUNDLE_FILE} with key {key.public.id}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from appliance.sync import bundle as B
    from appliance.sync import keys

    if (args.root is None) == (args.trust is None):
        raise UsageError("bundle verify: give --trust PUB... (a signed pair) or --root ROOT_JSON")
    if args.root is not None:
        return _verify_tuf(args.source, args.root, args.min_version)
    trust = keys.load_trust([p for group in args.trust for p in group])
    source: str = args.source
    if source.startswith(("http://", "https://", "file://")):
        import asyncio

        data, sig, reason = asyncio.run(_fetch_pair(source))
        base_dir = Path.cwd()
    else:
        base_dir = Path(source).resolve()
        data, sig, reason = _read_pair(Path(source))
    if data is None:
        print(f"rejected: {reason}", file=sys.stderr)
        return EXIT_REJECTED
    verdict = B.verify(
        data, sig, trust, time.time(), base_dir, min_version=args.min_version, resolve=False
    )
    if verdict.result != B.APPLIED or verdict.bundle is None:
        print(f"rejected: {verdict.result}: {verdict.reason}", file=sys.stderr)
        return EXIT_REJECTED
    bundle = verdict.bundle
    kind = ""
    if bundle.deltas:
        kind = f", set deltas on base {next(iter(bundle.deltas.values())).base}"
    print(
        f"valid: version {bundle.version}, expires {bundle.expires_text}, "
        f"signed by {verdict.key_id}{kind}"
    )
    return EXIT_OK


def _verify_tuf(source: str, root_path: str, min_version: int | None) -> int:
    """The appliance's TUF workflow from ``root_path`` alone (no state: nothing is
    trusted beyond that root) over a repository directory or URL, then the bundle's checks
    (and those of ``full/bundle.json`` when targets name one). Exit 0 valid, 1 rejected with
    the reason on one line (as for a signed pair), 2 for a root file that cannot be read."""
    import asyncio

    from appliance.sync import bundle as B
    from appliance.sync import tuf
    from appliance.sync.updater import FULL_TARGET, fetch_target, refresh

    try:
        with open(root_path, "rb") as handle:
            root = handle.read(tuf.MAX_ROOT_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"{root_path}: cannot read: {exc.strerror or exc}") from None
    remote = source.startswith(("http://", "https://", "file://"))
    base_dir = Path.cwd() if remote else Path(source).resolve()
    now = time.time()

    async def check() -> tuple[B.Bundle, tuf.Trusted]:
        trusted = tuf.Trusted(root, now)
        fetch = _url_fetch(source) if remote else _directory_fetch(Path(source))
        update = await refresh(trusted, fetch)
        names = [B.BUNDLE_FILE]
        assert trusted.targets is not None
        if trusted.targets.target(FULL_TARGET) is not None:
            names.append(FULL_TARGET)
        first: B.Bundle | None = None
        for name in names:
            data = update.bundle if name == B.BUNDLE_FILE else None
            if data is None:
                data = await fetch_target(trusted, fetch, name)
            verdict = B.verify(
                data,
                b"",
                (),
                now,
                base_dir,
                min_version=min_version,
                resolve=False,
                authenticated="tuf",
            )
            if verdict.result != B.APPLIED or verdict.bundle is None:
                raise B.BundleError(verdict.result, f"{name}: {verdict.reason}")
            first = first or verdict.bundle
        assert first is not None
        return first, trusted

    try:
        bundle, trusted = asyncio.run(check())
    except B.BundleError as exc:
        print(f"rejected: {exc.result}: {' '.join(exc.reason.split())}", file=sys.stderr)
        return EXIT_REJECTED
    assert trusted.targets is not None and trusted.timestamp is not None
    kind = ""
    if bundle.deltas:
        kind = f", set deltas on base {next(iter(bundle.deltas.values())).base}"
    print(
        f"valid: version {bundle.version}, expires {bundle.expires_text}{kind}; "
        f"targets.json version {trusted.targets.version} "
        f"({tuf.count_signatures(trusted.targets, trusted.root)} of "
        f"{trusted.root.role_of(tuf.TARGETS).threshold} needed), root version "
        f"{trusted.root.version}, timestamp expires {trusted.timestamp.expires_text}"
    )
    return EXIT_OK


def _directory_fetch(directory: Path) -> Callable[[str, int], Awaitable[bytes | None]]:
    from appliance.sync import bundle as B

    async def fetch(name: str, cap: int) -> bytes | None:
        path = directory / name
        try:
            with open(path, "rb") as handle:
                data = handle.read(cap + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise B.BundleError(B.MALFORMED, f"{path}: {exc.strerror or exc}") from None
        if len(data) > cap:
            raise B.BundleError(B.TOO_LARGE, f"{name}: over {cap} bytes")
        return data

    return fetch


def _url_fetch(url: str) -> Callable[[str, int], Awaitable[bytes | None]]:
    from appliance.sync import bundle as B
    from appliance.sync.transport import Limits, TransportError, request

    if not url.endswith("/"):
        url += "/"

    async def fetch(name: str, cap: int) -> bytes | None:
        try:
            resp = await request("GET", url + name, Limits(), max_body=cap)
        except TransportError as exc:
            raise B.BundleError(exc.result, exc.reason) from None
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise B.BundleError(B.HTTP_ERROR, f"{name}: HTTP {resp.status}")
        return resp.body

    return fetch


def _read_pair(directory: Path) -> tuple[bytes | None, bytes | None, str]:
    from appliance.sync import bundle as B

    try:
        size = (directory / B.BUNDLE_FILE).stat().st_size
        if size > B.MAX_BUNDLE_BYTES:
            return None, None, f"{B.TOO_LARGE}: bundle.json over {B.MAX_BUNDLE_BYTES} bytes"
        data = (directory / B.BUNDLE_FILE).read_bytes()
    except OSError as exc:
        return None, None, f"{B.MALFORMED}: {directory / B.BUNDLE_FILE}: {exc.strerror or exc}"
    try:
        with open(directory / B.SIG_FILE, "rb") as handle:
            sig: bytes | None = handle.read(B.MAX_SIG_BYTES + 1)
    except FileNotFoundError:
        sig = None
    except OSError as exc:
        return None, None, f"{B.NO_SIGNATURE}: {directory / B.SIG_FILE}: {exc.strerror or exc}"
    return data, sig, ""


async def _fetch_pair(url: str) -> tuple[bytes | None, bytes | None, str]:
    from appliance.sync import bundle as B
    from appliance.sync.transport import Limits, TransportError, request

    if not url.endswith("/"):
        url += "/"
    limits = Limits()
    try:
        data_resp = await request("GET", url + B.BUNDLE_FILE, limits, max_body=B.MAX_BUNDLE_BYTES)
        sig_resp = await request("GET", url + B.SIG_FILE, limits, max_body=B.MAX_SIG_BYTES)
    except TransportError as exc:
        return None, None, f"{exc.result}: {exc.reason}"
    if data_resp.status != 200:
        return None, None, f"{B.HTTP_ERROR}: bundle.json: HTTP {data_resp.status}"
    if sig_resp.status == 404:
        return data_resp.body, None, ""
    if sig_resp.status != 200:
        return None, None, f"{B.HTTP_ERROR}: bundle.json.sig: HTTP {sig_resp.status}"
    return data_resp.body, sig_resp.body, ""


def cmd_hub_serve(args: argparse.Namespace) -> int:
    from appliance.sync.hub import serve

    return serve(args.dir, args.listen)
