"""The state a pipeline run's stages share, and the one way a stage calls an activity.

A stage returns a one-line summary on success or raises `StageFailedError` with the reason.
What later stages need (the workspace, reports, the artifact, what was deployed) lives in
`RunState`, owned by the workflow."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
)
from temporalio.workflow import (
    ChildWorkflowHandle,
    ParentClosePolicy,
)

from contracts.activity import (
    ActivityName,
    Artifact,
    DeployRequest,
    ReleaseConfig,
    ScanReport,
    Slot,
    Strategy,
    SuiteReport,
    Workspace,
    component_service,
)
from contracts.definition.model import (
    Stage,
)
from contracts.messages import (
    CanaryResult,
    LeaseRef,
    PipelineInput,
    RollbackOutcome,
)
from workflows.calls import call
from workflows.run_leases import RunLeases

__all__ = [
    "UI_SUMMARY_MAX",
    "RunState",
    "StageFailedError",
    "failure_cause",
    "failure_type",
    "stage_call",
    "ui_label",
]


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
        self, environment: str, slot: Slot, strategy: Strategy, *, fresh: bool = False
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

    def strategy(self, environment: str) -> Strategy:
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


def failure_type(err: BaseException) -> str | None:
    while isinstance(err, ActivityError | ChildWorkflowError) and err.cause is not None:
        err = err.cause
    return err.type if isinstance(err, ApplicationError) else None


def failure_cause(err: BaseException) -> str:
    """The innermost message of an activity/child failure, for a stage summary."""
    while isinstance(err, ActivityError | ChildWorkflowError) and err.cause is not None:
        err = err.cause
    return str(err)


def ui_label(stage: Stage, what: str) -> str:
    """The Web UI's label for a stage's activity: the stage, then what it does."""
    text = f"{stage.name}: {what}"
    return text if len(text) <= UI_SUMMARY_MAX else text[: UI_SUMMARY_MAX - 1] + "…"


UI_SUMMARY_MAX = 200


"""Summaries are user metadata on each command: short, like a title."""


R = TypeVar("R")


async def stage_call(
    stage: Stage,
    state: RunState,
    activity: ActivityName,
    request: BaseModel,
    result: type[R],
    what: str,
    *,
    suffix: str = "",
    stage_timeout: bool = True,
) -> R:
    """Every stage's activity call, built here: the stage's retry and timeout (unless
    `stage_timeout` is off: a lookup that is not the stage's work), an id that carries the
    stage's name (so `retry` finds the stage in the history), the Web UI's label, attempts
    shown in the run's status, and the runner's task queue for the runner's activities."""
    return await call(
        activity,
        request,
        result,
        retry=stage.retry,
        timeout=stage.timeout if stage_timeout else None,
        activity_id=f"{stage.name}{suffix}",
        summary=ui_label(stage, what),
        on_retry=state.retry_note(stage),
        runner_queue=state.input.runner_task_queue,
    )
