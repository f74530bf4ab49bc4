"""A pipeline's messages to its environments' workflows.

Workflows cannot send updates to other workflows, so these activities do it with the worker's
Temporal client: signal-with-start (the environment workflow is created by the first run that
needs it), then the update, whose id is the request's idempotency key (a retried activity
attaches to the same update). A refused update (a stale lease) is a verdict, never retried.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from temporalio import activity
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities._blocking import HEARTBEAT_EVERY_S
from activities.observability import activity_log
from contracts.activity import ActivityName, RunRef
from contracts.errors import ErrorType, verdict
from plumbing.updates import execute_update
from workflows.messages import (
    EnvironmentInput,
    LeaseAnswer,
    LeaseRelease,
    LeaseRequest,
    RollbackOrder,
    RollbackOutcome,
    ServingReport,
)
from workflows.naming import ENVIRONMENT, SERVICE, environment_id

__all__ = ["EnvironmentActivities"]

T = TypeVar("T")


class EnvironmentActivities:
    """`search_attributes`: index environment workflows by Service and Environment (what
    `slipway env` lists by); off for a namespace without them (the bare test server)."""

    def __init__(self, client: Client, *, search_attributes: bool = False) -> None:
        self._client = client
        self._search_attributes = search_attributes

    async def _handle(self, service: str, environment: str) -> WorkflowHandle[Any, Any]:
        workflow_id = environment_id(service, environment)
        options: dict[str, Any] = {
            "id": workflow_id,
            "task_queue": activity.info().task_queue,
            "start_signal": "wake",
            "static_summary": f"{service} in {environment}",
        }
        if not self._search_attributes:
            return await self._client.start_workflow(
                "EnvironmentWorkflow",
                EnvironmentInput(service=service, environment=environment),
                **options,
            )
        return await self._client.start_workflow(
            "EnvironmentWorkflow",
            EnvironmentInput(service=service, environment=environment),
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(SERVICE, service),
                    SearchAttributePair(ENVIRONMENT, environment),
                ]
            ),
            **options,
        )

    async def _update(
        self, service: str, environment: str, name: str, arg: Any, update_id: str, rt: type[T]
    ) -> T:
        handle = await self._handle(service, environment)
        task = asyncio.ensure_future(
            execute_update(handle, name, arg, update_id=update_id, result_type=rt)
        )
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY_S)
                if done:
                    result: T = task.result()
                    return result
                activity.heartbeat(f"waiting for {environment}'s {name}")
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause)
            raise verdict(ErrorType.STALE_LEASE, message) from None
        finally:
            task.cancel()

    @activity.defn(name=ActivityName.ACQUIRE_LEASE)
    async def acquire_lease(self, request: LeaseRequest) -> LeaseAnswer:
        activity_log(environment=request.environment, run=request.run).info("acquire_lease")
        return await self._update(
            request.service,
            request.environment,
            "acquire",
            request,
            request.request_id,
            LeaseAnswer,
        )

    @activity.defn(name=ActivityName.REPORT_SERVING)
    async def report_serving(self, report: ServingReport) -> None:
        activity_log(environment=report.environment, digest=report.release.digest).info(
            "report_serving"
        )
        await self._update(
            report.service, report.environment, "report", report, report.request_id, type(None)
        )

    @activity.defn(name=ActivityName.RELEASE_LEASE)
    async def release_lease(self, request: LeaseRelease) -> None:
        activity_log(environment=request.environment, run=request.run).info("release_lease")
        await self._update(
            request.service,
            request.environment,
            "release",
            request,
            request.request_id,
            type(None),
        )

    @activity.defn(name=ActivityName.REQUEST_ROLLBACK)
    async def request_rollback(self, order: RollbackOrder) -> RollbackOutcome:
        activity_log(environment=order.environment, run=order.run).warning("request_rollback")
        return await self._update(
            order.service, order.environment, "rollback", order, order.request_id, RollbackOutcome
        )

    @activity.defn(name=ActivityName.RUN_STATUS)
    async def run_status(self, ref: RunRef) -> str:
        """'running', 'completed', 'failed', ... or 'not_found'."""
        handle = self._client.get_workflow_handle(ref.workflow_id, run_id=ref.run_id or None)
        try:
            described = await handle.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return "not_found"
            raise
        status = described.status or WorkflowExecutionStatus.RUNNING
        return status.name.lower()
