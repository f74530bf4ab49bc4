"""The HEAL7 pipeline's integration_tests stage asks for postgres:16 and redis:7: the stage
asks its worker to start them, and its summary names what ran, also when the suite fails."""

from __future__ import annotations

from temporalio.testing import WorkflowEnvironment

from contracts.activity import SuiteReport
from contracts.messages import StageState
from starters.runs import pipeline_outcome
from tests.support.memory import MemoryBackends
from tests.support.pipelines import start
from worker import build_worker


async def test_a_failing_suite_still_says_which_servers_it_ran_against(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    memory.tests.reports["integration"] = SuiteReport(
        exit_code=1, tests=12, failures=3, errors=0, skipped=0, coverage_pct=75.0
    )
    async with build_worker(time_env.client, memory.backends(), task_queue):
        result = await pipeline_outcome(await start(time_env.client, task_queue))
    (stage,) = [s for s in result.stages if s.name == "integration_tests"]
    assert stage.state == StageState.FAILED
    assert stage.summary.endswith("; services: postgres 16 (memory), redis 7 (memory)")
    assert memory.services.started_sets == [["postgres:16", "redis:7"]]
    (unit,) = [s for s in result.stages if s.name == "unit_tests"]
    assert "services" not in unit.summary  # a stage without `services:` starts none
