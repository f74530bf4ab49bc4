"""Several runs of one service at once, on the time-skipping server with in-memory platforms:
environment leases (supersede, queue in commit order, by git's commit time never later than
the run's start), rollback to the recorded release once, cancellation, and the same sha on two
branches."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from contracts.activity import Artifact, MetricsQuery, ReleaseSpec
from contracts.definition.loading import validate_definition
from contracts.definition.model import PipelineSpec
from contracts.messages import (
    EnvironmentInput,
    EnvironmentState,
    PipelineState,
    RunContext,
    Serving,
    StageState,
)
from contracts.naming import (
    LEASE_SIGNAL,
    canary_id,
    environment_id,
    environment_work_queue,
    pipeline_id,
)
from starters.runs import pipeline_outcome, replay_history
from tests.support.memory import MemoryBackends
from tests.support.pipelines import (
    Handle,
    heal7,
    run_context,
    start,
    wait_for_gate,
    wait_for_stage,
)
from tests.workflows.test_pipeline import approve, approve_all, wait_for_canary_interval
from worker import build_worker
from workflows.environment.workflow import EnvironmentWorkflow

pytestmark = pytest.mark.timeout(90)

OLD = "sha256:" + "0" * 64
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def committed(memory: MemoryBackends, when: datetime, **kw: Any) -> RunContext:
    """A run of a commit git records as committed `when` (what the checkout reports)."""
    run = run_context(**kw)
    memory.source.commit_times[run.commit] = when
    return run


def with_policies(spec: PipelineSpec, **policies: str) -> PipelineSpec:
    envs = {
        n: e.model_copy(update={"concurrency": policies[n]}) if n in policies else e
        for n, e in spec.environments.items()
    }
    return spec.model_copy(update={"environments": envs})


def queued_everywhere(spec: PipelineSpec) -> PipelineSpec:
    return with_policies(spec, **dict.fromkeys(spec.environments, "queue"))


async def environment(env: WorkflowEnvironment, name: str) -> EnvironmentState:
    handle = env.client.get_workflow_handle(environment_id("heal7-backend", name))
    return await handle.query(EnvironmentWorkflow.state)


async def outcome_when_closed(handle: Handle) -> Any:
    """The result of a run that ends on its own in real time. The time-skipping server keeps
    cancelled activities of a closed run pending (sdk-java#1138), which stalls a time-skipping
    `result()`; polling until the run is closed avoids waiting on its clock."""
    for _ in range(400):
        described = await handle.describe()
        if described.status != WorkflowExecutionStatus.RUNNING:
            return await pipeline_outcome(handle)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.id} did not end")


def stage_of(result: Any, name: str) -> tuple[StageState, str]:
    s = next(s for s in result.stages if s.name == name)
    return s.state, s.summary


async def test_staging_supersedes_an_older_run(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    memory.platform.check_delay_s["staging"] = 4.0  # older run A stays on staging a while
    spec = heal7()
    async with build_worker(time_env.client, memory.backends(), task_queue):
        # On develop (staging is the last environment): after the cancellations a supersede
        # makes, the time-skipping server's clock cannot be trusted (sdk-java#1138).
        older = await start(
            time_env.client, task_queue, spec, committed(memory, at(0), branch="develop")
        )
        await wait_for_gate(older, "staging")  # past development first: it is older
        newer = await start(
            time_env.client, task_queue, spec, committed(memory, at(5), branch="develop")
        )
        await wait_for_gate(newer, "staging")
        await approve(older, "alice", "staging")
        await wait_for_stage(older, "deploy_staging", StageState.SUCCEEDED)
        await approve(newer, "alice", "staging")  # takes staging while A checks it
        lost = await outcome_when_closed(older)
        won = await outcome_when_closed(newer)
        staging = await environment(time_env, "staging")
    assert lost.state == PipelineState.SUPERSEDED
    assert lost.superseded_by == newer.id
    assert f"superseded by {newer.id} in staging" in lost.failure
    assert stage_of(lost, "uat") == (StageState.CANCELLED, f"cancelled: superseded by {newer.id}")
    assert won.state == PipelineState.SUCCEEDED
    assert won.artifact is not None
    assert staging.serving is not None
    assert staging.serving.run == newer.id
    assert staging.serving.release.digest == won.artifact.digest


async def test_production_queues_in_commit_order_and_ends_on_the_newest(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    spec = queued_everywhere(heal7())
    async with build_worker(time_env.client, memory.backends(), task_queue):
        runs: dict[str, Handle] = {}
        # They reach production's gate one after another in commit order, so none is older
        # than what serves dev or staging (which would supersede it there).
        for name, minute in (("a", 0), ("c", 10), ("b", 20)):
            runs[name] = handle = await start(
                time_env.client, task_queue, spec, committed(memory, at(minute))
            )
            await wait_for_gate(handle, "staging", timeout_s=40)
            await approve(handle, "alice", "staging")
            await wait_for_gate(handle, "production", timeout_s=40)
        for name in ("a", "b", "c"):  # b asks before c, c's commit is older
            await approve(runs[name], "carol", "production")
            await approve(runs[name], "dave", "production")
            if name == "a":
                await wait_for_stage(runs["a"], "canary", StageState.RUNNING)
        st = await wait_for_stage(runs["b"], "deploy_production", StageState.QUEUED)
        queued = next(s for s in st.stages if s.name == "deploy_production")
        assert queued.summary.startswith(f"queued behind {runs['a'].id} for production")
        results = {name: await pipeline_outcome(h) for name, h in runs.items()}
        prod = await environment(time_env, "production")
    assert {n: r.state for n, r in results.items()} == dict.fromkeys("abc", PipelineState.SUCCEEDED)
    served = [e.run for e in prod.releases if e.outcome in ("serving", "replaced")]
    # a, then c (older than b although it asked later), then b; production ends on b.
    assert served[-3:] == [runs["a"].id, runs["c"].id, runs["b"].id]
    assert prod.serving is not None
    assert prod.serving.run == runs["b"].id
    assert results["b"].artifact is not None
    assert memory.platform.envs["production"].stable == results["b"].artifact.digest


FUTURE = datetime(2031, 1, 1, tzinfo=UTC)


async def test_a_commit_dated_in_the_future_does_not_freeze_the_environment(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    # Whoever commits sets the commit's time (and the starter once said it, --commit-time):
    # a commit dated 2031 counts as made when its run started, so a commit made after that
    # still deploys (it used to be superseded, exit 3, by the 2031 commit serving).
    spec = heal7()
    async with build_worker(time_env.client, memory.backends(), task_queue):
        dated = committed(memory, FUTURE, branch="develop", commit_time=FUTURE)
        first = await start(time_env.client, task_queue, spec, dated)
        await wait_for_gate(first, "staging")
        await approve(first, "alice", "staging")
        shipped_first = await pipeline_outcome(first)
        staging = await environment(time_env, "staging")
        recorded = staging.serving.commit_time if staging.serving else None
        assert recorded is not None
        assert recorded < FUTURE  # the run's start
        later = committed(memory, recorded + timedelta(minutes=1), branch="develop")
        second = await start(time_env.client, task_queue, spec, later)
        await wait_for_gate(second, "staging")
        await approve(second, "alice", "staging")
        shipped = await pipeline_outcome(second)
        development = await environment(time_env, "development")
        staging = await environment(time_env, "staging")
    assert shipped_first.state == PipelineState.SUCCEEDED
    assert shipped.state == PipelineState.SUCCEEDED, shipped.failure
    for env in (development, staging):
        assert env.serving is not None
        assert env.serving.run == second.id
        assert all(e.commit_time is None or e.commit_time < FUTURE for e in env.releases)


async def test_an_environment_frozen_by_a_future_commit_time_thaws(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    # Recorded before the fix: development serves a release whose commit time (as an older
    # worker took it from the starter) is in 2031. Its time counts as when it started serving.
    memory.platform.already_serving("development", OLD)
    frozen = EnvironmentState(
        service="heal7-backend",
        environment="development",
        serving=Serving(
            release=ReleaseSpec(artifact=Artifact(digest=OLD, uri="memory://old")),
            run="pipeline-heal7-backend-develop-000000000000",
            commit="0" * 40,
            commit_time=FUTURE,
            since=T0,
        ),
    )
    async with build_worker(time_env.client, memory.backends(), task_queue):
        await time_env.client.start_workflow(
            EnvironmentWorkflow.run,
            EnvironmentInput(service="heal7-backend", environment="development", state=frozen),
            id=environment_id("heal7-backend", "development"),
            task_queue=task_queue,
        )
        run = await start(
            time_env.client, task_queue, run=committed(memory, at(5), branch="develop")
        )
        await wait_for_gate(run, "staging")
        await approve(run, "alice", "staging")
        result = await pipeline_outcome(run)
        development = await environment(time_env, "development")
    assert result.state == PipelineState.SUCCEEDED, result.failure
    assert development.serving is not None
    assert development.serving.run == run.id
    assert development.serving.before is not None
    assert development.serving.before.commit_time == T0


async def test_a_deploy_that_changed_nothing_rolls_nothing_back(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    memory.platform.already_serving("production", OLD)
    memory.platform.fail_deploy = {"production"}
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue)
        await approve_all(handle)
        result = await pipeline_outcome(handle)
    assert result.state == PipelineState.FAILED  # not "rolled_back": nothing was
    assert "production" not in result.rolled_back
    assert "nothing to roll back: production already serves " + OLD in result.failure
    assert memory.platform.envs["production"].stable == OLD
    assert memory.platform.envs["production"].previous == []


async def test_cancel_request_mid_canary_puts_production_back_once(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    memory.platform.already_serving("production", OLD)
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue)
        await approve_all(handle)
        await wait_for_canary_interval(time_env, handle)
        await handle.cancel()  # what the Web UI's "Request Cancellation" sends
        result = await pipeline_outcome(handle)
        canary = await time_env.client.get_workflow_handle(
            canary_id(handle.id, "canary")
        ).describe()
    assert result.state == PipelineState.ABORTED
    assert "cancelled from the Web UI" in result.failure
    assert canary.status == WorkflowExecutionStatus.CANCELED  # cancelled, not terminated
    assert memory.platform.envs["production"].weight == 0
    assert memory.platform.envs["production"].stable == OLD
    restores = [e for e in memory.platform.events if e.startswith("restore production")]
    assert restores == [f"restore production {OLD}"]
    assert "production" in result.rolled_back


async def test_same_sha_on_develop_then_main_reaches_production_without_a_rebuild(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    on_develop = run_context(branch="develop")
    on_main = on_develop.model_copy(update={"branch": "main"})
    client = time_env.client
    # The run identity includes the branch: the main run is a run of its own.
    assert pipeline_id("heal7-backend", "develop", on_main.commit) != pipeline_id(
        "heal7-backend", "main", on_main.commit
    )
    async with build_worker(client, memory.backends(), task_queue):
        develop = await start(client, task_queue, run=on_develop)
        await wait_for_gate(develop, "staging")
        await approve(develop, "alice", "staging")
        staged = await pipeline_outcome(develop)
        main = await start(client, task_queue, run=on_main)
        await approve_all(main)
        shipped = await pipeline_outcome(main)
    assert staged.state == PipelineState.SUCCEEDED
    assert "production" not in staged.deployed
    assert shipped.state == PipelineState.SUCCEEDED
    assert shipped.artifact is not None
    assert shipped.deployed["production"] == shipped.artifact.digest
    assert memory.builder.built == [f"heal7-backend@{on_main.commit}"]  # built once


def failing_canary(query: MetricsQuery, n: int) -> dict[str, float | None]:
    bad = query.slot == "canary"
    return {"success_rate": 80.0 if bad else 100.0, "error_rate": 20.0 if bad else 0.0,
            "p95_latency_ms": 50.0, "cpu_percent": 10.0}  # fmt: skip


async def test_a_rollback_that_fails_is_rollback_failed_and_says_so(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    memory.platform.already_serving("production", OLD)
    memory.platform.fail_restore = {"production"}
    memory.metrics.script = failing_canary
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue)
        await approve_all(handle)
        result = await pipeline_outcome(handle)
    assert result.state == PipelineState.ROLLBACK_FAILED
    assert "rollback of production FAILED" in result.failure
    alerts = [n for n in memory.notifier.sent if n.event == "pipeline.rollback_failed"]
    assert alerts
    assert alerts[0].level == "error"
    assert "manual intervention" in alerts[0].message


def development_only() -> PipelineSpec:
    return validate_definition(
        {
            "name": "dev-only",
            "service": {"name": "heal7-backend"},
            "environments": {"development": {}},
            "stages": [
                {"name": "checkout", "kind": "checkout"},
                {"name": "build", "kind": "build", "needs": ["checkout"]},
                {
                    "name": "deploy_dev",
                    "kind": "deploy",
                    "needs": ["build"],
                    "environment": "development",
                },
            ],
        },
        "dev-only.yaml",
    )


@pytest.mark.parametrize("final", [False, True], ids=["retried", "attempts-used-up"])
async def test_a_fence_that_fails_makes_the_run_wait_not_fail(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str, final: bool
) -> None:
    """The platform refuses the first fences: retried within the fence's own attempts, or,
    once a fence has no attempt left, by the environment later (FENCE_RETRY). Either way the
    run waits for its lease and then succeeds: an outage is not a verdict on the run."""
    memory.platform.fence_failures["development"] = 2
    memory.platform.fence_failures_final = final
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue, development_only(), run_context())
        result = await pipeline_outcome(handle)
        development = await environment(time_env, "development")
    assert result.state == PipelineState.SUCCEEDED
    assert memory.platform.events.count("fence development failed") == 2
    assert development.serving is not None
    assert development.serving.run == handle.id
    # A fence retried within its attempts: the acquire's update waits and answers granted.
    # One whose attempts ran out: the update answers pending, and the grant comes later as a
    # notice the run confirms against the environment's state.
    notices, activities = await lease_traffic(handle)
    assert (notices, "confirm_lease" in activities) == ((1, True) if final else (0, False))


async def lease_traffic(handle: Handle) -> tuple[int, list[str]]:
    """How many lease notices the run received, and the activities it scheduled."""
    notices, activities = 0, []
    async for event in handle.fetch_history_events():
        if event.HasField("workflow_execution_signaled_event_attributes"):
            notices += event.workflow_execution_signaled_event_attributes.signal_name == (
                LEASE_SIGNAL
            )
        if event.HasField("activity_task_scheduled_event_attributes"):
            activities.append(event.activity_task_scheduled_event_attributes.activity_type.name)
    return notices, activities


async def test_the_fence_is_an_event_of_the_environments_history(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    """The environment raises the platform's fence with a regular activity on its own work
    queue, recorded as an event where a replay finds it; the acquire of a free environment
    waits in its update for it and answers granted (no notice, nothing to confirm). (As a
    local activity, answered inside the acquire, a large soak's environment came to fail
    every replay, and its service stopped.)"""
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue, development_only(), run_context())
        result = await pipeline_outcome(handle)
    assert result.state == PipelineState.SUCCEEDED
    notices, activities = await lease_traffic(handle)
    assert activities.count("acquire_lease") == 1
    assert (notices, "confirm_lease" in activities) == (0, False)
    env = time_env.client.get_workflow_handle(environment_id("heal7-backend", "development"))
    fence_queues, markers = [], []
    async for event in env.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled = event.activity_task_scheduled_event_attributes
            if scheduled.activity_type.name == "fence":
                fence_queues.append(scheduled.task_queue.name)
        if event.HasField("marker_recorded_event_attributes"):
            markers.append(event.marker_recorded_event_attributes.marker_name)
    assert fence_queues == [environment_work_queue(task_queue)]
    assert "core_local_activity" not in markers
    await replay_history(await env.fetch_history())


async def test_a_retry_that_wakes_past_the_stage_deadline_fails_the_stage_not_the_run(
    dev_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    """A deploy fails (a flaky API) and the run pauses before its next attempt; every worker is
    gone until the stage's time is up (a soak found this). The worker that comes back fails
    the stage with the last attempt's error: the run ends, instead of failing each of its
    workflow tasks for ever on an activity with a negative timeout."""
    spec = development_only()
    stages = [
        s.model_copy(update={"timeout": timedelta(seconds=4)}) if s.name == "deploy_dev" else s
        for s in spec.stages
    ]
    spec = spec.model_copy(update={"stages": stages})
    memory.platform.transient_failures["development"] = 1
    async with build_worker(dev_env.client, memory.backends(), task_queue):
        handle = await start(dev_env.client, task_queue, spec, run_context())
        # Until the failed attempt's pause (2 s) has begun: the lease, its fence and the first
        # attempt come first, which took more than 12 s once beside the whole suite.
        deadline = asyncio.get_running_loop().time() + 60
        while asyncio.get_running_loop().time() < deadline:
            history = await handle.fetch_history()
            if any(e.HasField("timer_started_event_attributes") for e in history.events):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the deploy's retry pause never began within 60 s")
    await asyncio.sleep(5)  # no worker while the pause and the stage's 4 s run out
    async with build_worker(dev_env.client, memory.backends(), task_queue):
        result = await outcome_when_closed(handle)
    assert result.state == PipelineState.FAILED
    state, summary = stage_of(result, "deploy_dev")
    assert state == StageState.FAILED
    assert "connection refused" in summary
