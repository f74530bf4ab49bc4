"""Generic command stages (`kind: command`): a frontend build (`npm ci && npm run build`), a
code generator. The command runs in the service's directory on the worker with the
allow-listed environment plus the stage's `env:` and a throwaway HOME; package managers get
their index settings (`child_env(install=True)`) and a download cache under the worker's state
directory, so the second run does not fetch everything again."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from activities.backends import Heartbeat
from activities.providers.child_env import child_env
from activities.providers.processes import run_with_heartbeat
from contracts.activity import CommandReport, CommandRequest
from contracts.errors import ErrorType, verdict

__all__ = ["SubprocessCommandRunner"]


class SubprocessCommandRunner:
    """Runs a command stage's command; a non-zero exit is reported, not raised."""

    def __init__(self, cache_root: Path | None = None, timeout_s: float | None = None) -> None:
        default = Path(tempfile.gettempdir()) / f"slipway-cache-{os.getuid()}"
        self._cache = Path(cache_root or default).resolve()
        self._timeout_s = timeout_s

    def run(self, request: CommandRequest, heartbeat: Heartbeat) -> CommandReport:
        cwd = Path(request.path)
        if not request.command:
            raise verdict(
                ErrorType.INVALID_DEFINITION,
                "The command stage has an empty `command`.",
            )
        if not cwd.is_dir():
            raise verdict(
                ErrorType.GATE_FAILED,
                f"The command's directory {str(cwd)!r} does not exist: check the checkout "
                "and the service path.",
            )
        with tempfile.TemporaryDirectory(prefix="slipway-command-home-") as home:
            env = child_env(
                home=Path(home),
                install=True,
                extra={
                    "PIP_CACHE_DIR": str(self._cache / "pip"),
                    "npm_config_cache": str(self._cache / "npm"),
                },
                stage_env=request.env,
            )
            try:
                result = run_with_heartbeat(
                    request.command, cwd, env, heartbeat, timeout_s=self._timeout_s
                )
            except (FileNotFoundError, PermissionError) as exc:
                raise verdict(
                    ErrorType.CONFIGURATION,
                    f"The command {request.command[0]!r} could not be started "
                    f"({exc.strerror}): install it on the worker's PATH or fix `command`.",
                ) from exc
        return CommandReport(
            exit_code=result.exit_code,
            duration_s=round(result.duration_s, 3),
            output_tail=result.output_tail[-1500:],
            timed_out=result.timed_out,
        )
