"""Test runs as subprocesses: run the command, then read its JUnit and Cobertura XML.

A failing test is data (counts in the report); only a run that produced no report at all, or a
command that cannot start, is an error.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from activities.providers.execution import sandbox as sandboxes
from activities.providers.execution.child_env import child_env
from activities.providers.execution.processes import ProcessResult, run_with_heartbeat
from activities.providers.execution.sandbox import Bind, Mounts
from activities.providers.execution.venvs import VenvCache, python_in
from activities.providers.testing.venv_inputs import source_paths, test_venv_spec
from activities.wiring.backends import Heartbeat
from contracts.activity import SuiteReport, SuiteRequest
from contracts.errors import ErrorType, verdict

__all__ = [
    "JUnitCounts",
    "ProcessResult",
    "SubprocessSuiteRunner",
    "parse_cobertura",
    "parse_junit",
    "run_with_heartbeat",
]

MAX_FAILED_IDS = 20
_PYTHON = re.compile(r"python(\d+(\.\d+)?)?")


def default_venv_root() -> Path:
    """Where venvs are cached when the worker names no state directory."""
    return Path(tempfile.gettempdir()) / f"slipway-venvs-{os.getuid()}"


class SubprocessSuiteRunner:
    """`SuiteRunner` that runs the request's command in its `path`, in a venv of the service's
    own dependencies (`activities.providers.testing.venv_inputs`), with an allow-listed environment
    plus the request's `env` (`activities.providers.execution.child_env`): never the worker's
    packages or secrets. It runs in the worker's sandbox
    (`activities.providers.execution.sandbox`): a writable copy of `path` made for this attempt,
    the venv read-only, nothing else of the worker's. Heartbeats while it runs, then parses the
    reports the command wrote (in the copy)."""

    def __init__(
        self,
        heartbeat_every_s: float = 1.0,
        timeout_s: float | None = None,
        venv_root: Path | None = None,
    ) -> None:
        self._every_s = heartbeat_every_s
        self._timeout_s = timeout_s
        self._venvs = VenvCache(venv_root or default_venv_root())

    def run(self, request: SuiteRequest, heartbeat: Heartbeat) -> SuiteReport:
        cwd = Path(request.path)
        command = list(request.command)
        if not command:
            raise verdict(
                ErrorType.INVALID_DEFINITION,
                "The test stage has an empty command: set `command` to the test command.",
            )
        if not cwd.is_dir():
            raise verdict(
                ErrorType.GATE_FAILED,
                f"The test directory {str(cwd)!r} does not exist: check the checkout and "
                "the stage's service path.",
            )
        sandbox = sandboxes.current()
        sandbox.check()  # before a venv is built for a stage that cannot run
        spec = test_venv_spec(
            cwd,
            extras=request.extras,
            requirements=request.requirements,
            setup=request.setup,
            label="test stage",
        )
        venv = self._venvs.ensure(spec, heartbeat)
        if _PYTHON.fullmatch(command[0]):
            # `python` is the venv's interpreter: the service's dependencies, not the worker's.
            command[0] = str(python_in(venv))
        with sandbox.writable_copy(cwd) as copy:
            junit = copy.host(cwd / request.junit)
            coverage = copy.host(cwd / request.coverage) if request.coverage else None
            # Workspaces are cached by sha: a report left by an earlier attempt (or a command
            # stage) must not be read as this run's result.
            for stale in (junit, coverage):
                if stale is not None:
                    stale.unlink(missing_ok=True)
            result = self._run_command(request, command, cwd, venv, copy.binds, heartbeat)
            # The reports were written by the service's code: one that leads out of its
            # directory (a symlink to a worker file) is not read.
            inside = copy.copy.resolve()
            junit, coverage = (
                _within(junit, inside),
                _within(coverage, inside) if coverage is not None else None,
            )
            return self._report(request, command, result, junit, coverage, heartbeat)

    def _run_command(
        self,
        request: SuiteRequest,
        command: list[str],
        cwd: Path,
        venv: Path,
        binds: tuple[Bind, ...],
        heartbeat: Heartbeat,
    ) -> ProcessResult:
        try:
            with tempfile.TemporaryDirectory(prefix="slipway-test-home-") as home:
                env = child_env(
                    home=Path(home),
                    prepend_path=[venv / "bin"],
                    extra={
                        "VIRTUAL_ENV": str(venv),
                        "PYTHONPATH": os.pathsep.join(source_paths(cwd)),
                    },
                    stage_env=request.env,
                )
                result = run_with_heartbeat(
                    command,
                    cwd,
                    env,
                    heartbeat,
                    mounts=Mounts(binds=(*binds, Bind(venv))),
                    every_s=self._every_s,
                    timeout_s=self._timeout_s,
                )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            if not cwd.is_dir():
                raise verdict(
                    ErrorType.GATE_FAILED,
                    f"The test directory {str(cwd)!r} does not exist: check the checkout and "
                    "the stage's service path.",
                ) from exc
            raise verdict(
                ErrorType.CONFIGURATION,
                f"The test command {command[0]!r} could not be started ({exc.strerror}): "
                "declare the tool in the service's `test` extra (or the stage's `extras`, "
                "`requirements` or `setup`) or fix `command` in the test stage.",
            ) from exc
        return result

    def _report(
        self,
        request: SuiteRequest,
        command: list[str],
        result: ProcessResult,
        junit: Path,
        coverage: Path | None,
        heartbeat: Heartbeat,
    ) -> SuiteReport:
        if result.timed_out:
            raise verdict(
                ErrorType.GATE_FAILED,
                f"The test command {' '.join(command)!r} did not finish within "
                f"{self._timeout_s:.0f} s and was stopped.",
            )
        heartbeat("reading test reports")
        if not junit.is_file():
            raise verdict(
                ErrorType.GATE_FAILED,
                f"The test command {' '.join(command)!r} exited {result.exit_code} and wrote no "
                f"JUnit report at {request.junit!r} (in {request.path}). Make the command write "
                f"it there (pytest: --junitxml={request.junit}). Last output:\n"
                f"{result.output_tail[-800:]}",
            )
        counts = parse_junit(junit)
        coverage_pct = None
        if coverage is not None:
            if not coverage.is_file():
                raise verdict(
                    ErrorType.GATE_FAILED,
                    f"The test command wrote no coverage report at {request.coverage!r} (in "
                    f"{request.path}). Make it write Cobertura XML there (pytest-cov: "
                    f"--cov-report=xml:{request.coverage}), or drop `coverage` from the stage.",
                )
            coverage_pct = parse_cobertura(coverage)
        return SuiteReport(
            exit_code=result.exit_code,
            coverage_pct=coverage_pct,
            duration_s=round(result.duration_s, 3),
            tests=counts.tests,
            failures=counts.failures,
            errors=counts.errors,
            skipped=counts.skipped,
            failed_tests=counts.failed_tests,
        )


def _within(path: Path, directory: Path) -> Path:
    """`path` if it resolves inside `directory`; else a path that does not exist."""
    return path if path.resolve().is_relative_to(directory) else directory / ".outside"


@dataclass
class JUnitCounts:
    """What a JUnit file says: totals and the ids of the first failing tests."""

    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    failed_tests: list[str] = field(default_factory=list)


def _read_xml(path: Path, kind: str) -> ElementTree.Element:
    try:
        # The XML comes from the test command we just ran on our own checkout.
        return ElementTree.parse(path).getroot()
    except ElementTree.ParseError as exc:
        raise verdict(
            ErrorType.GATE_FAILED, f"The {kind} report {str(path)!r} is not valid XML: {exc}."
        ) from exc


def parse_junit(path: Path) -> JUnitCounts:
    """Counts of a JUnit XML file whose root is `<testsuites>` or a single `<testsuite>`.

    Test cases are counted one by one when present (suite attributes are optional and some
    tools omit them); a file with suites but no cases falls back to the suites' attributes.
    """
    root = _read_xml(path, "JUnit")
    if root.tag not in ("testsuites", "testsuite"):
        raise verdict(
            ErrorType.GATE_FAILED,
            f"The JUnit report {str(path)!r} has root <{root.tag}>, expected <testsuites> or "
            "<testsuite>.",
        )
    counts = JUnitCounts()
    cases = list(root.iter("testcase"))
    for case in cases:
        counts.tests += 1
        if case.find("skipped") is not None:
            counts.skipped += 1
            continue
        if case.find("failure") is not None:
            counts.failures += 1
        elif case.find("error") is not None:
            counts.errors += 1
        else:
            continue
        if len(counts.failed_tests) < MAX_FAILED_IDS:
            classname, name = case.get("classname", ""), case.get("name", "?")
            counts.failed_tests.append(f"{classname}::{name}" if classname else name)
    if not cases:
        # Leaf suites only: nested suites repeat their children's totals.
        suites = [s for s in root.iter("testsuite") if s.find("testsuite") is None]
        for suite in suites:
            counts.tests += _int_attr(suite, "tests")
            counts.failures += _int_attr(suite, "failures")
            counts.errors += _int_attr(suite, "errors")
            counts.skipped += _int_attr(suite, "skipped") + _int_attr(suite, "disabled")
    return counts


def parse_cobertura(path: Path) -> float:
    """Line coverage in percent from a Cobertura XML file (`<coverage line-rate="0.87">`)."""
    root = _read_xml(path, "coverage")
    rate = root.get("line-rate")
    if root.tag != "coverage" or rate is None:
        raise verdict(
            ErrorType.GATE_FAILED,
            f"The coverage report {str(path)!r} is not Cobertura XML (no <coverage line-rate>). "
            "Write it with coverage.py's `coverage xml` or pytest-cov's --cov-report=xml.",
        )
    try:
        return round(float(rate) * 100.0, 2)
    except ValueError as exc:
        raise verdict(
            ErrorType.GATE_FAILED,
            f"The coverage report {str(path)!r} has line-rate={rate!r}, not a number.",
        ) from exc


def _int_attr(element: ElementTree.Element, name: str) -> int:
    try:
        return int(float(element.get(name, "0")))
    except ValueError:
        return 0
