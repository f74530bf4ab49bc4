"""What each stage kind runs inside PipelineWorkflow: one runner per kind, checked at the
door. Approval gates are not here: they live with their handlers (`workflows/pipeline/gates.py`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio.exceptions import (
    ActivityError,
    ChildWorkflowError,
    is_cancelled_exception,
)

from contracts.activity import (
    ActivityName,
    NotifyRequest,
)
from contracts.definition.model import (
    BrowserStage,
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
    WebAuditStage,
)
from workflows.calls import call
from workflows.stages.artifacts import build, image_scan, publish
from workflows.stages.environments import canary, dast, deploy, http_checks, load_test, monitor
from workflows.stages.run_state import (
    RunState,
    StageFailedError,
    failure_cause,
    failure_type,
    ui_label,
)
from workflows.stages.source import checkout, command, quality_gate, scan, test_suite
from workflows.stages.web import browser, web_audit

__all__ = ["RUNNERS", "run_stage"]


async def run_stage(stage: Stage, state: RunState) -> str:
    """Run one non-approval stage; return its summary or raise StageFailedError."""
    runner = RUNNERS.get(stage.kind)
    if runner is None:
        raise StageFailedError(f"kind {stage.kind!r} is not run by the scheduler")
    try:
        summary: str = await runner(stage, state)
    except (ActivityError, ChildWorkflowError) as err:
        if is_cancelled_exception(err):
            raise StageFailedError("cancelled") from err
        raise StageFailedError(failure_cause(err), failure_type(err)) from err
    return summary


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
            activity_id=stage.name,
            summary=ui_label(stage, f"{stage.level} notification"),
        )
    except ActivityError as err:
        if is_cancelled_exception(err):
            raise
        # A notifier that is down never fails the pipeline.
        return f"not delivered: {failure_cause(err)}"
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


RUNNERS: dict[str, Runner] = {
    "checkout": _runner(CheckoutStage, checkout),
    "scan": _runner(ScanStage, scan),
    "test": _runner(SuiteStage, test_suite),
    "command": _runner(CommandStage, command),
    "quality_gate": _runner(QualityGateStage, quality_gate),
    "build": _runner(BuildStage, build),
    "image_scan": _runner(ImageScanStage, image_scan),
    "publish": _runner(PublishStage, publish),
    "deploy": _runner(DeployStage, deploy),
    "e2e": _runner(E2EStage, http_checks),
    "smoke": _runner(SmokeStage, http_checks),
    "load_test": _runner(LoadTestStage, load_test),
    "dast": _runner(DastStage, dast),
    "browser": _runner(BrowserStage, browser),
    "web_audit": _runner(WebAuditStage, web_audit),
    "canary": _runner(CanaryStage, canary),
    "monitor": _runner(MonitorStage, monitor),
    "notify": _runner(NotifyStage, _notify),
}
