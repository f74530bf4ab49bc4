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
from pydantic import BaseModel

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
from plumbing.files import file_lock
from plumbing.proctools import free_port, pid_alive, port_free, stop_group

__all__ = ["LocalResources", "resources_root"]

_log = structlog.get_logger("slipway.resources")


class ResourceRecord(BaseModel):
    """`resource.json`: what runs, where, and how to reach it (the password stays here)."""

    kind: str
    service: str
    environment: str
    asked: str = ""
    note: str = ""
    version: str
    location: str
    origin: str = ""
    lacking: str = ""
    host: str
    port: int
    user: str
    password: str
    database: str
    url: str
    pid: int
    pid_start: int | None = None
    created: float

    @property
    def installation(self) -> Installation:
        return Installation(self.kind, self.version, Path(self.location), self.origin, self.lacking)

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(
            kind=self.kind,
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=self.database,
            url=self.url,
            version=self.version,
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
    (preferred / "WHERE").write_text(f"{root}\n")
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

    def _dir(self, service: str, environment: str, kind: str) -> Path:
        return self.root / service / environment / kind

    # --- reading -------------------------------------------------------------------------

    def records(self) -> list[dict[str, object]]:
        """Every resource: service, environment, kind, version, port, running (no
        password)."""
        found = []
        for path in sorted(self.root.glob("*/*/*/resource.json")):
            record = ResourceRecord.model_validate_json(path.read_text())
            found.append(
                {
                    **record.model_dump(
                        include={"service", "environment", "kind", "version", "port"}
                    ),
                    "running": self._running(record),
                    "data": str(path.parent),
                }
            )
        return found

    # --- ensuring ------------------------------------------------------------------------

    def ensure(
        self, wanted: str, service: str, environment: str, progress: Callable[[str], None]
    ) -> tuple[Endpoint, str]:
        """The resource `wanted` (`postgres:16`) of `service` in `environment`, running:
        created on first use, started again if found stopped. Its endpoint and a note for
        the summary."""
        asked = parse_service(wanted)
        kind = self._kinds[asked.kind]
        home = self._dir(service, environment, asked.kind)
        home.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(home.parent / f"{asked.kind}.lock", timeout_s=None):
            record = self._read(home)
            if record is not None and self._running(record):
                if kind.check(record.installation, record.endpoint) is not None:
                    return record.endpoint, record.note
                self._halt(record)
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
            record = self._read(self._dir(service, environment, kind))
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
        self._write(
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
        installation = record.installation
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
        home = self._dir(service, environment, kind)
        if not home.parent.is_dir():
            return False
        with file_lock(home.parent / f"{kind}.lock", timeout_s=None):
            record = self._read(home)
            if record is None and not home.exists():
                return False
            if record is not None:
                self._halt(record)
            shutil.rmtree(home, ignore_errors=True)
        return True

    # --- helpers -------------------------------------------------------------------------

    def _halt(self, record: ResourceRecord) -> None:
        stop_group(record.pid, record.pid_start, 15.0, first=self._kinds[record.kind].stop_signal)

    @staticmethod
    def _running(record: ResourceRecord) -> bool:
        return record.pid_start is not None and pid_alive(record.pid, record.pid_start)

    @staticmethod
    def _read(home: Path) -> ResourceRecord | None:
        path = home / "resource.json"
        if not path.is_file():
            return None
        return ResourceRecord.model_validate_json(path.read_text())

    @staticmethod
    def _write(home: Path, record: ResourceRecord) -> None:
        path = home / "resource.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(record.model_dump_json(indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)
