"""How workflows call activities: timeouts, retry policies and task queues per activity kind.

Activities are called by name (`ActivityName`), so workflow code never imports an
implementation and tests register fakes under the same names. Temporal owns every retry:
transient errors back off and retry; verdict types (`ErrorType`) never retry.

Two trust domains: the runner's activities (`RUNNER_ACTIVITIES`: they execute the commit's
code) go to the run's runner task queue, every other one to the workflow's own (the
deployer's) queue, chosen here by name and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    TimeoutError,
    TimeoutType,
    is_cancelled_exception,
)

from contracts.activity import (
    RUNNER_ACTIVITIES,
    ActivityName,
    LoadRequest,
    MetricsQuery,
    NotifyAudience,
    NotifyRequest,
    WeightRequest,
)
from contracts.definition.model import RetrySpec
from contracts.errors import ErrorType

__all__ = [
    "CRASH_IS_NOT_A_VERDICT",
    "OPTIONS",
    "ActivityOptions",
    "call",
    "describe",
    "notify",
    "task_queue_for",
]

T = TypeVar("T")

NON_RETRYABLE = [e.value for e in ErrorType]


@dataclass(frozen=True)
class ActivityOptions:
    """Defaults per activity kind; a stage's `timeout`/`retry` override them."""

    start_to_close: timedelta
    max_attempts: int
    # Activities heartbeat every 2 s (activities/helpers/blocking.py): a dead worker is noticed
    # within 10 s and the activity retried elsewhere.
    heartbeat: timedelta | None = timedelta(seconds=10)
    initial_interval: timedelta = timedelta(seconds=2)
    backoff: float = 2.0
    max_interval: timedelta = timedelta(minutes=1)
    # A heartbeat timeout means the worker died: try again without counting an attempt.
    # Not for the load generator, whose lost interval the canary repeats itself.
    retry_lost_workers: bool = True


_M = timedelta(minutes=1)
OPTIONS: dict[ActivityName, ActivityOptions] = {
    ActivityName.CHECKOUT: ActivityOptions(10 * _M, 5),
    ActivityName.SCAN: ActivityOptions(15 * _M, 3),
    ActivityName.SCAN_IMAGE: ActivityOptions(15 * _M, 3),
    ActivityName.RUN_TESTS: ActivityOptions(30 * _M, 2),
    ActivityName.RUN_COMMAND: ActivityOptions(30 * _M, 2),
    ActivityName.BUILD: ActivityOptions(30 * _M, 3),
    ActivityName.PUBLISH: ActivityOptions(10 * _M, 5),
    ActivityName.DEPLOY: ActivityOptions(15 * _M, 5),
    ActivityName.PROMOTE: ActivityOptions(15 * _M, 5),
    ActivityName.SET_WEIGHT: ActivityOptions(2 * _M, 5),
    # Rollback must try hard: it is what restores service.
    ActivityName.ROLLBACK: ActivityOptions(10 * _M, 10),
    # The lease's fencing token and the restore a rollback is: as hard as a rollback.
    ActivityName.FENCE: ActivityOptions(2 * _M, 10),
    ActivityName.RESTORE: ActivityOptions(10 * _M, 10),
    # Messages to environment workflows; a rollback waits for the restore it asks for.
    ActivityName.ACQUIRE_LEASE: ActivityOptions(5 * _M, 10),
    ActivityName.REPORT_SERVING: ActivityOptions(_M, 10),
    ActivityName.RELEASE_LEASE: ActivityOptions(5 * _M, 10),
    ActivityName.REQUEST_ROLLBACK: ActivityOptions(30 * _M, 10),
    # A checked operator control delivered to the run's own canary.
    ActivityName.CONTROL_CANARY: ActivityOptions(_M, 10),
    ActivityName.RUN_STATUS: ActivityOptions(_M, 3, heartbeat=None),
    # A lease notice checked against the environment's own state (a query).
    # Until the environment answers (0: no limit). A notice is confirmed inside a signal
    # handler: a query that keeps failing (the environment's workflow task failing while its
    # workers die) is no verdict on the run, and must not fail it.
    ActivityName.CONFIRM_LEASE: ActivityOptions(_M, 0, heartbeat=None, retry_lost_workers=False),
    ActivityName.HTTP_CHECK: ActivityOptions(2 * _M, 3),
    ActivityName.RESOLVE_ENDPOINT: ActivityOptions(_M, 5),
    # Live tests run up to an hour (their stage's `duration`, `max_scan_time`); a second try
    # only when the first did not get to judge anything.
    ActivityName.LOAD_TEST: ActivityOptions(70 * _M, 2),
    ActivityName.LIVE_SCAN: ActivityOptions(70 * _M, 2),
    # The browser stages: the tests' `max_duration` and the audit's `max_audit_time` are an
    # hour at most; a test venv may be built first.
    ActivityName.BROWSER_TESTS: ActivityOptions(90 * _M, 2),
    ActivityName.WEB_AUDIT: ActivityOptions(70 * _M, 2),
    # A metrics query that keeps failing becomes "no data" for the analysis, never a pass.
    ActivityName.QUERY_METRICS: ActivityOptions(_M, 3, initial_interval=timedelta(seconds=1)),
    ActivityName.GENERATE_LOAD: ActivityOptions(60 * _M, 1, retry_lost_workers=False),
    # The policy check reads a file and runs ssh-keygen: seconds at most.
    ActivityName.CHECK_DECISION: ActivityOptions(_M, 5, heartbeat=None),
    ActivityName.POLICY_IN_FORCE: ActivityOptions(_M, 5, heartbeat=None),
    # Looks up each secret and resource reference of the run's releases: seconds.
    ActivityName.CHECK_REFERENCES: ActivityOptions(2 * _M, 5),
    # Notifications never fail a pipeline: a few tries, then the workflow moves on.
    ActivityName.NOTIFY: ActivityOptions(
        timedelta(seconds=30), 5, heartbeat=None, max_interval=timedelta(seconds=10)
    ),
}


async def call(
    name: ActivityName,
    arg: Any,
    result_type: type[T],
    *,
    retry: RetrySpec | None = None,
    timeout: timedelta | None = None,
    activity_id: str | None = None,
    summary: str | None = None,
    stage: str | None = None,
    on_retry: Callable[[int, str], None] | None = None,
    runner_queue: str = "",
    local: bool = False,
    task_queue: str | None = None,
) -> T:
    """Execute activity `name` with its kind's options, overridden by a stage's settings.
    `on_retry(attempt, last failure)` hears of each new attempt (for the run's status).
    The Web UI labels the call with `summary`, else with what the request asks, after the
    `stage` it serves. `runner_queue`: the run's runner task queue (`task_queue_for`);
    `task_queue`: another queue, named by the caller (an environment's own work).

    A dead worker is not a verdict: an attempt that ends in a heartbeat timeout (its worker
    stopped heartbeating) is started again without using up `max_attempts`, which counts
    failures of the work itself; all attempts together stay within the stage's `timeout`.

    `local`: a local activity, run by the worker running the workflow in slots of their own
    (never the regular activity slots, which callers waiting on this workflow may hold all of).
    A lost worker is not an attempt there either: the workflow task times out and another
    worker runs the local activity again.
    """
    opts = OPTIONS[name]
    if local:
        return await _call_local(name, arg, result_type, opts, timeout, activity_id, summary)
    task_queue = task_queue or task_queue_for(name, runner_queue)
    if summary is None:
        summary = describe(name, arg)
        if stage:
            summary = f"{stage}: {summary}"
    if (
        opts.heartbeat is not None
        and opts.retry_lost_workers
        and workflow.patched(CRASH_IS_NOT_A_VERDICT)
    ):
        return await _call_counting_failures(
            name, arg, result_type, opts, retry, timeout, activity_id, summary, on_retry, task_queue
        )
    policy = RetryPolicy(
        initial_interval=retry.initial_interval if retry else opts.initial_interval,
        backoff_coefficient=retry.backoff if retry else opts.backoff,
        maximum_interval=retry.max_interval if retry else opts.max_interval,
        maximum_attempts=retry.max_attempts if retry else opts.max_attempts,
        non_retryable_error_types=NON_RETRYABLE,
    )
    result: T = await workflow.execute_activity(
        name.value,
        arg,
        result_type=result_type,
        start_to_close_timeout=timeout or opts.start_to_close,
        heartbeat_timeout=opts.heartbeat,
        retry_policy=policy,
        activity_id=activity_id,
        summary=summary,
        task_queue=task_queue,
    )
    return result


def task_queue_for(name: ActivityName, runner_queue: str) -> str | None:
    """The task queue activity `name` runs on: the run's runner queue for the runner's
    activities, None (the workflow's own queue: the deployer's) for every other one. A run
    without a runner queue (recorded before the split, or started without one) keeps all its
    activities on its own queue. A deployer-only worker does not register the runner's
    activities: one sent to it fails ("not registered on this worker") instead of running
    beside the deployer's credentials."""
    if name in RUNNER_ACTIVITIES and runner_queue:
        return runner_queue
    return None


def describe(name: ActivityName, arg: Any) -> str:
    """What an activity call asks, in words, for the Web UI's timeline: its action, what it
    acts on and where ("set weight to 25%: heal7-backend in production")."""
    action = name.value.replace("_", " ")
    detail = ""
    if isinstance(arg, WeightRequest):
        detail = f" to {arg.canary_weight}%"
    elif isinstance(arg, MetricsQuery):
        detail = f" of {arg.slot} over {arg.window_s:g}s ({', '.join(arg.metrics)})"
    elif isinstance(arg, LoadRequest):
        detail = f" at {arg.rps:g} rps for {arg.duration_s:g}s"
    elif isinstance(arg, NotifyRequest):
        detail = f" {arg.event}"
    service = getattr(arg, "service", "")
    environment = getattr(arg, "environment", "")
    where = " in ".join(str(part) for part in (service, environment) if part)
    return f"{action}{detail}: {where}" if where else f"{action}{detail}"


async def _call_local(
    name: ActivityName,
    arg: Any,
    result_type: type[T],
    opts: ActivityOptions,
    timeout: timedelta | None,
    activity_id: str | None,
    summary: str | None,
) -> T:
    result: T = await workflow.execute_local_activity(
        name.value,
        arg,
        result_type=result_type,
        start_to_close_timeout=timeout or opts.start_to_close,
        retry_policy=RetryPolicy(
            initial_interval=opts.initial_interval,
            backoff_coefficient=opts.backoff,
            maximum_interval=opts.max_interval,
            maximum_attempts=opts.max_attempts,
            non_retryable_error_types=NON_RETRYABLE,
        ),
        activity_id=activity_id,
        summary=summary,
    )
    return result


CRASH_IS_NOT_A_VERDICT = "crash-is-not-a-verdict"
"""Patch id: runs recorded before it let Temporal count a lost worker as a failed attempt."""


def _worker_lost(err: ActivityError) -> bool:
    cause = err.cause
    return isinstance(cause, TimeoutError) and cause.type == TimeoutType.HEARTBEAT


async def _call_counting_failures(
    name: ActivityName,
    arg: Any,
    result_type: type[T],
    opts: ActivityOptions,
    retry: RetrySpec | None,
    timeout: timedelta | None,
    activity_id: str | None,
    summary: str | None,
    on_retry: Callable[[int, str], None] | None,
    task_queue: str | None,
) -> T:
    max_attempts = retry.max_attempts if retry else opts.max_attempts
    interval = retry.initial_interval if retry else opts.initial_interval
    backoff = retry.backoff if retry else opts.backoff
    max_interval = retry.max_interval if retry else opts.max_interval
    deadline = workflow.now() + (timeout or opts.start_to_close)
    failures = 0
    lost = 0
    last: ActivityError | None = None
    while True:
        remaining = deadline - workflow.now()
        if remaining <= timedelta(0) and last is not None:
            # The pause after a failure ended past the deadline: the task that woke it ran
            # late (no worker, a server down). No time is left for another attempt, and a
            # negative timeout would fail every workflow task of the run, for ever.
            raise last
        try:
            result: T = await workflow.execute_activity(
                name.value,
                arg,
                result_type=result_type,
                start_to_close_timeout=remaining,
                heartbeat_timeout=opts.heartbeat,
                # Each execution is one attempt: this loop tells lost workers from failures.
                retry_policy=RetryPolicy(maximum_attempts=1),
                activity_id=activity_id,
                summary=summary,
                task_queue=task_queue,
            )
            return result
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            last = err
            if _worker_lost(err) and deadline - workflow.now() > timedelta(0):
                lost += 1
                workflow.logger.warning(
                    "%s: worker lost (%d so far), starting it again", activity_id or name, lost
                )
                if on_retry is not None:
                    on_retry(failures + 1, f"its worker was lost ({lost} so far; not counted)")
                continue
            cause = err.cause
            if isinstance(cause, ApplicationError) and (
                cause.non_retryable or cause.type in NON_RETRYABLE
            ):
                raise
            failures += 1
            pause = min(interval, max_interval)
            if failures >= max_attempts or deadline - workflow.now() <= pause:
                raise
            if on_retry is not None:
                on_retry(failures + 1, str(cause or err))
            await workflow.sleep(pause)
            interval = interval * backoff


async def notify(
    level: str,
    event: str,
    message: str,
    service: str,
    environment: str = "",
    *,
    stage: str | None = None,
    fields: dict[str, str] | None = None,
    audience: NotifyAudience | None = None,
) -> None:
    """Send a notification; one that cannot be delivered after its retries is logged, never
    a failure of the run. `audience`: whom it is for (the worker names them)."""
    request = NotifyRequest.model_validate(
        {
            "level": level,
            "event": event,
            "message": message,
            "service": service,
            "environment": environment,
            "fields": fields or {},
            "audience": audience,
        }
    )
    try:
        await call(ActivityName.NOTIFY, request, type(None), stage=stage)
    except ActivityError as err:
        if is_cancelled_exception(err):
            raise  # the workflow is being cancelled: never swallow that
        workflow.logger.warning("notification %s not delivered: %s", event, err.cause)
