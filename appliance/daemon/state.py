"""The last-good store: the last policy that applied, kept in the state directory.

It holds the compiled table (a :class:`Desired` as JSON), so it loads at boot without the
profile file or anything it names (``extends``, ``elements_file``), plus the metrics
address the policy came with. Written atomically (temp file, fsync, rename, fsync dir).

Beside it, ``last-good.nft``: the same table as a script that plain ``nft -f`` loads in one
transaction, replacing the appliance's table (elements included, tagged as the daemon tags
them), for a boot unit that runs before any interface is up.

A set of more than ``INLINE`` elements is kept packed: its word arrays go to
``last-good-HASH.elements`` (named by the table's hash, written before the JSON that names
it), and the script adds its elements after the table, a chunk of text at a time. Neither
file is ever held whole in memory.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from appliance.compile.nftjson import TABLE_FAMILY, TABLE_NAME
from appliance.compile.render import render_table
from appliance.compile.ruleset import element_json, without_offload
from appliance.model.elements import Elements
from appliance.model.intervals import Spans, width_of
from appliance.reconcile.state import PROFILE_TAG, Desired, packed_elements
from appliance.storage import atomic_write, atomic_write_parts

LAST_GOOD = "last-good.json"
LAST_GOOD_NFT = "last-good.nft"
FORMAT = 1
INLINE = 1000  # elements of a set kept as text in the JSON and inline in the script
CHUNK = 10_000  # elements a line of the script adds


@dataclass(frozen=True)
class LastGood:
    desired: Desired
    metrics_listen: str | None
    saved_at: float
    source: str  # the profile path it came from


def _packed(items: Elements) -> bool:
    return items.spans is not None and len(items) > INLINE


def desired_to_json(desired: Desired, offsets: dict[str, int] | None = None) -> dict[str, Any]:
    """``desired`` as JSON; a set in ``offsets`` (packed, its words at that byte offset of
    the elements file) as its shape and place, the others as their texts."""
    offsets = offsets or {}
    elements: dict[str, Any] = {}
    for name, items in sorted(desired.elements.items()):
        if name in offsets and items.spans is not None:
            spans = items.spans
            elements[name] = {"offset": offsets[name], "spans": len(spans), "width": spans.width}
        else:
            elements[name] = sorted(items)
    return {
        "name": desired.name,
        "objects": desired.objects,
        "elements": elements,
        "types": dict(sorted(desired.types.items())),
    }


def desired_from_json(data: dict[str, Any], words: IO[bytes] | None = None) -> Desired:
    objects = data["objects"]
    elements = data["elements"]
    types = data["types"]
    if not isinstance(objects, list) or not isinstance(elements, dict):
        raise ValueError("malformed table")
    if not isinstance(types, dict):
        raise ValueError("malformed set types")
    texts: dict[str, Iterable[str]] = {}
    packed: dict[str, Elements] = {}
    for key, items in elements.items():
        if isinstance(items, dict):
            packed[str(key)] = _read_words(str(key), items, types, objects, words)
        else:
            texts[str(key)] = map(str, items)
    return Desired(
        objects=list(objects),
        elements={**packed_elements(objects, types, texts), **packed},
        types={str(k): str(v) for k, v in types.items()},
        name=str(data.get("name", "")),
    )


def _read_words(
    name: str, place: dict[str, Any], types: dict[str, Any], objects: list[Any], words: Any
) -> Elements:
    if words is None:
        raise ValueError(f"set {name}: its elements file is missing")
    set_type = str(types[name])
    width = width_of(set_type)
    if width is None or int(place["width"]) != width:
        raise ValueError(f"set {name}: packed elements of the wrong width")
    count = int(place["spans"])
    words.seek(int(place["offset"]))
    arrays = []
    for template in Spans(width).words():
        part = array(template.typecode)
        try:
            part.fromfile(words, count)
        except EOFError:
            raise ValueError(f"set {name}: its elements file is short") from None
        if sys.byteorder != "little":
            part.byteswap()
        arrays.append(part)
    interval = any(
        "interval" in obj["set"].get("flags", [])
        for obj in objects
        if "set" in obj and obj["set"].get("name") == name
    )
    return Elements(set_type, interval, Spans.from_words(width, arrays))


def _words(items: Elements) -> Iterator[memoryview]:
    """The packed words of ``items`` as the elements file holds them (little-endian)."""
    assert items.spans is not None
    for words in items.spans.words():
        if sys.byteorder != "little":
            words = array(words.typecode, words)
            words.byteswap()
        yield memoryview(words)


def boot_script(desired: Desired) -> str:
    """``desired`` as an ``nft -f`` script: one transaction that replaces the appliance's
    table (made first if absent, so the delete never fails) with this one."""
    return "".join(boot_script_parts(desired))


def boot_script_parts(desired: Desired) -> Iterator[str]:
    """:func:`boot_script` a part at a time (a large set's elements a chunk at a time)."""
    elements = {
        name: [
            {"elem": {"val": element_json(desired.types[name], text), "comment": PROFILE_TAG}}
            for text in sorted(items)
        ]
        for name, items in desired.elements.items()
        if items and not _packed(items)
    }
    table = f"table {TABLE_FAMILY} {TABLE_NAME}"
    # Without the flowtable: its links may not exist yet at boot; the daemon adds it.
    objects = without_offload(desired.objects)
    yield f"{table} {{}}\ndelete {table}\n" + render_table(objects, elements)
    for name, items in sorted(desired.elements.items()):
        if not _packed(items):
            continue
        line: list[str] = []
        for text in items:
            line.append(f'{text} comment "{PROFILE_TAG}"')
            if len(line) == CHUNK:
                yield f"add element {TABLE_FAMILY} {TABLE_NAME} {name} {{ {', '.join(line)} }}\n"
                line = []
        if line:
            yield f"add element {TABLE_FAMILY} {TABLE_NAME} {name} {{ {', '.join(line)} }}\n"


class StateStore:
    """Files in the state directory (default ``/var/lib/appliance``)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    @property
    def last_good_path(self) -> Path:
        return self.directory / LAST_GOOD

    @property
    def boot_script_path(self) -> Path:
        return self.directory / LAST_GOOD_NFT

    def save_last_good(
        self,
        desired: Desired,
        metrics_listen: str | None,
        source: str,
        now: float | None = None,
        table_hash: str | None = None,
    ) -> None:
        table_hash = table_hash or desired.table_hash
        large = {name: items for name, items in desired.elements.items() if _packed(items)}
        offsets: dict[str, int] = {}
        words_file = None
        if large:
            words_file = f"last-good-{table_hash}.elements"
            offset = 0
            for name, items in sorted(large.items()):
                offsets[name] = offset
                offset += items.nbytes()
            path = self.directory / words_file
            if not path.exists():  # named by its content's hash: already as it should be
                parts = (w for _name, items in sorted(large.items()) for w in _words(items))
                atomic_write_parts(path, parts)
        record = {
            "format": FORMAT,
            "saved_at": time.time() if now is None else now,
            "source": source,
            "metrics_listen": metrics_listen,
            "table_hash": table_hash,
            "desired": desired_to_json(desired, offsets),
            "elements_file": words_file,
        }
        # flash is spared an identical write
        script = (part.encode() for part in boot_script_parts(desired))
        atomic_write_parts(self.boot_script_path, script, skip_if_same=True)
        atomic_write(self.last_good_path, json.dumps(record).encode(), 0o600)
        for old in self.directory.glob("last-good-*.elements"):
            if old.name != words_file:
                with contextlib.suppress(OSError):
                    old.unlink()

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except OSError:
            return None

    def load_last_good(self) -> LastGood | None:
        """The saved policy; None if there is none. ValueError (one line) if it is unusable."""
        try:
            text = self.last_good_path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ValueError(f"{self.last_good_path}: {exc.strerror}") from None
        try:
            record = json.loads(text)
            if record.get("format") != FORMAT:
                raise ValueError(f"unknown format {record.get('format')!r}")
            words_file = record.get("elements_file")
            if words_file is None:
                desired = desired_from_json(record["desired"])
            else:
                if "/" in str(words_file):
                    raise ValueError(f"bad elements file name {words_file!r}")
                try:
                    with (self.directory / str(words_file)).open("rb") as words:
                        desired = desired_from_json(record["desired"], words)
                except OSError as exc:
                    raise ValueError(f"{words_file}: {exc.strerror}") from None
            if record.get("table_hash") not in (None, desired.table_hash):
                raise ValueError("table hash does not match its content")
            listen = record.get("metrics_listen")
            return LastGood(
                desired=desired,
                metrics_listen=str(listen) if listen else None,
                saved_at=float(record.get("saved_at", 0.0)),
                source=str(record.get("source", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{self.last_good_path}: unusable last good state: {exc}") from None
