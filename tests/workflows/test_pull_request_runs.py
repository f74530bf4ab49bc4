"""Pull-request runs on the time-skipping server: only the stages a PR needs, never an
environment or the registry, the PR number in status and result; the history replays."""

from __future__ import annotations

import pytest
from temporalio.testing import WorkflowEnvironment

from contracts.activity import SuiteReport
from contracts.definition.triggers import PullRequestSpec, TriggersSpec
from contracts.messages import PipelineState, StageState
from starters.runs import pipeline_outcome, replay_history
from tests.support.memory import MemoryBackends
from tests.support.pipelines import heal7, run_context, start, status
from worker import build_worker
from workflows.pipeline.workflow import PULL_REQUEST_RUNS

pytestmark = pytest.mark.timeout(60)

CI = ["checkout", "code_quality", "security_scan", "unit_tests", "integration_tests"]


async def test_a_pull_request_runs_its_stages_and_touches_no_environment(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    run = run_context(branch="feature/login", pull_request=7, base="b" * 40)
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue, heal7(), run)
        result = await pipeline_outcome(handle)
        st = await status(handle)
        history = await handle.fetch_history()

    assert result.state == PipelineState.SUCCEEDED, result.failure
    assert (result.pull_request, st.pull_request) == (7, 7)
    ran = [s.name for s in result.stages if s.state == StageState.SUCCEEDED]
    # No on.pull_request in heal7.yaml: every stage before the first that touches an
    # environment or the registry (publish).
    assert ran == [*CI, "quality_gate", "build", "image_scan"]
    for s in result.stages:
        if s.name not in ran and s.kind != "rollback":  # rollbacks wait for a failure
            assert s.state == StageState.SKIPPED, s
            assert s.summary == "not a stage of pull-request runs (#7)"
    assert result.deployed == {}
    assert result.approvals == []
    assert not any(e.startswith(("deploy", "weight")) for e in memory.platform.events)
    assert memory.builder.published == []
    # The run is recorded behind its patch, and its history replays against this code.
    markers = [
        e.marker_recorded_event_attributes
        for e in history.events
        if e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]
    assert any(PULL_REQUEST_RUNS.encode() in m.SerializeToString() for m in markers)
    await replay_history(history)


async def test_a_failing_pull_request_stage_fails_the_run(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    spec = heal7().model_copy(
        update={"on": TriggersSpec(pull_request=PullRequestSpec(until="quality_gate"))}
    )
    memory.tests.reports["tests/unit"] = SuiteReport(
        exit_code=1, tests=3, failures=1, errors=0, skipped=0, failed_tests=["test_login"]
    )
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue, spec, run_context(pull_request=8))
        result = await pipeline_outcome(handle)
        assert result.state == PipelineState.FAILED
        assert "stage 'unit_tests' failed: 1 test(s) failed: test_login" in result.failure
        # Fixed in the PR's next commit: its own run, whose stages end at the quality gate.
        memory.tests.reports.pop("tests/unit")
        handle = await start(time_env.client, task_queue, spec, run_context(pull_request=8))
        fixed = await pipeline_outcome(handle)

    assert fixed.state == PipelineState.SUCCEEDED, fixed.failure
    states = {s.name: s.state for s in fixed.stages}
    assert states["quality_gate"] == StageState.SUCCEEDED
    assert states["build"] == StageState.SKIPPED  # until: quality_gate
    assert memory.builder.calls == []


async def test_the_worker_refuses_a_pull_request_run_that_would_deploy(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    # A definition can reach the worker without `slipway validate` (the `temporal` CLI):
    # the run checks it again at its start and builds nothing.
    spec = heal7().model_copy(
        update={"on": TriggersSpec(pull_request=PullRequestSpec(stages=["deploy_dev"]))}
    )
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue, spec, run_context(pull_request=9))
        result = await pipeline_outcome(handle)

    assert result.state == PipelineState.FAILED
    assert (
        "stage 'deploy_dev', field 'on.pull_request.stages': a pull-request run never touches "
        "an environment or the registry, and this deploy stage would: it deploys to an "
        "environment" in result.failure
    )
    assert memory.builder.calls == []
    assert not any(e.startswith("deploy") for e in memory.platform.events)
