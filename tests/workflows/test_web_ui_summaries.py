"""The Web UI speaks stages: every activity, child workflow and timer of a run carries a
summary naming its stage, so the timeline reads `security_scan: bandit, …`, not `scan`.

On the dev server, whose history is what the Web UI shows (the time-skipping server drops a
child workflow's summary), with HEAL7's canary and monitor shortened to seconds."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import yaml
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from contracts.definition.loading import validate_definition
from contracts.definition.model import PipelineSpec
from contracts.messages import Decision, PipelineState
from contracts.naming import canary_id, monitor_id
from plumbing.updates import execute_update
from tests.support.memory import MemoryBackends
from tests.support.pipelines import HEAL7_BACKEND, run_context, start, wait_for_gate
from worker import build_worker
from workflows.pipeline.workflow import PipelineWorkflow

pytestmark = [pytest.mark.timeout(120), pytest.mark.devserver]


def quick_heal7(name: str) -> PipelineSpec:
    path = HEAL7_BACKEND
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["service"]["name"] = name
    for raw in data["stages"]:
        if raw["name"] == "canary":
            raw.update(interval="1s", stepWeight=50)
            raw["metrics"] = [{**m, "window": "1s"} for m in raw["metrics"]]
        if raw["name"] == "monitor":
            raw.update(duration="2s", interval="1s", recheck="1s")
    return validate_definition(data, str(path))


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
    dev_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    client = dev_env.client
    # A service of its own: environment workflows live as long as the dev server.
    name = f"heal7{uuid.uuid4().hex[:6]}"
    async with build_worker(client, memory.backends(), task_queue):
        handle: Any = await start(
            client, task_queue, spec=quick_heal7(name), run=run_context(service=name)
        )
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

    # The engine's own calls say what they ask, and where.
    assert all(pipeline), pipeline
    assert f"acquire lease: {name} in production" in pipeline

    children = await _summaries(
        client, handle.id, EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
    )
    assert [c.split(" of ")[0] for c in children] == [
        "canary: canary",
        "monitor: post-deploy monitor",
    ]
    canary_calls = await _summaries(client, canary_id(handle.id, "canary"), scheduled)
    assert canary_calls
    assert all(c.startswith("canary: ") for c in canary_calls), canary_calls
    assert f"canary: set weight to 50%: {name} in production" in canary_calls
    monitor_calls = await _summaries(client, monitor_id(handle.id, "monitor"), scheduled)
    assert monitor_calls
    assert all(c.startswith("monitor: ") for c in monitor_calls), monitor_calls

    timers = await _summaries(client, handle.id, EventType.EVENT_TYPE_TIMER_STARTED)
    assert any("staging approval times out in 24h" in t for t in timers), timers

    canary_timers = await _summaries(
        client, canary_id(handle.id, "canary"), EventType.EVENT_TYPE_TIMER_STARTED
    )
    assert canary_timers
    assert all(t.startswith("canary: analysis interval of 1s at ") for t in canary_timers)

    monitor_timers = await _summaries(
        client, monitor_id(handle.id, "monitor"), EventType.EVENT_TYPE_TIMER_STARTED
    )
    assert monitor_timers
    assert all(t.startswith("monitor: watching production for ") for t in monitor_timers)
