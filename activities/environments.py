"""A pipeline's messages to its environments' workflows.

Workflows cannot send updates to other workflows, so these activities do it with the worker's
Temporal client: update-with-start (the environment workflow is created by the first run that
needs it), whose update id is the request's idempotency key (a retried activity attaches to
the same update). A refused update (a stale lease) is a verdict, never retried.

Each message is signed here (contracts/deployer_proof.py) after checking that it speaks for the
workflow that called this activity (the server tells us which one; the message could claim any
run): a pipeline for itself, a canary or monitor for the pipeline that started it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, TypeVar

from temporalio import activity
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.helpers.blocking import HEARTBEAT_EVERY_S
from activities.wiring.observability import activity_log
from contracts import deployer_proof
from contracts.activity import ActivityName, RunRef
from contracts.errors import ErrorType, verdict
from contracts.messages import (
    CanaryOrder,
    EnvironmentInput,
    EnvironmentState,
    LeaseAnswer,
    LeaseCheck,
    LeaseRelease,
    LeaseRequest,
    RollbackOrder,
    RollbackOutcome,
    ServingReport,
)
from contracts.naming import ENVIRONMENT, SERVICE, environment_id
from plumbing.updates import execute_update, execute_update_with_start

__all__ = ["EnvironmentActivities"]

T = TypeVar("T")

UPDATES_PER_ENVIRONMENT = 5
"""Updates this worker sends one environment workflow at a time. Temporal admits 10 in flight
per workflow and answers the next with ResourceExhausted, which the client retries in a loop;
a burst of one service's commits (each run's acquire, report and release) waits here instead,
heartbeating. Half the server's limit leaves room for a second worker replica."""


class EnvironmentActivities:
    """`search_attributes`: index environment workflows by Service and Environment (what
    `slipway env` lists by); off for a namespace without them (the bare test server)."""

    def __init__(self, client: Client, *, search_attributes: bool = False) -> None:
        self._client = client
        self._search_attributes = search_attributes
        self._in_flight: dict[str, asyncio.Semaphore] = {}

    def _start(self, service: str, environment: str) -> WithStartWorkflowOperation[Any, Any]:
        """How the environment workflow starts if it is not running (the first message to it
        starts it; a running one takes the message)."""
        options: dict[str, Any] = {
            "id": environment_id(service, environment),
            "task_queue": activity.info().task_queue,
            "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
            "static_summary": f"{service} in {environment}",
        }
        if self._search_attributes:
            options["search_attributes"] = TypedSearchAttributes(
                [
                    SearchAttributePair(SERVICE, service),
                    SearchAttributePair(ENVIRONMENT, environment),
                ]
            )
        return WithStartWorkflowOperation(
            "EnvironmentWorkflow",
            EnvironmentInput(service=service, environment=environment),
            **options,
        )

    async def _update(
        self, service: str, environment: str, name: str, arg: Any, update_id: str, rt: type[T]
    ) -> T:
        """Update-with-start: one call starts the environment workflow if needed and sends the
        update (it replaced a signal-with-start followed by the update)."""
        workflow_id = environment_id(service, environment)
        gate = self._in_flight.setdefault(workflow_id, asyncio.Semaphore(UPDATES_PER_ENVIRONMENT))

        async def send() -> T:
            async with gate:
                return await execute_update_with_start(
                    self._client,
                    workflow_id,
                    name,
                    arg,
                    operation=lambda: self._start(service, environment),
                    update_id=update_id,
                    result_type=rt,
                )

        task = asyncio.ensure_future(send())
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
        _speaks_for_caller(request.run, request.run_id)
        return await self._update(
            request.service,
            request.environment,
            "acquire",
            _signed(request, "acquire"),
            request.request_id,
            LeaseAnswer,
        )

    @activity.defn(name=ActivityName.REPORT_SERVING)
    async def report_serving(self, report: ServingReport) -> None:
        activity_log(environment=report.environment, digest=report.release.digest).info(
            "report_serving"
        )
        _speaks_for_caller(report.run, report.run_id)
        await self._update(
            report.service,
            report.environment,
            "report",
            _signed(report, "report"),
            report.request_id,
            type(None),
        )

    @activity.defn(name=ActivityName.RELEASE_LEASE)
    async def release_lease(self, request: LeaseRelease) -> None:
        activity_log(environment=request.environment, run=request.run).info("release_lease")
        _speaks_for_caller(request.run, request.run_id)
        await self._update(
            request.service,
            request.environment,
            "release",
            _signed(request, "release"),
            request.request_id,
            type(None),
        )

    @activity.defn(name=ActivityName.REQUEST_ROLLBACK)
    async def request_rollback(self, order: RollbackOrder) -> RollbackOutcome:
        activity_log(environment=order.environment, run=order.run).warning("request_rollback")
        await self._speaks_for_run(order.run, order.run_id)
        return await self._update(
            order.service,
            order.environment,
            "rollback",
            _signed(order, "rollback"),
            order.request_id,
            RollbackOutcome,
        )

    @activity.defn(name=ActivityName.CONTROL_CANARY)
    async def control_canary(self, order: CanaryOrder) -> None:
        """A pipeline's checked control, delivered to its own canary as a signed update."""
        info = activity.info()
        activity_log(canary=order.canary, action=order.action).info("control_canary")
        if not order.canary.startswith(f"{info.workflow_id}-"):
            raise verdict(
                ErrorType.NOT_AUTHORIZED,
                f"{info.workflow_id} may not control {order.canary}: not its canary",
            )
        handle = self._client.get_workflow_handle(order.canary)
        try:
            await execute_update(
                handle,
                "control",
                _signed(order, "control"),
                update_id=order.request_id,
                result_type=type(None),
            )
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause)
            raise verdict(ErrorType.NOT_AUTHORIZED, message) from None
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            # The canary finished meanwhile: there is nothing left to control.
            activity_log(canary=order.canary).info("control_canary: the canary has ended")

    async def _speaks_for_run(self, run: str, run_id: str) -> None:
        """A rollback comes from the run itself, or from a canary or monitor that run
        started: the server's record of the caller's parent says which."""
        info = activity.info()
        if info.workflow_id == run:
            _speaks_for_caller(run, run_id)
            return
        if info.workflow_id and info.workflow_id.startswith(f"{run}-"):
            described = await self._client.get_workflow_handle(
                info.workflow_id, run_id=info.workflow_run_id
            ).describe()
            if described.parent_id == run and (not run_id or described.parent_run_id == run_id):
                return
        raise verdict(
            ErrorType.NOT_AUTHORIZED,
            f"{info.workflow_id} may not ask for a rollback on behalf of {run}",
        )

    @activity.defn(name=ActivityName.CONFIRM_LEASE)
    async def confirm_lease(self, check: LeaseCheck) -> bool:
        """Whether the environment's own state says what a lease notice said: for `granted`,
        that the run holds the lease under that token; for `superseded`, that it neither
        holds it nor waits for it. Anyone can signal a pipeline; only the environment writes
        its state."""
        handle = self._client.get_workflow_handle(environment_id(check.service, check.environment))
        try:
            state = await handle.query("state", result_type=EnvironmentState)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return False  # no such environment: nobody it names sent this notice
            raise  # the environment is busy or its worker is down: asked again, not judged
        holder = state.holder
        ours = holder is not None and (holder.run, holder.run_id) == (check.run, check.run_id)
        if check.status == "granted":
            return ours and holder is not None and holder.token == check.token
        return not ours and not any(w.run_id == check.run_id for w in state.queue)

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


M = TypeVar("M", LeaseRequest, ServingReport, LeaseRelease, RollbackOrder, CanaryOrder)


def _signed(message: M, purpose: str) -> M:
    """`message` with a deployer's proof (contracts/deployer_proof.py)."""
    # Stamped with the later of this worker's clock and the server's (when it scheduled this
    # attempt), as the validator reads the server's: a worker clock that lags, or a test
    # server that skips time while runs wait, does not make a fresh proof look old.
    now = max(datetime.now(UTC), activity.info().current_attempt_scheduled_time)
    try:
        proof = deployer_proof.sign(purpose, message, now)
    except deployer_proof.KeyMissingError as err:
        raise verdict(ErrorType.NOT_AUTHORIZED, str(err)) from None
    return message.model_copy(update={"proof": proof})


def _speaks_for_caller(run: str, run_id: str) -> None:
    """A lease message names the run it is for: it must be the workflow calling us."""
    info = activity.info()
    if info.workflow_id != run or (run_id and info.workflow_run_id != run_id):
        raise verdict(
            ErrorType.NOT_AUTHORIZED,
            f"{info.workflow_id} ({info.workflow_run_id}) may not speak for {run} ({run_id})",
        )
