"""Two trust domains by task queue: a deployer worker (workflows, every activity that changes
or judges an environment) and a runner worker (checkout, scans, tests, commands, builds) as
separate Worker objects on separate task queues, on the time-skipping server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from temporalio import activity
from temporalio.activity import _Definition
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from contracts.activity import RUNNER_ACTIVITIES, ActivityName
from contracts.messages import PipelineState, StageState
from contracts.naming import environment_work_queue
from plumbing.connection import runner_task_queue
from tests.support.memory import MemoryBackends
from tests.support.pipelines import start
from tests.workflows.test_pipeline import approve_all
from worker import (
    ENVIRONMENT_WORK,
    activities_for,
    build_deployer_worker,
    build_runner_worker,
    deployer_activities,
    runner_activities,
)
from workflows.pipeline.workflow import PipelineWorkflow

pytestmark = pytest.mark.timeout(60)


class Executed(Interceptor):
    """Records the type and task queue of every activity its worker executes."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, str]] = []

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        ran = self.ran

        class Recording(ActivityInboundInterceptor):
            async def execute_activity(self, input: ExecuteActivityInput) -> Any:
                info = activity.info()
                ran.append((info.activity_type, info.task_queue))
                return await super().execute_activity(input)

        return Recording(next)

    @property
    def types(self) -> set[str]:
        return {name for name, _ in self.ran}


def _names(activities: list[Callable[..., Any]]) -> set[str]:
    return {_Definition.must_from_callable(fn).name or "" for fn in activities}


def test_each_activity_belongs_to_exactly_one_trust_domain(memory: MemoryBackends) -> None:
    backends = memory.backends()
    runner = _names(runner_activities(backends.runner()))
    deployer = _names(deployer_activities(backends.deployer(), client=None))  # type: ignore[arg-type]
    assert runner == set(RUNNER_ACTIVITIES)
    assert not runner & deployer
    assert runner | deployer == {name.value for name in ActivityName}
    # A worker serving both registers each activity once.
    assert _names(activities_for(backends, client=None)) == runner | deployer  # type: ignore[arg-type]


def test_the_runner_queue_defaults_to_the_task_queue_plus_runner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SLIPWAY_RUNNER_TASK_QUEUE", raising=False)
    monkeypatch.setenv("SLIPWAY_TASK_QUEUE", "heal7")
    assert runner_task_queue() == "heal7-runner"
    monkeypatch.setenv("SLIPWAY_RUNNER_TASK_QUEUE", "untrusted")
    assert runner_task_queue() == "untrusted"


async def test_a_runner_worker_takes_no_workflows_and_no_deployer_activities(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    runner = memory.backends().runner()
    with pytest.raises(ValueError, match="a runner worker takes no workflows"):
        build_runner_worker(time_env.client, runner, task_queue, workflows=[PipelineWorkflow])
    with pytest.raises(ValueError, match="a runner worker takes no activities"):
        build_runner_worker(
            time_env.client, runner, task_queue, activities=[memory.platform.deploy]
        )


async def test_untrusted_activities_run_only_on_the_runners_queue(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    runner_queue = f"{task_queue}-runner"
    backends = memory.backends()
    on_deployer, on_runner = Executed(), Executed()
    deployer = build_deployer_worker(
        time_env.client, backends.deployer(), task_queue, interceptors=[on_deployer]
    )
    runner = build_runner_worker(
        time_env.client, backends.runner(), runner_queue, interceptors=[on_runner]
    )
    async with deployer, runner:
        handle = await start(time_env.client, task_queue, runner_task_queue=runner_queue)
        await approve_all(handle)
        result = await handle.result()

    assert result.state == PipelineState.SUCCEEDED, result.failure
    assert all(s.state == StageState.SUCCEEDED for s in result.stages if s.kind != "rollback")
    # HEAL7's checkout, scans, tests, build and staging's live tests: all on the runner, and
    # only there (the deployer resolved the endpoint they were given).
    assert on_runner.types == {
        ActivityName.CHECKOUT,
        ActivityName.SCAN,
        ActivityName.RUN_TESTS,
        ActivityName.BUILD,
        ActivityName.LOAD_TEST,
        ActivityName.LIVE_SCAN,
    }
    assert ActivityName.RESOLVE_ENDPOINT in on_deployer.types
    assert {queue for _, queue in on_runner.ran} == {runner_queue}
    assert not on_deployer.types & RUNNER_ACTIVITIES
    # The environments' own work (fence, holder check, restore) on their queue, in slots of
    # their own; everything else the deployer does on the task queue.
    assert {queue for _, queue in on_deployer.ran} == {
        task_queue,
        environment_work_queue(task_queue),
    }
    assert {name for name, queue in on_deployer.ran if queue != task_queue} <= ENVIRONMENT_WORK
    # What changes environments ran on the deployer; the artifact the runner built reached it
    # (the registry both read) and was deployed by digest.
    assert {ActivityName.DEPLOY, ActivityName.PUBLISH, ActivityName.POLICY_IN_FORCE} <= (
        on_deployer.types
    )
    assert result.artifact is not None
    assert memory.platform.envs["production"].stable == result.artifact.digest
