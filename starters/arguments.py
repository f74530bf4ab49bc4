"""Checks of command-line arguments, as typer callbacks: a bad one is refused before
anything connects, with a sentence naming the option, and exit code 2 (typer's usage error).

The patterns are the definition's (`contracts.definition.limits`): an argument that overrides a
definition value must meet the rule the definition had to meet.
"""

from __future__ import annotations

import re

import typer

from contracts.definition.limits import SAFE_NAME, SERVICE_NAME, SHA, short

__all__ = [
    "branch_name",
    "commit_sha",
    "optional_commit_sha",
    "optional_service_name",
    "repository",
    "run_id",
    "safe_name",
    "service_name",
]

_CONTROL = re.compile(r"[\x00-\x20\x7f]")


def service_name(value: str) -> str:
    if not SERVICE_NAME.match(value):
        raise typer.BadParameter(
            f"{short(value)} is not a service name: 1-63 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def optional_service_name(value: str) -> str:
    return service_name(value) if value else value


def safe_name(value: str) -> str:
    if not SAFE_NAME.match(value):
        raise typer.BadParameter(
            f"{short(value)} is not a valid name: 1-63 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return value


def commit_sha(value: str) -> str:
    if not SHA.match(value):
        raise typer.BadParameter(
            f"{short(value)} is not a full commit sha (40 or 64 lower-case hex digits); "
            "resolve a branch or short sha with `git rev-parse` first"
        )
    return value


def optional_commit_sha(value: str) -> str:
    return commit_sha(value) if value else value


def branch_name(value: str) -> str:
    # git's own rules (check-ref-format), the ones that keep a branch from being an option,
    # a path outside refs/ or a string that breaks a log line.
    if (
        not value
        or len(value) > 255
        or value.startswith(("-", "/", "."))
        or value.endswith(("/", ".", ".lock"))
        or ".." in value
        or "//" in value
        or "@{" in value
        or _CONTROL.search(value)
        or any(c in value for c in "~^:?*[\\")
    ):
        raise typer.BadParameter(f"{short(value)} is not a valid git branch name")
    return value


def repository(value: str) -> str:
    if not value or value.startswith("-") or _CONTROL.search(value) or len(value) > 2048:
        raise typer.BadParameter(
            f"{short(value)} is not a repository path or URL (no spaces, not starting with '-')"
        )
    return value


def run_id(value: str) -> str:
    if not value or len(value) > 1000 or _CONTROL.search(value):
        raise typer.BadParameter(f"{short(value)} is not a workflow id")
    return value
