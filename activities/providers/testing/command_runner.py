"""Generic command stages (`kind: command`): a frontend build (`npm ci && npm run build`), a
code generator. The command runs in the service's directory on the worker with the
allow-listed environment plus the stage's `env:` and a throwaway HOME; package managers get
their index settings (`child_env(install=True)`). Without the sandbox (the policy's
`sandbox: off`) they share a download cache under `cache_root`.

The command runs in the worker's sandbox (`activities.providers.execution.sandbox`) in a writable
copy of the service directory made for this attempt; its package caches are private to the run (a
shared writable cache would let one service plant a package for the next). When it exits 0,
what it wrote (new and changed files, as the build that follows packs them) is brought back
into the checkout by the worker (`sync_back`: never through a symlink, never a setuid bit)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import structlog

from activities.providers.execution import sandbox as sandboxes
from activities.providers.execution.child_env import child_env
from activities.providers.execution.processes import run_with_heartbeat
from activities.providers.execution.sandbox import Bind, Mounts, install_paths, sync_back
from activities.wiring.backends import Heartbeat
from contracts.activity import CommandReport, CommandRequest
from contracts.errors import ErrorType, verdict

__all__ = ["SubprocessCommandRunner"]

_log = structlog.get_logger("slipway.commands")


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
        sandbox = sandboxes.current()
        sandbox.check()
        with (
            sandbox.writable_copy(cwd) as copy,
            tempfile.TemporaryDirectory(prefix="slipway-command-home-") as home,
        ):
            pip_cache, npm_cache = self._cache / "pip", self._cache / "npm"
            env = child_env(
                home=Path(home),
                install=True,
                extra={"PIP_CACHE_DIR": str(pip_cache), "npm_config_cache": str(npm_cache)},
                stage_env=request.env,
            )
            mounts = Mounts(
                binds=(*copy.binds, *(Bind(path) for path in install_paths())),
                private=(pip_cache, npm_cache),
            )
            try:
                result = run_with_heartbeat(
                    request.command,
                    cwd,
                    env,
                    heartbeat,
                    mounts=mounts,
                    timeout_s=self._timeout_s,
                )
            except (FileNotFoundError, PermissionError) as exc:
                raise verdict(
                    ErrorType.CONFIGURATION,
                    f"The command {request.command[0]!r} could not be started "
                    f"({exc.strerror}): install it on the worker's PATH or fix `command`.",
                ) from exc
            if copy.copy != copy.original and result.exit_code == 0 and not result.timed_out:
                heartbeat("bringing the command's output into the checkout")
                skipped = sync_back(copy.copy, copy.original)
                if skipped:
                    _log.warning("command output not brought back", skipped=skipped[:20])
        return CommandReport(
            exit_code=result.exit_code,
            duration_s=round(result.duration_s, 3),
            output_tail=result.output_tail[-1500:],
            timed_out=result.timed_out,
        )
