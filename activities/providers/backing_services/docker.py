"""Backing services as containers, for workers next to a Docker engine: one container per
backing service from the official image at the version asked (`postgres:16` → image
`postgres:16`), its port published on 127.0.0.1 at a host port the engine picks, removed
(with its anonymous volumes) when the test run ends, however it ends.

Ready means the engine's healthcheck passes (pg_isready, redis-cli ping) and then the worker
itself gets an answer to a real query: INFO over Redis's protocol, `SHOW server_version`
with psql when the worker has PostgreSQL's client (pgserver's or Debian's). The endpoints
are on 127.0.0.1, so the engine must publish ports on the worker's own machine (a local
socket, or a rootless podman's). The containers carry the worker's name (its hostname) and
process (pid and start time): a restarted worker removes what it left behind when it starts,
and leaves alone those of another live worker on the same machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import docker.errors
import structlog

from activities.providers.backing_services.installation import Installation
from activities.providers.backing_services.kubernetes import (
    DEFAULT_VERSIONS,
    MANAGED,
    NAME,
    PORTS,
    WORKER,
)
from activities.providers.backing_services.postgres import PostgresKind
from activities.providers.backing_services.redis import RedisKind
from activities.providers.builders.engine_stream import DockerClientFactory, error_of, events
from contracts.definition.service_templates import (
    Endpoint,
    ServiceWanted,
    StartedServices,
    requested_services,
    version_satisfies,
)
from contracts.errors import ErrorType, verdict
from plumbing.proctools import pid_alive, process_start_ticks

__all__ = ["DockerBackingServices", "WorkerCheck", "worker_checks"]

_log = structlog.get_logger("slipway.backing_services")

WorkerCheck = Callable[[Endpoint], str | None]
"""A real query from the worker: the server's own version once it answers, else None."""

# Which process of the worker made a container: the engine runs on the worker's machine.
WORKER_PROCESS = "slipway.dev/worker-process"
_SECOND_NS = 1_000_000_000
# The engine's healthcheck: interval and timeout in ns; 60 failures in a row is unhealthy.
_HEALTH = {"interval": _SECOND_NS, "timeout": 3 * _SECOND_NS, "retries": 60}
# A pull that fails with one of these will not succeed by retrying the run.
_UNPULLABLE = ("not found", "manifest unknown", "denied", "unauthorized", "no such", "invalid")


def worker_checks() -> dict[str, WorkerCheck]:
    """The queries this worker can make: Redis always (its protocol is spoken here),
    PostgreSQL only when a psql is installed (else the engine's healthcheck alone decides)."""
    checks: dict[str, WorkerCheck] = {
        "redis": functools.partial(RedisKind().check, Installation("redis", ""))
    }
    postgres = PostgresKind()
    installed = postgres.installations()
    if installed:
        checks["postgres"] = functools.partial(postgres.check, installed[0])
    return checks


class DockerBackingServices:
    """`BackingServices` as containers of the engine `client()` connects to."""

    def __init__(
        self,
        client: DockerClientFactory,
        *,
        images: Mapping[str, str] | None = None,
        worker: str | None = None,
        process: int | None = None,
        checks: Mapping[str, WorkerCheck] | None = None,
        ready_timeout_s: float = 180.0,
        poll_s: float = 1.0,
    ) -> None:
        self._client = client
        self._images = {"postgres": "postgres", "redis": "redis", **(images or {})}
        self._worker = worker or socket.gethostname()
        self._process = _process_label(process or os.getpid())
        self._checks = dict(checks) if checks is not None else worker_checks()
        self._ready_timeout_s = ready_timeout_s
        self._poll_s = poll_s

    def clean_leftovers(self) -> list[str]:
        """At worker start: remove the containers this worker left when it died (not those
        of another worker process on this machine that still runs)."""
        client = self._connect()
        labels = [f"{MANAGED}=slipway", f"{WORKER}={self._worker}"]
        found = client.api.containers(all=True, filters={"label": labels})
        names = [
            str(c["Names"][0]).lstrip("/")
            for c in found
            if not _still_running((c.get("Labels") or {}).get(WORKER_PROCESS, ""))
        ]
        for name in names:
            _remove(client, name)
        if names:
            _log.info("removed backing-service containers a dead worker left", containers=names)
        return names

    @contextlib.contextmanager
    def started(
        self, services: Sequence[str], progress: Callable[[str], None]
    ) -> Iterator[StartedServices]:
        wanted = requested_services(services)
        client = self._connect()
        run = uuid.uuid4().hex[:8]
        created: list[str] = []
        started = StartedServices()
        try:
            for service in wanted:
                name = f"slipway-{service.kind}-{run}"
                created.append(name)
                endpoint = self._start(client, service, name, progress)
                started.endpoints[service.kind] = endpoint
                started.notes.append(_note(service, endpoint.version, name))
            yield started
        finally:
            for name in reversed(created):
                _remove(client, name)

    def _connect(self) -> Any:
        try:
            return self._client()
        except docker.errors.DockerException as exc:
            raise RuntimeError(
                f"The Docker engine that runs backing services does not answer: {exc}"
            ) from exc

    def _start(
        self, client: Any, service: ServiceWanted, name: str, progress: Callable[[str], None]
    ) -> Endpoint:
        version = service.version or DEFAULT_VERSIONS[service.kind]
        image = f"{self._images[service.kind]}:{version}"
        _pull(client, image, progress)
        password = secrets.token_urlsafe(16)
        port = PORTS[service.kind]
        container = client.containers.create(
            image,
            name=name,
            labels={
                MANAGED: "slipway",
                WORKER: self._worker,
                WORKER_PROCESS: self._process,
                NAME: name,
            },
            # Loopback only, at a port the engine picks: no race for a free port, and
            # nothing outside the machine reaches a test database.
            ports={f"{port}/tcp": ("127.0.0.1", None)},
            **_settings(service.kind, password),
        )
        progress(f"starting {image} (container {name})")
        container.start()
        host_port = self._wait_healthy(container, name, image, port, progress)
        if service.kind == "postgres":
            user, database = "postgres", "postgres"
            url = f"postgresql://{user}:{password}@127.0.0.1:{host_port}/{database}"
        else:
            user, database = "default", "0"
            url = f"redis://{user}:{password}@127.0.0.1:{host_port}/{database}"
        endpoint = Endpoint(
            service.kind, "127.0.0.1", host_port, user, password, database, url, version
        )
        check = self._checks.get(service.kind)
        if check is None:
            return endpoint
        answered = self._wait(
            lambda: check(endpoint), f"{image} (container {name}) to answer a query", progress
        )
        return dataclasses.replace(endpoint, version=answered)

    def _wait_healthy(
        self, container: Any, name: str, image: str, port: int, progress: Callable[[str], None]
    ) -> int:
        def healthy_port() -> str | None:
            container.reload()
            state = container.attrs.get("State") or {}
            if state.get("Status") in ("exited", "dead"):
                lines = container.logs(tail=3).decode(errors="replace").splitlines()
                logs = "; ".join(line.strip() for line in lines if line.strip())
                raise RuntimeError(
                    f"The backing service container {name} ({image}) exited with code "
                    f"{state.get('ExitCode')}: {logs or state.get('Error') or 'no output'}"
                )
            health = state.get("Health") or {}
            if health.get("Status") == "unhealthy":
                last = (health.get("Log") or [{}])[-1].get("Output", "").strip()
                raise RuntimeError(
                    f"The backing service container {name} ({image}) is unhealthy: "
                    f"{last or 'its healthcheck kept failing'}"
                )
            if health.get("Status") != "healthy":
                return None
            published = container.attrs["NetworkSettings"]["Ports"].get(f"{port}/tcp") or []
            return next((b["HostPort"] for b in published if b.get("HostPort")), None)

        return int(self._wait(healthy_port, f"{image} (container {name})", progress))

    def _wait(
        self, answer: Callable[[], str | None], what: str, progress: Callable[[str], None]
    ) -> str:
        deadline = time.monotonic() + self._ready_timeout_s
        while True:
            found = answer()
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Waited {self._ready_timeout_s:.0f} s for the backing service {what}."
                )
            progress(f"waiting for {what}")
            time.sleep(self._poll_s)


def _process_label(pid: int) -> str:
    return f"{pid}-{process_start_ticks(pid)}"


def _still_running(process: str) -> bool:
    """Whether the worker process a container's label names still runs (the same pid and
    start time: a pid reused by a later process does not count)."""
    pid, _, started = process.partition("-")
    return pid.isdigit() and started.isdigit() and pid_alive(int(pid), int(started))


def _settings(kind: str, password: str) -> dict[str, Any]:
    """The container's environment, command and the engine's healthcheck for `kind`."""
    if kind == "postgres":
        return {
            "environment": {
                "POSTGRES_PASSWORD": password,
                "POSTGRES_USER": "postgres",
                "POSTGRES_DB": "postgres",
            },
            # Healthy once the real server takes TCP connections, not the image's init server
            # (which listens on its Unix socket only).
            "healthcheck": {
                "test": ["CMD", "pg_isready", "-h", "127.0.0.1", "-U", "postgres"],
                **_HEALTH,
            },
        }
    return {
        # redis-cli reads the password from REDISCLI_AUTH, so the healthcheck's argv has none.
        "environment": {"REDISCLI_AUTH": password},
        "command": ["redis-server", "--requirepass", password, "--save", "", "--appendonly", "no"],
        "healthcheck": {"test": ["CMD-SHELL", "redis-cli ping | grep -q PONG"], **_HEALTH},
    }


def _pull(client: Any, image: str, progress: Callable[[str], None]) -> None:
    """Pull `image` unless the engine has it (as Kubernetes' IfNotPresent does for tags)."""
    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        progress(f"pulling {image}")
    repository, tag = image.rsplit(":", 1)
    try:
        for event in events(client.api.pull(repository, tag=tag, stream=True, decode=True)):
            error = error_of(event)
            if error:
                raise _pull_failed(image, error)
            progress(f"pulling {image}")
    except docker.errors.APIError as exc:
        raise _pull_failed(image, str(exc.explanation or exc)) from None


def _pull_failed(image: str, reason: str) -> Exception:
    text = f"The backing service image {image} could not be pulled: {reason.rstrip('.')}."
    if any(word in reason.lower() for word in _UNPULLABLE):
        return verdict(ErrorType.CONFIGURATION, text)
    return RuntimeError(text)  # a registry or network hiccup: a retry may get it


def _remove(client: Any, name: str) -> None:
    # Forced (a running container goes too) with its anonymous volumes (postgres declares
    # one); a failed removal is logged, not raised over the test run's own outcome.
    try:
        client.api.remove_container(name, force=True, v=True)
    except docker.errors.NotFound:
        return  # never created (a failed pull), or already gone
    except Exception as exc:  # an engine hiccup must not hide the run's result
        _log.warning("could not remove backing service", name=name, error=str(exc))


def _note(service: ServiceWanted, version: str, name: str) -> str:
    if version_satisfies(service.version, version):
        return f"{service.kind} {version} (container {name})"
    return f"{service.kind} {service.version} asked, {version} running (container {name})"
