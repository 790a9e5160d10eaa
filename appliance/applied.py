"""What the last one-shot ``appliance apply`` left in the kernel, kept on disk.

A new process knows nothing of the kernel's sets; reading a million elements back takes
half a minute (a netlink dump walks the set again for every message). So ``apply`` keeps,
per network namespace, the elements it left in the address and port sets without timeouts
with the ruleset generation it left (:class:`appliance.engine.Known`). The next ``apply``
takes them from here while the generation is still that one (no transaction happened
since, by anyone); once it moved, every set is read from the kernel again.

One file per namespace in the state directory, replaced whole (not fsynced: see
``_replace``): a line of JSON (the generation, the namespace's identity, each set's
handle, its tags' spans and run-time elements; the elements files whose every line was
one address, each with its bytes and its spans or the set's tag whose spans they are)
followed by the spans' words (little-endian; once where every span is one value) and the
files' bytes: the next apply diffs a
file against its bytes kept here and parses only the lines that changed
(:mod:`appliance.model.elements_fast`). The namespace's identity (the boot
and the namespace's cookie) keeps a record from matching another namespace, the same name
made anew, or the same namespace after a reboot, whose generation happens to be the same.
A record that cannot be read is ignored: the sets are read from the kernel. The records of
named namespaces that no longer exist are removed when a record is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import struct
import sys
from array import array
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from appliance.engine import Known
from appliance.model.elements import Elements
from appliance.model.elements_fast import Parsed, Recalled
from appliance.model.intervals import Spans
from appliance.reconcile.state import Element

FORMAT = 3
NETNS_DIR = Path("/run/netns")


def record_path(state_dir: str | os.PathLike[str], netns: str | None) -> Path:
    key = re.sub(r"[^A-Za-z0-9_.-]", "_", netns) if netns else "host"
    if key in (".", ".."):
        key = key.replace(".", "_")
    return Path(state_dir) / f"applied-{key}.state"


SO_NETNS_COOKIE = 71  # Linux 5.14: a namespace's number, never given to another one


def identity() -> str:
    """This boot and the network namespace this thread is in: its cookie (never reused
    while the machine runs, unlike the namespace's inode) where the kernel has it."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        here = f"{boot}:{os.stat('/proc/self/ns/net').st_ino}"
    except OSError:
        return ""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            cookie = struct.unpack("=Q", sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))
        return f"{here}:{cookie[0]}"
    except OSError:
        return here


def save(
    state_dir: str | os.PathLike[str],
    netns: str | None,
    known: Known | None,
    files: Mapping[str, Parsed] | None = None,
) -> None:
    """Keep ``known`` for the next apply in this namespace (None: forget what was kept),
    and ``files``: the last version of elements files parsed at C speed."""
    path = record_path(state_dir, netns)
    here = identity()
    if known is None or not here:
        path.unlink(missing_ok=True)
        return
    sets: dict[str, Any] = {}
    parts: list[memoryview] = []
    offset = 0
    placed: dict[int, dict[str, str]] = {}  # id of kept elements -> their set and tag

    def spans_place(items: Elements) -> dict[str, Any]:
        nonlocal offset
        assert items.spans is not None
        words = items.spans.words()
        points = items.spans.points  # the same words for both bounds: kept once
        place = {
            "type": items.set_type,
            "interval": items.interval,
            "width": items.spans.width,
            "spans": len(items.spans),
            "points": points,
            "offset": offset,
        }
        for part in words[: len(words) // 2] if points else words:
            if sys.byteorder != "little":
                part = array(part.typecode, part)
                part.byteswap()
            parts.append(memoryview(part))
            offset += part.itemsize * len(part)
        return place

    for name, handle in sorted(known.handles.items()):
        tags: dict[str, Any] = {}
        for tag, items in sorted(known.tagged.get(name, {}).items()):
            if items.spans is None:
                continue
            tags[tag] = spans_place(items)
            placed[id(items)] = {"set": name, "tag": tag}
        runtime = [[e.text, e.comment] for e in known.elements.get(name, {}).values()]
        sets[name] = {"handle": handle, "tags": tags, "runtime": runtime}
    kept: dict[str, Any] = {}
    for filename, parsed in sorted((files or {}).items()):
        if not parsed.unique or parsed.elements.spans is None:
            continue  # a diff would not be taken: the file is parsed whole next time
        spans = placed.get(id(parsed.elements)) or spans_place(parsed.elements)
        kept[filename] = {
            "type": parsed.set_type,
            "interval": parsed.interval,
            "lines": parsed.lines,
            "spans": spans,
            "offset": offset,
            "length": len(parsed.data),
        }
        parts.append(memoryview(parsed.data))
        offset += len(parsed.data)
    header = {
        "format": FORMAT,
        "identity": here,
        "generation": known.generation,
        "sets": sets,
        "files": kept,
    }
    _replace(path, [memoryview(json.dumps(header).encode() + b"\n"), *parts])
    _prune(path.parent)


def _replace(path: Path, parts: list[memoryview]) -> None:
    """Write ``path`` whole through a temporary file and a rename, without fsync (on this
    machine's disk a durable write costs tens of milliseconds, more than a small apply):
    only a crash of the machine can leave the file torn, and a record of another boot is
    never taken. The old record is removed before the rename: ext4 starts writing a file
    renamed over another one out at once (``auto_da_alloc``), 10 ms for a million-element
    record; a process killed between the two leaves no record (the next apply reads the
    sets from the kernel)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # This process's own temporary name (tempfile's random names cost its import: 1 ms of
    # a one-shot apply); one left by a killed process of the same number goes first.
    tmp = path.parent / f".{path.name}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                out.write(part)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def set_changed(
    state_dir: str | os.PathLike[str],
    netns: str | None,
    name: str,
    before: int | None,
    after: int | None,
) -> None:
    """After ``appliance set`` changed set ``name`` (the generation went from ``before`` to
    ``after``): if the record stood before and that change was the only transaction, it
    stands again for every other set (only ``name`` is read at the next apply); otherwise
    it is forgotten. Nothing happens without a record."""
    path = record_path(state_dir, netns)
    if not path.exists():
        return
    known, files = load_record(state_dir, netns)
    try:
        if known is None or before is None or after is None or known.generation != before:
            path.unlink(missing_ok=True)
            return
        if after == before:
            return  # nothing was committed
        if after != before + 1:
            path.unlink(missing_ok=True)
            return
        for part in (known.handles, known.tagged, known.elements):
            part.pop(name, None)
        known.generation = after
        save(state_dir, netns, known, files)
    except OSError:
        return


def _prune(state_dir: Path) -> None:
    """Remove the records of named namespaces that no longer exist."""
    for record in state_dir.glob("applied-*.state"):
        key = record.name[len("applied-") : -len(".state")]
        if key != "host" and not (NETNS_DIR / key).exists():
            record.unlink(missing_ok=True)


def load(state_dir: str | os.PathLike[str], netns: str | None) -> Known | None:
    """What the last apply in this namespace kept, or None (none, another namespace or
    boot, or a record that cannot be read)."""
    return load_record(state_dir, netns)[0]


def load_record(
    state_dir: str | os.PathLike[str], netns: str | None
) -> tuple[Known | None, dict[str, Parsed]]:
    """What the last apply in this namespace kept (see :func:`load`), and the last version
    of the elements files it kept (file name -> its bytes and elements)."""
    try:
        with record_path(state_dir, netns).open("rb") as source:
            header = json.loads(source.readline())
            if header.get("format") != FORMAT or header.get("identity") != identity():
                return None, {}
            start = source.tell()
            handles: dict[str, int] = {}
            tagged: dict[str, dict[str, Elements]] = {}
            elements: dict[str, dict[str, Element]] = {}
            for name, body in header["sets"].items():
                handles[name] = int(body["handle"])
                tagged[name] = {
                    tag: _read(source, start, place) for tag, place in body["tags"].items()
                }
                elements[name] = {
                    str(text): Element(str(text), comment) for text, comment in body["runtime"]
                }
            files: dict[str, Parsed] = {}
            for filename, body in header.get("files", {}).items():
                place = body["spans"]
                if "set" in place:
                    items = tagged[place["set"]][place["tag"]]
                else:
                    items = _read(source, start, place)
                source.seek(start + int(body["offset"]))
                data = source.read(int(body["length"]))
                if len(data) != int(body["length"]):
                    raise EOFError(filename)
                files[str(filename)] = Parsed(
                    str(body["type"]), bool(body["interval"]), data, items, int(body["lines"]), True
                )
            return Known(int(header["generation"]), handles, tagged, elements), files
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None, {}


def _read(source: Any, start: int, place: dict[str, Any]) -> Elements:
    width, count = int(place["width"]), int(place["spans"])
    source.seek(start + int(place["offset"]))
    templates = Spans(width).words()
    points = bool(place["points"])
    arrays = []
    for template in templates[: len(templates) // 2] if points else templates:
        part = array(template.typecode, bytes(template.itemsize)) * count
        if source.readinto(memoryview(part).cast("B")) != part.itemsize * count:
            raise EOFError("the record's words cut short")  # read once, not copied again
        if sys.byteorder != "little":
            part.byteswap()
        arrays.append(part)
    if points:
        arrays += arrays
    return Recalled(str(place["type"]), bool(place["interval"]), Spans.from_words(width, arrays))
