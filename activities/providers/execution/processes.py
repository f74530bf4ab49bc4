"""Run a command as a subprocess, heartbeating while it runs, keeping the tail of its output.

Every command run here is the service's (tests, setup, command stages, installs, builds), so
it runs in the worker's sandbox (`activities.providers.execution.sandbox`) with the `Mounts` its
caller names."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from activities.providers.execution import sandbox as sandboxes
from activities.providers.execution.sandbox import Mounts, Sandbox
from activities.wiring.backends import Heartbeat
from plumbing.proctools import kill_group, process_group

__all__ = ["ProcessResult", "run_with_heartbeat"]

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
    mounts: Mounts,
    every_s: float = 1.0,
    timeout_s: float | None = None,
    sandbox: Sandbox | None = None,
) -> ProcessResult:
    """Run `command` in `cwd` in the sandbox (`sandbox`, else the worker's) seeing `mounts`,
    calling `heartbeat` every `every_s` seconds while it runs.

    Output goes to a temporary file, not a pipe, so a chatty command can never block on a full
    pipe while we poll. Raises FileNotFoundError/PermissionError if the command cannot start,
    and the sandbox's refusal when the worker may run no untrusted code.
    """
    start = time.monotonic()
    confinement = sandbox or sandboxes.current()
    with (
        confinement.prepare(command, cwd=cwd, env=env, mounts=mounts) as prepared,
        tempfile.TemporaryFile() as output,
        # Its own process group, so a timeout or a cancellation stops the command and its
        # children: the command never outlives its activity.
        process_group(
            prepared.argv,
            cwd=cwd if not confinement.active else "/",
            env=prepared.env,
            pass_fds=prepared.pass_fds,
            stdout=output,
            stderr=subprocess.STDOUT,
        ) as process,
    ):
        timed_out = False
        while True:
            try:
                process.wait(timeout=every_s)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - start
                if timeout_s is not None and elapsed > timeout_s:
                    timed_out = True
                    kill_group(process)
                    break
                heartbeat(f"{Path(command[0]).name} running for {elapsed:.0f}s")
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
