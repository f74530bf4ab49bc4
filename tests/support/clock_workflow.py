"""Workflow code that reads the wall clock, which a workflow must never do: the worker's
sandbox has to stop it."""

from __future__ import annotations

from datetime import UTC, datetime

from temporalio import workflow


@workflow.defn(name="ClockReadingWorkflow")
class ClockReadingWorkflow:
    @workflow.run
    async def run(self) -> str:
        return datetime.now(UTC).isoformat()
