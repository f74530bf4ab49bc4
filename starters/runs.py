"""What the CLI does, as plain async functions the demo and the tests call too."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent, WorkflowExecutionStartedEventAttributes
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowHistory,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer

from contracts.definition.model import PipelineSpec
from contracts.messages import (
    CanaryInput,
    EnvironmentInput,
    MonitorInput,
    PipelineInput,
    PipelineResult,
    RunContext,
    StageState,
)
from contracts.naming import (
    COMMIT_SHA,
    PIPELINE_STATUS,
    SERVICE,
    canary_id,
    environment_id,
    monitor_id,
    pipeline_id,
)
from plumbing.codec import codec_from_env
from plumbing.connection import data_converter, ui_base_url
from plumbing.sandbox import workflow_runner
from workflows.pipeline.workflow import PIPELINE_FAILED, PipelineWorkflow
from workflows.registry import WORKFLOWS

__all__ = [
    "RetryError",
    "StartedRun",
    "cancel_earlier_pull_request_runs",
    "derived_workflow_id",
    "pipeline_outcome",
    "recorded_workflow_id",
    "replay_history",
    "replayer",
    "reset_to_failed_stage",
    "run_url",
    "start_pipeline",
    "unreadable_input",
]


class RetryError(RuntimeError):
    """`retry` cannot find what to retry; the message says why."""


@dataclass(frozen=True)
class StartedRun:
    workflow_id: str
    run_id: str
    existing: bool
    url: str
    cancelled: tuple[str, ...] = ()
    """Open runs of the same pull request at an earlier head, cancelled by this start."""


def run_url(client: Client, workflow_id: str, run_id: str = "") -> str:
    base = f"{ui_base_url()}/namespaces/{client.namespace}/workflows/{workflow_id}"
    return f"{base}/{run_id}/history" if run_id else base


async def start_pipeline(
    client: Client,
    spec: PipelineSpec,
    run: RunContext,
    roles: Mapping[str, Sequence[str]],
    task_queue: str,
    *,
    search_attributes: bool = True,
    runner_task_queue: str = "",
) -> StartedRun:
    """Start the pipeline of `run.commit`, or return the run that already carries it: an
    open or succeeded run is reused; only after a failed run does a new one start.
    `runner_task_queue`: where the run's untrusted work goes (the CLI passes
    SLIPWAY_RUNNER_TASK_QUEUE's); empty keeps it on `task_queue`, for one worker serving both.
    `roles` is accepted for callers written before the worker held the policy, and not sent:
    whoever starts a run has no say in who may decide on it."""
    workflow_id = pipeline_id(spec.service.name, run.branch, run.commit, run.pull_request)
    attributes = (
        TypedSearchAttributes(
            [
                SearchAttributePair(SERVICE, spec.service.name),
                SearchAttributePair(COMMIT_SHA, run.commit),
                SearchAttributePair(PIPELINE_STATUS, "running"),
            ]
        )
        if search_attributes
        else TypedSearchAttributes.empty
    )
    pipeline_input = PipelineInput(spec=spec, run=run, runner_task_queue=runner_task_queue)
    where = f"PR #{run.pull_request}, {run.branch}" if run.pull_request else run.branch
    existing = await _open_or_succeeded(client, workflow_id)
    if existing is not None:
        return StartedRun(workflow_id, existing, True, run_url(client, workflow_id, existing))
    try:
        handle = await client.start_workflow(
            PipelineWorkflow.run,
            pipeline_input,
            id=workflow_id,
            task_queue=task_queue,
            # Open run: attach to it. Succeeded run: refuse (below). Failed: a new run.
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=attributes,
            static_summary=f"{spec.service.name} {run.sha12} by {run.author} ({where})",
            static_details=(
                f"**{spec.name}** pipeline for `{spec.service.name}`\n\n"
                f"- commit `{run.commit}` on `{run.branch}` by {run.author}\n"
                + (f"- pull request #{run.pull_request}\n" if run.pull_request else "")
                + (f"- changes against `{run.base}`\n" if run.base else "")
                + f"- repo {run.repo}\n"
                + (f"- diff {run.diff_url}\n" if run.diff_url else "")
            ),
        )
    except WorkflowAlreadyStartedError as err:
        # Lost a race with another start of the same commit: report that run.
        run_id = err.run_id or ""
        return StartedRun(workflow_id, run_id, True, run_url(client, workflow_id, run_id))
    run_id = handle.result_run_id or ""
    cancelled: tuple[str, ...] = ()
    if run.pull_request is not None and search_attributes:
        cancelled = await cancel_earlier_pull_request_runs(
            client, spec.service.name, run.pull_request, workflow_id
        )
    return StartedRun(workflow_id, run_id, False, run_url(client, workflow_id, run_id), cancelled)


async def cancel_earlier_pull_request_runs(
    client: Client, service: str, pull_request: int, keep: str
) -> tuple[str, ...]:
    """Cancel the open runs of `service`'s pull request at other head commits: a new push
    makes them moot, and a pull-request run never deploys, so cancelling one loses nothing.
    Found by the Service search attribute (visibility lags a moment: a run started in the
    same second may be missed and runs on)."""
    suffix = f"-pr-{pull_request}"
    query = (
        "WorkflowType = 'PipelineWorkflow' AND ExecutionStatus = 'Running' "
        f"AND Service = '{service}'"
    )
    cancelled = []
    async for execution in client.list_workflows(query):
        if execution.id != keep and execution.id.endswith(suffix):
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            try:
                await handle.cancel()
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
                continue  # it ended since the listing (visibility lags): nothing to cancel
            cancelled.append(execution.id)
    return tuple(cancelled)


async def _open_or_succeeded(client: Client, workflow_id: str) -> str | None:
    """The run id of a run that already carries this commit (open or succeeded), if any."""
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    if described.status in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.COMPLETED):
        return described.run_id
    return None


async def pipeline_outcome(handle: WorkflowHandle[Any, Any]) -> PipelineResult:
    """Wait for the run and return its result, succeeded or not."""
    try:
        raw = await handle.result()
    except WorkflowFailureError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.type == PIPELINE_FAILED:
            return PipelineResult.model_validate(cause.details[0])
        raise
    return raw if isinstance(raw, PipelineResult) else PipelineResult.model_validate(raw)


# --- retry: reset to just before the failed stage -------------------------------------------


def _stage_markers(event: Any, stage: str) -> bool:
    """Does this history event begin something of `stage`? (activity ids carry the stage
    name; children are named after it; the Stage search attribute is upserted at its start)"""
    kind = event.event_type
    if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
        activity_id = event.activity_task_scheduled_event_attributes.activity_id
        return bool(activity_id == stage or activity_id.startswith(stage + ":"))
    if kind == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
        child = event.start_child_workflow_execution_initiated_event_attributes.workflow_id
        return bool(child.endswith((f"-canary-{stage}", f"-monitor-{stage}")))
    if kind == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
        fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
        payload = fields.indexed_fields.get("Stage")
        return payload is not None and json.loads(payload.data or b"null") == stage
    return False


def reset_point(history: WorkflowHistory, stage: str) -> int:
    """The WorkflowTaskCompleted event that started `stage`: resetting there re-runs that
    workflow task, so the stage starts again and everything before it is kept."""
    last_completed = 0
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            last_completed = event.event_id
        elif _stage_markers(event, stage):
            if last_completed == 0:
                break
            return last_completed
    raise RetryError(f"cannot find where stage {stage!r} started in the history")


async def reset_to_failed_stage(
    client: Client, workflow_id: str, stage: str | None = None, reason: str = ""
) -> tuple[str, str]:
    """Reset the latest run of `workflow_id` to just before its (first) failed stage.
    Returns (stage, new run id)."""
    handle = client.get_workflow_handle(workflow_id)
    described = await handle.describe()
    if described.status == WorkflowExecutionStatus.RUNNING:
        raise RetryError(f"{workflow_id} is still running; retry applies to a failed run")
    if stage is None:
        result = await pipeline_outcome(handle)
        failed = [s for s in result.stages if s.state == StageState.FAILED]
        if not failed:
            raise RetryError(f"{workflow_id} has no failed stage to retry")
        failed.sort(key=lambda s: s.started_at or result.started_at)
        stage = failed[0].name
    history = await handle.fetch_history()
    event_id = reset_point(history, stage)
    response = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id, run_id=described.run_id),
            reason=reason or f"slipway retry from stage {stage}",
            workflow_task_finish_event_id=event_id,
            request_id=str(uuid.uuid4()),
        )
    )
    return stage, response.run_id


# --- replay -----------------------------------------------------------------------------


def replayer() -> Replayer:
    """The worker's workflows in the worker's sandbox, with the worker's data converter."""
    return Replayer(
        workflows=list(WORKFLOWS),
        workflow_runner=workflow_runner(),
        data_converter=data_converter(),
    )


async def replay_history(history: WorkflowHistory) -> None:
    """Replay a history against the current workflow code; raises on nondeterminism (and on
    a sandbox restriction the code hits)."""
    await replayer().replay_workflow(history)


_CHILD_KINDS = {"CanaryWorkflow": "canary", "MonitorWorkflow": "monitor"}
"""Child workflow type → the word its id carries after its parent's (contracts.naming)."""


def recorded_workflow_id(events: Sequence[HistoryEvent]) -> str | None:
    """The workflow id a history records (a history file does not say it in its name): the
    id the server recorded at the start (newer servers do), else the id of the parent every
    child it started is named after (`<id>-canary-<stage>`). None: it records none."""
    if not events or not events[0].HasField("workflow_execution_started_event_attributes"):
        return None
    started = events[0].workflow_execution_started_event_attributes
    if started.workflow_id:
        return started.workflow_id
    parents = set()
    for event in events:
        if event.HasField("start_child_workflow_execution_initiated_event_attributes"):
            child = event.start_child_workflow_execution_initiated_event_attributes
            kind = _CHILD_KINDS.get(child.workflow_type.name)
            parent, sep, _ = child.workflow_id.rpartition(f"-{kind}-")
            if kind is None or not sep:
                return None  # named otherwise: nothing to tell it by
            parents.add(parent)
    return parents.pop() if len(parents) == 1 else None


async def derived_workflow_id(events: Sequence[HistoryEvent]) -> str | None:
    """The id the workflow's starter gives it (contracts.naming), from the recorded input
    (decrypted with the configured codec key): `pipeline-{service}-{branch}-{sha12}` for a
    run `slipway start` started, and so on. None: no such input, or unreadable (encrypted
    without the key)."""
    if not events or not events[0].HasField("workflow_execution_started_event_attributes"):
        return None
    return await _id_from_input(events[0].workflow_execution_started_event_attributes)


_INPUTS: dict[str, type[Any]] = {
    "PipelineWorkflow": PipelineInput,
    "EnvironmentWorkflow": EnvironmentInput,
    "CanaryWorkflow": CanaryInput,
    "MonitorWorkflow": MonitorInput,
}


async def _recorded_input(started: WorkflowExecutionStartedEventAttributes) -> Any:
    """The workflow's input as recorded (decrypted with the configured key); None if the
    workflow takes no input this code knows. Raises if it cannot be read."""
    kind = _INPUTS.get(started.workflow_type.name)
    if kind is None or not started.input.payloads:
        return None
    (value,) = await data_converter().decode(started.input.payloads[:1], [kind])
    return value


async def unreadable_input(events: Sequence[HistoryEvent]) -> str | None:
    """Why this code cannot read the history's recorded input (a sentence), or None. An
    encrypted history replays only with the key it was encrypted with: without it, replay
    fails decoding the workflow's arguments, which says nothing of determinism."""
    if not events or not events[0].HasField("workflow_execution_started_event_attributes"):
        return "it does not start with the workflow's start event"
    started = events[0].workflow_execution_started_event_attributes
    try:
        await _recorded_input(started)
    except Exception as err:
        encoding = (
            started.input.payloads[0].metadata.get("encoding", b"").decode(errors="replace")
            if started.input.payloads
            else ""
        )
        if encoding.startswith("binary/encrypted") and codec_from_env() is None:
            return (
                f"its payloads are encrypted ({encoding}) and no key is configured: set "
                "SLIPWAY_CODEC_KEY or SLIPWAY_CODEC_KEYS to the key the worker used"
            )
        while err.__cause__ is not None:
            err = err.__cause__  # type: ignore[assignment]
        return f"its recorded input cannot be read ({type(err).__name__}: {err})"
    return None


async def _id_from_input(started: WorkflowExecutionStartedEventAttributes) -> str | None:
    try:
        value = await _recorded_input(started)
    except Exception:  # encrypted without the key, or not this code's input
        return None
    parent = started.parent_workflow_execution.workflow_id
    if isinstance(value, PipelineInput):
        run = value.run
        return pipeline_id(value.spec.service.name, run.branch, run.commit, run.pull_request)
    if isinstance(value, EnvironmentInput):
        return environment_id(value.service, value.environment)
    if isinstance(value, CanaryInput) and parent:
        return canary_id(parent, value.stage.name)
    if isinstance(value, MonitorInput) and parent:
        return monitor_id(parent, value.stage.name)
    return None
