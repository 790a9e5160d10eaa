"""The last-good store: the last policy that applied, kept in the state directory.

It holds the compiled table (a :class:`Desired` as JSON), so it loads at boot without the
profile file or anything it names (``extends``, ``elements_file``), plus the metrics
address the policy came with. Written atomically (temp file, fsync, rename, fsync dir).

Beside it, ``last-good.nft``: the same table as a script that plain ``nft -f`` loads in one
transaction, replacing the appliance's table (elements included, tagged as the daemon tags
them), for a boot unit that runs before any interface is up.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.compile.nftjson import TABLE_FAMILY, TABLE_NAME
from appliance.compile.render import render_table
from appliance.compile.ruleset import element_json, without_offload
from appliance.reconcile.state import PROFILE_TAG, Desired, packed_elements
from appliance.storage import atomic_write

LAST_GOOD = "last-good.json"
LAST_GOOD_NFT = "last-good.nft"
FORMAT = 1


@dataclass(frozen=True)
class LastGood:
    desired: Desired
    metrics_listen: str | None
    saved_at: float
    source: str  # the profile path it came from


def desired_to_json(desired: Desired) -> dict[str, Any]:
    return {
        "name": desired.name,
        "objects": desired.objects,
        "elements": {name: sorted(items) for name, items in sorted(desired.elements.items())},
        "types": dict(sorted(desired.types.items())),
    }


def desired_from_json(data: dict[str, Any]) -> Desired:
    objects = data["objects"]
    elements = data["elements"]
    types = data["types"]
    if not isinstance(objects, list) or not isinstance(elements, dict):
        raise ValueError("malformed table")
    if not isinstance(types, dict):
        raise ValueError("malformed set types")
    return Desired(
        objects=list(objects),
        elements=packed_elements(
            objects, types, {str(k): map(str, v) for k, v in elements.items()}
        ),
        types={str(k): str(v) for k, v in types.items()},
        name=str(data.get("name", "")),
    )


def boot_script(desired: Desired) -> str:
    """``desired`` as an ``nft -f`` script: one transaction that replaces the appliance's
    table (made first if absent, so the delete never fails) with this one."""
    elements = {
        name: [
            {"elem": {"val": element_json(desired.types[name], text), "comment": PROFILE_TAG}}
            for text in sorted(items)
        ]
        for name, items in desired.elements.items()
        if items
    }
    table = f"table {TABLE_FAMILY} {TABLE_NAME}"
    # Without the flowtable: its links may not exist yet at boot; the daemon adds it.
    objects = without_offload(desired.objects)
    return f"{table} {{}}\ndelete {table}\n" + render_table(objects, elements)


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
        record = {
            "format": FORMAT,
            "saved_at": time.time() if now is None else now,
            "source": source,
            "metrics_listen": metrics_listen,
            "table_hash": table_hash or desired.table_hash,
            "desired": desired_to_json(desired),
        }
        script = boot_script(desired).encode()
        if self._read(self.boot_script_path) != script:  # flash is spared an identical write
            atomic_write(self.boot_script_path, script, 0o600)
        atomic_write(self.last_good_path, json.dumps(record).encode(), 0o600)

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
            desired = desired_from_json(record["desired"])
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
