"""Decisions that reach a run in one workflow task as signals and as an update (a person in
the Web UI, another with `slipway approve`) leave a history that replays.

With no worker polling, five refused `approve` signals and one `approve` update wait for the
same workflow task, signals first: the signals' policy checks are scheduled before the
update's acceptance, the shape an SDK replay bug of the same family needs
(temporalio/sdk-python#1591). The history must replay, and every decision be judged once.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType, UpdateWorkflowExecutionLifecycleStage
from temporalio.api.update.v1 import UpdateRef, WaitPolicy
from temporalio.api.workflowservice.v1 import PollWorkflowExecutionUpdateRequest
from temporalio.client import Client, WorkflowUpdateStage
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from contracts.messages import Decision, PipelineState
from starters.runs import pipeline_outcome, replay_history
from tests.support.memory import MemoryBackends
from tests.support.pipelines import heal7, run_context, start, wait_for_gate
from tests.workflows.test_gates_hold import policy_file
from worker import build_worker
from workflows.pipeline.workflow import PipelineWorkflow

pytestmark = [pytest.mark.devserver, pytest.mark.timeout(120)]


async def admitted(client: Client, workflow_id: str, update_id: str) -> None:
    """Until the server holds the update (admitted: no worker has taken it yet)."""
    request = PollWorkflowExecutionUpdateRequest(
        namespace=client.namespace,
        update_ref=UpdateRef(
            workflow_execution=WorkflowExecution(workflow_id=workflow_id), update_id=update_id
        ),
        wait_policy=WaitPolicy(
            lifecycle_stage=UpdateWorkflowExecutionLifecycleStage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ADMITTED
        ),
    )
    for _ in range(200):
        try:
            await client.workflow_service.poll_workflow_execution_update(
                request, timeout=timedelta(seconds=2)
            )
            return
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        await asyncio.sleep(0.05)
    raise AssertionError(f"update {update_id} never reached the server")


async def test_signals_and_an_update_in_one_workflow_task_replay(
    dev_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str, tmp_path: Path
) -> None:
    base = heal7()
    name = f"heal7{uuid.uuid4().hex[:6]}"
    spec = base.model_copy(update={"service": base.service.model_copy(update={"name": name})})
    policy = policy_file(tmp_path)
    run = run_context(branch="develop", service=name)
    async with build_worker(dev_env.client, memory.backends(), task_queue, policy_file=policy):
        handle = await start(dev_env.client, task_queue, spec, run)
        await wait_for_gate(handle, "staging")
    for i in range(5):  # nobody the policy knows
        await handle.signal("approve", Decision(approver=f"carol{i}", gate="staging"))
    update_id = f"approve-{uuid.uuid4().hex[:8]}"
    update = asyncio.create_task(
        handle.start_update(
            PipelineWorkflow.approve_update,
            Decision(approver="alice", gate="staging"),
            id=update_id,
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
    )
    await admitted(dev_env.client, handle.id, update_id)  # while no worker polls
    async with build_worker(dev_env.client, memory.backends(), task_queue, policy_file=policy):
        await (await update).result()
        result = await pipeline_outcome(handle)
    assert result.state == PipelineState.SUCCEEDED
    assert sorted((a.approver, a.accepted, a.via) for a in result.approvals) == [
        ("alice", True, "update"),
        *((f"carol{i}", False, "signal") for i in range(5)),
    ]
    history = await handle.fetch_history()
    events = [EventType.Name(e.event_type) for e in history.events]
    task = events.index("EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED")
    # the premise: in that task the signals' checks were scheduled before the acceptance
    assert events[task - 5 : task] == ["EVENT_TYPE_ACTIVITY_TASK_SCHEDULED"] * 5
    await replay_history(history)
