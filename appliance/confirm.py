"""Commit-confirm for one-shot applies: roll back unless ``appliance confirm`` comes in time.

``apply --confirm DUR`` saves the table it replaces and the segments' links as they were
in the state directory and starts a detached watcher process; ``confirm`` removes the
pending record; the watcher, woken at the deadline, restores the saved table and puts the
links back as they were (links the apply made go, links it removed or changed come back)
if the record is still there.

The saved table is its definition and its tagged elements (the profile's and the hub's);
a set of more than ``INLINE`` elements is kept packed in ``confirm-previous.elements``
beside the record. The run-time elements (automatic blocks, ``appliance set add``) are
saved with it, with what was left of their timeouts, and put back after the restore where
they are missing (a set the apply redefined lost them), their timeouts running on from
the moment they were saved. The restore is a change from the table as it is to the saved one, made
as any other: the table and every set both keep stay, with their elements (a source both
drop never passes during the commit), element differences go as deltas, and the run-time
elements in the kernel are carried across. A record of the earlier format (the table as
listed, elements included) is restored the same way.

A restore the kernel refuses is not the end of the watcher: it writes one line to
``confirm-watch.log`` in the state directory, keeps the reason and the number of refusals
in the record (``error``, ``refused``) and tries again (1, 2, 4 ... 30 s apart) until the
restore goes through or ``appliance confirm`` removes the record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from appliance.compile.nftjson import Json, element_command, element_value
from appliance.compile.ruleset import table_object
from appliance.daemon.state import INLINE, _words, desired_from_json, desired_to_json
from appliance.errors import KernelError
from appliance.model.elements import Elements
from appliance.model.profile import Segment, SegmentKind
from appliance.reconcile.segments import DesiredSegment, LinkState, PeerState, plan_segments
from appliance.reconcile.state import (
    HUB_TAG,
    PROFILE_TAG,
    Desired,
    Observed,
    observed_from_listing,
)
from appliance.storage import atomic_write, atomic_write_parts

if TYPE_CHECKING:
    from appliance.engine import Backend, LinkBackend

PENDING = "confirm-pending.json"
PREVIOUS_ELEMENTS = "confirm-previous.elements"
WATCH_LOG = "confirm-watch.log"
RETRY_MAX = 30.0  # seconds between two tries of a restore the kernel refused
FORMAT = 2  # 1 (no "format" key): "previous" is the table as listed, elements included


def pending_path(state_dir: str) -> Path:
    return Path(state_dir) / PENDING


def arm(
    state_dir: str,
    previous: Observed,
    seconds: float,
    netns: str | None,
    links: list[Json] | None = None,
) -> None:
    """Record the table as it was (and the links, see :func:`links_snapshot`) to restore
    and start the watcher."""
    token = f"{os.getpid()}-{time.time_ns()}"
    record = pending_record(state_dir, previous, seconds, token, links)
    atomic_write(pending_path(state_dir), json.dumps(record).encode())
    command = [
        sys.executable,
        "-m",
        "appliance",
        "_rollback-watch",
        "--state-dir",
        state_dir,
        "--token",
        token,
    ]
    if netns:
        command += ["--netns", netns]
    with open(Path(state_dir) / WATCH_LOG, "ab") as log:  # what the watcher has to say
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    record["watcher"] = proc.pid
    atomic_write(pending_path(state_dir), json.dumps(record).encode())


def pending_record(
    state_dir: str,
    previous: Observed,
    seconds: float,
    token: str,
    links: list[Json] | None = None,
) -> dict[str, Any]:
    """The pending record of an apply that replaced ``previous`` (its large sets written
    beside it)."""
    return {
        "format": FORMAT,
        "token": token,
        "deadline": time.time() + seconds,
        "previous": save_table(state_dir, saved_table(previous)),
        "runtime": saved_runtime(previous),
        "saved_at": time.time(),
        "links": links,
    }


def saved_runtime(observed: Observed) -> dict[str, list[list[Any]]]:
    """The run-time elements of ``observed``: set -> [text, comment, timeout, expires]."""
    return {
        name: [[e.text, e.comment, e.timeout, e.expires] for e in elements.values()]
        for name, elements in sorted(observed.elements.items())
        if elements
    }


def confirm(state_dir: str) -> bool:
    """Keep the applied table. False if nothing was waiting for confirmation."""
    path = pending_path(state_dir)
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return False
    path.unlink(missing_ok=True)
    (Path(state_dir) / PREVIOUS_ELEMENTS).unlink(missing_ok=True)
    watcher = record.get("watcher")
    if isinstance(watcher, int):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(watcher, signal.SIGTERM)
    return True


def _wait_for(path: Path, token: str, sleep: Callable[[float], None]) -> dict[str, Any] | None:
    """The pending record once its deadline has come; None once it is gone or another
    apply's."""
    while True:
        try:
            record: dict[str, Any] = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        if record.get("token") != token:
            return None
        left = float(record["deadline"]) - time.time()
        if left <= 0:
            return record
        sleep(min(left, 1.0))


def restore_runtime(engine: TableEngine, previous: Desired | None, record: dict[str, Any]) -> None:
    """Put back the run-time elements ``record`` saved that the kernel no longer holds,
    with what is left of their timeouts (those whose timeout ended meanwhile stay out).
    Elements the kernel takes are added in one transaction; if it refuses the lot (one
    overlaps what the restored policy holds), each is tried alone and the refused ones
    left out."""
    saved = record.get("runtime") or {}
    if previous is None or not saved:
        return
    elapsed = max(0.0, time.time() - float(record.get("saved_at", time.time())))
    present = engine.current()
    for name, items in sorted(saved.items()):
        set_type = present.types.get(name)
        if set_type is None:
            continue
        elems: list[object] = []
        for text, comment, timeout, expires in items:
            if present.holds(name, text):
                continue
            body: dict[str, Any] = {"val": element_value(set_type, text)}
            if expires is not None:
                left = round(float(expires) - elapsed)
                if left <= 0:
                    continue
                body["timeout"] = left
            elif timeout is not None:
                body["timeout"] = timeout
            if comment:
                body["comment"] = comment
            elems.append({"elem": body} if len(body) > 1 else body["val"])
        if not elems:
            continue
        try:
            engine.backend.run([element_command("add", name, elems)])
        except KernelError:
            for elem in elems:
                with contextlib.suppress(KernelError):
                    engine.backend.run([element_command("add", name, [elem])])


class TableEngine(Protocol):
    """What the restore needs of :class:`appliance.engine.Engine`."""

    def apply(self, desired: Desired) -> object: ...

    def observe(self) -> Observed: ...

    def current(self) -> Observed: ...

    @property
    def backend(self) -> Backend: ...


def wait_and_rollback(
    state_dir: str,
    token: str,
    engine: TableEngine,
    links: LinkBackend | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """The watcher: sleep until the deadline, then restore if still unconfirmed.

    ``engine`` changes the table back; ``links`` puts the segments' links back. A restore
    the kernel refuses is logged in one line, counted in the record and tried again until
    it goes through or the record is confirmed away. Returns True if it rolled back.
    """
    path = pending_path(state_dir)
    record = _wait_for(path, token, sleep)
    if record is None:
        return False
    try:
        previous = load_table(state_dir, record)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # the record stays, saying why
        record["error"] = f"{path}: cannot restore the saved table: {exc}"
        atomic_write(path, json.dumps(record).encode())
        return False
    pause = 1.0
    while True:
        try:
            restore_table(engine, previous)
            restore_runtime(engine, previous, record)
            break
        except KernelError as exc:
            refused = int(record.get("refused", 0)) + 1
            record["refused"], record["error"] = refused, f"rollback refused: {exc}"
            print(f"appliance: {record['error']} (try {refused}; again in {pause:.0f} s)",
                  file=sys.stderr, flush=True)  # fmt: skip
            atomic_write(path, json.dumps(record).encode())
        sleep(pause)
        pause = min(pause * 2, RETRY_MAX)
        if _wait_for(path, token, sleep) is None:  # confirmed meanwhile
            return False
    snapshot = record.get("links")
    if links is not None and snapshot is not None:
        restore_links(links, snapshot)
    path.unlink(missing_ok=True)
    (Path(state_dir) / PREVIOUS_ELEMENTS).unlink(missing_ok=True)
    return True


def restore_table(engine: TableEngine, previous: Desired | None) -> None:
    """Bring the table back to ``previous`` (None: there was none, it goes) as any change
    is made: kept sets keep their elements, differences go as deltas."""
    if previous is None:
        if engine.observe().present:
            engine.backend.run([{"delete": table_object()}])
        return
    engine.apply(previous)


def saved_table(observed: Observed) -> Desired | None:
    """The table ``observed`` as a policy that puts it back: its definition (no handles)
    and its tagged elements, the hub's too (so hub elements added since go); the run-time
    elements are those in the kernel at the restore. None: there was no table."""
    if observed.objects is None:
        return None
    objects: list[Json] = []
    for obj in observed.objects:
        kind, body = next(iter(obj.items()))
        if kind != "metainfo":
            objects.append({kind: {k: v for k, v in body.items() if k not in ("handle", "elem")}})
    own: dict[str, Elements] = {}
    hub: dict[str, Elements] = {}
    for name, tags in observed.tagged.items():
        for tag, into in ((PROFILE_TAG, own), (HUB_TAG, hub)):
            if tags.get(tag):
                into[name] = tags[tag]
    return Desired(objects, own, dict(observed.types), hub=hub)


def save_table(state_dir: str, desired: Desired | None) -> Json | None:
    """``desired`` as the pending record keeps it; its large sets' words written packed to
    ``PREVIOUS_ELEMENTS``."""
    if desired is None:
        return None
    hub = desired.hub or {}
    offsets: dict[str, dict[str, int]] = {"own": {}, "hub": {}}
    parts: list[memoryview] = []
    offset = 0
    for part, elements in (("own", desired.elements), ("hub", hub)):
        for name, items in sorted(elements.items()):
            if items.spans is not None and len(items) > INLINE:
                offsets[part][name] = offset
                offset += items.nbytes()
                parts += _words(items)
    atomic_write_parts(Path(state_dir) / PREVIOUS_ELEMENTS, parts)
    data = desired_to_json(desired, offsets["own"])
    hub_only = Desired(desired.objects, hub, desired.types)
    data["hub"] = desired_to_json(hub_only, offsets["hub"])["elements"]
    return data


def load_table(state_dir: str, record: dict[str, Any]) -> Desired | None:
    """The table a pending record saved (either format). ValueError (one line) for a
    record of an unknown format."""
    previous = record.get("previous")
    form = record.get("format")
    if form not in (None, FORMAT):
        raise ValueError(f"unknown format {form!r}")
    if previous is None:
        return None
    if form is None:  # the table as listed
        return saved_table(observed_from_listing(previous))
    with (Path(state_dir) / PREVIOUS_ELEMENTS).open("rb") as words:
        own = desired_from_json(previous, words)
        hub = desired_from_json({**previous, "elements": previous["hub"]}, words)
    return Desired(own.objects, own.elements, own.types, hub=hub.elements)


# ---- the segments' links ------------------------------------------------------------------

_KINDS: dict[str, SegmentKind] = {"vlan": "vlan", "vrf": "vrf", "veth": "netns"}


def links_snapshot(links: LinkBackend | None) -> list[Json] | None:
    """The appliance's segment links as they are now (and the far ends of netns segments),
    to restore with :func:`restore_links`; None when links are not managed."""
    if links is None:
        return None
    observed = links.observe()
    stubs = [
        _desired(state, PeerState(state.netns, state.name))
        for state in observed.links.values()
        if state.netns is not None
    ]
    if stubs:
        observed = links.observe(stubs)  # and look into their namespaces
    snapshot: list[Json] = []
    for state in observed.links.values():
        peer = observed.peers.get(state.netns) if state.netns else None
        snapshot.append({"link": _plain(state), "peer": _plain(peer) if peer else None})
    return snapshot


def restore_links(links: LinkBackend, snapshot: list[Json]) -> None:
    """Bring the segments' links back to ``snapshot``: what is missing is made, what was
    changed is changed back, links that were not there go."""
    wanted = sorted(
        (_desired(_link(item["link"]), _peer(item.get("peer"))) for item in snapshot),
        key=lambda d: (d.link.kind != "vrf", d.link.name),  # a master exists first
    )
    plan = plan_segments(wanted, links.observe(wanted))
    links.run(plan.apply)
    links.run(plan.remove)


def _desired(state: LinkState, peer: PeerState | None) -> DesiredSegment:
    segment = Segment(
        name=state.segment,
        kind=_KINDS.get(state.kind, "vlan"),
        link=state.name,
        parent=state.parent,
        vlan_id=state.vlan_id,
        addresses=tuple(sorted(state.addresses)),
        table=state.table,
        netns=state.netns,
    )
    return DesiredSegment(segment, state, peer if state.netns else None)


def _plain(state: LinkState | PeerState) -> Json:
    out: dict[str, Any] = dataclasses.asdict(state)
    for key, value in out.items():
        if isinstance(value, frozenset):
            out[key] = sorted(value)
    return out


def _link(data: dict[str, Any]) -> LinkState:
    return LinkState(**{**data, "addresses": frozenset(data.get("addresses", ()))})


def _peer(data: dict[str, Any] | None) -> PeerState | None:
    if data is None:
        return None
    return PeerState(
        **{
            **data,
            "addresses": frozenset(data.get("addresses", ())),
            "gateways": frozenset(data.get("gateways", ())),
        }
    )
