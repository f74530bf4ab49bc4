"""Running a live-test tool (a load tool, a dynamic scanner) against a running environment.

Both tools are the worker's (locust in its venv, wapiti from Debian), yet what they read is
the commit's: every answer of the service under test, crawled pages a scanner parses. So
they run as scanners do: in the worker's sandbox (`activities.providers.execution.sandbox`), with
the allow-listed environment (no proxy: the target is the environment's URL), a throwaway HOME,
one writable work directory for their reports, in their own process group, under a hard
deadline; the caller heartbeats from their progress files while they run.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from temporalio.exceptions import ApplicationError

from activities.providers.execution import sandbox as sandboxes
from activities.providers.execution.child_env import child_env
from activities.providers.execution.sandbox import Bind, Mounts
from activities.providers.scanners.scanner_process import (
    ScannerRun,
    ScannerUnavailableError,
    last_line,
)
from activities.wiring.backends import Heartbeat
from plumbing.proctools import kill_group, process_group

__all__ = ["failed_run", "run_tool", "work_directory"]

POLL_S = 1.0


@contextmanager
def work_directory(prefix: str) -> Iterator[Path]:
    """A fresh directory the tool writes its reports into (the sandbox's uid may write it);
    taken back and removed afterwards."""
    sandbox = sandboxes.current()
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        path = Path(name)
        path.chmod(0o755)
        sandbox.give(path)
        try:
            yield path
        finally:
            sandbox.take_back(path)


def run_tool(
    argv: Sequence[str],
    workdir: Path,
    timeout_s: float,
    heartbeat: Heartbeat,
    progress: Callable[[], str],
    env: Mapping[str, str] | None = None,
) -> ScannerRun:
    """Run `argv` in `workdir` (sandboxed, writable there only) until it exits or `timeout_s`
    passes (then its whole group is killed and the tool is unavailable: it judged nothing);
    `heartbeat(progress())` every second meanwhile (a cancelled activity's heartbeat raises,
    and the block stops the group). `env`: the tool's own variables (CHROME_PATH), added to
    the allow-listed environment."""
    sandbox = sandboxes.current()
    name = Path(argv[0]).name
    with tempfile.TemporaryDirectory(prefix="slipway-live-home-") as home:
        environment = child_env(
            home=Path(home), extra={"NO_PROXY": "*", "no_proxy": "*", **(env or {})}
        )
        try:
            with (
                sandbox.prepare(
                    argv,
                    cwd=workdir,
                    env=environment,
                    mounts=Mounts(
                        binds=(Bind(workdir, writable=True),),
                        worker_tools=True,
                        program_from_worker=True,
                    ),
                ) as prepared,
                tempfile.TemporaryFile("w+") as out,
                tempfile.TemporaryFile("w+") as err,
                process_group(
                    prepared.argv,
                    cwd=workdir if not sandbox.active else "/",
                    env=prepared.env,
                    pass_fds=prepared.pass_fds,
                    stdout=out,
                    stderr=err,
                    text=True,
                ) as process,
            ):
                deadline = time.monotonic() + timeout_s
                while True:
                    try:
                        process.wait(timeout=POLL_S)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    if time.monotonic() > deadline:
                        kill_group(process)
                        raise ScannerUnavailableError(
                            f"{name} did not finish within {timeout_s:.0f} s"
                        )
                    heartbeat(progress())
                out.seek(0)
                err.seek(0)
                return ScannerRun(process.returncode, out.read(), err.read())
        except OSError as exc:
            raise ScannerUnavailableError(
                f"{argv[0]} could not be started: {exc.strerror}"
            ) from exc
        except ApplicationError as exc:  # the sandbox's refusal: the tool did not run
            raise ScannerUnavailableError(exc.message) from exc


def failed_run(run: ScannerRun, tool: str) -> str:
    """Why a tool's run gave no report: its exit and the last line it printed."""
    return f"{tool} exited {run.exit_code} without a report: {last_line(run.stderr or run.stdout)}"
