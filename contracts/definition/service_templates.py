"""Backing services of a test stage: what `services:` may name and how `env:` refers to them.

`services: [postgres:16, redis:7]` names a kind and, optionally, the version the suite
expects. A stage's `env:` values may use `{services.<kind>.<field>}`, e.g.
`DATABASE_URL: "{services.postgres.url}"`, filled in once the servers run (their ports are
only known then). This module is pure: the definition's validation (workflow side) and the
test activity share it, so a placeholder accepted at `slipway validate` always renders.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "ENDPOINT_FIELDS",
    "SERVICE_KINDS",
    "Endpoint",
    "ServiceWanted",
    "StartedServices",
    "parse_service",
    "render",
    "requested_services",
    "template_references",
    "version_satisfies",
]

SERVICE_KINDS = ("postgres", "redis")
ENDPOINT_FIELDS = ("host", "port", "user", "password", "database", "url", "version")


@dataclass(frozen=True)
class ServiceWanted:
    """One `services:` entry: a kind and the version asked for (None: any)."""

    kind: str
    version: str | None

    def __str__(self) -> str:
        return f"{self.kind}:{self.version}" if self.version else self.kind


@dataclass(frozen=True)
class Endpoint:
    """Where a running backing service answers, as the tests' environment sees it."""

    kind: str
    host: str
    port: int
    user: str
    password: str
    database: str
    url: str
    version: str

    def field(self, name: str) -> str:
        return str(getattr(self, name))


@dataclass
class StartedServices:
    """Running services by kind, and one line per service for the stage's summary."""

    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def parse_service(text: str) -> ServiceWanted:
    """`postgres:16` → (postgres, "16"); a sentence naming the choices for anything else."""
    kind, _, version = text.strip().partition(":")
    if kind not in SERVICE_KINDS:
        raise ValueError(
            f"unknown backing service {text!r}; one of: {', '.join(SERVICE_KINDS)} "
            "(optionally with a version, e.g. postgres:16)"
        )
    if version and not all(part.isdigit() for part in version.split(".")):
        raise ValueError(f"version {version!r} of {kind!r} must be numbers like 16 or 7.2")
    return ServiceWanted(kind, version or None)


def requested_services(services: Sequence[str]) -> list[ServiceWanted]:
    """A test stage's `services:` as a starter reads them: `slipway validate` refuses bad
    entries, but a hand-made request may carry one, so it is one non-retryable sentence."""
    from contracts.errors import ErrorType, verdict

    try:
        return [parse_service(s) for s in services]
    except ValueError as exc:
        raise verdict(ErrorType.INVALID_DEFINITION, f"The test stage's services: {exc}.") from exc


def template_references(text: str) -> list[tuple[str, str]]:
    """The (kind, field) pairs `text` refers to; ValueError for any other placeholder."""
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid template: {exc}") from None
    found = []
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        pieces = name.split(".")
        if (
            len(pieces) != 3
            or pieces[0] != "services"
            or pieces[1] not in SERVICE_KINDS
            or pieces[2] not in ENDPOINT_FIELDS
            or spec
            or conversion
        ):
            raise ValueError(
                f"unknown placeholder {{{name}}} in {text!r}; use "
                f"{{services.<{'|'.join(SERVICE_KINDS)}>.<{'|'.join(ENDPOINT_FIELDS)}>}} "
                "(write {{ and }} for literal braces)"
            )
        found.append((pieces[1], pieces[2]))
    return found


def render(text: str, endpoints: Mapping[str, Endpoint]) -> str:
    """`text` with every `{services.kind.field}` replaced from `endpoints` (by kind)."""
    out = []
    for literal, name, _, _ in string.Formatter().parse(text):
        out.append(literal)
        if name is not None:
            _, kind, field = name.split(".")
            out.append(endpoints[kind].field(field))
    return "".join(out)


def version_satisfies(asked: str | None, actual: str) -> bool:
    """Whether `actual` (16.2) is a release of `asked` (16): the asked parts are a prefix."""
    if asked is None:
        return True
    wanted = asked.split(".")
    return actual.split(".")[: len(wanted)] == wanted
