"""The browser and web_audit stage kinds run inside a pipeline: dispatched to the runner's
activities after the environment's deploy, their reports judged by the run. On a worker
without a browser (the in-memory backends have none), `unavailable: warn` lets the run go on
with a warning, and `unavailable: fail` fails the stage with the reason."""

from __future__ import annotations

import pytest
from temporalio.testing import WorkflowEnvironment

from contracts.definition.model import STAGE_ADAPTER, PipelineSpec
from contracts.messages import PipelineState, StageState
from starters.runs import pipeline_outcome
from tests.support.memory import MemoryBackends
from tests.support.pipelines import heal7, run_context, start
from tests.workflows.test_pipeline import approve_all
from worker import build_worker

pytestmark = pytest.mark.timeout(90)


def with_web_stages() -> PipelineSpec:
    spec = heal7()
    extra = [
        {
            "name": "browser_staging",
            "kind": "browser",
            "environment": "staging",
            "needs": ["deploy_staging"],
            "unavailable": "warn",
        },
        {
            "name": "audit_staging",
            "kind": "web_audit",
            "environment": "staging",
            "needs": ["deploy_staging"],
            "on_failure": "continue",
        },
    ]
    stages = [*spec.stages, *(STAGE_ADAPTER.validate_python(s) for s in extra)]
    return spec.model_copy(update={"stages": stages})


async def test_web_stages_run_after_the_deploy_and_are_judged(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue, with_web_stages(), run_context())
        await approve_all(handle)
        result = await pipeline_outcome(handle)
    stages = {s.name: s for s in result.stages}
    browser, audit = stages["browser_staging"], stages["audit_staging"]
    assert browser.state == StageState.SUCCEEDED, browser.summary
    assert "no browser test runner" in browser.summary
    assert audit.state == StageState.FAILED
    assert "no web auditor" in audit.summary
    deployed = stages["deploy_staging"].ended_at
    assert deployed is not None
    assert browser.started_at is not None
    assert browser.started_at >= deployed
    assert result.state == PipelineState.SUCCEEDED, result.failure
