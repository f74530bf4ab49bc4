"""A deploy the platform refuses for a stale lease (a newer token fenced the environment)
ends the stage, not the workflow: the run waits a grace period for the notice that says who
took the environment, and without one it fails as a pipeline does, with the platform's
sentence. Before, the grace's timeout escaped as a TimeoutError and failed the workflow
execution itself (seen in a medium soak: no PipelineResult, nothing the CLI could show)."""

from __future__ import annotations

import pytest
from temporalio.testing import WorkflowEnvironment

from contracts.activity import DeployRequest
from contracts.messages import PipelineState, StageState
from starters.runs import pipeline_outcome
from tests.support.memory import MemoryBackends
from tests.support.pipelines import start
from worker import build_worker

pytestmark = pytest.mark.timeout(90)


async def test_a_stale_lease_without_a_notice_fails_the_stage_and_the_run(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    platform = memory.platform

    def fenced_out(request: DeployRequest) -> None:
        # Another token took development between the grant and this deploy, and no notice
        # says so (the notice was lost, or is still being confirmed).
        if request.environment == "development":
            platform.fences[f"{request.service}/{request.environment}"] = request.fence + 1

    platform.before_deploy = fenced_out
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue)
        result = await pipeline_outcome(handle)
    assert result.state == PipelineState.FAILED
    stages = {s.name: s for s in result.stages}
    assert stages["deploy_dev"].state == StageState.FAILED
    assert "superseded by token" in stages["deploy_dev"].summary
    assert "deploy_dev" in result.failure
