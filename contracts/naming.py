"""Names shared by the worker, the CLI and the workflows: task queue, ids, search attributes,
the signal environments answer runs with."""

from __future__ import annotations

import hashlib
import re

from temporalio.common import SearchAttributeKey

__all__ = [
    "COMMIT_SHA",
    "ENVIRONMENT",
    "LEASE_SIGNAL",
    "PIPELINE_STATUS",
    "SEARCH_ATTRIBUTES",
    "SERVICE",
    "STAGE",
    "canary_id",
    "environment_id",
    "monitor_id",
    "pipeline_id",
]

SERVICE = SearchAttributeKey.for_keyword("Service")
COMMIT_SHA = SearchAttributeKey.for_keyword("CommitSha")
ENVIRONMENT = SearchAttributeKey.for_keyword("Environment")
STAGE = SearchAttributeKey.for_keyword("Stage")
PIPELINE_STATUS = SearchAttributeKey.for_keyword("PipelineStatus")
SEARCH_ATTRIBUTES = (SERVICE, COMMIT_SHA, ENVIRONMENT, STAGE, PIPELINE_STATUS)

LEASE_SIGNAL = "environment_lease"
"""The signal a pipeline receives from an environment: granted, or superseded. Here, not in
the environment workflow's modules: a pipeline's sandbox imports only what a pipeline runs."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


_BRANCH_CHARS = 40


def pipeline_id(service: str, branch: str, commit: str, pull_request: int | None = None) -> str:
    """One workflow id per (service, branch, commit): starting it again finds the same run.

    The branch is part of it: the same sha on `develop` (staging only) and then on `main`
    (production) are two runs; the second reuses the first's artifact (builders never build a
    commit twice). A long branch name is cut and given a short hash, so ids stay short.

    A pull-request run is `pipeline-{service}-{sha12}-pr-{N}`: one per (PR, head commit),
    never the id of a branch run (whose ids end in 12 hex digits; N has at most 10), so it
    never attaches to, supersedes or queues with one."""
    if pull_request is not None:
        return f"pipeline-{_UNSAFE.sub('-', service)}-{commit[:12]}-pr-{pull_request}"
    name = _UNSAFE.sub("-", branch)
    if len(name) > _BRANCH_CHARS:
        name = f"{name[: _BRANCH_CHARS - 9]}-{hashlib.sha256(branch.encode()).hexdigest()[:8]}"
    return f"pipeline-{_UNSAFE.sub('-', service)}-{name}-{commit[:12]}"


def environment_id(service: str, environment: str) -> str:
    """The environment workflow of one service's environment."""
    return f"environment-{_UNSAFE.sub('-', service)}-{_UNSAFE.sub('-', environment)}"


def environment_work_queue(task_queue: str) -> str:
    """Where the environment workflows on `task_queue` send their own work (fence, holder
    check, restore): a queue with slots of its own, which no activity waiting for an
    environment's answer can hold (every deployer worker polls it beside `task_queue`)."""
    return f"{task_queue}-environment-work"


def canary_id(parent_id: str, stage: str) -> str:
    return f"{parent_id}-canary-{stage}"


def monitor_id(parent_id: str, stage: str) -> str:
    return f"{parent_id}-monitor-{stage}"
