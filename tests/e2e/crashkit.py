"""Tools for the crash tests: a timeline of what was killed when, bounded polling of a run
that survives a restarting server, and a census of slot processes (the stack itself, its
ports and its teardown are `tests.support.devstack`).

Everything here only observes (queries, describe, history, /proc, files under the state
dir) or stops processes the test itself started: `crash_worker` kills the stack's worker and
starts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError

from activities.platforms.local import SlotManager
from contracts.messages import (
    CanaryStatus,
    Decision,
    MonitorResult,
    PipelineResult,
    PipelineStatus,
    StageState,
)
from contracts.naming import canary_id, monitor_id
from starters.runs import pipeline_outcome
from tests.support.devstack import Stack, slot_processes, tail
from workflows.canary import CanaryWorkflow
from workflows.monitor import MonitorWorkflow
from workflows.pipeline.workflow import PipelineWorkflow

__all__ = [
    "AUTHOR",
    "RESTART_AFTER_S",
    "RUN_TIMEOUT_S",
    "ActivityRun",
    "Shared",
    "Timeline",
    "activity_runs",
    "approve",
    "canary_status",
    "crash_worker",
    "diagnostics",
    "ended_why",
    "monitor_progress",
    "outcome",
    "pending_activity",
    "poll",
    "stage_state",
    "status",
    "stray_processes",
]

T = TypeVar("T")


def ended_why(st: PipelineStatus) -> str:
    """A run's state and the stages that did not succeed, for a test that finds it ended
    early: a failure under load then says which stage gave up, and why."""
    bad = [
        f"{s.name} {s.state.value}: {s.summary}"
        for s in st.stages
        if s.state.finished and s.state not in (StageState.SUCCEEDED, StageState.SKIPPED)
    ]
    return f"{st.state.value} ({'; '.join(bad) or 'no stage failed'})"


# --- timeline -------------------------------------------------------------------------------


@dataclass
class Timeline:
    """What happened when, in seconds since the run started; printed as it happens."""

    label: str
    t0: float = field(default_factory=time.monotonic)
    events: list[tuple[float, str]] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, what: str) -> float:
        at = self.now()
        self.events.append((at, what))
        print(f"[{self.label} +{at:6.1f}s] {what}", flush=True)
        return at

    def at(self, prefix: str) -> float:
        """When the first event starting with `prefix` happened."""
        return next(t for t, what in self.events if what.startswith(prefix))

    def summary(self) -> str:
        return "\n".join(f"  +{t:6.1f}s  {what}" for t, what in self.events)


# --- polling --------------------------------------------------------------------------------


async def poll(
    what: str,
    probe: Callable[[], Awaitable[T | None]],
    timeout_s: float,
    every_s: float = 0.2,
) -> T:
    """Call `probe` until it returns something other than None; bounded by `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:g}s")
        await asyncio.sleep(every_s)


async def status(client: Client, workflow_id: str) -> PipelineStatus | None:
    """The pipeline's `status` query, or None while it cannot answer (no worker, server
    restarting)."""
    try:
        return await asyncio.wait_for(
            client.get_workflow_handle(workflow_id).query(PipelineWorkflow.status), 10
        )
    except (RPCError, TimeoutError):
        return None


async def stage_state(client: Client, workflow_id: str, stage: str) -> StageState | None:
    st = await status(client, workflow_id)
    if st is None:
        return None
    return next(s.state for s in st.stages if s.name == stage)


async def canary_status(
    client: Client, workflow_id: str, stage: str = "canary"
) -> CanaryStatus | None:
    handle = client.get_workflow_handle(canary_id(workflow_id, stage))
    try:
        return await asyncio.wait_for(handle.query(CanaryWorkflow.status), 10)
    except (RPCError, TimeoutError):
        return None


async def monitor_progress(
    client: Client, workflow_id: str, stage: str = "monitor"
) -> MonitorResult | None:
    handle = client.get_workflow_handle(monitor_id(workflow_id, stage))
    try:
        return await asyncio.wait_for(handle.query(MonitorWorkflow.progress), 10)
    except (RPCError, TimeoutError):
        return None


@dataclass(frozen=True)
class PendingActivity:
    activity_id: str
    activity_type: str
    started: bool
    attempt: int
    heartbeat: str


async def pending_activity(
    client: Client, workflow_id: str, activity_id: str
) -> PendingActivity | None:
    """The activity `activity_id` while it is scheduled or running (from describe)."""
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
    except RPCError:
        return None
    for pending in described.raw_description.pending_activities:
        if pending.activity_id != activity_id:
            continue
        details = pending.heartbeat_details.payloads
        return PendingActivity(
            activity_id=pending.activity_id,
            activity_type=pending.activity_type.name,
            started=pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED,
            attempt=pending.attempt,
            heartbeat=details[0].data.decode(errors="replace") if details else "",
        )
    return None


async def approve(client: Client, workflow_id: str, gate: str, people: list[str]) -> None:
    """Approve `gate` as each person, through the workflow's `approve` update."""
    handle = client.get_workflow_handle(workflow_id)
    for person in people:
        try:
            await asyncio.wait_for(
                handle.execute_update(
                    PipelineWorkflow.approve_update,
                    Decision(approver=person, gate=gate, comment="crash test"),
                ),
                60,
            )
        except WorkflowUpdateFailedError as err:
            raise AssertionError(f"{person} could not approve {gate}: {err.cause}") from err


async def outcome(client: Client, workflow_id: str, timeout_s: float) -> PipelineResult:
    """The run's result; waits through server restarts, bounded by `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{workflow_id} did not finish within {timeout_s:g}s")
        try:
            return await asyncio.wait_for(
                pipeline_outcome(client.get_workflow_handle(workflow_id)), left
            )
        except RPCError:
            await asyncio.sleep(0.5)


# --- history --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActivityRun:
    """One scheduled activity as its history tells it: the attempt that ended it and how."""

    activity_type: str
    activity_id: str
    attempt: int
    ended: str  # completed | failed | timed_out | cancelled | open


_ENDINGS = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "completed",
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "failed",
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "timed_out",
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: "cancelled",
}


async def activity_runs(client: Client, workflow_id: str) -> list[ActivityRun]:
    """Every activity the workflow scheduled, with the attempt number it ended on (an
    attempt above 1 means an earlier attempt was lost, e.g. with a killed worker)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    scheduled: dict[int, tuple[str, str]] = {}
    attempts: dict[int, int] = {}
    ended: dict[int, str] = {}
    for event in history.events:
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = (attrs.activity_type.name, attrs.activity_id)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            attempts[started.scheduled_event_id] = started.attempt
        elif kind in _ENDINGS:
            # Every ending event's attributes carry the scheduled event id.
            name = {
                "completed": "activity_task_completed_event_attributes",
                "failed": "activity_task_failed_event_attributes",
                "timed_out": "activity_task_timed_out_event_attributes",
                "cancelled": "activity_task_canceled_event_attributes",
            }[_ENDINGS[kind]]
            ended[getattr(event, name).scheduled_event_id] = _ENDINGS[kind]
    return [
        ActivityRun(kind, activity_id, attempts.get(eid, 0), ended.get(eid, "open"))
        for eid, (kind, activity_id) in sorted(scheduled.items())
    ]


# --- processes ------------------------------------------------------------------------------


def stray_processes(platform_dir: Path, *, leftovers: bool = False) -> set[int]:
    """Live release processes that are no slot's current process. With `leftovers`, those
    a slot records as leftovers (to be stopped by its next deploy or stop) are not strays:
    a process no slot mentions at all is one nothing would ever stop."""
    recorded: set[int] = set()
    for state in SlotManager(platform_dir).states():
        if state.pid is not None:
            recorded.add(state.pid)
        if leftovers:
            recorded.update(ref.pid for ref in state.leftovers)
    return slot_processes(platform_dir) - recorded


# --- one stack per module, killed and restarted --------------------------------------------

AUTHOR = "erin"
RESTART_AFTER_S = 1.0
RUN_TIMEOUT_S = 300.0  # each run; nominal ~50 s, plus ~10 s per worker kill


@dataclass
class Shared:
    stack: Stack
    client: Client
    first_digest: str | None = None  # what run A left serving in production


@contextlib.contextmanager
def diagnostics(stack: Stack, timeline: Timeline) -> Iterator[None]:
    """On failure, show the timeline and the logs' tails; always print the timeline."""
    try:
        yield
    except BaseException:
        print(f"\n--- worker log ({stack.worker.log_file})\n{tail(stack.worker.log_file)}")
        print(f"\n--- server log ({stack.server.log_file})\n{tail(stack.server.log_file, 15)}")
        raise
    finally:
        print(f"\n{timeline.label} timeline:\n{timeline.summary()}", flush=True)


async def crash_worker(stack: Stack, timeline: Timeline, where: str) -> None:
    pid = stack.worker.proc.pid if stack.worker.proc else None
    stack.worker.kill()
    timeline.mark(f"SIGKILL worker {pid} {where}")
    await asyncio.sleep(RESTART_AFTER_S)
    stack.worker.start()
    timeline.mark(f"worker restarted as {stack.worker.proc.pid if stack.worker.proc else '?'}")
