"""Names shared by the worker, the CLI and the workflows: task queue, ids, search attributes."""

from __future__ import annotations

import re

from temporalio.common import SearchAttributeKey

__all__ = [
    "COMMIT_SHA",
    "ENVIRONMENT",
    "PIPELINE_STATUS",
    "SEARCH_ATTRIBUTES",
    "SERVICE",
    "STAGE",
    "TASK_QUEUE",
    "canary_id",
    "monitor_id",
    "pipeline_id",
]

TASK_QUEUE = "slipway"
"""Default task queue; the worker and the CLI take SLIPWAY_TASK_QUEUE to override it."""

SERVICE = SearchAttributeKey.for_keyword("Service")
COMMIT_SHA = SearchAttributeKey.for_keyword("CommitSha")
ENVIRONMENT = SearchAttributeKey.for_keyword("Environment")
STAGE = SearchAttributeKey.for_keyword("Stage")
PIPELINE_STATUS = SearchAttributeKey.for_keyword("PipelineStatus")
SEARCH_ATTRIBUTES = (SERVICE, COMMIT_SHA, ENVIRONMENT, STAGE, PIPELINE_STATUS)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def pipeline_id(service: str, commit: str) -> str:
    """One workflow id per commit of a service: starting it again finds the same run."""
    return f"pipeline-{_UNSAFE.sub('-', service)}-{commit[:12]}"


def canary_id(parent_id: str, stage: str) -> str:
    return f"{parent_id}-canary-{stage}"


def monitor_id(parent_id: str, stage: str) -> str:
    return f"{parent_id}-monitor-{stage}"
