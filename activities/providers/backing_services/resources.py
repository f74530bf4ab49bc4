"""Resources that outlive releases: one real server per (service, environment, kind) on the
local platform, created on the first deploy that needs it and kept across releases and worker
restarts (it runs in its own session, and its data stays on disk), removed only by
`slipway resources delete SERVICE ENVIRONMENT KIND`. Two services never share a database.

Each lives in `<root>/<service>/<environment>/<kind>/`: `resource.json` (version,
installation, port, password, server pid), the server's data and its log. A release reaches
it through the same placeholders a test stage uses (`{services.postgres.url}`), rendered
when its process starts. A server found stopped (a reboot) is started again on its data, on
the same port if free."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import structlog

from activities.providers.backing_services.installation import Installation
from activities.providers.backing_services.kinds import ServerKind
from activities.providers.backing_services.local import describe_choice, find_installation
from activities.providers.backing_services.postgres import PostgresKind
from activities.providers.backing_services.processes import (
    RunAs,
    ServerProcess,
    private_root,
    reachable_installation,
    run_as_for,
    wait_until,
)
from activities.providers.backing_services.redis import RedisKind
from contracts.definition.service_templates import Endpoint, ServiceWanted, parse_service
from contracts.errors import ErrorType, verdict
from plumbing.proctools import free_port, port_free, stop_group
from plumbing.resource_records import (
    STOP_WAIT_S,
    WHERE,
    ResourceRecord,
    ResourceRecords,
)

__all__ = ["LocalResources", "resources_root"]

_log = structlog.get_logger("slipway.resources")


def _installation(record: ResourceRecord) -> Installation:
    return Installation(
        record.kind, record.version, Path(record.location), record.origin, record.lacking
    )


def _endpoint(record: ResourceRecord) -> Endpoint:
    return Endpoint(
        kind=record.kind,
        host=record.host,
        port=record.port,
        user=record.user,
        password=record.password,
        database=record.database,
        url=record.url,
        version=record.version,
    )


def resources_root(preferred: Path, run_as: RunAs | None) -> Path:
    """`preferred` if the servers' user can reach it; else a directory under /var/tmp (kept
    across reboots, unlike /tmp) named after `preferred`, so each state dir has its own."""
    preferred.mkdir(parents=True, exist_ok=True)
    resolved = preferred.resolve()
    if run_as is None or all(p.stat().st_mode & 0o001 for p in (resolved, *resolved.parents)):
        return resolved
    key = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    root = private_root("slipway-resources", Path("/var/tmp")) / key
    root.mkdir(mode=0o755, exist_ok=True)
    (preferred / WHERE).write_text(f"{root}\n")
    return root


@dataclasses.dataclass(frozen=True)
class _Where:
    service: str
    environment: str
    home: Path


class LocalResources:
    """The local platform's resources under `root` (the worker's `<state_dir>/resources`)."""

    def __init__(
        self,
        root: Path,
        kinds: Mapping[str, ServerKind] | None = None,
        *,
        run_as_user: str = "nobody",
        health_timeout_s: float = 60.0,
    ) -> None:
        self._preferred = Path(root)
        self._kinds: dict[str, ServerKind] = dict(
            kinds or {"postgres": PostgresKind(), "redis": RedisKind()}
        )
        self._run_as_user = run_as_user
        self._health_timeout_s = health_timeout_s

    @functools.cached_property
    def _run_as(self) -> RunAs | None:
        return run_as_for(self._run_as_user)

    @functools.cached_property
    def root(self) -> Path:
        return resources_root(self._preferred, self._run_as)

    @functools.cached_property
    def _records(self) -> ResourceRecords:
        return ResourceRecords(self.root)

    # --- reading -------------------------------------------------------------------------

    def records(self) -> list[dict[str, object]]:
        """Every resource: service, environment, kind, version, port, running (no
        password)."""
        return self._records.listing()

    # --- ensuring ------------------------------------------------------------------------

    def ensure(
        self, wanted: str, service: str, environment: str, progress: Callable[[str], None]
    ) -> tuple[Endpoint, str]:
        """The resource `wanted` (`postgres:16`) of `service` in `environment`, running:
        created on first use, started again if found stopped. Its endpoint and a note for
        the summary."""
        asked = parse_service(wanted)
        kind = self._kinds[asked.kind]
        with self._records.locked(service, environment, asked.kind) as home:
            record = self._records.read(home)
            if record is not None and self._records.running(record):
                if kind.check(_installation(record), _endpoint(record)) is not None:
                    return _endpoint(record), record.note
                stop_group(record.pid, record.pid_start, STOP_WAIT_S, first=kind.stop_signal)
            where = _Where(service, environment, home)
            return self._start(asked.kind, asked.version, where, record, progress)

    def endpoints(
        self,
        kinds: Iterable[str],
        service: str,
        environment: str,
        progress: Callable[[str], None],
    ) -> dict[str, Endpoint]:
        """The running endpoints of `service`'s `kinds` in `environment` (a release's
        placeholders): each as it exists (started again if stopped), or created at the
        newest version."""
        out = {}
        for kind in kinds:
            record = self._records.read(self._records.home(service, environment, kind))
            asked = f"{kind}:{record.asked}" if record and record.asked else kind
            out[kind] = self.ensure(asked, service, environment, progress)[0]
        return out

    def _start(
        self,
        kind_name: str,
        asked: str | None,
        where: _Where,
        record: ResourceRecord | None,
        progress: Callable[[str], None],
    ) -> tuple[Endpoint, str]:
        kind = self._kinds[kind_name]
        environment, home = where.environment, where.home
        if record is not None:
            installation = self._installation_of(record, kind)
            note, password, port = record.note, record.password, record.port
            # What is left of its group (backends exit after their server) goes: PostgreSQL
            # refuses to start while its old pid exists.
            stop_group(record.pid, record.pid_start, first=kind.stop_signal)
        else:
            wanted = ServiceWanted(kind_name, asked)
            installation, passed_over = find_installation(
                wanted, kind, f"The {kind_name} resource of the environment {environment!r}"
            )
            note = describe_choice(wanted, installation.version, installation, passed_over)
            password, port = "", free_port()
        runnable = reachable_installation(installation, self._run_as)
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._run_as is not None:
            os.chown(home, self._run_as.uid, self._run_as.gid)
        if not port_free(port):
            port = free_port()
        server = ServerProcess(home / ".runs", home, kind_name, self._run_as, data_dir=home)
        progress(f"starting the {kind_name} resource of {environment}")
        endpoint = kind.launch(runnable, server, port, password or None)
        try:
            wait_until(
                functools.partial(kind.check, runnable, endpoint),
                server,
                progress,
                f"the {kind_name} resource of {environment} on port {port}",
                self._health_timeout_s,
            )
        except BaseException:
            if server.process is not None:
                stop_group(server.process.pid, server.started, 0.0, first=signal.SIGKILL)
            raise
        assert server.process is not None
        shutil.rmtree(home / ".runs", ignore_errors=True)  # no throwaway-run records
        endpoint = dataclasses.replace(endpoint, version=installation.version)
        self._records.write(
            home,
            ResourceRecord(
                kind=kind_name,
                service=where.service,
                environment=environment,
                asked=asked or "",
                note=note,
                version=installation.version,
                location=str(installation.location),
                origin=installation.origin,
                lacking=installation.lacking,
                host=endpoint.host,
                port=endpoint.port,
                user=endpoint.user,
                password=endpoint.password,
                database=endpoint.database,
                url=endpoint.url,
                pid=server.process.pid,
                pid_start=server.started,
                stop_signal=kind.stop_signal,
                created=record.created if record else time.time(),
            ),
        )
        _log.info(
            "resource running",
            kind=kind_name,
            service=where.service,
            environment=environment,
            port=port,
        )
        return endpoint, note

    def _installation_of(self, record: ResourceRecord, kind: ServerKind) -> Installation:
        installation = _installation(record)
        if installation.location.exists():
            return installation
        same = [i for i in kind.installations() if i.version == installation.version]
        if not same:
            raise verdict(
                ErrorType.CONFIGURATION,
                f"The {record.kind} resource of {record.environment!r} holds data of "
                f"{record.kind} {installation.version}, which is no longer installed here: "
                "install it again, or delete the resource with `slipway resources delete "
                f"{record.service} {record.environment} {record.kind}`.",
            )
        return same[0]

    # --- deleting ------------------------------------------------------------------------

    def delete(self, service: str, environment: str, kind: str) -> bool:
        """Stop the resource and delete its data; False if there was none."""
        return self._records.delete(service, environment, kind)
