"""PipelineWorkflow on the time-skipping server, with in-memory backends behind the real
activity classes: the HEAL7 definition with HEAL7's own timings (1-minute canary steps,
15-minute monitor), which time skipping runs in about a second."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from contracts.activity import (
    ActivityName,
    LoadReport,
    LoadRequest,
    MetricsQuery,
    Severity,
    SuiteReport,
)
from contracts.definition.model import LoadSpec
from contracts.messages import (
    AbortRequest,
    ActionRecord,
    Decision,
    PipelineResult,
    PipelineState,
    StageState,
)
from contracts.naming import canary_id
from plumbing.updates import execute_update
from starters.runs import pipeline_outcome
from tests.support.memory import MemoryBackends
from tests.support.pipelines import Handle, heal7, run_context, start, wait_for_gate
from worker import build_worker
from workflows.canary import CanaryWorkflow
from workflows.pipeline.workflow import PipelineWorkflow

# Each test takes 1-3 s with time skipping; one that takes a minute is stuck (its timers are
# running in real time), and says so now rather than after the suite-wide 5 minutes.
pytestmark = pytest.mark.timeout(60)

OLD = "sha256:" + "0" * 64


async def approve(handle: Handle, approver: str, gate: str) -> None:
    await execute_update(
        handle, PipelineWorkflow.approve_update, Decision(approver=approver, gate=gate)
    )


async def abort(handle: Handle, request: AbortRequest) -> None:
    """Abort through the update, which returns once the worker's policy accepted it (awaiting
    the result while a signal's check runs would let time skip past the run's timers)."""
    await execute_update(handle, "abort", request, result_type=ActionRecord)


async def reach_production_gate(handle: Handle) -> None:
    """Approve staging (alice, team lead) and wait until production's gate is open."""
    await wait_for_gate(handle, "staging")
    await approve(handle, "alice", "staging")
    await wait_for_gate(handle, "production")


async def approve_all(handle: Handle) -> None:
    await reach_production_gate(handle)
    await approve(handle, "carol", "production")
    await approve(handle, "dave", "production")


async def wait_for_canary_interval(env: WorkflowEnvironment, handle: Handle) -> None:
    """Until the canary holds its first weight (it waits out an interval then)."""
    canary = env.client.get_workflow_handle(canary_id(handle.id, "canary"))
    for _ in range(400):
        try:
            st = await canary.query(CanaryWorkflow.status)
        except RPCError:
            st = None
        if st is not None and st.weight > 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the canary never set a weight")


def stage(result: PipelineResult, name: str) -> tuple[StageState, str]:
    s = next(s for s in result.stages if s.name == name)
    return s.state, s.summary


async def test_happy_path_reaches_production_with_one_digest(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue)
        await approve_all(handle)
        result = await handle.result()

    assert result.state == PipelineState.SUCCEEDED
    assert all(s.state == StageState.SUCCEEDED for s in result.stages if s.kind != "rollback")
    assert stage(result, "rollback_production")[0] == StageState.PENDING
    # Built once; the same digest serves every environment.
    assert len(memory.builder.calls) == 1
    assert result.artifact is not None
    digest = result.artifact.digest
    assert result.deployed == {"development": digest, "staging": digest, "production": digest}
    assert memory.platform.envs["production"].stable == digest
    # HEAL7's canary: 10 → 50 in steps of 10, then promotion; 15 one-minute monitor checks.
    weights = [e for e in memory.platform.events if e.startswith("weight production")]
    assert weights == [f"weight production {w}" for w in (10, 20, 30, 40, 50)]
    assert "promote production" in memory.platform.events
    assert "checks, 0 transient" in stage(result, "monitor")[1]
    assert stage(result, "monitor")[1].startswith("healthy: 15 checks")
    assert [(a.approver, a.gate) for a in result.approvals] == [
        ("alice", "staging"),
        ("carol", "production"),
        ("dave", "production"),
    ]
    assert result.lead_time_s is not None
    assert result.lead_time_s > 0
    assert any(n.event == "canary.promoted" for n in memory.notifier.sent)


async def test_ci_stages_run_in_parallel(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    # Long enough that the second suite starts while the first still runs even when the
    # worker hands out its tasks slowly (a loaded machine took over a second once).
    memory.tests.delays = {"tests/unit": 3.0, "tests/integration": 3.0}
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue)
        await wait_for_gate(handle, "staging")
        # Terminated, not cancelled: the run is over at once, and no workflow task of it is
        # left to a worker. (A cancel that found an activity completing in the same workflow
        # task wedged the time-skipping server: ACTIVITY_UNKNOWN, temporalio/sdk-java#2391.)
        await handle.terminate("the test has what it needs")
    (_, unit_start, unit_end), (_, int_start, int_end) = sorted(
        memory.tests.calls, key=lambda c: "integration" in c[0]
    )
    # Both suites were running at the same moment.
    assert unit_start < int_end
    assert int_start < unit_end


async def test_failed_quality_gate_stops_before_build(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    memory.tests.reports["unit"] = SuiteReport(
        exit_code=0, tests=40, failures=0, errors=0, skipped=0, coverage_pct=80.0
    )
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue)
        result = await pipeline_outcome(handle)

    assert result.state == PipelineState.FAILED
    state, summary = stage(result, "quality_gate")
    assert state == StageState.FAILED
    assert "coverage of 'unit_tests' 80.0% < 85%" in summary
    assert memory.builder.calls == []
    assert stage(result, "build")[0] == StageState.PENDING
    assert "quality_gate" in result.failure


async def test_high_finding_fails_the_scan_stage(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    memory.scanners["bandit"].findings = [
        memory.scanners["bandit"].finding("bandit", Severity.HIGH, "B602")
    ]
    async with build_worker(time_env.client, memory.backends(), task_queue):
        result = await pipeline_outcome(await start(time_env.client, task_queue))
    state, summary = stage(result, "security_scan")
    assert state == StageState.FAILED
    assert "B602" in summary
    assert memory.builder.calls == []


def canary_errors(query: MetricsQuery, n: int) -> dict[str, float | None]:
    bad = query.slot == "canary"
    return {
        "success_rate": 90.0 if bad else 100.0,
        "error_rate": 10.0 if bad else 0.0,
        "p95_latency_ms": 80.0,
        "cpu_percent": 10.0,
    }


async def test_failing_canary_aborts_and_production_keeps_the_old_version(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    memory.platform.already_serving("production", OLD)
    memory.metrics.script = canary_errors
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue)
        await approve_all(handle)
        result = await pipeline_outcome(handle)

    assert result.state == PipelineState.ROLLED_BACK
    state, summary = stage(result, "canary")
    assert state == StageState.FAILED
    assert "5 failed analyses reached threshold 5 at weight 10%" in summary
    assert "error_rate 10 violates <= 1" in summary
    assert memory.platform.envs["production"].stable == OLD
    assert memory.platform.envs["production"].weight == 0
    assert "promote production" not in memory.platform.events
    assert stage(result, "monitor")[0] == StageState.PENDING
    assert "production" in result.rolled_back
    assert any(n.event == "canary.rolled_back" for n in memory.notifier.sent)


async def test_no_data_is_counted_as_a_canary_failure(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    memory.metrics.script = lambda q, n: {}
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue)
        await approve_all(handle)
        result = await pipeline_outcome(handle)
    state, summary = stage(result, "canary")
    assert state == StageState.FAILED
    assert "no data" in summary


def monitor_script(bad_queries: set[int]) -> Any:
    def script(query: MetricsQuery, n: int) -> dict[str, float | None]:
        bad = query.slot == "stable" and n in bad_queries
        return {
            "success_rate": 80.0 if bad else 100.0,
            "error_rate": 20.0 if bad else 0.0,
            "p95_latency_ms": 80.0,
            "cpu_percent": 10.0,
        }

    return script


async def test_transient_monitor_violation_does_not_roll_back(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    # The monitor measures the stable slot; each check makes one query per distinct window
    # (300 s, 180 s, 600 s in HEAL7): queries 6..8 are the third check's.
    memory.metrics.script = monitor_script({6, 7, 8})
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue)
        await approve_all(handle)
        result = await handle.result()
    assert result.state == PipelineState.SUCCEEDED
    assert "1 transient violation" in stage(result, "monitor")[1]
    assert not any(e.startswith("rollback") for e in memory.platform.events)


async def test_confirmed_monitor_violation_rolls_back(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    memory.platform.already_serving("production", OLD)
    memory.metrics.script = monitor_script(set(range(6, 1000)))
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue)
        await approve_all(handle)
        result = await pipeline_outcome(handle)
    assert result.state == PipelineState.ROLLED_BACK
    state, summary = stage(result, "monitor")
    assert state == StageState.FAILED
    assert "confirmed after 30s re-check" in summary
    assert memory.platform.envs["production"].stable == OLD
    assert result.deployed.get("production") != result.artifact.digest  # type: ignore[union-attr]


async def test_approval_timeout_rejects_with_a_reason(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue)
        await wait_for_gate(handle, "staging")
        result = await pipeline_outcome(handle)  # time skips the 24 h gate
    state, summary = stage(result, "approve_staging")
    assert state == StageState.FAILED
    assert "timed out after 1 day" in summary
    assert result.approvals[-1].via == "timeout"
    assert "staging" not in result.deployed


async def checks_completed(handle: Handle, count: int) -> None:
    """Until `count` check_decision activities of the run have completed."""
    for _ in range(400):
        history = await handle.fetch_history()
        scheduled = {
            e.event_id
            for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")
            and e.activity_task_scheduled_event_attributes.activity_type.name
            == ActivityName.CHECK_DECISION
        }
        done = [
            e
            for e in history.events
            if e.HasField("activity_task_completed_event_attributes")
            and e.activity_task_completed_event_attributes.scheduled_event_id in scheduled
        ]
        if len(done) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} decisions were judged")


@pytest.mark.parametrize(
    ("approver", "gate", "refusal"),
    [
        ("mallory", "staging", "unknown approver 'mallory'"),
        ("erin", "staging", "'erin' holds ['developer']; gate 'staging' needs one of"),
        ("bob", "staging", "'bob' authored this commit"),
        ("carol", "production", "no approval gate named 'production' is open"),
        ("alice", "qa", "no approval gate named 'qa' is open"),
    ],
)
async def test_refused_approvals(
    time_env: WorkflowEnvironment,
    memory: MemoryBackends,
    task_queue: str,
    approver: str,
    gate: str,
    refusal: str,
) -> None:
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue)
        await wait_for_gate(handle, "staging")
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await approve(handle, approver, gate)
        assert refusal in str(info.value.cause)
        # The same decision sent as a signal is refused the same way, and recorded.
        await handle.signal(PipelineWorkflow.approve_signal, Decision(approver=approver, gate=gate))
        if "is open" not in refusal:
            # The worker judges the signal with an activity: abort only once it has (an abort
            # first would close the gate, and the signal's refusal would say so instead).
            await checks_completed(handle, 2)
        await abort(handle, AbortRequest(by="dave", reason="done"))
        result = await pipeline_outcome(handle)
    # Refusals the worker's policy makes are recorded for the update too; the ones the
    # update's validator makes (no such gate open) never reach the history.
    refused = [a for a in result.approvals if not a.accepted]
    assert [r.via for r in refused] in (["signal"], ["update", "signal"])
    assert all(refusal in r.reason for r in refused)
    assert stage(result, "approve_staging") == (StageState.CANCELLED, "cancelled by abort")


async def test_production_needs_both_cto_and_devops_lead(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue)
        await reach_production_gate(handle)
        await approve(handle, "carol", "production")
        st = await wait_for_gate(handle, "production")
        assert st.pending_approvals[0].approved_by == ["carol"]
        assert st.pending_approvals[0].evidence["unit_tests"].startswith("succeeded")
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await approve(handle, "carol", "production")
        assert "'carol' has already decided on gate 'production'" in str(info.value.cause)
        await approve(handle, "dave", "production")
        result = await handle.result()
    assert result.state == PipelineState.SUCCEEDED
    assert "approved by carol, dave" in stage(result, "approve_production")[1]


async def test_one_person_with_both_roles_is_not_a_quorum(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue)
        await reach_production_gate(handle)
        await approve(handle, "frank", "production")
        st = await wait_for_gate(handle, "production")
        assert st.pending_approvals[0].approved_by == ["frank"]
        await abort(handle, AbortRequest(by="dave"))
        await pipeline_outcome(handle)


async def test_rejection_fails_the_run(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue)
        await wait_for_gate(handle, "staging")
        await execute_update(
            handle,
            PipelineWorkflow.reject_update,
            Decision(approver="alice", gate="staging", comment="needs a changelog"),
        )
        result = await pipeline_outcome(handle)
    assert result.state == PipelineState.FAILED
    assert stage(result, "approve_staging") == (
        StageState.FAILED,
        "rejected by alice: needs a changelog",
    )
    # The approvers were told the gate waited for them, and how to answer; the commit's
    # author (bob, by the policy's people) is told it was rejected.
    opened, rejected = [n for n in memory.notifier.sent if n.event.startswith("approval.")]
    assert opened.event == "approval.waiting"
    assert opened.fields["to"] == "alice (team_lead), bob (team_lead) [roles team_lead]"
    command = f"slipway approve {handle.id} --gate staging --approver YOU --comment '...'"
    assert opened.fields["approve"] == command
    assert command in opened.message
    assert rejected.event == "approval.rejected"
    assert rejected.fields["to"] == "bob <bob@example.com>"
    assert "rejected by alice: needs a changelog" in rejected.message


async def test_abort_during_canary_rolls_production_back(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    memory.platform.already_serving("production", OLD)
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue)
        await approve_all(handle)
        await wait_for_canary_interval(time_env, handle)
        # The abort update returns once the worker's policy accepted it: with time skipping,
        # awaiting the result while a signal's check runs would let the canary's timers fire.
        await execute_update(
            handle, "abort", AbortRequest(by="dave", reason="bad smell"), result_type=ActionRecord
        )
        result = await pipeline_outcome(handle)
    assert result.state == PipelineState.ABORTED
    assert result.failure.startswith("aborted by dave: bad smell")
    # Staging's policy (HEAL7's) is a manual rollback: the run says so instead.
    assert "staging needs a manual rollback" in result.failure
    assert stage(result, "canary")[0] == StageState.CANCELLED
    # The canary rolled back on its cancellation; the pipeline's rollback found it done:
    # one restore, to the digest production served before.
    restores = [e for e in memory.platform.events if e.startswith("restore production")]
    assert restores == [f"restore production {OLD}"]
    assert memory.platform.envs["production"].stable == OLD
    assert memory.platform.envs["production"].weight == 0
    assert "production" in result.rolled_back


async def test_develop_branch_skips_production(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue, run=run_context(branch="develop"))
        await wait_for_gate(handle, "staging")
        await approve(handle, "alice", "staging")
        result = await handle.result()
    assert result.state == PipelineState.SUCCEEDED
    assert "production" not in result.deployed
    state, summary = stage(result, "approve_production")
    assert state == StageState.SKIPPED
    assert "takes branches ['main']" in summary
    assert stage(result, "monitor")[0] == StageState.SKIPPED


class FlakyLoad:
    """A load generator whose first run dies (as with its worker); later runs are fine."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, request: LoadRequest, heartbeat: Any) -> LoadReport:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("worker died mid-interval")
        return LoadReport(sent=100, errors=0)


HEALTHY: dict[str, float | None] = {
    "success_rate": 100.0,
    "error_rate": 0.0,
    "p95_latency_ms": 50.0,
    "cpu_percent": 5.0,
}


async def run_with_flaky_load(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str, load: FlakyLoad
) -> PipelineResult:
    """HEAL7 whose canary generates load through `load`; without its traffic an interval
    has nothing to measure (no data) until the load has run once."""
    spec = heal7()
    canary = spec.stage("canary").model_copy(update={"load": LoadSpec(rps=10)})
    spec = spec.model_copy(
        update={"stages": [canary if s.name == "canary" else s for s in spec.stages]}
    )
    memory.metrics.script = lambda q, n: HEALTHY if load.calls >= 2 else {}
    backends = memory.backends()
    backends.load = load
    async with build_worker(time_env.client, backends, task_queue):
        handle = await start(time_env.client, task_queue, spec=spec)
        await approve_all(handle)
        result: PipelineResult = await handle.result()
    return result


async def test_an_interval_whose_load_died_is_repeated_not_judged(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    load = FlakyLoad()
    result = await run_with_flaky_load(time_env, memory, task_queue, load)
    assert stage(result, "canary") == (
        StageState.SUCCEEDED,
        "promoted after 5 analyses (0 failed)",
    )
    assert load.calls == 6  # the lost interval was run again


async def test_a_preflight_whose_load_died_is_repeated_not_judged(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    # Production already serves, so the canary first measures the stable version under load;
    # that load dies with its worker, and the stable version without traffic has no data.
    memory.platform.already_serving("production", OLD)
    load = FlakyLoad()
    result = await run_with_flaky_load(time_env, memory, task_queue, load)
    assert stage(result, "canary") == (
        StageState.SUCCEEDED,
        "promoted after 5 analyses (0 failed)",
    )
    assert load.calls == 7  # the lost pre-flight interval, its repeat, then five steps
    stable = [q for q in memory.metrics.queries if q.slot == "stable"]
    assert stable  # the pre-flight was measured, once its traffic had run


async def test_a_decided_gate_refuses_further_decisions(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue)
        await reach_production_gate(handle)
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await execute_update(
                handle, PipelineWorkflow.reject_update, Decision(approver="bob", gate="staging")
            )
        assert "gate 'staging' is already decided" in str(info.value.cause)
        await abort(handle, AbortRequest(by="dave"))
        await pipeline_outcome(handle)
