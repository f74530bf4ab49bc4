"""How workflows call activities: timeouts and retry policies per activity kind.

Activities are called by name (`ActivityName`), so workflow code never imports an
implementation and tests register fakes under the same names. Temporal owns every retry:
transient errors back off and retry; verdict types (`ErrorType`) never retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.contracts import ActivityName, NotifyRequest
    from activities.errors import ErrorType
    from workflows.spec import RetrySpec

__all__ = ["OPTIONS", "ActivityOptions", "call"]

T = TypeVar("T")

NON_RETRYABLE = [e.value for e in ErrorType]


@dataclass(frozen=True)
class ActivityOptions:
    """Defaults per activity kind; a stage's `timeout`/`retry` override them."""

    start_to_close: timedelta
    max_attempts: int
    # Activities heartbeat every 2 s (activities/_blocking.py): a dead worker is noticed
    # within 10 s and the activity retried elsewhere.
    heartbeat: timedelta | None = timedelta(seconds=10)
    initial_interval: timedelta = timedelta(seconds=2)
    backoff: float = 2.0
    max_interval: timedelta = timedelta(minutes=1)


_M = timedelta(minutes=1)
OPTIONS: dict[ActivityName, ActivityOptions] = {
    ActivityName.CHECKOUT: ActivityOptions(10 * _M, 5),
    ActivityName.SCAN: ActivityOptions(15 * _M, 3),
    ActivityName.SCAN_IMAGE: ActivityOptions(15 * _M, 3),
    ActivityName.RUN_TESTS: ActivityOptions(30 * _M, 2),
    ActivityName.BUILD: ActivityOptions(30 * _M, 3),
    ActivityName.PUBLISH: ActivityOptions(10 * _M, 5),
    ActivityName.DEPLOY: ActivityOptions(15 * _M, 5),
    ActivityName.PROMOTE: ActivityOptions(15 * _M, 5),
    ActivityName.SET_WEIGHT: ActivityOptions(2 * _M, 5),
    # Rollback must try hard: it is what restores service.
    ActivityName.ROLLBACK: ActivityOptions(10 * _M, 10),
    ActivityName.HTTP_CHECK: ActivityOptions(2 * _M, 3),
    # A metrics query that keeps failing becomes "no data" for the analysis, never a pass.
    ActivityName.QUERY_METRICS: ActivityOptions(_M, 3, initial_interval=timedelta(seconds=1)),
    ActivityName.GENERATE_LOAD: ActivityOptions(60 * _M, 1),
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
) -> T:
    """Execute activity `name` with its kind's options, overridden by a stage's settings."""
    opts = OPTIONS[name]
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
    )
    return result


async def notify(level: str, event: str, message: str, service: str, environment: str = "") -> None:
    """Send a notification; one that cannot be delivered after its retries is logged, never
    a failure of the run."""
    request = NotifyRequest.model_validate(
        {
            "level": level,
            "event": event,
            "message": message,
            "service": service,
            "environment": environment,
        }
    )
    try:
        await call(ActivityName.NOTIFY, request, type(None))
    except ActivityError as err:
        workflow.logger.warning("notification %s not delivered: %s", event, err.cause)
