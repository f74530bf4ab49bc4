"""One direction per package, checked on every module's import statements (read, not run).

definition → `starters` (CLI) → `workflows` → `activities` → platforms. `contracts` is the
one pure layer both sides speak (the definition language, messages, naming, judgments): it
imports nothing of ours and nothing that reads a clock, randomness, the network or the
environment, since the workflow sandbox passes it through unchecked; `plumbing`
(connection, codec, sandbox, the worker's policy and settings) serves the worker and the CLI
alike; workflows and activities never import each other, so the sandbox checks every
workflow module it runs; no two of our files import each other, even inside a function; and
nothing imports the worker but the tests. Nor does `contracts` touch files, but in the
definition reader the CLI calls (`FILE_READERS`, each with its reason)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("activities", "contracts", "demo", "plumbing", "starters", "workflows", "worker")

MAY_NOT_IMPORT = {
    "contracts": {"activities", "demo", "plumbing", "starters", "workflows", "worker"},
    "workflows": {"activities", "demo", "plumbing", "starters", "worker"},
    "plumbing": {"activities", "demo", "starters", "workflows", "worker"},
    "activities": {"demo", "starters", "workflows", "worker"},
    # The CLI ships without the demo harness; the harness uses the CLI (and the local
    # platform it starts), never the other way.
    # Nor the worker's side: what `slipway resources` reads is in `plumbing`.
    "starters": {"activities", "demo", "worker"},
    "demo": {"worker"},
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


# File access in the pure layer: a passed-through module that read a file would read it in
# workflow code unchecked, on every worker and every replay, and maybe differently each time.
FILE_READERS = {
    "contracts/definition/files.py": "reads definition files for `slipway validate` and "
    "`slipway start` (the CLI): bounded, strict YAML, `extends:` kept inside its tree",
    "contracts/definition/loading.py": "`load_pipeline(path)` reads a definition through "
    "files.py for the CLI; workflow code calls only its pure `definition_problems`",
}
"""The only `contracts` modules allowed to touch files, each with its reason."""
FILE_CALLS = {
    "open",
    "read_text",
    "read_bytes",
    "write_text",
    "write_bytes",
    "resolve",
    "stat",
    "lstat",
    "exists",
    "is_file",
    "is_dir",
    "iterdir",
    "glob",
    "rglob",
    "unlink",
    "mkdir",
}
FILE_MODULES = {"os", "io", "shutil", "glob", "tempfile", "fileinput"}
READER_FUNCTIONS = {"load_pipeline", "resolve_extends", "read_definition"}


def file_access(path: Path) -> list[str]:
    """Where a module opens, reads, writes or inspects files: `open(...)`, a path method
    that reaches the file system (`.read_text()`, `.resolve()`, ...), `os.` anything, or an
    import of a file-handling module."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "open":
                found.append((line, "open("))
            elif isinstance(func, ast.Attribute) and func.attr in FILE_CALLS:
                found.append((line, f".{func.attr}("))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in FILE_MODULES:
                found.append((line, f"{node.value.id}.{node.attr}"))
        elif isinstance(node, ast.Import):
            found += [(line, f"import {a.name}") for a in node.names if a.name in FILE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module in FILE_MODULES:
            found.append((line, f"from {node.module} import"))
    return [f"{line}: {what}" for line, what in sorted(found)]


def reader_calls(path: Path) -> list[str]:
    """Where a module names one of the definition reader's functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Name):
            names = {node.id}
        elif isinstance(node, ast.Attribute):
            names = {node.attr}
        elif isinstance(node, ast.ImportFrom):
            names = {alias.name for alias in node.names}
        else:
            continue
        found += [f"{node.lineno} names {n}" for n in sorted(names & READER_FUNCTIONS)]
    return found


def test_the_pure_layer_touches_no_file_but_the_definition_reader() -> None:
    wrong = []
    for path in modules_of("contracts"):
        relative = path.relative_to(ROOT).as_posix()
        if relative in FILE_READERS:
            # No stale entry: each still reads files, itself or through the reader.
            assert file_access(path) or reader_calls(path), f"{relative} reads no file now"
            continue
        wrong += [f"{relative}:{where}" for where in file_access(path)]
    assert not wrong, "\n".join(wrong)


def test_only_the_cli_calls_the_definition_reader() -> None:
    """The readers' file access stays out of workflow code: no package but `starters` (and
    the readers themselves) names `load_pipeline`, `resolve_extends` or `read_definition`."""
    wrong = [
        f"{path.relative_to(ROOT).as_posix()}:{where}"
        for package in ("workflows", "activities", "plumbing", "contracts")
        for path in modules_of(package)
        if path.relative_to(ROOT).as_posix() not in FILE_READERS
        for where in reader_calls(path)
    ]
    wrong += [f"worker.py:{where}" for where in reader_calls(ROOT / "worker.py")]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_file_access(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text(
        "import os\nfrom pathlib import Path\n\n"
        "def f(p: Path) -> object:\n"
        "    open(p)\n    p.read_text()\n    p.read_bytes()\n    return os.stat(p)\n",
        encoding="utf-8",
    )
    assert file_access(module) == [
        "1: import os",
        "5: open(",
        "6: .read_text(",
        "7: .read_bytes(",
        "8: .stat(",
        "8: os.stat",
    ]


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
