"""RollbackWorkflow: the manual rollback of one environment as `slipway rollback` started it
before environment workflows held releases. Retired: a manual rollback is now an update to
the environment workflow (`rollback_manual`), judged by the worker's policy. The workflow
stays registered so that the ones started before still finish; a new one would roll back
with no judgment at all, for anyone who may start workflows, so it refuses and does nothing.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from contracts.activity import (
    ActivityName,
    RollbackRequest,
    RollbackResult,
)
from contracts.messages import Signed
from workflows.calls import call, notify

__all__ = ["RETIRED", "ManualRollback", "RollbackWorkflow"]

RETIRED = "manual-rollback-through-environment"
"""Patch id: executions started before it roll back as asked; newer ones refuse."""


class ManualRollback(Signed):
    """{"service": "hello", "environment": "staging", "by": "dave", "reason": "..."}"""

    service: str
    environment: str
    by: str
    reason: str = ""


@workflow.defn(name="RollbackWorkflow")
class RollbackWorkflow:
    @workflow.run
    async def run(self, request: ManualRollback) -> RollbackResult:
        if workflow.patched(RETIRED):
            raise ApplicationError(
                f"RollbackWorkflow is retired; nothing was rolled back. Run `slipway rollback "
                f"--service {request.service} --environment {request.environment} --by "
                f"{request.by}`: the environment workflow judges it by the worker's policy",
                non_retryable=True,
            )
        reason = f"manual rollback by {request.by}" + (
            f": {request.reason}" if request.reason else ""
        )
        result = await call(
            ActivityName.ROLLBACK,
            RollbackRequest(
                service=request.service, environment=request.environment, reason=reason
            ),
            RollbackResult,
        )
        await notify("warning", "rollback.manual", reason, request.service, request.environment)
        return result
