"""Test runs as subprocesses: run the command, then read its JUnit and Cobertura XML.

A failing test is data (counts in the report); only a run that produced no report at all, or a
command that cannot start, is an error.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from activities.backends import Heartbeat
from activities.contracts import TestReport, TestRequest
from activities.errors import ErrorType, verdict

__all__ = [
    "JUnitCounts",
    "ProcessResult",
    "SubprocessTestRunner",
    "parse_cobertura",
    "parse_junit",
    "run_with_heartbeat",
]

MAX_FAILED_IDS = 20
_OUTPUT_TAIL_CHARS = 2000


@dataclass(frozen=True)
class ProcessResult:
    """How a subprocess ended: exit code, wall time and the tail of its combined output."""

    exit_code: int
    duration_s: float
    output_tail: str
    timed_out: bool = False


def run_with_heartbeat(
    command: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    heartbeat: Heartbeat,
    *,
    every_s: float = 1.0,
    timeout_s: float | None = None,
) -> ProcessResult:
    """Run `command` in `cwd`, calling `heartbeat` every `every_s` seconds while it runs.

    Output goes to a temporary file, not a pipe, so a chatty command can never block on a full
    pipe while we poll. Raises FileNotFoundError/PermissionError if the command cannot start.
    """
    start = time.monotonic()
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            # Its own process group, so a timeout can stop the command and its children.
            start_new_session=True,
        )
        timed_out = False
        while True:
            try:
                process.wait(timeout=every_s)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - start
                if timeout_s is not None and elapsed > timeout_s:
                    timed_out = True
                    _kill_group(process)
                    break
                try:
                    heartbeat(f"{Path(command[0]).name} running for {elapsed:.0f}s")
                except BaseException:  # cancelled: the command must not outlive its activity
                    _kill_group(process)
                    process.wait()
                    raise
        output.seek(0, os.SEEK_END)
        size = output.tell()
        output.seek(max(0, size - _OUTPUT_TAIL_CHARS * 4))
        tail = output.read().decode(errors="replace")[-_OUTPUT_TAIL_CHARS:]
    return ProcessResult(
        exit_code=process.returncode,
        duration_s=time.monotonic() - start,
        output_tail=tail,
        timed_out=timed_out,
    )


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may have just exited by itself
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class SubprocessTestRunner:
    """`TestRunner` that runs the request's command in its `path` with `env` merged over the
    worker's environment, heartbeating while it runs, and parses the reports it wrote."""

    __test__ = False  # not a pytest test class

    def __init__(self, heartbeat_every_s: float = 1.0, timeout_s: float | None = None) -> None:
        self._every_s = heartbeat_every_s
        self._timeout_s = timeout_s

    def run(self, request: TestRequest, heartbeat: Heartbeat) -> TestReport:
        cwd = Path(request.path)
        junit = cwd / request.junit
        coverage = cwd / request.coverage if request.coverage else None
        # Workspaces are cached by sha: a report left by an earlier attempt must not be read
        # as this run's result.
        for stale in (junit, coverage):
            if stale is not None:
                stale.unlink(missing_ok=True)
        command = list(request.command)
        if command and command[0] in ("python", "python3"):
            # The same convention as the local platform's slots: `python` is the worker's
            # interpreter, whose environment has the test tools installed.
            command[0] = sys.executable
        if not command:
            raise verdict(
                ErrorType.INVALID_DEFINITION,
                "The test stage has an empty command: set `command` to the test command.",
            )
        try:
            result = run_with_heartbeat(
                command,
                cwd,
                {**os.environ, **request.env},
                heartbeat,
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
                "install it on the worker or fix `command` in the test stage.",
            ) from exc
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
        return TestReport(
            exit_code=result.exit_code,
            coverage_pct=coverage_pct,
            duration_s=round(result.duration_s, 3),
            tests=counts.tests,
            failures=counts.failures,
            errors=counts.errors,
            skipped=counts.skipped,
            failed_tests=counts.failed_tests,
        )


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
