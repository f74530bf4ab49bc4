"""The Web UI speaks stages: every activity, child workflow and timer of a run carries a
summary naming its stage, so the timeline reads `security_scan: bandit, …`, not `scan`."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from plumbing.updates import execute_update
from tests.support.memory import MemoryBackends
from tests.support.pipelines import start, wait_for_gate
from worker import build_worker
from workflows.messages import Decision, PipelineState
from workflows.naming import canary_id, monitor_id
from workflows.pipeline import PipelineWorkflow

pytestmark = pytest.mark.timeout(60)


async def _summaries(client: Client, workflow_id: str, kind: EventType.ValueType) -> list[str]:
    """The summary of every event of `kind` in a workflow's history ('' where none)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    found: list[str] = []
    for event in history.events:
        if event.event_type != kind:
            continue
        payload: Payload = event.user_metadata.summary
        if not payload.data:
            found.append("")
            continue
        (text,) = await client.data_converter.decode([payload], [str])
        found.append(text)
    return found


async def test_activities_children_and_timers_are_labelled_by_stage(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    client = time_env.client
    async with build_worker(client, memory.backends(), task_queue):
        handle: Any = await start(client, task_queue)
        await wait_for_gate(handle, "staging")
        await execute_update(
            handle, PipelineWorkflow.approve_update, Decision(approver="alice", gate="staging")
        )
        await wait_for_gate(handle, "production")
        for person in ("carol", "dave"):
            await execute_update(
                handle,
                PipelineWorkflow.approve_update,
                Decision(approver=person, gate="production"),
            )
        result = await handle.result()
    assert result.state == PipelineState.SUCCEEDED

    scheduled = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    pipeline = await _summaries(client, handle.id, scheduled)
    stage_names = {s.name for s in result.stages}
    # Every stage activity names its stage (lease bookkeeping is the engine's, not a stage's).
    labelled = [s for s in pipeline if s.split(":")[0] in stage_names]
    assert "security_scan: bandit, pip-audit, detect-secrets" in labelled
    assert any(s.startswith("unit_tests: ") for s in labelled)
    assert any(s.startswith("deploy_production: canary deploy to production") for s in labelled)
    assert any(s.startswith("build: build ") for s in labelled)

    timers = await _summaries(client, handle.id, EventType.EVENT_TYPE_TIMER_STARTED)
    assert any("staging approval times out in 24h" in t for t in timers), timers

    canary_timers = await _summaries(
        client, canary_id(handle.id, "canary"), EventType.EVENT_TYPE_TIMER_STARTED
    )
    assert canary_timers
    assert all(t.startswith("canary: analysis interval of 60s at ") for t in canary_timers)

    monitor_timers = await _summaries(
        client, monitor_id(handle.id, "monitor"), EventType.EVENT_TYPE_TIMER_STARTED
    )
    assert monitor_timers
    assert all(t.startswith("monitor: watching production for ") for t in monitor_timers)
