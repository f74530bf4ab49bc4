"""Crash safety, end to end on real processes: Temporal dev server (SQLite db file), a worker
subprocess on the local platform (Traefik + hello-service processes), pipelines/hello.yaml.

Two pipeline runs share one stack (run C, five kills in one long stage, has a module of its
own, `test_crash_long_stage.py`, so that it runs beside these):

Run A, release 0.1.0, the worker is SIGKILLed three times and restarted ~1 s later each time:
  1. mid-deploy: `deploy_production` is executing and has just spawned the canary slot's
     process (a release process that is no slot's current one appears), not yet ready;
  2. mid-canary: the CanaryWorkflow's `status` query reports weight > 0 (first step set, its
     analysis interval and load running);
  3. mid-monitor: the MonitorWorkflow's `progress` query reports its first check done (the
     next interval's timer and load running).
  The run must succeed: production serves 0.1.0 over HTTP, one build, one digest everywhere,
  no release process left that no slot records.

Run B, release 0.2.0 with 800 ms of extra latency: the dev server is SIGKILLed while the
canary runs (weight > 0) and started again on the same --db-filename ~1 s later; the worker
is left running (it reconnects by itself; it is restarted only if it died). The run must
still end rolled_back and production still serve 0.1.0.

A SIGKILLed worker cannot tell Temporal that its activities are gone: they are started again
(or, for the load generator, given up, and its interval repeated) when their 10 s heartbeat
timeout expires, so each worker kill costs about 10 s. `pytest -s` prints each run's timeline
(seconds since its start). Measured on 2 cores: run A killed at +15.2 s (deploy), +26.5 s
(canary at 25%), +50.9 s (monitor after 1 check), each restarted 1.0 s later, succeeded at
+81.5 s (deploy_production completed on a second execution; the canary interval and the
monitor interval the kills cut were repeated: 2 analyses, 0 failed; 5 monitor checks); run
B's server was killed at +11.9 s (canary at 25%), back at +13.0 s, run rolled back at +19.9 s
on p95 987.5 ms; the whole module took 104 s.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.service import RPCError

from activities.platforms.local import LocalPlatform, SlotManager
from contracts.activity import WeightRequest
from contracts.messages import (
    CanaryResult,
    CanaryStatus,
    MonitorResult,
    PipelineState,
    RunContext,
    StageState,
)
from contracts.naming import canary_id, monitor_id
from demo.localstack import (
    commit_fault,
    make_service_repo,
    production_version,
    wait_for_gate,
)
from starters.runs import start_pipeline
from tests.e2e.crashkit import (
    AUTHOR,
    RESTART_AFTER_S,
    RUN_TIMEOUT_S,
    Shared,
    Timeline,
    activity_runs,
    approve,
    canary_status,
    crash_worker,
    diagnostics,
    ended_why,
    monitor_progress,
    outcome,
    pending_activity,
    poll,
    stage_state,
    stray_processes,
)
from tests.support.devstack import APPROVERS, DEMO_ROLES, HELLO_SPEC, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.realserver]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shared]:
    async with running_stack(tmp_path_factory.mktemp("crash"), "crash") as stack:
        yield Shared(stack, stack.client)


async def start_run(shared: Shared, commit: str, timeline: Timeline) -> str:
    run = RunContext(
        service=HELLO_SPEC.service.name,
        repo=str(shared.stack.repo),
        commit=commit,
        author=AUTHOR,
        branch="main",
    )
    started = await start_pipeline(
        shared.client, HELLO_SPEC, run, DEMO_ROLES, shared.stack.worker.task_queue
    )
    assert not started.existing, f"{started.workflow_id} existed before the test"
    timeline.mark(f"started {started.workflow_id}")
    return started.workflow_id


async def pass_gates(client: Client, workflow_id: str, timeline: Timeline) -> None:
    for gate, people in APPROVERS.items():
        st = await wait_for_gate(client, workflow_id, gate, timeout_s=180)
        assert st.state == PipelineState.RUNNING, f"run ended before gate {gate}: {ended_why(st)}"
        await approve(client, workflow_id, gate, people)
        timeline.mark(f"gate {gate} approved by {', '.join(people)}")


def canary_weight_above_zero(
    client: Client, workflow_id: str
) -> Callable[[], Awaitable[CanaryStatus | None]]:
    async def probe() -> CanaryStatus | None:
        st = await canary_status(client, workflow_id)
        return st if st is not None and st.weight > 0 else None

    return probe


async def show_cut_activities(client: Client, timeline: Timeline, workflow_id: str) -> None:
    """Which activity executions a crash cut short (ended on a retry, or timed out)."""
    children = {
        "pipeline": workflow_id,
        "canary": canary_id(workflow_id, "canary"),
        "monitor": monitor_id(workflow_id, "monitor"),
    }
    for label, child in children.items():
        try:
            runs = await activity_runs(client, child)
        except RPCError:
            continue  # no such child (the canary failed before the monitor)
        cut = [
            f"{r.activity_type} (attempt {r.attempt}, {r.ended})"
            for r in runs
            if r.attempt > 1 or r.ended != "completed"
        ]
        timeline.mark(f"  cut short in the {label}: {', '.join(cut) or 'nothing'}")


async def test_worker_sigkilled_mid_deploy_canary_and_monitor_still_promotes(
    shared: Shared,
) -> None:
    stack, client = shared.stack, shared.client
    commit = make_service_repo(stack.repo, author=AUTHOR)
    timeline = Timeline("run A")
    with diagnostics(stack, timeline):
        workflow_id = await start_run(shared, commit, timeline)
        await pass_gates(client, workflow_id, timeline)

        # 1. Mid-deploy: deploy_production has spawned the canary slot's process (a release
        #    process that is no slot's current one appears), which is not ready yet.
        canary_log = stack.slot_log("production", "canary")
        assert not canary_log.exists()

        async def spawned() -> set[int] | None:
            if not canary_log.exists():
                return None
            return stray_processes(stack.platform_dir) or None

        starting = await poll("deploy_production spawns the canary", spawned, 120, every_s=0.005)
        await crash_worker(
            stack, timeline, f"mid-deploy (canary process {sorted(starting)} starting)"
        )
        recorded = SlotManager(stack.platform_dir).state("hello", "production", "canary")
        inflight = await pending_activity(client, workflow_id, "deploy_production")
        timeline.mark(
            f"  deploy_production as the server sees it: {inflight}; canary slot: pid "
            f"{recorded.pid}, leftovers {[r.pid for r in recorded.leftovers]}"
        )

        async def deployed() -> StageState | None:
            state = await stage_state(client, workflow_id, "deploy_production")
            return state if state is not None and state.finished else None

        assert await poll("deploy_production finishes", deployed, 150) == StageState.SUCCEEDED
        timeline.mark("deploy_production succeeded")

        # 2. Mid-canary: the first weight step is set and its analysis interval runs.
        step = await poll("canary weight > 0", canary_weight_above_zero(client, workflow_id), 120)
        await crash_worker(stack, timeline, f"mid-canary (weight {step.weight}%)")

        # 3. Mid-monitor: one check done, the next interval (timer + load) running.
        async def monitoring() -> MonitorResult | None:
            progress = await monitor_progress(client, workflow_id)
            return progress if progress is not None and progress.checks >= 1 else None

        progress = await poll("monitor's first check", monitoring, 240)
        await crash_worker(stack, timeline, f"mid-monitor (after {progress.checks} check(s))")

        result = await outcome(client, workflow_id, RUN_TIMEOUT_S)
        timeline.mark(f"run ended {result.state.value}: {result.failure or 'ok'}")
        for s in result.stages:
            print(f"    {s.name}: {s.state.value} {s.summary[:90]}")

        assert result.state == PipelineState.SUCCEEDED, result.failure
        assert result.artifact is not None
        digest = result.artifact.digest
        assert result.deployed == {"development": digest, "staging": digest, "production": digest}
        serving = production_version(stack.production_port)
        assert (serving.get("version"), serving.get("digest")) == ("0.1.0", digest), serving

        runs = await activity_runs(client, workflow_id)
        builds = [r for r in runs if r.activity_type == "build"]
        assert [(b.attempt, b.ended) for b in builds] == [(1, "completed")], builds
        deploys = [r for r in runs if r.activity_id == "deploy_production"]
        timeline.mark(f"  deploy_production in history: {deploys}")
        # The kill landed inside the activity: its first execution was lost with the worker
        # (a heartbeat timeout) and started again, not counted as a failed attempt.
        assert [d.ended for d in deploys] == ["timed_out", "completed"], deploys

        canary = await client.get_workflow_handle(
            canary_id(workflow_id, "canary"), result_type=CanaryResult
        ).result()
        timeline.mark(
            f"  canary {canary.outcome}: {canary.reason}; {len(canary.steps)} analyses, "
            f"{canary.failed_checks} failed: " + "; ".join(s.summary for s in canary.steps)
        )
        assert canary.outcome == "promoted"
        monitor = await client.get_workflow_handle(
            monitor_id(workflow_id, "monitor"), result_type=MonitorResult
        ).result()
        timeline.mark(f"  monitor {monitor.outcome}: {monitor.checks} checks")
        assert monitor.outcome == "healthy"
        await show_cut_activities(client, timeline, workflow_id)
        assert not stray_processes(stack.platform_dir), "release processes no slot records"
        shared.first_digest = digest


async def test_dev_server_restarted_mid_canary_still_rolls_back(shared: Shared) -> None:
    stack, client = shared.stack, shared.client
    if shared.first_digest is None:
        pytest.skip("needs run A's release serving production (run the whole module)")
    first = shared.first_digest
    commit = commit_fault(stack.repo, version="0.2.0", author=AUTHOR, extra_latency_ms=800)
    timeline = Timeline("run B")
    with diagnostics(stack, timeline):
        workflow_id = await start_run(shared, commit, timeline)
        await pass_gates(client, workflow_id, timeline)

        step = await poll("canary weight > 0", canary_weight_above_zero(client, workflow_id), 180)
        worker_pid = stack.worker.proc.pid if stack.worker.proc else None
        stack.server.stop(signal.SIGKILL)
        timeline.mark(f"SIGKILL dev server mid-canary (weight {step.weight}%)")
        await asyncio.sleep(RESTART_AFTER_S)
        stack.server.start()
        timeline.mark(f"dev server restarted on {stack.server.db_file.name}")
        if stack.worker.proc is None or stack.worker.proc.poll() is not None:
            timeline.mark("worker died with the server: restarting it")
            stack.worker.start()
        else:
            timeline.mark(f"worker {worker_pid} still running: left alone")

        result = await outcome(client, workflow_id, RUN_TIMEOUT_S)
        timeline.mark(f"run ended {result.state.value}: {result.failure}")
        assert result.state == PipelineState.ROLLED_BACK, result
        canary_stage = next(s for s in result.stages if s.name == "canary")
        assert canary_stage.state == StageState.FAILED
        assert "production" in result.rolled_back
        assert "production" not in result.deployed

        canary = await client.get_workflow_handle(
            canary_id(workflow_id, "canary"), result_type=CanaryResult
        ).result()
        timeline.mark(
            f"  canary {canary.outcome}: {canary.failed_checks} failed analyses: "
            + "; ".join(s.summary for s in canary.steps)
        )
        assert canary.outcome == "aborted"
        await show_cut_activities(client, timeline, workflow_id)
        assert any("p95_latency_ms" in s.summary and not s.passed for s in canary.steps)

        serving = production_version(stack.production_port)
        assert (serving.get("version"), serving.get("digest")) == ("0.1.0", first), serving
        platform = LocalPlatform(stack.platform_dir, base_port=stack.worker.base_port)
        assert platform.router.verify_weight(
            WeightRequest(service="hello", environment="production", canary_weight=0)
        )
        assert not stray_processes(stack.platform_dir), "release processes no slot records"
        assert stack.worker.proc is not None
        assert stack.worker.proc.poll() is None, "the worker exited"
