"""Under load the lease machinery slows, never stops (ARCHITECTURE.md §9), on the real dev
server: more runs acquiring leases at once than the worker has activity slots, and a burst of
one service's commits against Temporal's limit of updates in flight per workflow."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle

from activities import environments
from contracts.definition.loading import validate_definition
from contracts.definition.model import PipelineSpec
from contracts.messages import PipelineInput, PipelineResult, PipelineState
from starters.runs import pipeline_outcome
from tests.support.memory import MemoryBackends
from tests.support.pipelines import ROLES, run_context
from worker import build_worker
from workflows.pipeline.workflow import PipelineWorkflow

pytestmark = [pytest.mark.devserver, pytest.mark.timeout(240)]

SLOTS = 3
RUNS = 8


def deploy_spec(
    service: str, concurrency: str = "supersede", on_failure: str = "fail"
) -> PipelineSpec:
    return validate_definition(
        {
            "name": "lease-load",
            "service": {"name": service},
            "environments": {"development": {"concurrency": concurrency}},
            "stages": [
                {"name": "checkout", "kind": "checkout"},
                {"name": "build", "kind": "build", "needs": ["checkout"]},
                {
                    "name": "deploy_dev",
                    "kind": "deploy",
                    "needs": ["build"],
                    "environment": "development",
                    "retry": {"max_attempts": 1},
                    "on_failure": on_failure,
                },
            ],
        },
        "lease-load.yaml",
    )


async def start_run(
    client: Client, task_queue: str, spec: PipelineSpec
) -> WorkflowHandle[Any, Any]:
    run = run_context(service=spec.service.name)
    return await client.start_workflow(
        PipelineWorkflow.run,
        PipelineInput(spec=spec, run=run, roles=ROLES),
        id=f"lease-load-{spec.service.name}-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
    )


async def outcomes(
    handles: list[WorkflowHandle[Any, Any]], within_s: float
) -> list[PipelineResult]:
    try:
        async with asyncio.timeout(within_s):
            return list(await asyncio.gather(*(pipeline_outcome(h) for h in handles)))
    except TimeoutError:
        raise AssertionError(
            f"{len(handles)} runs did not all end within {within_s:.0f} s: the lease "
            "machinery stalled"
        ) from None


async def test_more_runs_acquiring_leases_than_activity_slots_all_finish(
    dev_env: Any, memory: MemoryBackends, task_queue: str
) -> None:
    """Every run of a different service acquires its own environment's lease at about the
    same moment, with fewer activity slots than runs: nothing that waits may hold the slot
    that the work it waits for (the fence) needs."""
    client = dev_env.client
    tag = uuid.uuid4().hex[:6]
    specs = [deploy_spec(f"load{tag}x{i}") for i in range(RUNS)]
    memory.platform.per_service = True
    async with build_worker(client, memory.backends(), task_queue, max_concurrent_activities=SLOTS):
        handles = await asyncio.gather(*(start_run(client, task_queue, s) for s in specs))
        results = await outcomes(list(handles), within_s=60)
    assert [r.state for r in results] == [PipelineState.SUCCEEDED] * RUNS


async def test_more_runs_rolling_back_than_activity_slots_all_finish(
    dev_env: Any, memory: MemoryBackends, task_queue: str
) -> None:
    """Every run's deploy fails and asks its environment for a rollback at about the same
    moment: the restore each rollback waits for must not need a slot the waiting holds."""
    client = dev_env.client
    tag = uuid.uuid4().hex[:6]
    specs = [deploy_spec(f"back{tag}x{i}", on_failure="rollback") for i in range(RUNS)]
    memory.platform.per_service = True
    memory.platform.fail_deploy = {f"{s.service.name}@development" for s in specs}
    async with build_worker(client, memory.backends(), task_queue, max_concurrent_activities=SLOTS):
        handles = await asyncio.gather(*(start_run(client, task_queue, s) for s in specs))
        results = await outcomes(list(handles), within_s=60)
    # Each rollback ran its restore (nothing served before, so nothing changed: "failed").
    assert [r.state for r in results] == [PipelineState.FAILED] * RUNS
    assert all("nothing to roll back" in r.failure for r in results), [r.failure for r in results]
    restores = [e for e in memory.platform.events if e.startswith("restore ")]
    assert len(restores) == RUNS, restores


BURST = 30


async def lease_attempts(client: Client, handles: list[WorkflowHandle[Any, Any]]) -> list[int]:
    """The attempt numbers of every lease message activity the runs started."""
    attempts: list[int] = []
    for handle in handles:
        async for event in client.get_workflow_handle(handle.id).fetch_history_events():
            if event.HasField("activity_task_started_event_attributes"):
                attempts.append(event.activity_task_started_event_attributes.attempt)
    return attempts


async def test_a_burst_of_one_services_commits_stays_within_the_update_limits(
    dev_env: Any, memory: MemoryBackends, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 commits of one service at once, queued for one environment: each run's acquire,
    report and release are updates to the same environment workflow, which Temporal admits
    10 at a time. The worker never has more in flight; every message is taken on its first
    attempt and every run ends."""
    in_flight: dict[str, int] = {}
    most: dict[str, int] = {}
    send = environments.execute_update_with_start  # type: ignore[attr-defined]

    async def counted(client: Client, workflow_id: str, *args: Any, **kwargs: Any) -> Any:
        in_flight[workflow_id] = in_flight.get(workflow_id, 0) + 1
        most[workflow_id] = max(most.get(workflow_id, 0), in_flight[workflow_id])
        try:
            return await send(client, workflow_id, *args, **kwargs)
        finally:
            in_flight[workflow_id] -= 1

    monkeypatch.setattr(environments, "execute_update_with_start", counted)
    client = dev_env.client
    spec = deploy_spec(f"burst{uuid.uuid4().hex[:6]}", concurrency="queue")
    async with build_worker(client, memory.backends(), task_queue):
        handles = list(
            await asyncio.gather(*(start_run(client, task_queue, spec) for _ in range(BURST)))
        )
        results = await outcomes(handles, within_s=120)
    assert [r.state for r in results] == [PipelineState.SUCCEEDED] * BURST
    assert set(await lease_attempts(client, handles)) == {1}
    assert most
    assert max(most.values()) <= environments.UPDATES_PER_ENVIRONMENT < 10
