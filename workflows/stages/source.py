"""Stages over the commit's source: checkout, scans, test suites, commands and the quality gate
(deterministic: activities only)."""

from __future__ import annotations

from temporalio import workflow

from contracts import judgments as policy
from contracts.activity import (
    ActivityName,
    CheckoutRequest,
    CommandReport,
    CommandRequest,
    ScanReport,
    ScanRequest,
    SuiteReport,
    SuiteRequest,
    Workspace,
)
from contracts.definition.model import (
    CheckoutStage,
    CommandStage,
    QualityGateStage,
    ScanStage,
    SuiteStage,
)
from workflows.stages.run_state import (
    RunState,
    StageFailedError,
    stage_call,
)

__all__ = ["checkout", "command", "quality_gate", "scan", "test_suite"]


async def checkout(stage: CheckoutStage, state: RunState) -> str:
    run = state.input.run
    ws = await stage_call(
        stage,
        state,
        ActivityName.CHECKOUT,
        CheckoutRequest(
            repo=run.repo, commit=run.commit, service_path=state.input.spec.service.path
        ),
        Workspace,
        f"checkout {run.commit[:12]}",
    )
    state.workspace = ws
    return f"{ws.commit[:12]} checked out"


async def scan(stage: ScanStage, state: RunState) -> str:
    report = await stage_call(
        stage,
        state,
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
        ", ".join(stage.scanners),
    )
    state.scans[stage.name] = report
    verdict = policy.judge_scan(report, stage.fail_on, stage.unavailable, stage.name)
    counts = report.counts()
    shown = ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "no findings"
    notes = [*verdict.warnings, report.listing_note()]
    if not verdict.passed:
        raise StageFailedError(verdict.summary)
    return shown + "".join(f"; {note}" for note in notes if note)


async def test_suite(stage: SuiteStage, state: RunState) -> str:
    started = workflow.now()
    report = await stage_call(
        stage,
        state,
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
        " ".join(stage.command),
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


async def command(stage: CommandStage, state: RunState) -> str:
    report = await stage_call(
        stage,
        state,
        ActivityName.RUN_COMMAND,
        CommandRequest(path=state.workdir(stage), command=stage.command, env=stage.env),
        CommandReport,
        " ".join(stage.command),
    )
    if report.exit_code != 0 or report.timed_out:
        ended = "timed out" if report.timed_out else f"exited {report.exit_code}"
        tail = report.output_tail.strip()[-600:]
        raise StageFailedError(f"{' '.join(stage.command)!r} {ended}: {tail}")
    return f"exit 0 in {report.duration_s:.1f}s"


async def quality_gate(stage: QualityGateStage, state: RunState) -> str:
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
