"""The direction of dependencies, read from the sources with ``ast`` (no import runs).

- no import cycle between the modules of ``appliance`` (imports inside functions count; those
  under ``if TYPE_CHECKING:`` do not, they never run);
- adapters (the kernel side) never import the lab, which is built on top of them;
- the profile model is the pure core: it imports only itself, the units and the errors;
- tests never import the benchmarks (what both need lives in the product or in ``tests``);
- no source file refers to a document outside the repository.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "appliance"
OUTSIDE_DOCUMENT = re.compile(r"\bSPEC\b")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported(tree: ast.AST) -> Iterator[str]:
    """Absolute names a module imports at run time (``from a.b import c`` gives a.b.c: the
    module a.b.c, or a name in a.b)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (name for child in node.orelse for name in imported_node(child))
            continue
        yield from imported_node(node)


def imported_node(node: ast.AST) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        yield from (f"{node.module}.{alias.name}" for alias in node.names)
    else:
        yield from imported(node)


def graph(files: list[Path]) -> dict[str, set[str]]:
    modules = {module_name(path): path for path in files}

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {known(target) for target in imported(ast.parse(path.read_text()))}
        edges[name] = {t for t in targets if t is not None and t != name and t != "appliance"}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def sources(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (REPO / folder).rglob("*.py"))


def test_no_import_cycle_in_the_package() -> None:
    assert cycles(graph(sources("appliance"))) == []


def test_cycle_finder_sees_a_lazy_import_cycle() -> None:
    tree = ast.parse("def f():\n    from appliance.b import x\n")
    assert list(imported(tree)) == ["appliance.b.x"]
    guarded = ast.parse("if TYPE_CHECKING:\n    from appliance.b import x\n")
    assert list(imported(guarded)) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_adapters_never_import_the_lab() -> None:
    edges = graph(sources("appliance"))
    wrong = {
        (name, target)
        for name, targets in edges.items()
        if name.startswith("appliance.adapters")
        for target in targets
        if target.startswith("appliance.lab")
    }
    assert wrong == set()


def test_the_model_imports_only_the_pure_core() -> None:
    allowed = ("appliance.model", "appliance.units", "appliance.errors")
    wrong = {
        (name, target)
        for name, targets in graph(sources("appliance")).items()
        if name.startswith("appliance.model")
        for target in targets
        if not target.startswith(allowed)
    }
    assert wrong == set()


def test_tests_never_import_the_benchmarks() -> None:
    wrong = [
        f"{path.relative_to(REPO)}: {name}"
        for path in sources("tests")
        for name in imported(ast.parse(path.read_text()))
        if name == "bench" or name.startswith("bench.")
    ]
    assert wrong == []


def test_no_source_refers_to_a_document_outside_the_repository() -> None:
    wrong = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sources("appliance", "bench", "tests")
        if path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if OUTSIDE_DOCUMENT.search(line)
    ]
    assert wrong == []
