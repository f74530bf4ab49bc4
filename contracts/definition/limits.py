"""The named limits of a pipeline definition, checked by `slipway validate`
(docs/definition.md: Limits).

Each one keeps a definition that validates runnable: it must fit the workflow input that
carries it (Temporal refuses payloads over 2 MB), parse without unbounded memory or
recursion, and never ask Temporal for a timer it cannot set.
"""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = [
    "DOCKER_TAG",
    "ENV_NAME",
    "KUBE_SECRET_NAME",
    "MAX_CONFIG_ENTRIES",
    "MAX_DURATION",
    "MAX_EXTENDS_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NAME_CHARS",
    "MAX_NESTING",
    "MAX_SETTING_CHARS",
    "MAX_SPEC_BYTES",
    "MAX_STAGES",
    "MAX_STAGES_READ",
    "MAX_TEMPLATE_CHARS",
    "SAFE_NAME",
    "SECRET_NAME",
    "SERVICE_NAME",
    "SHA",
    "short",
]

MAX_FILE_BYTES = 1024 * 1024
"""A definition file (and each file it extends) is read up to this size, no further."""

MAX_STAGES = 1_000
"""Stages a run can carry: it records about 6 history events per stage, and Temporal ends a
run whose history passes 51,200 events (a 10,000-stage chain was terminated at 51,201), and
slows well before that; 1,000 stages stay under its 10,240-event warning."""

MAX_STAGES_READ = 10_000
"""A longer list is refused before any stage is checked; up to it, every check runs (in
linear time), so a definition over MAX_STAGES still hears of all its other problems."""

MAX_NESTING = 32
"""Mappings and lists inside one another, counted from the top of the file."""

MAX_EXTENDS_DEPTH = 8
MAX_SPEC_BYTES = 1536 * 1024
"""The validated definition as JSON, inside the run's input (Temporal's payload limit is
2 MB; the run context and roles travel with it)."""

MAX_TEMPLATE_CHARS = 128
"""A tag or message template, and what it expands to with sample values (Docker's tag limit)."""

MAX_NAME_CHARS = 63
SAFE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9_])?$")
"""Stage, environment and gate names: letters, digits, '_', '.', '-'; no '/', no spaces, no
leading '.' or '-' (never a path or an option), at most 63 characters."""

SERVICE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
"""Service names are DNS labels (Kubernetes object names, workflow ids)."""

SHA = re.compile(r"^([0-9a-f]{40}|[0-9a-f]{64})$")
"""A full commit sha (SHA-1 or SHA-256 repositories), lower-case hex."""

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
"""A setting's or secret's name: the environment variable the release reads."""

SECRET_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
"""A Secrets Manager (or local store) secret name, as AWS allows them."""

KUBE_SECRET_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
"""A Kubernetes Secret's name (a DNS subdomain)."""

MAX_CONFIG_ENTRIES = 100
"""Settings, and secrets, per environment or artifact (each)."""

MAX_SETTING_CHARS = 4096
"""A setting's value."""

DOCKER_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")

MAX_DURATION = timedelta(days=365)
"""No duration field may exceed this; most fields have a tighter bound of their own."""


def short(value: object, limit: int = 60) -> str:
    """`repr` of a value from a definition, cut so that an error never echoes a large input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
