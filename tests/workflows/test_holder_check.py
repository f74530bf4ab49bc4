"""A lease holder that ends without releasing (terminated from the Web UI or the CLI) does not
block the runs queued behind it: the environment checks its holder while a queue waits."""

from __future__ import annotations

import pytest
from temporalio.testing import WorkflowEnvironment

from contracts.messages import PipelineState, StageState
from contracts.naming import canary_id, environment_id
from starters.runs import pipeline_outcome, replay_history
from tests.support.memory import MemoryBackends
from tests.support.pipelines import heal7, start, wait_for_gate, wait_for_stage
from tests.workflows.test_environments import at, committed, queued_everywhere
from tests.workflows.test_pipeline import approve, wait_for_canary_interval
from worker import build_worker
from workflows.environment.workflow import EnvironmentWorkflow

pytestmark = pytest.mark.timeout(120)


async def test_a_terminated_holder_does_not_block_the_queue(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    spec = queued_everywhere(heal7())
    async with build_worker(time_env.client, memory.backends(), task_queue):
        holder = await start(time_env.client, task_queue, spec, committed(memory, at(0)))
        await wait_for_gate(holder, "staging", timeout_s=40)
        await approve(holder, "alice", "staging")
        await wait_for_gate(holder, "production", timeout_s=40)
        queued = await start(time_env.client, task_queue, spec, committed(memory, at(10)))
        await wait_for_gate(queued, "staging", timeout_s=40)
        await approve(queued, "alice", "staging")
        await wait_for_gate(queued, "production", timeout_s=40)
        for run in (holder, queued):
            await approve(run, "carol", "production")
            await approve(run, "dave", "production")
            if run is holder:
                await wait_for_canary_interval(time_env, holder)
        await wait_for_stage(queued, "deploy_production", StageState.QUEUED)
        await holder.terminate("stuck")
        # On a real server the parent close policy asks the holder's canary to cancel; this
        # server does not deliver that request, and a child that fails after its parent closed
        # stops its clock, so the canary goes the way a terminate with its children would.
        await time_env.client.get_workflow_handle(canary_id(holder.id, "canary")).terminate()
        result = await pipeline_outcome(queued)  # lets the server skip to the holder check
        environment = time_env.client.get_workflow_handle(
            environment_id("heal7-backend", "production")
        )
        prod = await environment.query(EnvironmentWorkflow.state)
        history = await environment.fetch_history()
    assert result.state == PipelineState.SUCCEEDED
    assert prod.holder is None
    assert prod.serving is not None
    assert prod.serving.run == queued.id
    assert result.artifact is not None
    assert memory.platform.envs["production"].stable == result.artifact.digest
    checks = [e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")]
    assert any(
        e.activity_task_scheduled_event_attributes.activity_type.name == "run_status"
        for e in checks
    )
    await replay_history(history)  # the check's timer, kept across changes, replays
