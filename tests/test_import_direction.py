"""One direction per package, checked on every module's import statements (read, not run).

definition → `starters` (CLI) → `workflows` → `activities` → platforms. `contracts` is the
one pure layer both sides speak (the definition language, messages, naming, judgments): it
imports nothing of ours and nothing that reads a clock, randomness, the network or the
environment, since the workflow sandbox passes it through unchecked; `plumbing`
(connection, codec, sandbox, the worker's policy and settings) serves the worker and the CLI
alike; workflows and activities never import each other, so the sandbox checks every
workflow module it runs; no two of our files import each other, even inside a function; and
nothing imports the worker but the tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("activities", "contracts", "plumbing", "starters", "workflows", "worker")

MAY_NOT_IMPORT = {
    "contracts": {"activities", "plumbing", "starters", "workflows", "worker"},
    "workflows": {"activities", "plumbing", "starters", "worker"},
    "plumbing": {"activities", "starters", "workflows", "worker"},
    "activities": {"starters", "workflows", "worker"},
    "starters": {"worker"},
}


def imported_packages(path: Path) -> dict[str, int]:
    """Our top-level packages this file imports, each with the first line that does."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".", 1)[0]
            if top in OURS:
                found.setdefault(top, node.lineno)
    return found


def modules_of(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("package", sorted(MAY_NOT_IMPORT))
def test_a_package_imports_only_in_its_direction(package: str) -> None:
    files = modules_of(package)
    assert files, f"no modules found under {package}/"
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {imported}"
        for path in files
        for imported, line in imported_packages(path).items()
        if imported in MAY_NOT_IMPORT[package]
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_wrong_way_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text(
        "import os\nfrom contracts.activity import Slot\n\n"
        "def f():\n    from activities.platforms import local\n",
        encoding="utf-8",
    )
    assert imported_packages(module) == {"contracts": 2, "activities": 5}


# What the sandbox would let a passed-through module do unchecked.
IMPURE = {"asyncio", "httpx", "random", "secrets", "socket", "subprocess", "threading", "time"}
IMPURE_CALLS = ("os.environ", "os.getenv", "datetime.now", "datetime.utcnow", "date.today")


def test_the_pure_layer_reads_no_clock_randomness_network_or_environment() -> None:
    wrong = []
    for path in modules_of("contracts"):
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            wrong += [
                f"{path.relative_to(ROOT)}:{node.lineno} imports {name}"
                for name in names
                if name.split(".", 1)[0] in IMPURE
            ]
        wrong += [f"{path.relative_to(ROOT)} calls {call}" for call in IMPURE_CALLS if call in text]
    assert not wrong, "\n".join(wrong)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(paths: list[Path]) -> dict[str, set[str]]:
    """Module → our modules it imports anywhere in the file (inside functions and
    `TYPE_CHECKING` blocks too: a cycle hidden there is still a cycle)."""
    known = {module_name(p) for p in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        edges = graph.setdefault(module_name(path), set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in known}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    target = full if full in known else node.module
                    if target in known:
                        edges.add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_no_two_of_our_files_import_each_other() -> None:
    paths = [p for package in OURS if package != "worker" for p in modules_of(package)]
    paths.append(ROOT / "worker.py")
    assert not cycles(import_graph(paths))


def test_the_cycle_finder_sees_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
