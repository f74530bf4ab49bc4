"""What an environment workflow holds and shows: what serves and who put it there, a bounded
release history, the lease; the constants and helpers its parts share."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TypedDict, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

from contracts import deployer_proof, dora
from contracts import lease_rules as leases
from contracts.messages import (
    EnvironmentInput,
    EnvironmentState,
    LeaseAnswer,
    LeaseHolder,
    LeaseRelease,
    LeaseRequest,
    ReleaseEntry,
    RollbackOrder,
    Serving,
    ServingReport,
    WaitingRun,
)
from contracts.naming import environment_work_queue

__all__ = [
    "FENCE_AS_ACTIVITY",
    "LOCAL_WORK",
    "WORK_FAILED",
    "WORK_QUEUE",
    "EnvironmentRecord",
    "as_utc",
    "bounded_by",
    "failure_of",
    "lease_work_is_local",
    "work_placement",
]

RELEASES_KEPT = 100
LOCAL_WORK = "environment-work-as-local-activities"
"""Patch id: before it, FENCE, RESTORE and RUN_STATUS ran as regular activities: a rollback
update (sent by an activity holding a slot) waited for a RESTORE that needed a slot too."""
FENCE_AS_ACTIVITY = "environment-fence-as-activity"
"""Patch id: before it (since LOCAL_WORK), FENCE and RUN_STATUS ran as local activities, and an
acquire that found the environment free waited in its update for that fence (patch
lease-answered-in-update). Replayed, a local activity's result can reach the workflow in
another workflow task than it did when it ran, beside an update arriving: an environment of a
large soak failed every replay so ("Signal external WF machine does not handle this event:
WorkflowExecutionUpdateAccepted"), and every run of its service waited for ever. A regular
activity's result is an event in history, where replay finds it. No update waits for the
fence since, so no message activity holds a slot the fence needs."""
WORK_QUEUE = "environment-work-queue"
"""Patch id: since it, FENCE, RUN_STATUS and RESTORE are regular activities on the task queue
`environment_work_queue` names, in slots of their own: no activity waiting for this workflow's
answer (an acquire, a rollback) holds a slot they need, so an acquire that finds the
environment free waits in its update for its fence again, and RESTORE is no local activity
any more. Before it, they ran on the workflow's own queue (FENCE_AS_ACTIVITY) or as local
activities (LOCAL_WORK)."""
TRUSTED_COMMIT_TIME = "trusted-commit-time"
"""Patch id: environments recorded before it took a run's commit time as the run said it.
Since, a commit time is never later than when the request (or report) arrived, and what
a run of an older worker recorded in the future is brought back to when it was recorded:
a time in the future must not make every later run older (superseded) forever."""


def as_utc(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


_Timed = TypeVar("_Timed", Serving, LeaseHolder, WaitingRun)


def bounded_by(record: _Timed, latest: datetime) -> _Timed:
    """`record` with its commit time no later than `latest`."""
    if record.commit_time is None or as_utc(record.commit_time) <= as_utc(latest):
        return record
    return record.model_copy(update={"commit_time": latest})


WORK_FAILED = (ActivityError, ApplicationError, ActivityTimeoutError)
"""How the environment's platform work fails: an activity's error, and a local activity's
(its failure, or its timeout, as raised without an ActivityError around it)."""


def failure_of(err: BaseException) -> str:
    while isinstance(err, ActivityError) and err.cause is not None:
        err = err.cause
    return str(err)


class EnvironmentRecord:
    """The environment's fields (set in `__init__`): what serves, the release history, the lease;
    and the `state` query that shows them."""

    def __init__(self, input: EnvironmentInput) -> None:
        self._s = input.state or EnvironmentState(
            service=input.service, environment=input.environment
        )
        self._lock = asyncio.Lock()
        self._changes = 0
        self._trusting: bool | None = None
        # Lease messages taken by the updates, served by the main loop in arrival order
        # (LEASE_MAILBOX); empty for runs recorded before it. Never carried across
        # continue-as-new: the rollover waits until it is empty.
        self._inbox: list[LeaseRequest | LeaseRelease] = []
        self._regrant = False  # the lease is free and its queue waits (a fence failed)
        # LEASE_MAILBOX is in force: set by the first lease message, so that a running
        # execution recorded before the patch takes it up with its next message.
        self._mailbox = False
        # Acquire updates that wait for their own answer (LEASE_ANSWERED_IN_UPDATE): request
        # id → the answer once the main loop has served it (None until then).
        self._awaited: dict[str, LeaseAnswer | None] = {}

    def _trusted_times(self) -> bool:
        """Whether this run of the workflow bounds commit times (TRUSTED_COMMIT_TIME), decided
        at its first lease request or report; the first time, times recorded in the future
        (by runs before it) are brought back to when they were recorded."""
        if self._trusting is None:
            self._trusting = workflow.patched(TRUSTED_COMMIT_TIME)
            if self._trusting:
                s = self._s
                if s.serving is not None:
                    s.serving = bounded_by(s.serving, s.serving.since)
                if s.holder is not None:
                    s.holder = bounded_by(s.holder, s.holder.granted_at)
                queue: list[WaitingRun] = []
                for waiting in s.queue:  # in commit order again, by the bounded times
                    queue = leases.enqueue(queue, bounded_by(waiting, waiting.requested_at))
                s.queue = queue
        return self._trusting

    def _from_deployer(
        self,
        purpose: str,
        message: LeaseRequest | ServingReport | LeaseRelease | RollbackOrder,
        proof: str,
    ) -> None:
        """Only a deployer speaking for a pipeline run changes the environment: a message
        without a valid proof (a bare `temporal workflow update`) is refused before it
        reaches history, and the refusal is logged."""
        refusal = deployer_proof.check(purpose, message, proof)
        if refusal is not None:
            workflow.logger.warning(
                "%s: %s (claimed run %s)", self._s.environment, refusal, message.run
            )
            raise ValueError(refusal)

    def _components(self) -> list[str]:
        """A bundle's deployables: those of what serves and those the holder deploys (a
        run may add one), so that a fence or restore reaches every one."""
        s = self._s
        serving = s.serving.release.artifact.components if s.serving else []
        return sorted({*(c.name for c in serving), *s.components})

    def _previous_release(self) -> Serving | None:
        s = self._s
        current = s.serving.release.digest if s.serving else None
        for entry in reversed(s.releases):
            if (
                entry.release is not None
                and entry.digest != current
                and entry.outcome in ("replaced", "restored")
            ):
                return Serving(
                    release=entry.release,
                    run=entry.run,
                    commit=entry.commit,
                    commit_time=entry.commit_time,
                    since=entry.at,
                )
        return None

    # --- history -------------------------------------------------------------------------

    def _close_serving(self, outcome: str, reason: str = "") -> None:
        s = self._s
        if s.serving is None:
            return
        for i in range(len(s.releases) - 1, -1, -1):
            entry = s.releases[i]
            if entry.until is None and entry.digest == s.serving.release.digest:
                ended = entry.model_copy(
                    update={"until": workflow.now(), "outcome": outcome, "reason": reason}
                )
                dora.closed(s, entry, ended)
                s.releases[i] = ended
                break

    def _record(self, entry: ReleaseEntry) -> None:
        dora.record(self._s, entry, RELEASES_KEPT)

    @workflow.query(
        description="What serves, since when and from which run; lease, queue, last releases."
    )
    def state(self) -> EnvironmentState:
        return self._s


def lease_work_is_local() -> bool:
    """Whether this run fences and checks its holder with local activities (runs recorded
    between LOCAL_WORK and FENCE_AS_ACTIVITY)."""
    return not workflow.patched(FENCE_AS_ACTIVITY) and workflow.patched(LOCAL_WORK)


class Placement(TypedDict):
    """Where an environment's own work runs (`call`'s arguments)."""

    local: bool
    task_queue: str | None


def work_placement(*, restore: bool = False) -> Placement:
    """Where this run's FENCE and RUN_STATUS (`restore`: RESTORE) run: on the environment's
    work queue (patch WORK_QUEUE); runs recorded before it keep them where they were."""
    if workflow.patched(WORK_QUEUE):
        return {"local": False, "task_queue": environment_work_queue(workflow.info().task_queue)}
    local = workflow.patched(LOCAL_WORK) if restore else lease_work_is_local()
    return {"local": local, "task_queue": None}
