"""The web stages inside PipelineWorkflow (deterministic: activity calls and judgments):
`browser` (the service's own Playwright tests) and `web_audit` (Lighthouse and axe).

Shaped like the live tests (`workflows/stages/environments.py`: `load_test`, `dast`): the
deployer resolves the environment's endpoint, the runner's activity does the work, the
workflow judges the report (`contracts.web_judgments`) and returns a one-line summary or
raises `StageFailedError`. `dispatch.RUNNERS` maps the kinds to `browser` and `web_audit`.
"""

from __future__ import annotations

from contracts.activity import (
    ActivityName,
    BrowserTestReport,
    BrowserTestRequest,
    ScanReport,
    WebAuditReport,
    WebAuditRequest,
)
from contracts.definition.model import WCAG_TAGS, BrowserStage, WebAuditStage
from contracts.web_judgments import judge_browser, judge_web_audit, scores_summary
from workflows.stages.environments import resolve_endpoint
from workflows.stages.run_state import RunState, StageFailedError, stage_call

__all__ = ["browser", "web_audit"]


async def browser(stage: BrowserStage, state: RunState) -> str:
    endpoint = await resolve_endpoint(stage, state)
    report = await stage_call(
        stage,
        state,
        ActivityName.BROWSER_TESTS,
        BrowserTestRequest(
            path=state.workdir(stage),
            endpoint=endpoint,
            tests=list(stage.tests),
            args=list(stage.args),
            env=dict(stage.env),
            extras=stage.extras,
            requirements=list(stage.requirements),
            setup=list(stage.setup),
            screenshot=stage.screenshot,
            tracing=stage.trace,
            video=stage.video,
            max_duration_s=stage.max_duration.total_seconds(),
            stage=stage.name,
        ),
        BrowserTestReport,
        f"Playwright {' '.join(stage.tests)} in Chromium on {stage.environment}",
    )
    verdict = judge_browser(report, stage)
    if not verdict.passed:
        raise StageFailedError(verdict.summary)
    if not report.available:
        return verdict.summary
    failed = report.failures + report.errors
    kept = f"; traces and screenshots in {report.results_dir}" if report.results_dir else ""
    return (
        f"{report.tests} browser test(s), {failed} failed, {report.skipped} skipped "
        f"in {report.duration_s:.1f}s{kept}"
    )


async def web_audit(stage: WebAuditStage, state: RunState) -> str:
    endpoint = await resolve_endpoint(stage, state)
    minimums = stage.lighthouse.minimums() if stage.lighthouse is not None else {}
    tools = [
        *(["Lighthouse"] if stage.lighthouse is not None else []),
        *([f"axe WCAG 2 {stage.wcag}"] if stage.wcag is not None else []),
    ]
    report = await stage_call(
        stage,
        state,
        ActivityName.WEB_AUDIT,
        WebAuditRequest(
            endpoint=endpoint,
            paths=list(stage.paths),
            lighthouse=stage.lighthouse is not None,
            axe=stage.wcag is not None,
            categories=list(minimums) or ["accessibility"],
            form_factor=stage.form_factor,
            wcag_tags=list(WCAG_TAGS[stage.wcag or "AA"]),
            max_time_s=stage.max_audit_time.total_seconds(),
            ignore=stage.ignore,
        ),
        WebAuditReport,
        f"{' and '.join(tools)} on {len(stage.paths)} page(s) of {stage.environment}",
    )
    if report.axe is not None:
        # Quality gates and approvers read the violations like any scan's findings.
        state.scans[stage.name] = ScanReport(reports=[report.axe])
    verdict = judge_web_audit(report, stage)
    if not verdict.passed:
        raise StageFailedError(verdict.summary)
    if not report.available:
        return verdict.summary
    parts = [f"{len(stage.paths)} page(s)"]
    scores = scores_summary(report)
    if scores:
        parts.append(f"Lighthouse {scores}")
    if report.axe is not None:
        counts = report.axe.counts()
        shown = ", ".join(f"{k.value} {v}" for k, v in counts.items() if v) or "none"
        parts.append(f"WCAG 2 {stage.wcag} violations: {shown}")
        note = ScanReport(reports=[report.axe]).listing_note()
        if note:
            parts.append(note)
    return "; ".join(parts)
