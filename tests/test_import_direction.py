"""One direction per package, checked on every module's import statements (read, not run).

definition → `starters` (CLI) → `workflows` → `activities` → platforms. `contracts` is the
shared data both sides speak and imports nothing of ours; `plumbing` (connection, codec,
sandbox) serves the worker and the CLI alike; workflow code never imports the side-effect
package, so the sandbox checks every workflow module it runs; and nothing imports the worker
but the tests."""

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
    "activities": {"starters", "worker"},
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
