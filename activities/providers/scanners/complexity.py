"""The `lizard` scanner: cyclomatic complexity of every function (lizard, in the sandbox like
every scanner) and duplicated code (blocks of lines that occur more than once).

It reports per function, because a complexity limit is per function: `complexity_counts`
(how many functions have each complexity, so a gate counts those over any limit),
`worst_functions` (named, worst first) and `metrics` `complexity` (the worst one) and
`duplication_pct` (duplicated lines over all code lines of the files lizard measured).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from activities.providers.scanners.scanner_process import (
    ScannerUnavailableError,
    find_binary,
    last_line,
    missing_report,
    run_scanner,
    unavailable_report,
)
from contracts.activity import Finding, FunctionComplexity, ScannerReport, Severity

__all__ = ["DUPLICATE_BLOCK_LINES", "LizardScanner", "duplication", "parse_lizard_csv"]

# Directories that are not the service's own source (as the other scanners skip them).
_NOT_SOURCE = (".git", ".venv", "venv", "node_modules", "__pycache__", "build", "dist", ".tox")

WORST_KEPT = 20
DUPLICATE_BLOCK_LINES = 10
"""A duplicated block is at least this many code lines (blank and comment lines left out)
occurring at two places or more: SonarQube's rule for most languages."""

_MAX_FILE_BYTES = 2_000_000
_COMMENT = ("#", "//", "/*", "*", "*/")


@dataclass(frozen=True)
class Measured:
    file: str
    line: int
    name: str
    complexity: int


def parse_lizard_csv(text: str) -> list[Measured]:
    """Functions of `lizard --csv` (nloc, CCN, token, param, length, location, file, name,
    long name, start, end)."""
    functions = []
    for row in csv.reader(io.StringIO(text)):
        if len(row) < 10 or not row[1].strip().isdigit():
            continue  # a header, or a line that is not a function
        functions.append(
            Measured(
                file=row[6].removeprefix("./"),
                line=int(row[9]) if row[9].strip().isdigit() else 0,
                name=row[7],
                complexity=int(row[1]),
            )
        )
    return functions


@dataclass(frozen=True)
class Duplication:
    code_lines: int
    duplicated_lines: int
    blocks: list[tuple[str, int, str, int]]
    """Pairs of places with the same block: (file, first line, file, first line)."""

    @property
    def pct(self) -> float:
        return round(100 * self.duplicated_lines / self.code_lines, 2) if self.code_lines else 0.0


def duplication(
    root: Path, files: Iterable[str], block_lines: int = DUPLICATE_BLOCK_LINES
) -> Duplication:
    """Lines of `files` (relative to `root`) inside a block of `block_lines` code lines that
    occurs at least twice (in one file or several); whitespace, blank and comment lines do
    not count. Symbolic links and very large files are left out."""
    code: dict[str, list[tuple[int, str]]] = {}
    for name in sorted(set(files)):
        path = root / name
        try:
            if path.is_symlink() or not path.is_file() or path.stat().st_size > _MAX_FILE_BYTES:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        code[name] = [
            (number, " ".join(line.split()))
            for number, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.strip().startswith(_COMMENT)
        ]
    places: dict[bytes, list[tuple[str, int]]] = {}
    for name, lines in code.items():
        for start in range(len(lines) - block_lines + 1):
            window = "\n".join(text for _, text in lines[start : start + block_lines])
            places.setdefault(hashlib.sha256(window.encode()).digest(), []).append((name, start))
    duplicated: set[tuple[str, int]] = set()
    blocks: list[tuple[str, int, str, int]] = []
    for where in places.values():
        if len(where) < 2:
            continue
        for name, start in where:
            duplicated.update((name, start + i) for i in range(block_lines))
        (a, i), (b, j) = where[0], where[1]
        blocks.append((a, code[a][i][0], b, code[b][j][0]))
    return Duplication(
        code_lines=sum(len(lines) for lines in code.values()),
        duplicated_lines=len(duplicated),
        blocks=_first_of_runs(blocks),
    )


def _first_of_runs(blocks: Sequence[tuple[str, int, str, int]]) -> list[tuple[str, int, str, int]]:
    """One entry per duplicated stretch: overlapping windows of one stretch shift together."""
    kept: list[tuple[str, int, str, int]] = []
    for block in sorted(blocks):
        last = kept[-1] if kept else None
        if (
            last is not None
            and (last[0], last[2]) == (block[0], block[2])
            and block[1] - last[1] <= DUPLICATE_BLOCK_LINES
            and block[3] - last[3] == block[1] - last[1]
        ):
            continue
        kept.append(block)
    return kept


class LizardScanner:
    """Cyclomatic complexity per function (`lizard --csv`) and duplicated code. The report
    has no findings of its own but one INFO finding per duplicated block (at most 20): the
    quality gate compares the figures with its limits."""

    name = "lizard"

    def __init__(self, timeout_s: float = 300.0) -> None:
        self._timeout_s = timeout_s

    def scan(self, path: str) -> ScannerReport:
        root = Path(path)
        if not root.is_dir():
            return unavailable_report(self.name, f"{root} is not a directory: nothing was scanned")
        binary = find_binary("lizard")
        if binary is None:
            return missing_report(self.name, "pip install lizard")
        argv = [str(binary), "--csv", *(f"-x./{d}/*" for d in _NOT_SOURCE), "."]
        try:
            run = run_scanner(argv, root, self._timeout_s)
            if run.exit_code != 0:
                raise ScannerUnavailableError(
                    f"lizard exited {run.exit_code}: {last_line(run.stderr)}"
                )
        except ScannerUnavailableError as exc:
            return unavailable_report(self.name, exc)
        functions = parse_lizard_csv(run.stdout)
        if not functions:
            return unavailable_report(
                self.name, f"lizard found no functions in {root}: nothing was measured"
            )
        return lizard_report(functions, duplication(root, (f.file for f in functions)))


def lizard_report(functions: Sequence[Measured], dup: Duplication) -> ScannerReport:
    worst = sorted(functions, key=lambda f: (-f.complexity, f.file, f.line))[:WORST_KEPT]
    findings = [
        Finding(
            scanner=LizardScanner.name,
            rule="duplicated-block",
            severity=Severity.INFO,
            message=f"{DUPLICATE_BLOCK_LINES}+ lines also at {b}:{j}",
            location=f"{a}:{i}",
        )
        for a, i, b, j in dup.blocks[:WORST_KEPT]
    ]
    return ScannerReport(
        scanner=LizardScanner.name,
        findings=findings,
        metrics={"complexity": float(worst[0].complexity), "duplication_pct": dup.pct},
        complexity_counts=dict(sorted(Counter(f.complexity for f in functions).items())),
        worst_functions=[
            FunctionComplexity(function=f"{f.file}:{f.line} {f.name}", complexity=f.complexity)
            for f in worst
        ],
    )
