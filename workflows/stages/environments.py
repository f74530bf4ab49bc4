"""Stages that act on an environment: deploys, HTTP checks, live tests (load, dynamic scans),
and the canary and monitor child workflows."""

from __future__ import annotations

from temporalio import workflow
from temporalio.workflow import (
    ChildWorkflowCancellationType,
)

from contracts import judgments as policy
from contracts.activity import (
    ActivityName,
    DeployResult,
    Endpoint,
    EndpointRequest,
    HttpCheckReport,
    HttpCheckRequest,
    LiveScanRequest,
    LoadTestPath,
    LoadTestReport,
    LoadTestRequest,
    ScanReport,
    Slot,
)
from contracts.definition.model import (
    BrowserStage,
    CanaryStage,
    DastStage,
    DeployStage,
    E2EStage,
    LoadTestStage,
    MonitorStage,
    SmokeStage,
    WebAuditStage,
)
from contracts.messages import (
    CanaryInput,
    CanaryResult,
    MonitorInput,
    MonitorResult,
)
from contracts.naming import canary_id, monitor_id
from workflows.stages.run_state import (
    RunState,
    StageFailedError,
    stage_call,
)

__all__ = [
    "LiveStage",
    "canary",
    "dast",
    "deploy",
    "http_checks",
    "load_test",
    "monitor",
    "resolve_endpoint",
]

LiveStage = LoadTestStage | DastStage | BrowserStage | WebAuditStage
"""Stages whose tool (on the runner) acts on an environment's URL."""


async def deploy(stage: DeployStage, state: RunState) -> str:
    state.need_artifact(stage)
    env_policy = state.input.spec.environments.get(stage.environment)
    strategy = stage.strategy or (env_policy.strategy if env_policy else "rolling")
    slot: Slot = "canary" if strategy == "canary" else "stable"
    request = state.deploy_request(stage.environment, slot, strategy, fresh=True)
    if state.leases is None and stage.environment not in state.touched:
        state.touched.append(stage.environment)  # before leases: marked before the deploy
    result = await stage_call(
        stage,
        state,
        ActivityName.DEPLOY,
        request,
        DeployResult,
        f"{strategy} deploy to {stage.environment}",
    )
    if result.config is not None:
        # Secrets resolved at their current versions: the promote and the record use these.
        state.configs[stage.environment] = result.config
        request = request.model_copy(update={"config": result.config})
    phase = result.release_phase
    if phase:
        state.release_phases[stage.environment] = phase
    if strategy == "blue_green":
        # Preview is healthy: switch the active colour.
        result = await stage_call(
            stage,
            state,
            ActivityName.PROMOTE,
            request,
            DeployResult,
            f"switch {stage.environment} to the new colour",
            suffix=":switch",
        )
    if strategy != "canary":
        if state.leases is not None:
            await state.leases.report_serving(stage.environment, request, phase)
        state.deployed[stage.environment] = result.digest
        _mark_production(stage.environment, state)
    note = "" if result.changed else " (already running)"
    config = request.config.describe()
    phase_note = f"; release phase: {phase}" if phase else ""
    return f"{strategy} {result.digest[:19]} to {result.slot}{note}{phase_note}" + (
        f"; config: {config}" if config else ""
    )


def _mark_production(environment: str, state: RunState) -> None:
    if environment == "production" and state.production_at is None:
        state.production_at = workflow.now()


async def http_checks(stage: E2EStage | SmokeStage, state: RunState) -> str:
    report = await stage_call(
        stage,
        state,
        ActivityName.HTTP_CHECK,
        HttpCheckRequest(
            service=state.addressed(stage),
            environment=stage.environment,
            checks=stage.checks,
            slot=stage.slot,
        ),
        HttpCheckReport,
        f"{len(stage.checks)} HTTP check(s) on {stage.environment}",
    )
    if report.failed:
        raise StageFailedError(
            f"{report.failed} check(s) failed: " + "; ".join(report.failures[:3])
        )
    return f"{report.passed} check(s) passed"


async def resolve_endpoint(stage: LiveStage, state: RunState) -> Endpoint:
    """Where the stage's service answers, as the environment's platform says (the deployer
    knows the platform; the runner's tools only get the URL)."""
    return await stage_call(
        stage,
        state,
        ActivityName.RESOLVE_ENDPOINT,
        EndpointRequest(service=state.addressed(stage), environment=stage.environment),
        Endpoint,
        f"endpoint of {state.addressed(stage)} in {stage.environment}",
        suffix=":endpoint",
        stage_timeout=False,
    )


async def load_test(stage: LoadTestStage, state: RunState) -> str:
    endpoint = await resolve_endpoint(stage, state)
    duration = stage.duration.total_seconds()
    pace = f" at {stage.rate:g} req/s" if stage.rate is not None else ""
    report = await stage_call(
        stage,
        state,
        ActivityName.LOAD_TEST,
        LoadTestRequest(
            endpoint=endpoint,
            users=stage.users,
            rate=stage.rate,
            duration_s=duration,
            ramp_s=stage.ramp.total_seconds(),
            paths=[LoadTestPath(path=p.path, weight=p.weight) for p in stage.paths],
        ),
        LoadTestReport,
        f"{stage.tool}: {stage.users} users{pace} for {duration:g}s on {stage.environment}",
    )
    verdict = policy.judge_load(report, stage)
    if not verdict.passed:
        raise StageFailedError(verdict.summary)
    if not report.available:
        return verdict.summary
    return _load_summary(report)


def _load_summary(report: LoadTestReport) -> str:
    """'1,204 requests, 40.1 req/s, p95 12 ms, p99 30 ms, errors 0.00%'."""
    latency = ", ".join(
        f"{name} {value:.0f} ms"
        for name, value in (("p95", report.p95_ms), ("p99", report.p99_ms))
        if value is not None
    )
    errors = report.error_rate or 0.0
    return f"{report.requests:,} requests, {report.rps:.1f} req/s, {latency}, errors {errors:.2f}%"


async def dast(stage: DastStage, state: RunState) -> str:
    endpoint = await resolve_endpoint(stage, state)
    report = await stage_call(
        stage,
        state,
        ActivityName.LIVE_SCAN,
        LiveScanRequest(
            endpoint=endpoint,
            scanner=stage.scanner,
            modules=list(stage.modules),
            max_scan_s=stage.max_scan_time.total_seconds(),
            depth=stage.depth,
            ignore=stage.ignore,
        ),
        ScanReport,
        f"{stage.scanner} on {stage.environment}",
    )
    state.scans[stage.name] = report
    verdict = policy.judge_scan(report, stage.fail_on, stage.unavailable, stage.name)
    if not verdict.passed:
        raise StageFailedError(verdict.summary)
    counts = report.counts()
    shown = ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "no findings"
    notes = [*verdict.warnings, report.listing_note()]
    return shown + "".join(f"; {note}" for note in notes if note)


async def canary(stage: CanaryStage, state: RunState) -> str:
    artifact = state.need_artifact(stage)
    service = state.input.spec.service
    handle = await workflow.start_child_workflow(
        "CanaryWorkflow",
        CanaryInput(
            service=service.name,
            stage=stage,
            artifact=artifact,
            run_command=service.run,
            health_path=service.health_path,
            ready_path=service.ready_path,
            env=dict(service.env),
            lease=state.lease_ref(stage.environment),
            metric_templates=state.input.spec.metric_templates(stage.environment),
            control_token="" if state.signed_controls else state.control_token,
            controls="update" if state.signed_controls else "signal",
            measured=state.addressed(stage) if artifact.kind == "bundle" else "",
            config=state.deploy_request(stage.environment, "canary", "canary").config,
        ),
        id=canary_id(state.workflow_id, stage.name),
        result_type=CanaryResult,
        cancellation_type=ChildWorkflowCancellationType.WAIT_CANCELLATION_COMPLETED,
        parent_close_policy=state.close_policy,
        static_summary=(
            f"{stage.name}: canary of {service.name} {artifact.version} in {stage.environment}"
        ),
    )
    state.canaries[stage.name] = handle
    try:
        result = await handle
    finally:
        state.canaries.pop(stage.name, None)
    if result.outcome != "promoted":
        if result.rollback is not None:
            state.child_rollbacks[stage.environment] = result.rollback
        if state.leases is None and stage.environment not in state.rolled_back:
            state.rolled_back.append(stage.environment)
        raise StageFailedError(f"canary aborted: {result.reason}")
    if state.leases is not None:
        await state.leases.report_serving(
            stage.environment,
            state.deploy_request(stage.environment, "canary", "canary"),
            state.release_phases.get(stage.environment, ""),
        )
    state.deployed[stage.environment] = artifact.digest
    _mark_production(stage.environment, state)
    return f"promoted after {len(result.steps)} analyses ({result.failed_checks} failed)"


async def monitor(stage: MonitorStage, state: RunState) -> str:
    result = await workflow.execute_child_workflow(
        "MonitorWorkflow",
        MonitorInput(
            service=state.service,
            stage=stage,
            lease=state.lease_ref(stage.environment),
            metric_templates=state.input.spec.metric_templates(stage.environment),
            measured=state.addressed(stage) if state.input.spec.artifacts else "",
        ),
        id=monitor_id(state.workflow_id, stage.name),
        result_type=MonitorResult,
        cancellation_type=ChildWorkflowCancellationType.WAIT_CANCELLATION_COMPLETED,
        parent_close_policy=state.close_policy,
        static_summary=(
            f"{stage.name}: post-deploy monitor of {state.service} in {stage.environment}"
        ),
    )
    if result.outcome == "rolled_back":
        if result.rollback is not None:
            state.child_rollbacks[stage.environment] = result.rollback
        if state.leases is None and stage.environment not in state.rolled_back:
            state.rolled_back.append(stage.environment)
        state.deployed.pop(stage.environment, None)
        raise StageFailedError(f"rolled back: {result.reason}")
    return f"healthy: {result.checks} checks, {result.transient_violations} transient violation(s)"
