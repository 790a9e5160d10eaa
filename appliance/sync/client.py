"""The hub client: fetch the bundle pair, verify it, decide; the daemon applies.

Use from the daemon's asyncio loop::

    client = HubClient.from_profile(profile, state_dir)   # the local profile's [hub]
    stored = client.load_last_good()          # at boot: enforce stored.bundle if not None
    while running:
        sync = await client.poll_once()
        if sync.pending:                       # verified and newer: apply it
            try:
                table_hash = apply(sync.bundle.effective_profile())
            except Exception as exc:
                sync = await client.apply_failed(sync, str(exc), current_table_hash)
            else:
                sync = await client.applied(sync, table_hash)
        else:
            await client.report(sync, current_table_hash)
        count(sync.result)
        await sleep(client.next_delay(sync, poll))

or ``await client.sync(apply)``, which does the same in one call.

The pair: the client asks for ``bundle.json.sig`` first, conditionally. A published bundle
always changes its signature file, so an unchanged signature (304) means nothing new and
costs one small request; a new one is followed by a conditional GET of ``bundle.json``, and
the two are verified together (mix-and-match safe: whatever pair arrives is checked as a
pair). A pair that fails is remembered by its ETags and not fetched or verified again; the
result is reported again at each poll until the hub offers something else (while it does,
both files are polled plainly, every poll interval, since either may bring the fix). When
the hub announces long polls (``X-Long-Poll-Max`` on its answers), the signature request
waits on the hub (``?wait=SECONDS``) until it changes.

With a TUF root (``tuf_root``, ``[hub].root``) the pair is replaced by TUF's client workflow
(:mod:`appliance.sync.updater`): ``timestamp.json`` is the file polled (and long-polled);
the root chain, snapshot, targets and the bundle by its hash follow only when it changes.
The bundle then passes the same checks (schema, expiry, rollback, deltas) without a
signature file: targets vouch for its bytes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from appliance.model.profile import Profile
from appliance.sync import bundle as B
from appliance.sync import tuf
from appliance.sync.bundle import Bundle, BundleVerdict, format_time, verify
from appliance.sync.keys import KeyFileError, PrivateKey, PublicKey, load_private, load_trust
from appliance.sync.store import BundleStore, Stored, StoreError
from appliance.sync.transport import (
    ConnectionPool,
    Limits,
    Response,
    Tls,
    TransportError,
    request,
)
from appliance.sync.tuf import Trusted
from appliance.sync.updater import FULL_TARGET, TrustStore, fetch_target, refresh

LONG_POLL_HEADER = "x-long-poll-max"
ROOT_HINT_HEADER = "x-tuf-root-version"  # the newest root the hub serves (with timestamp.json)
TIMESTAMP_FILE = "timestamp.json"
FAILED_MEMORY = 16


@dataclass(frozen=True)
class ClientLimits:
    http: Limits = field(default_factory=Limits)
    max_bundle: int = B.MAX_BUNDLE_BYTES
    max_sig: int = B.MAX_SIG_BYTES
    long_poll: float = 55.0  # wait asked of a hub that offers long polls
    min_long_poll_interval: float = 1.0  # never more than one long poll a second
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    status_timeout: float = 5.0


@dataclass(frozen=True)
class SyncResult:
    """One sync. ``result`` is a word of the metrics vocabulary (``appliance_hub_sync_total``).

    ``pending``: ``bundle`` passed every check and is newer than the running one; the daemon
    applies it and then calls :meth:`HubClient.applied` or :meth:`HubClient.apply_failed`.
    """

    result: B.Outcome
    error: str = ""
    bundle: Bundle | None = None
    pending: bool = False
    version: int | None = None  # the running version after this sync
    offered: int | None = None  # the version the hub offered, when it parsed
    stale: bool = False  # the running bundle has expired (still enforced)
    repeated: bool = False  # a remembered failure, not fetched or verified again
    time: float = 0.0
    long_polled: bool = False
    backoff: bool = False  # a transport failure (unreachable, timeout, HTTP 5xx): back off
    signature: bytes = b""
    etag: str = ""
    sig_etag: str = ""

    @property
    def ok(self) -> bool:
        return self.result in (B.APPLIED, B.NOT_MODIFIED)


def backoff_delay(failures: int, base: float, cap: float, rng: Callable[[], float]) -> float:
    """Exponential backoff with jitter: the step ``min(cap, base * 2**(n-1))`` doubles with
    each failure up to ``cap``; the delay is uniform in [step/2, 3*step/2), so it never
    exceeds 1.5 * cap and a fleet's retries spread around the step."""
    if failures <= 0:
        return 0.0
    step = min(cap, base * 2.0 ** min(failures - 1, 30))
    return float(step * (0.5 + rng()))


def next_delay(
    sync: SyncResult,
    poll: float,
    failures: int,
    limits: ClientLimits,
    rng: Callable[[], float],
    elapsed: float = 0.0,
    long_poll: bool = False,
) -> float:
    """Seconds until the next poll: backoff only after transport failures; right away when
    the next poll is a long poll (but at most one a second); else the poll interval.

    The backoff's step is capped at one poll interval (delays up to 1.5 intervals, one on
    average): a hub that comes back is polled within 1.5 intervals, so the first poll that
    can succeed is never held back by earlier failures by more than that."""
    if sync.backoff:
        return backoff_delay(failures, limits.backoff_base, min(limits.backoff_max, poll), rng)
    if long_poll:
        return max(0.0, limits.min_long_poll_interval - elapsed)
    return poll


class HubClient:
    def __init__(
        self,
        url: str,
        trust: Sequence[PublicKey],
        state_dir: str | Path,
        *,
        name: str = "",
        base_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        limits: ClientLimits | None = None,
        report_status: bool = True,
        tuf_root: bytes | None = None,
        status_key: PrivateKey | None = None,
    ) -> None:
        if not url.endswith("/"):
            url += "/"
        self.url = url
        self.trust = tuple(trust)
        self.name = name
        self.base_dir = base_dir or Path(state_dir)
        self.clock = clock
        self.rng = rng
        self.limits = limits or ClientLimits()
        self.store = BundleStore(state_dir)
        self.report_status = report_status and url.startswith(("http://", "https://"))
        self.running: Stored | None = None
        self.failures = 0  # consecutive transport failures
        self.long_poll_max = 0.0  # what the hub announced; 0: no long poll
        self.last_error = ""
        self._failed: OrderedDict[tuple[str, str], SyncResult] = OrderedDict()
        self._seen_sig_etag = ""  # the signature file's ETag of the last pair concluded
        self._incomplete = False  # a new signature whose pair could not be fetched
        self._floor: int | None = None
        self.pool = ConnectionPool()  # one keep-alive connection to the hub
        self._elapsed = 0.0
        self.tuf_root = tuf_root
        self.status_key = status_key  # signs the status reports (the hub may require it)
        self.trust_store = TrustStore(Path(state_dir) / "hub-tuf")
        self._trusted: Trusted | None = None
        self._timestamp_etag = ""
        self.frozen = ""  # TUF: why the hub may be frozen (an expired timestamp ...), or ""

    @classmethod
    def from_profile(cls, profile: Profile, state_dir: str | Path, **kw: Any) -> HubClient:
        """The client for a local profile's ``[hub]`` (ValueError if it has none); trusted
        keys are read now (KeyFileError if one cannot be)."""
        if profile.hub is None:
            raise ValueError(f"{profile.source}: no [hub] section")
        base = Path(os.path.dirname(os.path.abspath(profile.source)))
        kw.setdefault("name", profile.name)
        root = getattr(profile.hub, "root", None)
        if root and "tuf_root" not in kw:
            kw["tuf_root"] = _read_root(root)
        status_key = getattr(profile.hub, "key", None)
        if status_key and "status_key" not in kw:
            kw["status_key"] = load_private(status_key)
        kw.setdefault("base_dir", base)
        if "limits" not in kw:
            deadline = profile.hub.timeout
            hub = profile.hub
            http = Limits(
                connect_timeout=min(5.0, deadline),
                read_timeout=min(10.0, deadline),
                total_timeout=deadline,
                tls=Tls(
                    ca=getattr(hub, "ca", None) or "",
                    cert=getattr(hub, "client_cert", None) or "",
                    key=getattr(hub, "client_key", None) or "",
                    proxy=getattr(hub, "proxy", None) or "",
                ),
            )
            kw["limits"] = ClientLimits(http=http, status_timeout=min(5.0, deadline))
        return cls(profile.hub.url, load_trust(profile.hub.trust), state_dir, **kw)

    # ---- boot ---------------------------------------------------------------------------

    def load_last_good(self) -> Stored | None:
        """The stored last-good bundle (signature, or under TUF the targets that vouched
        for it, checked again), or None."""
        try:
            if self.tuf_root is not None:
                self.running = self._load_tuf()
            else:
                self.running = self.store.load(self.trust, self.clock(), self.base_dir)
        except StoreError as exc:
            self.running = None
            if str(exc) != "no bundle stored":
                self.last_error = str(exc)
            return None
        self._seen_sig_etag = self.running.sig_etag
        return self.running

    def _load_tuf(self) -> Stored:
        """The stored bundle, checked again against the ``targets.json`` kept with it: that
        file must still carry the targets role's threshold under the trusted root (a key
        revoked since disowns it) and name the bundle's exact length and SHA-256 (a file
        changed on disk after it was verified is refused). A bundle stored without its
        targets is checked against the trusted targets."""
        now = self.clock()
        stored = self.store.load(None, now, self.base_dir)
        try:
            trusted = self._trusted or self.trust_store.load(self.tuf_root or b"", now)
        except B.BundleError as exc:
            raise StoreError(f"stored bundle refused: [hub].root: {exc.reason}") from None
        self._trusted = trusted
        self._note_freshness(trusted, now)
        try:
            if stored.signature:
                targets = tuf.parse(stored.signature, tuf.TARGETS)
                tuf.check_threshold(targets, trusted.root)
            elif trusted.targets is not None:
                targets = trusted.targets
            else:
                raise B.BundleError(B.BAD_SIGNATURE, "no targets.json vouches for it")
            data = stored.bundle.data
            if not any(
                _vouched(data, targets.target(name)) for name in (B.BUNDLE_FILE, FULL_TARGET)
            ):
                raise B.BundleError(
                    B.BAD_SIGNATURE,
                    f"not the bundle targets.json version {targets.version} signed for "
                    "(changed since it was verified)",
                )
        except B.BundleError as exc:
            raise StoreError(f"stored bundle refused: {exc.result}: {exc.reason}") from None
        return stored

    def _note_freshness(self, trusted: Trusted, now: float) -> None:
        """Freeze: an expired root, timestamp, snapshot or targets makes the appliance say it
        may be frozen (``stale``); what runs stays enforced."""
        self.frozen = ""
        for meta in (trusted.root, trusted.timestamp, trusted.snapshot, trusted.targets):
            if meta is not None and meta.expired(now):
                self.frozen = f"{meta.role}.json version {meta.version} expired {meta.expires_text}"
                return

    @property
    def running_version(self) -> int | None:
        return self.running.bundle.version if self.running else None

    @property
    def stale(self) -> bool:
        """The running bundle has expired, or (TUF) the hub's metadata has: the hub may be
        frozen. Either way what runs stays enforced."""
        if self.frozen:
            return True
        return bool(self.running and self.running.bundle.expired(self.clock()))

    # ---- one poll -----------------------------------------------------------------------

    async def poll_once(self, running_version: int | None = None) -> SyncResult:
        """Fetch and verify; never raises for network or data problems.

        The client tracks the running bundle itself (stored, or applied through it);
        ``running_version`` adds a floor when the daemon knows of a higher version.
        """
        self._floor = running_version
        started = time.monotonic()
        try:
            sync = await self._poll()
        except TransportError as exc:
            backoff = exc.result in (B.UNREACHABLE, B.HTTP_ERROR)
            sync = self._result(exc.result, exc.reason, backoff=backoff)
            if backoff:
                # Whatever answers next must announce long polls again: a hub that failed
                # (or whatever took its address) is polled plainly until it does.
                self.long_poll_max = 0.0
        self._elapsed = time.monotonic() - started
        self.failures = self.failures + 1 if sync.backoff else 0
        if not sync.ok and not sync.pending:
            self.last_error = sync.error
        return sync

    async def _poll(self) -> SyncResult:
        if self.tuf_root is not None:
            return await self._poll_tuf()
        running = self.running
        wait = 0.0
        sig_headers: dict[str, str] = {}
        if self._seen_sig_etag:
            sig_headers["If-None-Match"] = self._seen_sig_etag
            # After a failure both files are polled plainly: either may bring the fix.
            if self.long_poll_max > 0 and not self._failing():
                wait = min(self.limits.long_poll, self.long_poll_max)
        sig_url = self.url + B.SIG_FILE + (f"?wait={wait:g}" if wait else "")
        sig_resp = await self._get(sig_url, sig_headers, self.limits.max_sig, wait)
        long_polled = wait > 0
        if sig_resp.status == 404:
            probe = await self._get(self.url + B.BUNDLE_FILE, {}, self.limits.max_bundle, head=True)
            if probe.status == 200:
                return self._failure_for(("", ""), B.NO_SIGNATURE, "bundle.json.sig: HTTP 404")
            return self._http_error(sig_resp, B.SIG_FILE)
        if sig_resp.status == 304:
            return await self._unchanged(long_polled)
        if sig_resp.status != 200:
            return self._http_error(sig_resp, B.SIG_FILE)
        signature = sig_resp.body
        sig_etag = sig_resp.etag
        if running is not None and sig_etag and sig_etag == running.sig_etag:
            self._seen_sig_etag = sig_etag
            self._incomplete = False
            return await self._unchanged(long_polled)
        # A version counts as fetched only once bundle and signature were verified together:
        # until then the signature is asked for with the ETag of the last pair concluded.
        self._incomplete = True

        json_headers: dict[str, str] = {}
        if running is not None and running.etag:
            json_headers["If-None-Match"] = running.etag
        json_resp = await self._get(self.url + B.BUNDLE_FILE, json_headers, self.limits.max_bundle)
        if json_resp.status == 304 and running is not None:
            data, etag = running.bundle.data, running.etag
        elif json_resp.status == 200:
            data, etag = json_resp.body, json_resp.etag
        else:
            return self._http_error(json_resp, B.BUNDLE_FILE)
        key = (etag or hashlib.sha256(data).hexdigest(), sig_etag or _digest(signature))
        remembered = self._failed.get(key)
        if remembered is not None:
            self._concluded(sig_etag)
            return replace(remembered, repeated=True, time=self.clock(), long_polled=long_polled)
        verdict = self._verify(data, signature)
        if verdict.wrong_base:
            full = await self._fetch_full(verdict)
            if full is not None:
                if not full.backoff and full.result != B.HTTP_ERROR:
                    self._concluded(sig_etag)
                return replace(full, long_polled=long_polled)
        self._concluded(sig_etag)
        return self._conclude(verdict, key, signature, etag, sig_etag, long_polled)

    def _concluded(self, sig_etag: str) -> None:
        """The pair behind this signature was verified (or its failure remembered)."""
        self._seen_sig_etag = sig_etag
        self._incomplete = False

    async def _poll_tuf(self) -> SyncResult:
        now = self.clock()
        if self._trusted is None:
            try:
                self._trusted = self.trust_store.load(self.tuf_root or b"", now)
            except B.BundleError as exc:
                return self._result(exc.result, f"[hub].root: {exc.reason}")
        trusted = self._trusted
        trusted.now = now
        wait = 0.0
        if self.long_poll_max > 0 and self._timestamp_etag and not self._failing():
            wait = min(self.limits.long_poll, self.long_poll_max)
            if trusted.timestamp is not None:  # freeze: the wait ends when the timestamp expires
                wait = max(0.0, min(wait, trusted.timestamp.expires - now))
        long_polled = wait > 0
        announced: list[int | None] = [None]

        async def fetch(name: str, cap: int) -> bytes | None:
            headers: dict[str, str] = {}
            url = self.url + name
            delay = 0.0
            if name == TIMESTAMP_FILE and wait:
                headers["If-None-Match"] = self._timestamp_etag
                url += f"?wait={wait:g}"
                delay = wait
            resp = await self._get(url, headers, cap, delay)
            if name == TIMESTAMP_FILE:
                announced[0] = _announced_root(resp)
            if resp.status == 304:
                return trusted.timestamp.data if trusted.timestamp else None
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise TransportError(B.HTTP_ERROR, f"{name}: HTTP {resp.status}")
            if name == TIMESTAMP_FILE:
                self._timestamp_etag = resp.etag
            return resp.body

        have = self.running.bundle.sha256 if self.running else ""
        try:
            update = await refresh(trusted, fetch, have, newest_root=lambda: announced[0])
            self.frozen = ""
            data = update.bundle
            if data is None:
                self.trust_store.save(trusted)
                self._incomplete = False
                self._keep_targets(trusted)
                return self._result(B.NOT_MODIFIED, long_polled=long_polled)
            verdict = self._verify(data, b"", authenticated="tuf")
            if verdict.wrong_base:
                data = await fetch_target(trusted, fetch, FULL_TARGET)
                verdict = self._verify(data, b"", authenticated="tuf")
                if verdict.result == B.APPLIED and verdict.bundle and verdict.bundle.is_delta:
                    verdict = BundleVerdict(B.MALFORMED, "full/ holds a delta bundle")
        except B.BundleError as exc:
            self._incomplete = True  # what failed is fetched again at the next poll
            if exc.result == B.EXPIRED:
                self.frozen = exc.reason
            return self._result(exc.result, exc.reason, long_polled=long_polled)
        self.trust_store.save(trusted)
        self._incomplete = False
        digest = _digest(data)
        key = (digest, "tuf")
        remembered = self._failed.get(key)
        if remembered is not None:
            return replace(remembered, repeated=True, time=self.clock(), long_polled=long_polled)
        # The targets that vouch for the bundle are kept with it (checked again at boot).
        vouch = trusted.targets.data if trusted.targets is not None else b""
        return self._conclude(verdict, key, vouch, digest, "tuf", long_polled)

    def _keep_targets(self, trusted: Trusted) -> None:
        """New targets naming the running bundle (re-signed, keys rotated): keep them with
        it, so the bundle still checks out at boot once the old targets keys are revoked."""
        running, targets = self.running, trusted.targets
        if running is None or targets is None or running.signature == targets.data:
            return
        data = running.bundle.data
        if any(_vouched(data, targets.target(name)) for name in (B.BUNDLE_FILE, FULL_TARGET)):
            self._save(running.bundle, targets.data, running.etag, running.sig_etag)

    def _failing(self) -> bool:
        if self._incomplete:
            return True
        return any(sig == self._seen_sig_etag for _, sig in self._failed)

    async def _unchanged(self, long_polled: bool) -> SyncResult:
        """The signature file did not change: the running pair, or a remembered failure."""
        for (etag, sig_etag), failure in reversed(self._failed.items()):
            if sig_etag != self._seen_sig_etag:
                continue
            # The signature is the failed one; has bundle.json been fixed since?
            resp = await self._get(
                self.url + B.BUNDLE_FILE,
                {"If-None-Match": etag} if etag.startswith(('"', "W/")) else {},
                self.limits.max_bundle,
            )
            if resp.status == 304 or (resp.status == 200 and resp.etag == etag):
                return replace(failure, repeated=True, time=self.clock(), long_polled=long_polled)
            if resp.status != 200:
                return self._http_error(resp, B.BUNDLE_FILE)
            sig_resp = await self._get(self.url + B.SIG_FILE, {}, self.limits.max_sig)
            if sig_resp.status != 200:
                return self._http_error(sig_resp, B.SIG_FILE)
            key = (resp.etag or _digest(resp.body), sig_resp.etag or _digest(sig_resp.body))
            verdict = self._verify(resp.body, sig_resp.body)
            return self._conclude(
                verdict, key, sig_resp.body, resp.etag, sig_resp.etag, long_polled
            )
        return self._result(B.NOT_MODIFIED, long_polled=long_polled)

    async def _fetch_full(self, verdict: BundleVerdict) -> SyncResult | None:
        """A delta on the wrong base: the same version as a full bundle, from ``full/``."""
        base = self.url + B.FULL_DIR + "/"
        try:
            sig_resp = await self._get(base + B.SIG_FILE, {}, self.limits.max_sig)
            data_resp = await self._get(base + B.BUNDLE_FILE, {}, self.limits.max_bundle)
        except TransportError as exc:
            backoff = exc.result in (B.UNREACHABLE, B.HTTP_ERROR)
            reason = f"{verdict.reason}; full bundle: {exc.reason}"
            return self._result(exc.result, reason, backoff=backoff)
        if sig_resp.status != 200 or data_resp.status != 200:
            bad = sig_resp if sig_resp.status != 200 else data_resp
            return self._result(B.HTTP_ERROR, f"{verdict.reason}; full bundle: HTTP {bad.status}")
        full = self._verify(data_resp.body, sig_resp.body)
        if full.result == B.APPLIED and full.bundle is not None and full.bundle.is_delta:
            full = BundleVerdict(B.MALFORMED, "full/ holds a delta bundle")
        key = (data_resp.etag or _digest(data_resp.body), sig_resp.etag or _digest(sig_resp.body))
        return self._conclude(full, key, sig_resp.body, data_resp.etag, sig_resp.etag, False)

    def _verify(self, data: bytes, signature: bytes, authenticated: str = "") -> BundleVerdict:
        running = self.running.bundle if self.running else None
        return verify(
            data,
            signature,
            self.trust,
            self.clock(),
            self.base_dir,
            running=running,
            min_version=None if self._floor is None else self._floor + 1,
            max_bytes=self.limits.max_bundle,
            authenticated=authenticated,
        )

    def _conclude(
        self,
        verdict: BundleVerdict,
        key: tuple[str, str],
        signature: bytes,
        etag: str,
        sig_etag: str,
        long_polled: bool,
    ) -> SyncResult:
        if verdict.result == B.APPLIED and verdict.bundle is not None:
            return self._result(
                B.APPLIED,
                bundle=verdict.bundle,
                pending=True,
                offered=verdict.bundle.version,
                signature=signature,
                etag=etag,
                sig_etag=sig_etag,
                long_polled=long_polled,
            )
        if verdict.result == B.NOT_MODIFIED and self.running is not None:
            # Same bytes, another signature file (a key added or rotated): keep the new one.
            if signature != self.running.signature:
                self._save(self.running.bundle, signature, etag, sig_etag)
            if self.running.bundle.expired(self.clock()):
                return self._result(B.EXPIRED, "the hub offers the running bundle, expired")
            return self._result(B.NOT_MODIFIED, long_polled=long_polled)
        return self._failure_for(key, verdict.result, verdict.reason, long_polled=long_polled)

    def _failure_for(
        self, key: tuple[str, str], result: B.Outcome, error: str, long_polled: bool = False
    ) -> SyncResult:
        sync = self._result(result, error, long_polled=long_polled)
        if key != ("", ""):
            self._failed[key] = sync
            while len(self._failed) > FAILED_MEMORY:
                self._failed.popitem(last=False)
        return sync

    def _http_error(self, resp: Response, what: str) -> SyncResult:
        return self._result(B.HTTP_ERROR, f"{what}: HTTP {resp.status}")

    def _result(self, result: B.Outcome, error: str = "", **kw: object) -> SyncResult:
        running = self.running
        stale = self.stale
        if result == B.NOT_MODIFIED and stale:
            result, error = B.EXPIRED, error or "the running bundle has expired"
        return SyncResult(
            result=result,
            error=error,
            version=running.bundle.version if running else None,
            stale=stale,
            time=self.clock(),
            **kw,  # type: ignore[arg-type]
        )

    async def _get(
        self, url: str, headers: dict[str, str], cap: int, wait: float = 0.0, head: bool = False
    ) -> Response:
        method = "HEAD" if head else "GET"
        resp = await request(
            method, url, self.limits.http, headers, wait=wait, max_body=cap, pool=self.pool
        )
        announced = resp.headers.get(LONG_POLL_HEADER)
        if announced is not None:
            try:
                self.long_poll_max = max(0.0, float(announced))
            except ValueError:
                self.long_poll_max = 0.0
        if resp.status >= 500:
            raise TransportError(B.HTTP_ERROR, f"{url.rsplit('/', 1)[-1]}: HTTP {resp.status}")
        return resp

    # ---- after the daemon applied (or not) ----------------------------------------------

    async def applied(self, sync: SyncResult, table_hash: str = "") -> SyncResult:
        """The daemon applied ``sync.bundle``: keep it as last good and report."""
        assert sync.bundle is not None
        self._save(sync.bundle, sync.signature, sync.etag, sync.sig_etag)
        self.last_error = ""
        done = replace(
            sync, pending=False, version=sync.bundle.version, stale=False, time=self.clock()
        )
        await self.report(done, table_hash)
        return done

    async def apply_failed(self, sync: SyncResult, error: str, table_hash: str = "") -> SyncResult:
        """The kernel refused ``sync.bundle``: remember it, keep what runs, report."""
        failed = self._failure_for(
            (sync.etag or _digest(sync.bundle.data if sync.bundle else b""), sync.sig_etag),
            B.APPLY_FAILED,
            " ".join(error.split()),
        )
        self.last_error = failed.error
        await self.report(failed, table_hash)
        return failed

    async def rolled_back(self, sync: SyncResult, error: str, table_hash: str = "") -> SyncResult:
        """The daemon applied ``sync.bundle`` but the hub was unreachable afterwards, so it
        restored what ran before (commit-confirm): nothing is stored, the bundle is fetched
        again at the next poll, and the result is a transport failure (back off)."""
        self._seen_sig_etag = self.running.sig_etag if self.running else ""
        self.failures += 1
        self.last_error = " ".join(error.split())
        failed = self._result(B.UNREACHABLE, self.last_error, backoff=True)
        await self.report(failed, table_hash)
        return failed

    def _save(self, bundle: Bundle, signature: bytes, etag: str, sig_etag: str) -> None:
        self.store.save(bundle, signature, etag, sig_etag, now=self.clock())
        self.running = Stored(bundle, signature, etag, sig_etag, self.clock(), False)
        self._seen_sig_etag = sig_etag

    async def report(self, sync: SyncResult, table_hash: str = "") -> bool:
        """POST the status to ``url + "status"``; a failure is ignored (False)."""
        if not self.report_status:
            return False
        body = json.dumps(
            {
                "name": self.name,
                "version": sync.version,
                "result": sync.result,
                "last_error": sync.error or self.last_error or None,
                "table_hash": table_hash or None,
                "time": format_time(sync.time or self.clock()),
                "stale": sync.stale,
                "sent": round(time.time(), 6),
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.status_key is not None:
            signature = base64.b64encode(self.status_key.sign(body)).decode("ascii")
            headers["X-Appliance-Signature"] = f"{self.status_key.public.id} {signature}"
        limits = Limits(
            connect_timeout=self.limits.status_timeout,
            read_timeout=self.limits.status_timeout,
            total_timeout=self.limits.status_timeout,
            max_body=64 * 1024,
            tls=self.limits.http.tls,
        )
        try:
            resp = await request(
                "POST",
                self.url + "status",
                limits,
                headers,
                body,
                pool=self.pool,
            )
        except TransportError:
            return False
        return 200 <= resp.status < 300

    async def check_reachable(self) -> bool:
        """Can the hub still be reached (after applying a bundle, before confirming it)?"""
        try:
            probe = TIMESTAMP_FILE if self.tuf_root is not None else B.SIG_FILE
            resp = await request(
                "GET", self.url + probe, self.limits.http, max_body=self.limits.max_sig
            )
        except TransportError:
            return False
        return resp.status < 500

    def close(self) -> None:
        """Close the kept-alive connection (the client stays usable)."""
        self.pool.close()

    def next_delay(self, sync: SyncResult, poll: float) -> float:
        long_poll = self.long_poll_max > 0 and not self._failing()
        return next_delay(
            sync, poll, self.failures, self.limits, self.rng, self._elapsed, long_poll
        )

    async def sync(
        self, apply: Callable[[Bundle], Awaitable[str]], table_hash: str = ""
    ) -> SyncResult:
        """Poll, and when a newer bundle passes every check, ``apply`` it (returning the new
        table hash, raising if the kernel refused it); store and report the outcome."""
        result = await self.poll_once()
        if result.pending and result.bundle is not None:
            try:
                new_hash = await apply(result.bundle)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                return await self.apply_failed(result, str(exc) or type(exc).__name__, table_hash)
            return await self.applied(result, new_hash)
        await self.report(result, table_hash)
        return result


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _announced_root(resp: Response) -> int | None:
    """The newest root version the hub says it serves (``X-TUF-Root-Version``), or None
    when it says nothing usable (then the next root is asked for, as from any server)."""
    text = resp.headers.get(ROOT_HINT_HEADER, "")
    return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else None


def _vouched(data: bytes, entry: dict[str, Any] | None) -> bool:
    """``data`` has the length and SHA-256 of a targets entry."""
    if entry is None:
        return False
    try:
        tuf.check_file(data, entry, "bundle.json")
    except B.BundleError:
        return False
    return True


def _read_root(path: str) -> bytes:
    """The installed TUF root (``[hub].root``); KeyFileError if it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read(1024 * 1024)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
