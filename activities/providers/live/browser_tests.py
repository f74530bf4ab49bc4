"""Browser end-to-end tests: the service's own Playwright tests (Python, pytest-playwright)
against a running environment, in Debian's Chromium.

They run as a test stage runs (`activities.providers.testing.runner`): in a venv of the
service's declared dependencies (its `test` extra, the stage's `extras`/`requirements`/
`setup`; pytest-playwright must be among them), in a per-run writable copy of its
directory, in the worker's sandbox with the allow-listed environment. The stage adds:

- `--base-url` (the environment's URL as a browser reaches it, `browsers.browser_target`),
  `--browser chromium`, the JUnit report, and pytest-playwright's `--output`,
  `--screenshot`, `--tracing`, `--video` into a directory of its own;
- a small pytest plugin (`-p slipway_browser`) that launches Debian's Chromium through
  `executable_path` (`CHROME_PATH`) with the arguments it needs in the sandbox and adds the
  endpoint's other headers to every request. No browser is downloaded
  (`PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1`, and `PLAYWRIGHT_BROWSERS_PATH` names an empty
  directory, so a test that launches a browser of its own finds none).

When a test fails, pytest-playwright's output (a trace and a screenshot per failed test)
and the JUnit report are kept under `results_root/<workflow id>/<stage>-<attempt>/`, which
the report (and so the stage's summary) names; the newest `keep_runs` such run directories
are kept. Size is bounded: at most `max_kept_mb` are copied.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from temporalio import activity

from activities.providers.execution import sandbox as sandboxes
from activities.providers.execution.child_env import child_env
from activities.providers.execution.processes import run_with_heartbeat
from activities.providers.execution.sandbox import Bind, Mounts
from activities.providers.execution.venvs import VenvCache, python_in
from activities.providers.live import pytest_slipway_browser
from activities.providers.live.browsers import CHROMIUM_HINT, browser_target, find_chromium
from activities.providers.live.live_tools import work_directory
from activities.providers.testing.runner import default_venv_root, parse_junit
from activities.providers.testing.venv_inputs import source_paths, test_venv_spec
from activities.wiring.backends import Heartbeat
from contracts.activity import BrowserTestReport, BrowserTestRequest
from contracts.errors import ErrorType, verdict

__all__ = ["PlaywrightBrowserTester", "default_results_root"]

PLUGIN = "slipway_browser"
_MAX_NAMED = 20


def default_results_root() -> Path:
    """Where failed runs' traces and screenshots are kept when the worker names no state
    directory."""
    return Path(tempfile.gettempdir()) / f"slipway-browser-results-{os.getuid()}"


class PlaywrightBrowserTester:
    """`BrowserTester` running pytest-playwright in the service's venv, sandboxed."""

    def __init__(
        self,
        *,
        venv_root: Path | None = None,
        results_root: Path | None = None,
        chromium: Path | None = None,
        keep_runs: int = 50,
        max_kept_mb: float = 200.0,
    ) -> None:
        self._venvs = VenvCache(venv_root or default_venv_root())
        self._results = Path(results_root or default_results_root()).resolve()
        self._chromium = chromium
        self._keep_runs = keep_runs
        self._max_kept_bytes = int(max_kept_mb * 1e6)

    def run(self, request: BrowserTestRequest, heartbeat: Heartbeat) -> BrowserTestReport:
        label = f"browser stage {request.stage!r}"
        cwd = Path(request.path)
        if not cwd.is_dir():
            raise verdict(
                ErrorType.GATE_FAILED,
                f"The {label}'s directory {str(cwd)!r} does not exist: check the checkout and "
                "the stage's `artifact`.",
            )
        chromium = find_chromium(self._chromium)
        if chromium is None:
            return BrowserTestReport(
                available=False, reason=f"chromium is not installed: {CHROMIUM_HINT}"
            )
        missing = [t for t in request.tests if not (cwd / t).exists()]
        if missing:
            raise verdict(
                ErrorType.INVALID_DEFINITION,
                f"The {label}'s `tests` names {missing[0]!r}, which is not in {str(cwd)!r}: "
                "fix the path (relative to the service directory).",
            )
        sandbox = sandboxes.current()
        sandbox.check()
        spec = test_venv_spec(
            cwd,
            extras=request.extras,
            requirements=request.requirements,
            setup=request.setup,
            label=label,
        )
        venv = self._venvs.ensure(spec, heartbeat)
        if not any(venv.glob("lib/python*/site-packages/pytest_playwright")):
            raise verdict(
                ErrorType.CONFIGURATION,
                f"The {label}'s venv has no pytest-playwright: declare it in the service's "
                "`test` extra (or the stage's `extras`, `requirements` or `setup`).",
            )
        base, headers = browser_target(request.endpoint)
        with (
            sandbox.writable_copy(cwd) as copy,
            work_directory("slipway-browser-") as out,
            tempfile.TemporaryDirectory(prefix="slipway-browser-plugin-") as plugin_name,
            tempfile.TemporaryDirectory(prefix="slipway-browser-home-") as home,
        ):
            plugin = Path(plugin_name)
            plugin.chmod(0o755)
            shutil.copyfile(pytest_slipway_browser.__file__, plugin / f"{PLUGIN}.py")
            (plugin / f"{PLUGIN}.py").chmod(0o644)
            results, junit = out / "test-results", out / "junit.xml"
            command = [
                str(python_in(venv)),
                "-m",
                "pytest",
                *request.tests,
                "-p",
                PLUGIN,
                f"--base-url={base}",
                "--browser=chromium",
                f"--junitxml={junit}",
                f"--output={results}",
                f"--screenshot={request.screenshot}",
                f"--tracing={request.tracing}",
                f"--video={request.video}",
                *request.args,
            ]
            env = child_env(
                home=Path(home),
                prepend_path=[venv / "bin"],
                extra={
                    "VIRTUAL_ENV": str(venv),
                    "PYTHONPATH": os.pathsep.join([str(plugin), *source_paths(cwd)]),
                    "CHROME_PATH": str(chromium),
                    "BASE_URL": base,
                    pytest_slipway_browser.HEADERS_VARIABLE: pytest_slipway_browser.encode(headers),
                    "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1",
                    "PLAYWRIGHT_BROWSERS_PATH": str(Path(home) / "no-browsers"),
                    "NO_PROXY": "*",
                    "no_proxy": "*",
                },
                stage_env=request.env,
            )
            started = time.monotonic()
            try:
                result = run_with_heartbeat(
                    command,
                    cwd,
                    env,
                    heartbeat,
                    mounts=Mounts(
                        binds=(*copy.binds, Bind(venv), Bind(plugin), Bind(out, writable=True))
                    ),
                    timeout_s=request.max_duration_s,
                )
            except (FileNotFoundError, PermissionError) as exc:
                raise verdict(
                    ErrorType.CONFIGURATION,
                    f"The {label}'s pytest could not be started ({exc.strerror}).",
                ) from exc
            sandbox.take_back(out)
            took = round(time.monotonic() - started, 3)
            inside = out.resolve()
            junit_ok = junit.is_file() and junit.resolve().is_relative_to(inside)
            counts = parse_junit(junit) if junit_ok else None
            failed = (
                result.timed_out
                or result.exit_code != 0
                or counts is None
                or counts.failures + counts.errors > 0
            )
            kept_dir, kept = ("", []) if not failed else self._keep(out)
            if result.timed_out:
                raise verdict(
                    ErrorType.GATE_FAILED,
                    f"The {label}'s tests did not finish within {request.max_duration_s:.0f} s "
                    "and were stopped"
                    + (f"; what they left is in {kept_dir}" if kept_dir else "")
                    + ".",
                )
            if counts is None:
                raise verdict(
                    ErrorType.GATE_FAILED,
                    f"The {label}'s pytest exited {result.exit_code} without a JUnit report "
                    f"(a collection or usage error?). Last output:\n{result.output_tail[-800:]}",
                )
        return BrowserTestReport(
            exit_code=result.exit_code,
            tests=counts.tests,
            failures=counts.failures,
            errors=counts.errors,
            skipped=counts.skipped,
            failed_tests=counts.failed_tests,
            duration_s=took,
            results_dir=kept_dir,
            kept=kept,
            output_tail=result.output_tail[-1500:] if failed else "",
        )

    def _keep(self, out: Path) -> tuple[str, list[str]]:
        """Copy what the failed run left (JUnit, traces, screenshots) where it is kept:
        regular files only, never through a symlink, within the size bound."""
        try:
            info = activity.info()
            run_name, step = info.workflow_id, f"{info.activity_id}-{info.attempt}"
        except RuntimeError:  # outside an activity (tests of the provider itself)
            run_name, step = "no-workflow", f"run-{int(time.time() * 1000)}"
        target = self._results / _safe(run_name) / _safe(step)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True, exist_ok=True)
        kept: list[str] = []
        budget = self._max_kept_bytes
        for dirpath, dirnames, filenames in os.walk(out):
            dirnames[:] = [d for d in dirnames if not Path(dirpath, d).is_symlink()]
            for name in sorted(filenames):
                source = Path(dirpath, name)
                if source.is_symlink() or not source.is_file():
                    continue
                size = source.stat().st_size
                if size > budget:
                    continue
                budget -= size
                relative = source.relative_to(out)
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target / relative)
                kept.append(str(relative))
        self._prune()
        return str(target), sorted(kept)[:_MAX_NAMED]

    def _prune(self) -> None:
        """Keep the newest `keep_runs` runs' directories."""
        runs = sorted(
            (p for p in self._results.iterdir() if p.is_dir()),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in runs[self._keep_runs :]:
            shutil.rmtree(old, ignore_errors=True)


def _safe(name: str | None) -> str:
    name = name or ""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:120] or "_"
