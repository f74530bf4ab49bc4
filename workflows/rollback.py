"""RollbackWorkflow: an engineer's manual rollback of one environment (`slipway rollback`).

Durable like everything else: the rollback is retried until the platform confirms it, and
the decision (who, why) stays in history. Environments whose policy is a manual rollback
(HEAL7's staging) are restored this way.
"""

from __future__ import annotations

from temporalio import workflow

from contracts.activity import (
    ActivityName,
    RollbackRequest,
    RollbackResult,
)
from workflows.calls import call, notify
from workflows.messages import Signed

__all__ = ["ManualRollback", "RollbackWorkflow"]


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
