"""What each stage kind does inside PipelineWorkflow (deterministic: activities and children).

A runner returns a one-line summary on success or raises `StageFailedError` with the reason. The
results later stages need (workspace, reports, the artifact, what was deployed) live in
`RunState`, owned by the workflow. Approval gates are in `pipeline.py`, next to their handlers.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    is_cancelled_exception,
)
from temporalio.workflow import (
    ChildWorkflowCancellationType,
    ChildWorkflowHandle,
    ParentClosePolicy,
)

from contracts import judgments as policy
from contracts.activity import (
    ActivityName,
    Artifact,
    BuildRequest,
    CheckoutRequest,
    CommandReport,
    CommandRequest,
    Component,
    DeployRequest,
    DeployResult,
    Endpoint,
    EndpointRequest,
    HttpCheckReport,
    HttpCheckRequest,
    ImageScanRequest,
    LiveScanRequest,
    LoadTestPath,
    LoadTestReport,
    LoadTestRequest,
    NotifyRequest,
    PublishRequest,
    ReleaseConfig,
    ScanReport,
    ScanRequest,
    SuiteReport,
    SuiteRequest,
    Workspace,
    bundle_of,
    component_service,
)
from contracts.definition.model import (
    BuildStage,
    CanaryStage,
    CheckoutStage,
    CommandStage,
    DastStage,
    DeployStage,
    E2EStage,
    ImageScanStage,
    LoadTestStage,
    MonitorStage,
    NotifyStage,
    PublishStage,
    QualityGateStage,
    ScanStage,
    SmokeStage,
    Stage,
    StageBase,
    SuiteStage,
)
from contracts.messages import (
    CanaryInput,
    CanaryResult,
    LeaseRef,
    MonitorInput,
    MonitorResult,
    PipelineInput,
    RollbackOutcome,
)
from contracts.naming import canary_id, monitor_id
from workflows.calls import call
from workflows.run_leases import RunLeases

__all__ = ["RunState", "StageFailedError", "run_stage"]


class StageFailedError(Exception):
    """A stage's verdict: it ran and said no (or its activity gave up). `error_type` is the
    `ApplicationError.type` it came from, if any (e.g. StaleLease: the lease was taken)."""

    def __init__(self, message: str, error_type: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type


@dataclass
class RunState:
    """What a run has produced so far."""

    input: PipelineInput
    workflow_id: str
    workspace: Workspace | None = None
    artifact: Artifact | None = None
    tests: dict[str, SuiteReport] = field(default_factory=dict)
    test_durations: dict[str, float] = field(default_factory=dict)
    scans: dict[str, ScanReport] = field(default_factory=dict)
    deployed: dict[str, str] = field(default_factory=dict)
    release_phases: dict[str, str] = field(default_factory=dict)
    touched: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    canaries: dict[str, ChildWorkflowHandle[Any, CanaryResult]] = field(default_factory=dict)
    production_at: datetime | None = None
    leases: RunLeases | None = None
    """The environment leases of this run; None for runs recorded before leases existed."""
    child_rollbacks: dict[str, RollbackOutcome] = field(default_factory=dict)
    """What a canary's or monitor's own rollback did, per environment."""
    on_retry: Callable[[str, int, str], None] | None = None
    """Told (stage, attempt, last failure) when a stage's activity starts again."""
    control_token: str = ""
    """Given to this run's canaries: they take controls only from the pipeline, which
    checked them against the worker's policy (empty for runs from before that)."""
    signed_controls: bool = False
    """This run's canaries take controls only as updates a deployer signs (no token)."""
    configs: dict[str, ReleaseConfig] = field(default_factory=dict)
    """Per environment, the configuration its deploy resolved (secret versions pinned): what
    a promote runs and the environment records."""

    def retry_note(self, stage: Stage) -> Callable[[int, str], None] | None:
        listener = self.on_retry
        if listener is None:
            return None
        return lambda attempt, failure: listener(stage.name, attempt, failure)

    @property
    def service(self) -> str:
        return self.input.spec.service.name

    def need_workspace(self, stage: Stage) -> Workspace:
        if self.workspace is None:
            raise StageFailedError(f"stage {stage.name!r} needs a checkout stage before it")
        return self.workspace

    def workdir(self, stage: Stage) -> str:
        """Where a scan, test or command stage works: the service's directory, or the one of
        the artifact the stage names."""
        ws = self.need_workspace(stage)
        named: str | None = getattr(stage, "artifact", None)
        if named is None:
            return ws.path
        return posixpath.join(ws.path, self.input.spec.artifacts[named].path)

    def addressed(self, stage: Stage) -> str:
        """The platform service a check, canary or monitor stage looks at: a bundle's
        artifact (`<service>-<artifact>`), else the service."""
        named = self.input.spec.artifact_for(stage)
        return component_service(self.service, named) if named else self.service

    def need_artifact(self, stage: Stage) -> Artifact:
        if self.artifact is None:
            raise StageFailedError(f"stage {stage.name!r} needs a build stage before it")
        return self.artifact

    def deploy_request(
        self, environment: str, slot: Any, strategy: Any, *, fresh: bool = False
    ) -> DeployRequest:
        """The request for `environment`'s release; with the configuration its deploy pinned,
        unless `fresh` (a deploy resolves the definition's again)."""
        service = self.input.spec.service
        fence = self.leases.token(environment) if self.leases else 0
        config = self.configs.get(environment)
        if fresh or config is None:
            config = self.input.spec.release_config(environment)
        env_policy = self.input.spec.environments.get(environment)
        return DeployRequest(
            service=service.name,
            environment=environment,
            slot=slot,
            artifact=self.artifact,
            strategy=strategy,
            run_command=service.run,
            health_path=service.health_path,
            ready_path=service.ready_path,
            fence=fence,
            config=config,
            resources=list(env_policy.resources) if env_policy else [],
            env=dict(service.env),
            release=list(service.release),
        )

    def strategy(self, environment: str) -> Any:
        env_policy = self.input.spec.environments.get(environment)
        return env_policy.strategy if env_policy else "rolling"

    def lease_ref(self, environment: str) -> LeaseRef | None:
        if self.leases is None:
            return None
        return LeaseRef(
            token=self.leases.token(environment),
            owner=self.workflow_id,
            strategy=self.strategy(environment),
        )

    @property
    def close_policy(self) -> ParentClosePolicy:
        # Leased runs: a terminated pipeline's canary is cancelled, so it takes its traffic
        # away; before leases, children were terminated with their parent.
        return (
            ParentClosePolicy.REQUEST_CANCEL
            if self.leases is not None
            else ParentClosePolicy.TERMINATE
        )


def _error_type(err: BaseException) -> str | None:
    while isinstance(err, ActivityError | ChildWorkflowError) and err.cause is not None:
        err = err.cause
    return err.type if isinstance(err, ApplicationError) else None


def _cause(err: BaseException) -> str:
    """The innermost message of an activity/child failure, for a stage summary."""
    while isinstance(err, ActivityError | ChildWorkflowError) and err.cause is not None:
        err = err.cause
    return str(err)


async def run_stage(stage: Stage, state: RunState) -> str:
    """Run one non-approval stage; return its summary or raise StageFailedError."""
    runner = _RUNNERS.get(stage.kind)
    if runner is None:
        raise StageFailedError(f"kind {stage.kind!r} is not run by the scheduler")
    try:
        summary: str = await runner(stage, state)
    except (ActivityError, ChildWorkflowError) as err:
        if is_cancelled_exception(err):
            raise StageFailedError("cancelled") from err
        raise StageFailedError(_cause(err), _error_type(err)) from err
    return summary


def _ui(stage: Stage, what: str) -> str:
    """The Web UI's label for a stage's activity: the stage, then what it does."""
    text = f"{stage.name}: {what}"
    return text if len(text) <= UI_SUMMARY_MAX else text[: UI_SUMMARY_MAX - 1] + "…"


UI_SUMMARY_MAX = 200
"""Summaries are user metadata on each command: short, like a title."""


def _id(stage: Stage, suffix: str = "") -> str:
    """Activity ids carry the stage name, so `retry` can find a stage in the history."""
    return f"{stage.name}{suffix}"


async def _checkout(stage: CheckoutStage, state: RunState) -> str:
    run = state.input.run
    ws = await call(
        ActivityName.CHECKOUT,
        CheckoutRequest(
            repo=run.repo, commit=run.commit, service_path=state.input.spec.service.path
        ),
        Workspace,
        retry=stage.retry,
        timeout=stage.timeout,
        activity_id=_id(stage),
        summary=_ui(stage, f"checkout {run.commit[:12]}"),
        on_retry=state.retry_note(stage),
        runner_queue=state.input.runner_task_queue,
    )
    state.workspace = ws
    return f"{ws.commit[:12]} checked out"


async def _scan(stage: ScanStage, state: RunState) -> str:
    report = await call(
        ActivityName.SCAN,
        ScanRequest(
            path=state.workdir(stage),
            scanners=stage.scanners,
            ignore=stage.ignore,
            skip=stage.skip,
            commit=state.input.run.commit,
            branch=state.input.run.branch,
        ),
        ScanReport,
        retry=stage.retry,
        timeout=stage.timeout,
        activity_id=_id(stage),
        summary=_ui(stage, ", ".join(stage.scanners)),
        on_retry=state.retry_note(stage),
        runner_queue=state.input.runner_task_queue,
    )
    state.scans[stage.name] = report
    verdict = policy.judge_scan(report, stage.fail_on, stage.unavailable, stage.name)
    counts = report.counts()
    shown = ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "no findings"
    notes = [*verdict.warnings, report.listing_note()]
    if not verdict.passed:
        raise StageFailedError(verdict.summary)
    return shown + "".join(f"; {note}" for note in notes if note)


async def _test(stage: SuiteStage, state: RunState) -> str:
    started = workflow.now()
    report = await call(
        ActivityName.RUN_TESTS,
        SuiteRequest(
            path=state.workdir(stage),
            command=stage.command,
            junit=stage.junit,
            coverage=stage.coverage,
            env=stage.env,
            services=stage.services,
            extras=stage.extras,
            requirements=stage.requirements,
            setup=stage.setup,
        ),
        SuiteReport,
        retry=stage.retry,
        timeout=stage.timeout,
        activity_id=_id(stage),
        summary=_ui(stage, " ".join(stage.command)),
        on_retry=state.retry_note(stage),
        runner_queue=state.input.runner_task_queue,
    )
    state.tests[stage.name] = report
    state.test_durations[stage.name] = (workflow.now() - started).total_seconds()
    verdict = policy.judge_tests(report, stage)
    # Which servers the suite ran against, and any version asked but not available: said
    # whether the suite passed or not (a failure may well come from the older server).
    services = f"; services: {', '.join(report.services)}" if report.services else ""
    if not verdict.passed:
        raise StageFailedError(verdict.summary + services)
    cov = f", coverage {report.coverage_pct:.1f}%" if report.coverage_pct is not None else ""
    return f"{report.tests} tests, {report.failures + report.errors} failed{cov}{services}"


async def _command(stage: CommandStage, state: RunState) -> str:
    report = await call(
        ActivityName.RUN_COMMAND,
        CommandRequest(path=state.workdir(stage), command=stage.command, env=stage.env),
        CommandReport,
        retry=stage.retry,
        timeout=stage.timeout,
        activity_id=_id(stage),
        summary=_ui(stage, " ".join(stage.command)),
        on_retry=state.retry_note(stage),
        runner_queue=state.input.runner_task_queue,
    )
    if report.exit_code != 0 or report.timed_out:
        ended = "timed out" if report.timed_out else f"exited {report.exit_code}"
        tail = report.output_tail.strip()[-600:]
        raise StageFailedError(f"{' '.join(stage.command)!r} {ended}: {tail}")
    return f"exit 0 in {report.duration_s:.1f}s"


async def _quality_gate(stage: QualityGateStage, state: RunState) -> str:
    names = stage.inputs or stage.needs
    spec = state.input.spec.by_name
    tests = {n: r for n, r in state.tests.items() if n in names or n in stage.min_coverage}
    scans = {n: r for n, r in state.scans.items() if n in names}
    scan_stages = {n: s for n, s in spec.items() if isinstance(s, ScanStage)}
    verdict = policy.quality_gate(
        stage,
        tests,
        scans,
        scan_stages,
        {n: d for n, d in state.test_durations.items() if n in tests},
    )
    if not verdict.passed:
        raise StageFailedError("quality gate failed: " + verdict.summary)
    return f"passed ({len(tests)} test reports, {len(scans)} scans)"


async def _build(stage: BuildStage, state: RunState) -> str:
    if state.artifact is not None:
        # Built once per run: a second build stage (or a replayed one) reuses the digest.
        return f"reused {state.artifact.digest[:19]}"
    ws = state.need_workspace(stage)
    spec = state.input.spec
    if not spec.artifacts:
        artifact = await _build_one(stage, state, ws.path, state.service, "")
        state.artifact = artifact
        return f"{artifact.kind} {artifact.digest[:19]} ({artifact.size_bytes / 1e3:.0f} kB)"
    # Several deployables: each built once, side by side; the run's release is their bundle.
    names = list(spec.artifacts)
    built = await asyncio.gather(
        *(
            _build_one(
                stage,
                state,
                posixpath.join(ws.path, spec.artifacts[name].path),
                component_service(state.service, name),
                f":{name}",
            )
            for name in names
        )
    )
    state.artifact = bundle_of(
        [
            Component(
                name=name,
                artifact=artifact,
                run_command=spec.artifacts[name].run,
                health_path=spec.artifacts[name].health_path,
                ready_path=spec.artifacts[name].ready_path,
                env=dict(spec.artifacts[name].env),
                release=list(spec.artifacts[name].release),
            )
            for name, artifact in zip(names, built, strict=True)
        ],
        version=built[0].version,
    )
    return "; ".join(
        f"{name}: {a.kind} {a.digest[:19]} ({a.size_bytes / 1e3:.0f} kB)"
        for name, a in zip(names, built, strict=True)
    )


async def _build_one(
    stage: BuildStage, state: RunState, path: str, service: str, suffix: str
) -> Artifact:
    ws = state.need_workspace(stage)
    run = state.input.run
    started = workflow.now()
    artifact = await call(
        ActivityName.BUILD,
        BuildRequest(path=path, service=service, commit=ws.commit, branch=run.branch),
        Artifact,
        retry=stage.retry,
        timeout=stage.timeout,
        activity_id=_id(stage, suffix),
        summary=_ui(stage, f"build {service} at {ws.commit[:12]}"),
        on_retry=state.retry_note(stage),
        runner_queue=state.input.runner_task_queue,
    )
    took = (workflow.now() - started).total_seconds()
    what = f"{suffix[1:]}: " if suffix else ""
    if stage.max_size_mb is not None and artifact.size_bytes > stage.max_size_mb * 1e6:
        raise StageFailedError(
            f"{what}artifact is {artifact.size_bytes / 1e6:.1f} MB, limit {stage.max_size_mb:g} MB"
        )
    if stage.max_duration is not None and took > stage.max_duration.total_seconds():
        raise StageFailedError(
            f"{what}build took {took:.0f}s, limit {stage.max_duration.total_seconds():.0f}s"
        )
    return artifact


def _parts(artifact: Artifact) -> list[tuple[str, Artifact]]:
    """(suffix, artifact) for each deployable: the bundle's components, or the one artifact."""
    if artifact.kind != "bundle":
        return [("", artifact)]
    return [(f":{c.name}", c.artifact) for c in artifact.components]


async def _image_scan(stage: ImageScanStage, state: RunState) -> str:
    artifact = state.need_artifact(stage)
    parts = _parts(artifact)
    reports = await asyncio.gather(
        *(
            call(
                ActivityName.SCAN_IMAGE,
                ImageScanRequest(artifact=part, scanner=stage.scanner, ignore=stage.ignore),
                ScanReport,
                retry=stage.retry,
                timeout=stage.timeout,
                activity_id=_id(stage, suffix),
                summary=_ui(stage, f"{stage.scanner} on {suffix[1:] or part.digest[:19]}"),
                on_retry=state.retry_note(stage),
            )
            for suffix, part in parts
        )
    )
    # One report for the stage; in a bundle each scanner line names its artifact.
    report = ScanReport(
        reports=[
            r.model_copy(update={"scanner": f"{r.scanner} ({suffix[1:]})"}) if suffix else r
            for (suffix, _), one in zip(parts, reports, strict=True)
            for r in one.reports
        ]
    )
    state.scans[stage.name] = report
    verdict = policy.judge_scan(report, stage.fail_on, stage.unavailable, stage.name)
    if not verdict.passed:
        raise StageFailedError(verdict.summary)
    counts = report.counts()
    notes = [*verdict.warnings, report.listing_note()]
    return f"HIGH {counts['high']}, CRITICAL {counts['critical']}" + "".join(
        f"; {note}" for note in notes if note
    )


async def _publish(stage: PublishStage, state: RunState) -> str:
    artifact = state.need_artifact(stage)
    run = state.input.run
    branch = run.branch.replace("/", "-")
    tags = [t.format(branch=branch, sha=run.commit, sha12=run.sha12) for t in stage.tags]
    parts = _parts(artifact)
    published = await asyncio.gather(
        *(
            call(
                ActivityName.PUBLISH,
                PublishRequest(
                    artifact=part,
                    service=component_service(state.service, suffix[1:])
                    if suffix
                    else state.service,
                    tags=tags,
                ),
                Artifact,
                retry=stage.retry,
                timeout=stage.timeout,
                activity_id=_id(stage, suffix),
                summary=_ui(stage, f"{suffix[1:] + ' ' if suffix else ''}tags " + ", ".join(tags)),
                on_retry=state.retry_note(stage),
            )
            for suffix, part in parts
        )
    )
    for (suffix, part), answer in zip(parts, published, strict=True):
        if answer.digest != part.digest:
            what = f"{suffix[1:]}: " if suffix else ""
            raise StageFailedError(
                f"{what}registry answered digest {answer.digest}, built {part.digest}: "
                "refusing to deploy something other than what was built and scanned"
            )
    if artifact.kind != "bundle":
        state.artifact = published[0]
    else:
        state.artifact = bundle_of(
            [
                c.model_copy(update={"artifact": answer})
                for c, answer in zip(artifact.components, published, strict=True)
            ],
            version=artifact.version,
        )
    return "tags " + ", ".join(tags)


async def _deploy(stage: DeployStage, state: RunState) -> str:
    state.need_artifact(stage)
    env_policy = state.input.spec.environments.get(stage.environment)
    strategy = stage.strategy or (env_policy.strategy if env_policy else "rolling")
    slot = "canary" if strategy == "canary" else "stable"
    request = state.deploy_request(stage.environment, slot, strategy, fresh=True)
    if state.leases is None and stage.environment not in state.touched:
        state.touched.append(stage.environment)  # before leases: marked before the deploy
    result = await call(
        ActivityName.DEPLOY,
        request,
        DeployResult,
        retry=stage.retry,
        timeout=stage.timeout,
        activity_id=_id(stage),
        summary=_ui(stage, f"{strategy} deploy to {stage.environment}"),
        on_retry=state.retry_note(stage),
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
        result = await call(
            ActivityName.PROMOTE,
            request,
            DeployResult,
            retry=stage.retry,
            timeout=stage.timeout,
            activity_id=_id(stage, ":switch"),
            summary=_ui(stage, f"switch {stage.environment} to the new colour"),
            on_retry=state.retry_note(stage),
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


async def _http_checks(stage: E2EStage | SmokeStage, state: RunState) -> str:
    report = await call(
        ActivityName.HTTP_CHECK,
        HttpCheckRequest(
            service=state.addressed(stage),
            environment=stage.environment,
            checks=stage.checks,
            slot=stage.slot,
        ),
        HttpCheckReport,
        retry=stage.retry,
        timeout=stage.timeout,
        activity_id=_id(stage),
        summary=_ui(stage, f"{len(stage.checks)} HTTP check(s) on {stage.environment}"),
        on_retry=state.retry_note(stage),
    )
    if report.failed:
        raise StageFailedError(
            f"{report.failed} check(s) failed: " + "; ".join(report.failures[:3])
        )
    return f"{report.passed} check(s) passed"


async def _endpoint(stage: LoadTestStage | DastStage, state: RunState) -> Endpoint:
    """Where the stage's service answers, as the environment's platform says (the deployer
    knows the platform; the runner's tools only get the URL)."""
    return await call(
        ActivityName.RESOLVE_ENDPOINT,
        EndpointRequest(service=state.addressed(stage), environment=stage.environment),
        Endpoint,
        retry=stage.retry,
        activity_id=_id(stage, ":endpoint"),
        summary=_ui(stage, f"endpoint of {state.addressed(stage)} in {stage.environment}"),
        on_retry=state.retry_note(stage),
    )


async def _load_test(stage: LoadTestStage, state: RunState) -> str:
    endpoint = await _endpoint(stage, state)
    duration = stage.duration.total_seconds()
    pace = f" at {stage.rate:g} req/s" if stage.rate is not None else ""
    report = await call(
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
        retry=stage.retry,
        timeout=stage.timeout,
        activity_id=_id(stage),
        summary=_ui(
            stage,
            f"{stage.tool}: {stage.users} users{pace} for {duration:g}s on {stage.environment}",
        ),
        on_retry=state.retry_note(stage),
        runner_queue=state.input.runner_task_queue,
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


async def _dast(stage: DastStage, state: RunState) -> str:
    endpoint = await _endpoint(stage, state)
    report = await call(
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
        retry=stage.retry,
        timeout=stage.timeout,
        activity_id=_id(stage),
        summary=_ui(stage, f"{stage.scanner} on {stage.environment}"),
        on_retry=state.retry_note(stage),
        runner_queue=state.input.runner_task_queue,
    )
    state.scans[stage.name] = report
    verdict = policy.judge_scan(report, stage.fail_on, stage.unavailable, stage.name)
    if not verdict.passed:
        raise StageFailedError(verdict.summary)
    counts = report.counts()
    shown = ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "no findings"
    notes = [*verdict.warnings, report.listing_note()]
    return shown + "".join(f"; {note}" for note in notes if note)


async def _canary(stage: CanaryStage, state: RunState) -> str:
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


async def _monitor(stage: MonitorStage, state: RunState) -> str:
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


async def _notify(stage: NotifyStage, state: RunState) -> str:
    run = state.input.run
    try:
        await call(
            ActivityName.NOTIFY,
            NotifyRequest(
                level=stage.level,
                event=f"stage.{stage.name}",
                message=stage.message.format(
                    service=state.service, sha12=run.sha12, branch=run.branch, author=run.author
                ),
                service=state.service,
            ),
            type(None),
            activity_id=_id(stage),
            summary=_ui(stage, f"{stage.level} notification"),
        )
    except ActivityError as err:
        if is_cancelled_exception(err):
            raise
        # A notifier that is down never fails the pipeline.
        return f"not delivered: {_cause(err)}"
    return "sent"


_S = TypeVar("_S", bound=StageBase)
Runner = Callable[[Stage, RunState], Awaitable[str]]
"""Runs one stage of any kind; raises StageFailedError."""


def _runner(kind: type[_S], run: Callable[[_S, RunState], Awaitable[str]]) -> Runner:
    """A stage kind's runner, callable with any `Stage`: the kind is checked at the door."""

    async def checked(stage: Stage, state: RunState) -> str:
        if not isinstance(stage, kind):
            raise StageFailedError(f"stage {stage.name!r} is not a {kind.__name__}")
        return await run(stage, state)

    return checked


_RUNNERS: dict[str, Runner] = {
    "checkout": _runner(CheckoutStage, _checkout),
    "scan": _runner(ScanStage, _scan),
    "test": _runner(SuiteStage, _test),
    "command": _runner(CommandStage, _command),
    "quality_gate": _runner(QualityGateStage, _quality_gate),
    "build": _runner(BuildStage, _build),
    "image_scan": _runner(ImageScanStage, _image_scan),
    "publish": _runner(PublishStage, _publish),
    "deploy": _runner(DeployStage, _deploy),
    "e2e": _runner(E2EStage, _http_checks),
    "smoke": _runner(SmokeStage, _http_checks),
    "load_test": _runner(LoadTestStage, _load_test),
    "dast": _runner(DastStage, _dast),
    "canary": _runner(CanaryStage, _canary),
    "monitor": _runner(MonitorStage, _monitor),
    "notify": _runner(NotifyStage, _notify),
}
