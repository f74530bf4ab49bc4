"""The workflow sandbox: nondeterministic calls in workflow code are caught, our workflow
modules run inside it, and `slipway replay` judges histories in the worker's own sandbox."""

from __future__ import annotations

import asyncio
import pkgutil
import uuid
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

import workflows
from plumbing.sandbox import PASSTHROUGH, restrictions
from starters.runs import replayer
from tests.support.clock_workflow import ClockReadingWorkflow
from tests.support.memory import MemoryBackends
from worker import build_worker

pytestmark = pytest.mark.timeout(60)


async def _first_task_failure(client: Client, workflow_id: str) -> tuple[str, str]:
    """(type, message) of the first failed workflow task."""
    handle = client.get_workflow_handle(workflow_id)
    for _ in range(100):
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                failure = event.workflow_task_failed_event_attributes.failure
                return failure.application_failure_info.type, failure.message
        await asyncio.sleep(0.1)
    raise AssertionError(f"{workflow_id}: no workflow task failed")


async def test_datetime_now_in_workflow_code_is_caught(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    client = time_env.client
    worker = build_worker(
        client, memory.backends(), task_queue, extra_workflows=[ClockReadingWorkflow]
    )
    async with worker:
        handle = await client.start_workflow(
            ClockReadingWorkflow.run, id=f"clock-{uuid.uuid4()}", task_queue=task_queue
        )
        kind, message = await _first_task_failure(client, handle.id)
        await handle.terminate("test over")
    assert kind == "RestrictedWorkflowAccessError"
    assert "Cannot access datetime.datetime.now" in message


def test_only_contracts_and_pure_libraries_pass_through() -> None:
    passthrough = restrictions().passthrough_modules
    assert "contracts" in passthrough
    names = {f"workflows.{m.name}" for m in pkgutil.walk_packages(workflows.__path__, "")}
    assert {"workflows.pipeline", "workflows.environment", "workflows.stages"} <= names
    for name in sorted(names):
        parents = {name[:i] for i in range(len(name)) if name[i] == "."} | {name}
        assert not parents & passthrough, f"{name} would run outside the sandbox's checks"
    assert {"workflows", "activities", "plumbing", "starters"}.isdisjoint(passthrough)
    assert set(PASSTHROUGH) <= passthrough


async def test_replay_uses_the_workers_runner_and_workflows(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    # The worker is built only to read its configuration; it never polls.
    worker = build_worker(time_env.client, memory.backends(), task_queue).config()
    replay = replayer().config()
    assert replay["workflows"] == worker["workflows"]
    runners: list[Any] = [replay["workflow_runner"], worker["workflow_runner"]]
    assert all(isinstance(r, SandboxedWorkflowRunner) for r in runners)
    assert runners[0].restrictions == runners[1].restrictions == restrictions()
    assert runners[0].runner_class is runners[1].runner_class
