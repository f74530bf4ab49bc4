"""SubprocessSuiteRunner running real pytest on a tiny project, and its report parsing."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.helpers.blocking import WorkCancelledError
from activities.providers.testing.runner import SubprocessSuiteRunner, parse_cobertura, parse_junit
from contracts.activity import SuiteRequest
from contracts.errors import ErrorType
from tests.support.binaries import require_module


def write_junit(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).strip())
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "svc"
    (root / "calc").mkdir(parents=True)
    (root / "calc" / "__init__.py").write_text(
        "def add(a, b):\n    return a + b\n\n\ndef unused(x):\n    return x * 2\n"
    )
    # Its venv (the sandbox shows a test stage no other interpreter): pytest and pytest-cov.
    (root / "pyproject.toml").write_text(
        '[project]\nname = "calc"\nversion = "1.0"\ndependencies = []\n\n'
        '[project.optional-dependencies]\ntest = ["pytest>=8", "pytest-cov"]\n'
    )
    (root / "tests").mkdir()
    (root / "tests" / "test_calc.py").write_text(
        textwrap.dedent(
            """
            import os, time
            import pytest
            from calc import add

            def test_add():
                time.sleep(0.3)  # long enough for the runner to heartbeat
                assert add(1, 2) == 3

            def test_wrong():
                assert add(1, 1) == int(os.environ["EXPECTED"])

            @pytest.mark.skip(reason="the runner must count a skipped test")
            def test_later():
                pass
            """
        )
    )
    return root


def pytest_command(*extra: str) -> list[str]:
    return ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]


def test_real_pytest_run_is_counted(project: Path) -> None:
    notes: list[str] = []
    request = SuiteRequest(
        path=str(project),
        command=pytest_command("--junitxml=reports/junit.xml"),
        junit="reports/junit.xml",
        env={"EXPECTED": "3", "PYTHONPATH": str(project)},
    )

    report = SubprocessSuiteRunner(heartbeat_every_s=0.05).run(request, notes.append)

    assert report.exit_code == 1
    assert (report.tests, report.failures, report.errors, report.skipped) == (3, 1, 0, 1)
    assert report.failed_tests == ["tests.test_calc::test_wrong"]
    assert report.coverage_pct is None
    assert report.duration_s > 0.3
    assert any("running" in note for note in notes)


def test_real_pytest_cov_run_reports_line_coverage(project: Path) -> None:
    require_module("pytest_cov", "pip install pytest-cov (it is in the dev extra)")
    request = SuiteRequest(
        path=str(project),
        command=pytest_command("--junitxml=junit.xml", "--cov=calc", "--cov-report=xml"),
        junit="junit.xml",
        coverage="coverage.xml",
        env={"EXPECTED": "2", "PYTHONPATH": str(project)},
    )

    report = SubprocessSuiteRunner().run(request, lambda _note: None)

    assert report.exit_code == 0
    # add() runs, unused() does not: coverage is partial, neither 0 nor 100.
    assert report.coverage_pct is not None
    assert 50.0 < report.coverage_pct < 100.0


def test_env_is_merged_over_the_workers(project: Path) -> None:
    request = SuiteRequest(
        path=str(project),
        command=pytest_command("--junitxml=junit.xml"),
        junit="junit.xml",
        env={"EXPECTED": "2", "PYTHONPATH": str(project)},
    )

    report = SubprocessSuiteRunner().run(request, lambda _note: None)

    assert report.exit_code == 0
    assert report.failures == 0
    assert report.failed_tests == []


def test_missing_junit_report_is_a_gate_failure(tmp_path: Path) -> None:
    request = SuiteRequest(
        path=str(tmp_path),
        command=["python", "-c", "print('ran, but wrote no report')"],
        junit="out/junit.xml",
    )

    with pytest.raises(ApplicationError) as caught:
        SubprocessSuiteRunner().run(request, lambda _note: None)

    assert caught.value.type == ErrorType.GATE_FAILED
    assert caught.value.non_retryable
    assert "out/junit.xml" in caught.value.message
    assert "ran, but wrote no report" in caught.value.message


def test_report_left_by_an_earlier_run_is_not_reused(tmp_path: Path) -> None:
    write_junit(tmp_path / "junit.xml", '<testsuite tests="5"><testcase name="old"/></testsuite>')
    request = SuiteRequest(path=str(tmp_path), command=["python", "-c", "pass"], junit="junit.xml")

    with pytest.raises(ApplicationError, match=r"junit\.xml"):
        SubprocessSuiteRunner().run(request, lambda _note: None)


def test_missing_coverage_report_is_a_gate_failure(tmp_path: Path) -> None:
    script = "open('junit.xml', 'w').write('<testsuite><testcase name=\"t\"/></testsuite>')"
    request = SuiteRequest(
        path=str(tmp_path),
        command=["python", "-c", script],
        junit="junit.xml",
        coverage="coverage.xml",
    )

    with pytest.raises(ApplicationError) as caught:
        SubprocessSuiteRunner().run(request, lambda _note: None)

    assert caught.value.type == ErrorType.GATE_FAILED
    assert "coverage.xml" in caught.value.message


def test_command_that_cannot_start_names_the_command(tmp_path: Path) -> None:
    request = SuiteRequest(
        path=str(tmp_path), command=["no-such-test-tool-xyz", "--all"], junit="junit.xml"
    )

    with pytest.raises(ApplicationError) as caught:
        SubprocessSuiteRunner().run(request, lambda _note: None)

    assert caught.value.non_retryable
    assert "no-such-test-tool-xyz" in caught.value.message


def test_command_past_its_timeout_is_stopped(tmp_path: Path) -> None:
    request = SuiteRequest(
        path=str(tmp_path),
        command=["python", "-c", "import time; time.sleep(30)"],
        junit="junit.xml",
    )
    started = time.monotonic()

    with pytest.raises(ApplicationError, match="did not finish"):
        SubprocessSuiteRunner(heartbeat_every_s=0.05, timeout_s=0.5).run(request, lambda _n: None)

    assert time.monotonic() - started < 10


def test_a_cancelled_run_stops_its_command(tmp_path: Path) -> None:
    """Cancellation arrives as the heartbeat raising: the test command must not outlive it."""
    marker = f"31.{os.getpid()}"  # a sleep no other process runs
    request = SuiteRequest(
        path=str(tmp_path), command=["sh", "-c", f"exec sleep {marker}"], junit="junit.xml"
    )

    def heartbeat(_note: str) -> None:
        if _sleepers(marker):
            raise WorkCancelledError("cancelled")

    with pytest.raises(WorkCancelledError):
        SubprocessSuiteRunner(heartbeat_every_s=0.05).run(request, heartbeat)

    deadline = time.monotonic() + 5
    while _sleepers(marker) and time.monotonic() < deadline:
        time.sleep(0.05)  # SIGKILL reaches the sandbox's processes through its pid 1
    assert _sleepers(marker) == []


def _sleepers(marker: str) -> list[int]:
    """Pids (as the worker sees them) of processes running `sleep <marker>`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == (
                b"sleep\0" + marker.encode() + b"\0"
            ):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_junit_with_testsuites_root_and_nested_suites(tmp_path: Path) -> None:
    junit = write_junit(
        tmp_path / "junit.xml",
        """
        <testsuites tests="99">
          <testsuite name="a">
            <testcase classname="pkg.A" name="ok"/>
            <testcase classname="pkg.A" name="boom"><error message="x"/></testcase>
            <testsuite name="a.inner">
              <testcase classname="pkg.A.Inner" name="bad"><failure message="y"/></testcase>
              <testcase classname="pkg.A.Inner" name="later"><skipped/></testcase>
            </testsuite>
          </testsuite>
          <testsuite name="b"><testcase name="plain"/></testsuite>
        </testsuites>
        """,
    )

    counts = parse_junit(junit)

    # Cases are counted, not the (wrong) attribute on the root.
    assert (counts.tests, counts.failures, counts.errors, counts.skipped) == (5, 1, 1, 1)
    assert counts.failed_tests == ["pkg.A::boom", "pkg.A.Inner::bad"]


def test_junit_with_a_single_testsuite_root_and_only_totals(tmp_path: Path) -> None:
    junit = write_junit(
        tmp_path / "junit.xml",
        '<testsuite name="s" tests="7" failures="2" errors="1" skipped="3"></testsuite>',
    )

    counts = parse_junit(junit)

    assert (counts.tests, counts.failures, counts.errors, counts.skipped) == (7, 2, 1, 3)


def test_broken_junit_is_a_gate_failure_naming_the_file(tmp_path: Path) -> None:
    junit = write_junit(tmp_path / "junit.xml", "<testsuite><testcase")

    with pytest.raises(ApplicationError) as caught:
        parse_junit(junit)

    assert caught.value.type == ErrorType.GATE_FAILED
    assert "junit.xml" in caught.value.message


def test_cobertura_line_rate_is_a_percentage(tmp_path: Path) -> None:
    xml = tmp_path / "coverage.xml"
    xml.write_text('<?xml version="1.0" ?><coverage line-rate="0.8734" branch-rate="0"/>')
    assert parse_cobertura(xml) == 87.34

    xml.write_text("<report/>")
    with pytest.raises(ApplicationError, match="not Cobertura"):
        parse_cobertura(xml)
