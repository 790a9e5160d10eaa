"""Commit-confirm for one-shot applies: roll back unless ``appliance confirm`` comes in time.

``apply --confirm DUR`` saves the table it replaces and the segments' links as they were
in the state directory and starts a detached watcher process; ``confirm`` removes the
pending record; the watcher, woken at the deadline, restores the saved table and puts the
links back as they were (links the apply made go, links it removed or changed come back)
if the record is still there.
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.compile.nftjson import Json
from appliance.compile.ruleset import table_object
from appliance.model.profile import Segment, SegmentKind
from appliance.reconcile.segments import DesiredSegment, LinkState, PeerState, plan_segments
from appliance.storage import atomic_write

if TYPE_CHECKING:
    from appliance.engine import LinkBackend

PENDING = "confirm-pending.json"


def pending_path(state_dir: str) -> Path:
    return Path(state_dir) / PENDING


def arm(
    state_dir: str,
    previous: list[Json] | None,
    seconds: float,
    netns: str | None,
    links: list[Json] | None = None,
) -> None:
    """Record the table (and the links, see :func:`links_snapshot`) to restore and start the
    watcher."""
    token = f"{os.getpid()}-{time.time_ns()}"
    record = {
        "token": token,
        "deadline": time.time() + seconds,
        "previous": previous,
        "links": links,
    }
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
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    record["watcher"] = proc.pid
    atomic_write(pending_path(state_dir), json.dumps(record).encode())


def confirm(state_dir: str) -> bool:
    """Keep the applied table. False if nothing was waiting for confirmation."""
    path = pending_path(state_dir)
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return False
    path.unlink(missing_ok=True)
    watcher = record.get("watcher")
    if isinstance(watcher, int):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(watcher, signal.SIGTERM)
    return True


def wait_and_rollback(
    state_dir: str, token: str, run: object, links: LinkBackend | None = None
) -> bool:
    """The watcher: sleep until the deadline, then restore if still unconfirmed.

    ``run`` executes a libnftables command batch; ``links`` puts the segments' links back.
    Returns True if it rolled back.
    """
    path = pending_path(state_dir)
    while True:
        try:
            record = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return False
        if record.get("token") != token:
            return False
        left = float(record["deadline"]) - time.time()
        if left <= 0:
            break
        time.sleep(min(left, 1.0))
    assert callable(run)
    run(restore_commands(record.get("previous")))
    snapshot = record.get("links")
    if links is not None and snapshot is not None:
        restore_links(links, snapshot)
    path.unlink(missing_ok=True)
    return True


def restore_commands(previous: list[Json] | None) -> list[Json]:
    """Replace whatever table is there with ``previous`` (as listed), or remove it."""
    commands: list[Json] = [{"add": table_object()}, {"delete": table_object()}]
    for obj in previous or []:
        kind, body = next(iter(obj.items()))
        if kind == "metainfo":
            continue
        clean = {k: v for k, v in body.items() if k != "handle"}
        commands.append({"add": {kind: clean}})
    return commands


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
