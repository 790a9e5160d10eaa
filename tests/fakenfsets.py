"""Set elements over the fake kernel as :class:`appliance.adapters.nfsets.NfSets` changes
them: packed spans in, packed spans per comment tag out, chunked transactions, absent
deletes skipped, elements with a timeout left out of a dump."""

from __future__ import annotations

from collections.abc import Iterator

from appliance.compile.nftjson import element_command
from appliance.compile.ruleset import element_json
from appliance.model.elements import Elements
from appliance.model.intervals import Collector, Spans
from appliance.model.values import element_bounds
from tests.fakekernel import FakeKernel


class FakeNfSets:
    def __init__(self, kernel: FakeKernel, chunk: int = 1000) -> None:
        self.kernel = kernel
        self.chunk = chunk
        self.applied: list[tuple[str, int, int, str | None]] = []  # set, adds, deletes, tag
        self.dumps = 0

    def _type(self, name: str) -> str:
        table = self.kernel.table
        assert table is not None and ("set", name) in table.objects, name
        return str(table.objects[("set", name)]["type"])

    def apply(
        self,
        set_name: str,
        *,
        width: int,
        interval: bool,
        add: Spans | None,
        delete: Spans | None,
        flush: bool = False,
        tag: str | None = None,
    ) -> int:
        set_type = self._type(set_name)
        adds = list(Elements(set_type, interval, add)) if add is not None else []
        dels = list(Elements(set_type, interval, delete)) if delete is not None else []
        self.applied.append((set_name, len(adds), len(dels), tag))
        held = self.kernel.element_texts(set_name)
        if flush:
            dels, held = sorted(held), set()
            batches = [(dels, adds)]
        else:
            dels = [text for text in dels if text in held]  # absent: no error
            batches = list(_chunks(dels, adds, self.chunk))
        for gone, fresh in batches:
            commands = []
            if gone:
                values = [element_json(set_type, text) for text in gone]
                commands.append(element_command("delete", set_name, values))
            if fresh:
                elems: list[object] = [
                    {"elem": {"val": element_json(set_type, text), "comment": tag}}
                    if tag
                    else element_json(set_type, text)
                    for text in fresh
                ]
                commands.append(element_command("add", set_name, elems))
            self.kernel.run(commands)
        return len(batches)

    def dump(self, set_name: str, *, width: int, interval: bool) -> dict[str | None, Spans]:
        self.dumps += 1
        set_type = self._type(set_name)
        table = self.kernel.table
        assert table is not None
        collectors: dict[str | None, Collector] = {}
        for text, elem in table.elements.get(set_name, {}).items():
            body = elem["elem"] if isinstance(elem, dict) and "elem" in elem else {}
            if "timeout" in body:
                continue
            collector = collectors.setdefault(body.get("comment"), Collector(width))
            collector.add(*element_bounds(set_type, text))
        return {tag: collector.finish() for tag, collector in collectors.items()}


def _chunks(dels: list[str], adds: list[str], size: int) -> Iterator[tuple[list[str], list[str]]]:
    """Deletes first (an interval added must not overlap one still there), then adds."""
    for start in range(0, len(dels), size):
        yield dels[start : start + size], []
    for start in range(0, len(adds), size):
        yield [], adds[start : start + size]
