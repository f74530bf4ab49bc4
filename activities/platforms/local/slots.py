"""Process slots on loopback: one running release per (service, environment, slot).

Each release runs in its own venv (the wheel and its dependencies, built once per digest) with
an allow-listed environment (`activities.providers.execution.child_env`), never the worker's
packages or secrets; `python` in the run command is that venv's interpreter.

A slot's state lives on disk (`<state_dir>/slots/<service>/<environment>/<slot>.json`): the
running digest, port, pid and the revisions it ran before. A worker that restarts reads it and
finds the processes still running, because they run in their own session.

A process is recorded before it is spawned, not only once it is ready: a launch token goes into
the slot's state and the process's environment first (a worker killed between spawning and
writing the pid leaves the token, by which the process is found), then the process is noted
among the slot's `leftovers` while it starts, and so is the process it replaces until it is
stopped. A worker killed at any point of a deploy therefore leaves no process that nothing
knows about; the next deploy, rollback or stop of the slot stops them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
from pydantic import BaseModel, ConfigDict, Field

from activities.platforms.local import loopback
from activities.platforms.local._proc import LAUNCH_ENV, launched_processes, spawn
from activities.providers.backing_services.resources import LocalResources
from activities.providers.builders.wheel_builder import wheel_filename
from activities.providers.execution.child_env import child_env
from activities.providers.execution.venvs import VenvCache, VenvSpec, python_in
from activities.wiring.backends import Heartbeat
from contracts.activity import (
    Artifact,
    DeployRequest,
    DeployResult,
    ReleaseConfig,
    ReleaseSpec,
    Slot,
)
from contracts.definition.service_templates import render, template_references
from contracts.errors import ErrorType, verdict
from plumbing.files import atomic_write_text, file_lock, tail
from plumbing.proctools import (
    LOOPBACK,
    free_port,
    pid_alive,
    process_group,
    process_start_ticks,
    stop_group,
)

__all__ = ["ProcessRef", "SlotManager", "SlotRevision", "SlotState", "check_names"]

_PYTHON = re.compile(r"python(\d+(\.\d+)?)?")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
HISTORY_KEPT = 20


def _settings_only(config: ReleaseConfig, environment: str) -> dict[str, str]:
    if config.secrets:
        raise verdict(
            ErrorType.CONFIGURATION,
            f"environment {environment!r}, field 'secrets.{next(iter(config.secrets))}': this "
            "platform was built without a secret resolver",
        )
    return dict(config.settings)


def check_names(service: str, environment: str) -> None:
    """Refuse service or environment names that cannot be part of a path on disk."""
    for label, value in (("service", service), ("environment", environment)):
        if not _NAME.fullmatch(value):
            raise verdict(
                ErrorType.INVALID_DEFINITION,
                f"{label} name {value!r} cannot name a local slot: use letters, digits, "
                "'-', '_' and '.'",
            )


class SlotRevision(BaseModel):
    """Everything needed to run one release again: a rollback redeploys from this."""

    model_config = ConfigDict(extra="ignore")

    digest: str
    artifact: Artifact
    run_command: list[str]
    health_path: str = "/health"
    ready_path: str = "/ready"
    config: ReleaseConfig = Field(
        default_factory=ReleaseConfig,
        description="Settings and secret references with versions (values are read at each "
        "start, never stored here).",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="The release's variables as declared: resource placeholders are rendered "
        "when its process starts (a resource's port may change after a reboot).",
    )
    deployed_at: float = Field(default_factory=time.time)

    @classmethod
    def of(cls, digest: str, release: DeployRequest | ReleaseSpec) -> SlotRevision:
        """The revision that runs `release` (a deploy's request, or a recorded release to put
        back) under `digest`, its artifact and configuration together."""
        return cls(
            digest=digest,
            artifact=release.artifact,
            run_command=list(release.run_command),
            health_path=release.health_path,
            ready_path=release.ready_path,
            config=release.config,
            env=dict(release.env),
        )


class ProcessRef(BaseModel):
    """A process by pid and start ticks (so a reused pid is never mistaken for it)."""

    model_config = ConfigDict(extra="ignore")

    pid: int
    start: int | None = None


class SlotState(BaseModel):
    """What runs in one slot, as recorded on disk."""

    model_config = ConfigDict(extra="ignore")

    service: str
    environment: str
    slot: Slot
    current: SlotRevision | None = None
    port: int | None = None
    pid: int | None = None
    pid_start: int | None = Field(None, description="Start ticks of `pid`, against pid reuse.")
    history: list[SlotRevision] = Field(
        default_factory=list, description="Revisions this slot ran before, oldest first."
    )
    leftovers: list[ProcessRef] = Field(
        default_factory=list,
        description="Processes of this slot that take no traffic and are to be stopped: one "
        "still starting (or whose start a crash interrupted), one a new release replaced.",
    )
    launching: list[str] = Field(
        default_factory=list,
        description="Launch tokens of processes being spawned whose pid is not recorded yet; "
        "left behind by a crash, they find the process to stop (see LAUNCH_ENV).",
    )

    @property
    def digest(self) -> str | None:
        return self.current.digest if self.current else None

    @property
    def previous_digest(self) -> str | None:
        return self.history[-1].digest if self.history else None

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}" if self.port else ""

    def running(self) -> bool:
        return self.pid is not None and pid_alive(self.pid, self.pid_start)


class SlotManager:
    """Runs releases (unpacked wheels) as processes on free loopback ports, one per slot.

    `deploy` is idempotent: the digest already running healthy in the slot is a no-op. A new
    release is started beside the old one, and the old process is stopped only after the new
    one is ready and `on_ready` (the router rewiring) has returned.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        ready_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
        probe_timeout_s: float = 2.0,
        config_env: Callable[[ReleaseConfig, str], dict[str, str]] | None = None,
    ) -> None:
        # Absolute: release dirs become a process's cwd.
        self.state_dir = Path(state_dir).resolve()
        self.venvs = VenvCache(self.state_dir / "venvs")
        self.resources = LocalResources(self.state_dir / "resources")
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.probe_timeout_s = probe_timeout_s
        # Settings and resolved secret values for a release's environment (the deployer's
        # SecretResolver.values); without one, only settings, and a secret is refused.
        self.config_env = config_env or _settings_only

    # --- state ---------------------------------------------------------------------------

    def _dir(self, service: str, environment: str) -> Path:
        check_names(service, environment)
        return self.state_dir / "slots" / service / environment

    def _path(self, service: str, environment: str, slot: Slot) -> Path:
        return self._dir(service, environment) / f"{slot}.json"

    def state(self, service: str, environment: str, slot: Slot) -> SlotState:
        """The slot's recorded state (empty when nothing was ever deployed there)."""
        path = self._path(service, environment, slot)
        if not path.exists():
            return SlotState(service=service, environment=environment, slot=slot)
        return SlotState.model_validate_json(path.read_text(encoding="utf-8"))

    def _save(self, state: SlotState) -> None:
        path = self._path(state.service, state.environment, state.slot)
        atomic_write_text(path, state.model_dump_json(indent=2))

    def _lock(self, service: str, environment: str, slot: Slot) -> Path:
        return self._dir(service, environment) / f"{slot}.lock"

    def states(self) -> list[SlotState]:
        """Every slot recorded under the state dir."""
        root = self.state_dir / "slots"
        if not root.exists():
            return []
        return [
            SlotState.model_validate_json(p.read_text(encoding="utf-8"))
            for p in sorted(root.glob("*/*/*.json"))
        ]

    def healthy(self, state: SlotState, path: str | None = None) -> bool:
        """The slot's process is alive and answers 200 on `path` (its ready path by default)."""
        if state.current is None or state.port is None or not state.running():
            return False
        return self._probe(state.port, path or state.current.ready_path)

    def _probe(self, port: int, path: str) -> bool:
        try:
            response = loopback.get(f"http://{LOOPBACK}:{port}{path}", timeout=self.probe_timeout_s)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    # --- deploy --------------------------------------------------------------------------

    def deploy(
        self,
        request: DeployRequest,
        heartbeat: Heartbeat,
        *,
        on_ready: Callable[[SlotState, bool], None] | None = None,
    ) -> DeployResult:
        """Run `request.artifact` in `request.slot`; see the class docstring."""
        revision = SlotRevision.of(request.release_digest, request)
        return self.run_revision(
            request.service, request.environment, request.slot, revision, heartbeat, on_ready
        )

    def run_revision(
        self,
        service: str,
        environment: str,
        slot: Slot,
        revision: SlotRevision,
        heartbeat: Heartbeat,
        on_ready: Callable[[SlotState, bool], None] | None = None,
    ) -> DeployResult:
        """Run `revision` in the slot (a deploy, or a rollback restoring an older one)."""
        with file_lock(self._lock(service, environment, slot)):
            old = self.state(service, environment, slot)
            if old.digest == revision.digest and self.healthy(old):
                if on_ready is not None:
                    # Re-wire anyway: a retried activity may have died before wiring.
                    on_ready(old, False)
                # ...or before stopping the process it replaced.
                self._stop_leftovers(old, heartbeat)
                return DeployResult(
                    environment=environment,
                    slot=slot,
                    digest=revision.digest,
                    previous_digest=old.previous_digest,
                    endpoint=old.endpoint,
                    changed=False,
                )
            # Resolved first: a secret that no longer resolves changes nothing.
            configured = self.config_env(revision.config, environment)
            release_dir = self.unpack(revision.artifact)
            venv = self.release_venv(revision.artifact, heartbeat)
            port = free_port()
            command = self._command(revision, port, venv)
            log_path = self.log_path(service, environment, slot)
            offset = log_path.stat().st_size if log_path.exists() else 0
            env = self._release_process_env(
                service,
                environment,
                slot,
                venv,
                {
                    # Resource placeholders first; the definition's settings and secrets win.
                    **self.release_env(service, environment, revision.env, heartbeat),
                    **configured,
                    "SLIPWAY_SLOT": slot,
                    "SLIPWAY_DIGEST": revision.digest,
                    "SLIPWAY_VERSION": revision.artifact.version,
                    "SLIPWAY_PORT": str(port),
                    LAUNCH_ENV: uuid.uuid4().hex,
                },
            )
            heartbeat(f"starting {service} {revision.digest[:19]} in {environment}/{slot}")
            self._save(old.model_copy(update={"launching": [*old.launching, env[LAUNCH_ENV]]}))
            pid = spawn(command, cwd=release_dir, env=env, log_path=log_path)
            pid_start = process_start_ticks(pid)
            # Recorded before it is ready: a worker killed while it starts must not leave a
            # process behind that no state file mentions (a retry starts another one).
            starting = ProcessRef(pid=pid, start=pid_start)
            self._save(old.model_copy(update={"leftovers": [*old.leftovers, starting]}))
            try:
                self._wait_ready(pid, port, revision, heartbeat, log_path, offset, slot)
            except BaseException:
                stop_group(pid, pid_start, self.stop_timeout_s)
                self._save(old)
                raise
            history = list(old.history)
            if old.current is not None and old.current.digest != revision.digest:
                history.append(old.current)
            leftovers = list(old.leftovers)
            if old.pid is not None and old.pid != pid:
                # Still serving until the router points at the new process; stopped below.
                leftovers.append(ProcessRef(pid=old.pid, start=old.pid_start))
            new = SlotState(
                service=service,
                environment=environment,
                slot=slot,
                current=revision.model_copy(update={"deployed_at": time.time()}),
                port=port,
                pid=pid,
                pid_start=pid_start,
                history=history[-HISTORY_KEPT:],
                leftovers=leftovers,
                launching=old.launching,
            )
            self._save(new)
            if on_ready is not None:
                on_ready(new, True)
            self._stop_leftovers(new, heartbeat)
            return DeployResult(
                environment=environment,
                slot=slot,
                digest=revision.digest,
                previous_digest=old.digest,
                endpoint=new.endpoint,
                changed=True,
            )

    def release_phase(self, request: DeployRequest, heartbeat: Heartbeat) -> str:
        """Run the release's `release` command once for this (service, environment, release,
        command), in the release's directory and venv with the environment's configuration,
        and say what it did. A release is the artifact and its configuration, so a settings
        change runs it again, as it does on Kubernetes. Recorded on disk when it succeeds, so
        a retried deploy does not run it again; a failure is the deploy's (nothing else has
        changed by then)."""
        if not request.release:
            return ""
        shown = " ".join(request.release)
        identity = json.dumps([request.release_digest, request.release])
        record = (
            self._dir(request.service, request.environment)
            / "release-phase"
            / f"{hashlib.sha256(identity.encode()).hexdigest()[:32]}.json"
        )
        if record.is_file():
            return f"`{shown}` ran already for this release"
        release_dir = self.unpack(request.artifact)
        venv = self.release_venv(request.artifact, heartbeat)
        command = list(request.release)
        if _PYTHON.fullmatch(command[0]):
            command[0] = str(python_in(venv))
        # That environment's configuration, as the release's processes get it: a migration
        # reads the same database settings and secrets as the service.
        configured = self.config_env(request.config, request.environment)
        env = self._release_process_env(
            request.service,
            request.environment,
            "release",
            venv,
            {
                **self.release_env(request.service, request.environment, request.env, heartbeat),
                **configured,
                "SLIPWAY_DIGEST": request.artifact.digest,
                "SLIPWAY_VERSION": request.artifact.version,
            },
        )
        heartbeat(f"release phase of {request.service} in {request.environment}: {shown}")
        log_path = self.state_dir / "logs" / f"{request.service}-{request.environment}-release.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = log_path.stat().st_size if log_path.exists() else 0
        # Its whole group is stopped if the activity is cancelled while it runs.
        with (
            log_path.open("ab") as log,
            process_group(
                command, cwd=release_dir, env=env, stdout=log, stderr=subprocess.STDOUT
            ) as process,
        ):
            while process.poll() is None:
                heartbeat(f"release phase running: {shown}")
                time.sleep(0.5)
        if process.returncode != 0:
            raise verdict(
                ErrorType.DEPLOY_FAILED,
                f"The release phase `{shown}` of {request.service} "
                f"{request.artifact.version or request.artifact.digest[:19]} in "
                f"{request.environment} exited {process.returncode}; nothing was deployed: "
                f"{tail(log_path, 10, offset)}",
            )
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            record, json.dumps({"command": request.release, "at": time.time(), "exit": 0})
        )
        return f"ran `{shown}`"

    def _release_process_env(
        self, service: str, environment: str, home_name: str, venv: Path, extra: dict[str, str]
    ) -> dict[str, str]:
        """The environment of a release's process (a slot's server, or its release phase):
        the release's own venv and an allow-listed environment, never the worker's
        site-packages or secrets, with a HOME of its own."""
        home = self.state_dir / "homes" / service / environment / home_name
        home.mkdir(parents=True, exist_ok=True)
        return child_env(
            home=home,
            prepend_path=[venv / "bin"],
            extra={
                **extra,
                "VIRTUAL_ENV": str(venv),
                "SLIPWAY_SERVICE": service,
                "SLIPWAY_ENVIRONMENT": environment,
            },
        )

    def release_env(
        self, service: str, environment: str, templates: dict[str, str], heartbeat: Heartbeat
    ) -> dict[str, str]:
        """A release's `env:` with the environment's resources filled in (started again if a
        reboot stopped them; made if they were deleted)."""
        kinds = sorted({kind for v in templates.values() for kind, _ in template_references(v)})
        endpoints = (
            self.resources.endpoints(kinds, service, environment, heartbeat) if kinds else {}
        )
        return {name: render(value, endpoints) for name, value in templates.items()}

    def _stop_leftovers(self, state: SlotState, heartbeat: Heartbeat) -> None:
        """Stop the slot's leftover processes (never its current one) and forget them."""
        if not state.leftovers and not state.launching:
            return
        heartbeat(f"stopping the previous process of {state.environment}/{state.slot}")
        for pid, start in self._strays(state):
            if pid != state.pid:
                stop_group(pid, start, self.stop_timeout_s)
        self._save(state.model_copy(update={"leftovers": [], "launching": []}))

    @staticmethod
    def _strays(state: SlotState) -> list[tuple[int, int | None]]:
        """The slot's leftovers, and processes found by the launch tokens a crash left."""
        found = [(ref.pid, ref.start) for ref in state.leftovers]
        for token in state.launching:
            found += [(pid, None) for pid in launched_processes(token)]
        return found

    def _command(self, revision: SlotRevision, port: int, venv: Path) -> list[str]:
        if not revision.run_command:
            raise verdict(
                ErrorType.INVALID_DEFINITION,
                "the deploy request has no run_command: the local platform needs the command "
                "that starts the service, e.g. ['python', '-m', 'hello_service', '--port', "
                "'{port}']",
            )
        command = [
            part.replace("{port}", str(port)).replace("{host}", LOOPBACK)
            for part in revision.run_command
        ]
        if _PYTHON.fullmatch(command[0]):
            # The release's venv holds the wheel and its dependencies.
            command[0] = str(python_in(venv))
        return command

    def _wait_ready(
        self,
        pid: int,
        port: int,
        revision: SlotRevision,
        heartbeat: Heartbeat,
        log_path: Path,
        offset: int,
        slot: Slot,
    ) -> None:
        started = time.monotonic()
        deadline = started + self.ready_timeout_s
        url = f"http://{LOOPBACK}:{port}{revision.ready_path}"
        last = "no answer yet"
        while True:
            if not pid_alive(pid):
                raise verdict(
                    ErrorType.DEPLOY_FAILED,
                    f"{revision.digest} exited before {url} answered 200 in slot {slot!r}; "
                    f"fix the release and deploy again. Last output:\n"
                    f"{tail(log_path, 20, offset)}",
                )
            try:
                response = loopback.get(url, timeout=self.probe_timeout_s)
                if response.status_code == 200:
                    break
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as error:
                last = type(error).__name__
            if time.monotonic() > deadline:
                raise verdict(
                    ErrorType.DEPLOY_FAILED,
                    f"{revision.digest} in slot {slot!r} was not ready within "
                    f"{self.ready_timeout_s:.0f} s ({url}: {last}); check the release's "
                    f"readiness endpoint. Last output:\n{tail(log_path, 20, offset)}",
                )
            heartbeat(f"waiting for {url} ({time.monotonic() - started:.0f} s, {last})")
            time.sleep(0.1)
        health = f"http://{LOOPBACK}:{port}{revision.health_path}"
        if revision.health_path != revision.ready_path and not self._probe(
            port, revision.health_path
        ):
            raise verdict(
                ErrorType.DEPLOY_FAILED,
                f"{revision.digest} in slot {slot!r} is ready but {health} does not answer 200; "
                f"check the release's liveness endpoint. Last output:\n"
                f"{tail(log_path, 20, offset)}",
            )

    def log_path(self, service: str, environment: str, slot: Slot) -> Path:
        """Where the slot's processes write stdout and stderr."""
        return self.state_dir / "logs" / f"{service}-{environment}-{slot}.log"

    # --- artifacts -----------------------------------------------------------------------

    def unpack(self, artifact: Artifact) -> Path:
        """Extract the wheel once into `releases/<digest-hex>/`; reused by every slot."""
        if artifact.kind != "wheel":
            raise verdict(
                ErrorType.INVALID_DEFINITION,
                f"the local platform runs wheels, not {artifact.kind!r} artifacts "
                f"({artifact.digest}); build a wheel or use the kubernetes platform",
            )
        hex_digest = artifact.digest.split(":", 1)[-1]
        if not re.fullmatch(r"[0-9a-fA-F]{8,128}", hex_digest):
            raise verdict(
                ErrorType.ARTIFACT_MISSING,
                f"artifact digest {artifact.digest!r} is not 'sha256:<hex>'; rebuild it",
            )
        target = self.state_dir / "releases" / hex_digest
        if target.is_dir():
            return target
        source = Path(artifact.uri)
        if not source.is_file():
            raise verdict(
                ErrorType.ARTIFACT_MISSING,
                f"artifact {artifact.digest} not found at {artifact.uri}; build and publish "
                "it again",
            )
        if not zipfile.is_zipfile(source):
            raise verdict(
                ErrorType.ARTIFACT_MISSING,
                f"artifact {artifact.digest} at {artifact.uri} is not a wheel (zip); rebuild it",
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{hex_digest}.{uuid.uuid4().hex[:8]}.tmp"
        with zipfile.ZipFile(source) as wheel:
            # extractall drops absolute paths and '..' parts, so a wheel cannot write outside.
            wheel.extractall(staging)
        try:
            staging.rename(target)
        except OSError:
            # Another worker unpacked the same digest first; theirs is identical.
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def release_venv(self, artifact: Artifact, heartbeat: Heartbeat) -> Path:
        """A venv with the wheel and its dependencies installed from pip's configured index,
        built once per digest (`venvs/`) and shared by every slot running it."""
        hex_digest = artifact.digest.split(":", 1)[-1]
        # pip installs a wheel only under its proper `name-version-tags.whl` file name.
        named = self.state_dir / "wheels" / hex_digest / wheel_filename(Path(artifact.uri))
        if not named.is_file():
            named.parent.mkdir(parents=True, exist_ok=True)
            staging = named.with_name(f".{named.name}.{uuid.uuid4().hex[:8]}.tmp")
            shutil.copyfile(artifact.uri, staging)
            os.replace(staging, named)
        spec = VenvSpec(
            label=f"release {artifact.digest[:19]}",
            install=(str(named),),
            fingerprint=artifact.digest,
            readable=(named,),
            error_type=ErrorType.DEPLOY_FAILED,
            hint="The release's dependencies (its wheel's Requires-Dist) must be on pip's "
            "configured index (PIP_INDEX_URL, PIP_FIND_LINKS, pip.conf).",
        )
        return self.venvs.ensure(spec, heartbeat)

    # --- stop ----------------------------------------------------------------------------

    def stop(self, service: str, environment: str, slot: Slot) -> bool:
        """Stop the slot's process and empty the slot (its revision goes to history).
        Returns whether anything was running or recorded."""
        with file_lock(self._lock(service, environment, slot)):
            state = self.state(service, environment, slot)
            if (
                state.current is None
                and state.pid is None
                and not state.leftovers
                and not state.launching
            ):
                return False
            if state.pid is not None:
                stop_group(state.pid, state.pid_start, self.stop_timeout_s)
            for pid, start in self._strays(state):
                stop_group(pid, start, self.stop_timeout_s)
            history = list(state.history)
            if state.current is not None:
                history.append(state.current)
            self._save(
                SlotState(
                    service=service,
                    environment=environment,
                    slot=slot,
                    history=history[-HISTORY_KEPT:],
                )
            )
            return True

    def stop_all(self) -> int:
        """Stop every slot's process recorded under the state dir (demo and test teardown);
        returns how many slots were emptied."""
        stopped = 0
        for state in self.states():
            if self.stop(state.service, state.environment, state.slot):
                stopped += 1
        return stopped
