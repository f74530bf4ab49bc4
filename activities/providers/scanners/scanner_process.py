"""The skeleton every command-line scanner shares: find its binary, run it in its own process
group under a deadline, read its JSON, and turn any of that failing into an unavailable report
(never an empty, passing one)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.exceptions import ApplicationError

from activities.providers.execution import sandbox as sandboxes
from activities.providers.execution.child_env import child_env
from activities.providers.execution.sandbox import Bind, Mounts, install_paths, paths_named_in
from contracts.activity import ScannerReport
from plumbing.proctools import kill_group, process_group

__all__ = [
    "ScannerRun",
    "ScannerUnavailableError",
    "find_binary",
    "json_output",
    "last_line",
    "missing_report",
    "run_scanner",
    "scanner_env",
    "unavailable_report",
]


def find_binary(name: str) -> Path | None:
    """A scanner's executable: next to this interpreter first (installed in the venv by pip),
    then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


@dataclass(frozen=True)
class ScannerRun:
    exit_code: int
    stdout: str
    stderr: str


class ScannerUnavailableError(Exception):
    """The scanner could not run; the message is the report's reason."""


def scanner_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A scanner's environment: the allow-list (`child_env`, index settings included) plus
    trivy's own settings, with its vulnerability database kept in the worker's cache rather
    than the throwaway HOME (it is hundreds of MB)."""
    trivy = {k: v for k, v in os.environ.items() if k.startswith("TRIVY_")}
    trivy.setdefault("TRIVY_CACHE_DIR", str(Path.home() / ".cache" / "trivy"))
    return child_env(home=home, install=True, extra={**trivy, **(extra or {})})


def run_scanner(
    argv: Sequence[str],
    cwd: Path,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    *,
    writable: Sequence[Path] = (),
) -> ScannerRun:
    """Run `argv` in `cwd` with `scanner_env` plus `env`. Scanners are worker tools but read
    the service's code (and pip-audit's resolution runs its build code): they run in the
    worker's sandbox (`activities.providers.execution.sandbox`) with the worker's venv, `cwd` and
    what the worker's install settings (and `env`, the scanner's own settings) name read-only,
    `writable` (a report's directory) writable, a throwaway HOME and never the worker's
    secrets."""
    sandbox = sandboxes.current()
    with tempfile.TemporaryDirectory(prefix="slipway-scan-home-") as home:
        environment = scanner_env(Path(home), env)
        trivy_cache = environment.get("TRIVY_CACHE_DIR")
        for directory in writable:
            Path(directory).mkdir(parents=True, exist_ok=True)
            sandbox.give(Path(directory))
        readable = [*install_paths(), *paths_named_in(env or {})]
        if trivy_cache:
            readable.append(Path(trivy_cache))
        try:
            with (
                # A copy of the scanned tree: the checkout is the worker's (its directory 0700)
                # and must stay unwritable; what a scanner writes there is thrown away.
                sandbox.writable_copy(Path(cwd)) as copy,
                sandbox.prepare(
                    argv,
                    cwd=cwd,
                    env=environment,
                    mounts=Mounts(
                        binds=(
                            *copy.binds,
                            *(Bind(Path(p)) for p in readable),
                            *(Bind(Path(p), writable=True) for p in writable),
                        ),
                        worker_tools=True,
                        program_from_worker=True,
                    ),
                ) as prepared,
                # Own process group: on timeout the scanner's children (pip-audit runs pip)
                # stop too.
                process_group(
                    prepared.argv,
                    cwd=cwd if not sandbox.active else "/",
                    env=prepared.env,
                    pass_fds=prepared.pass_fds,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ) as process,
            ):
                try:
                    stdout, stderr = process.communicate(timeout=timeout_s)
                except subprocess.TimeoutExpired as exc:
                    kill_group(process)
                    process.communicate()
                    raise ScannerUnavailableError(
                        f"{Path(argv[0]).name} did not finish within {timeout_s:.0f} s"
                    ) from exc
        except OSError as exc:
            raise ScannerUnavailableError(
                f"{argv[0]} could not be started: {exc.strerror}"
            ) from exc
        except ApplicationError as exc:  # the sandbox's refusal: the scan did not happen
            raise ScannerUnavailableError(exc.message) from exc
    return ScannerRun(process.returncode, stdout, stderr)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def json_output(run: ScannerRun, tool: str) -> Any:
    try:
        return json.loads(run.stdout)
    except json.JSONDecodeError as exc:
        raise ScannerUnavailableError(
            f"{tool} exited {run.exit_code} without a JSON report: {last_line(run.stderr)}"
        ) from exc


def missing_report(name: str, hint: str) -> ScannerReport:
    return ScannerReport(
        scanner=name, available=False, reason=f"{name} is not installed on this worker: {hint}"
    )


def unavailable_report(name: str, reason: object) -> ScannerReport:
    return ScannerReport(scanner=name, available=False, reason=str(reason))
