"""Rollbacks of an environment: a run's (put back what served when it got the lease, once per
run and token) and a person's (`slipway rollback`, checked against the worker's policy).
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from contracts.activity import (
    ActivityName,
    RestoreRequest,
    RestoreResult,
)
from contracts.messages import (
    ActionRecord,
    DecisionCheck,
    ReleaseEntry,
    RollbackOrder,
    RollbackOutcome,
    Serving,
    Signed,
)
from workflows.calls import call, notify
from workflows.decision_desk import REFUSED_KEPT, DecisionDesk, clip
from workflows.environment.record import (
    WORK_FAILED,
    EnvironmentRecord,
    failure_of,
    work_placement,
)
from workflows.rollback import ManualRollback

__all__ = ["EnvironmentRollbacks"]

ROLLBACK_POLICY = "manual-rollback-policy"
"""Patch id: manual rollbacks recorded before it were not checked against the worker's
policy."""
ROLLBACK_PER_RUN = "rollback-once-per-run-id-and-token"
"""Patch id: rollbacks recorded before it were remembered per workflow id, so a retried or
restarted run that failed again got the first run's outcome and nothing was restored."""
ROLLBACKS_KEPT = 200
NONCES_KEPT = 500


class EnvironmentRollbacks(EnvironmentRecord):
    # --- rollback ------------------------------------------------------------------------

    @workflow.update(
        description="Put back what served before this run changed the environment "
        "(idempotent per run; nothing for a run that no longer holds it)."
    )
    async def rollback(self, order: RollbackOrder) -> RollbackOutcome:
        async with self._lock:
            outcome = await self._rollback(order)
        self._changes += 1
        return outcome

    @rollback.validator
    def _validate_rollback(self, order: RollbackOrder) -> None:
        self._from_deployer("rollback", order, order.proof)

    async def _rollback(self, order: RollbackOrder) -> RollbackOutcome:
        s = self._s
        # Once per run: a run reset by `slipway retry`, or the same commit started again,
        # is another run (run id, and the lease token it changed the environment under).
        per_run = bool(order.run_id) and workflow.patched(ROLLBACK_PER_RUN)
        key = f"{order.run}/{order.run_id}/{order.token}" if per_run else order.run
        done = s.rollbacks.get(key)
        if done is not None:
            return done.model_copy(update={"repeat": True})
        holder = s.holder
        owns = (
            holder is not None
            and holder.run == order.run
            and (not per_run or holder.run_id == order.run_id)
        )
        if owns:
            assert holder is not None
            target = holder.baseline
        elif holder is None and s.serving is not None and s.serving.run == order.run:
            # The run gave the lease back and its release still serves: nobody else owns
            # the environment, so its rollback is still this run's to make.
            target = s.serving.before
        else:
            s.queue = [w for w in s.queue if w.run != order.run]
            owner = f"held by {holder.run}" if holder else "serving another run's release"
            return RollbackOutcome(
                environment=s.environment,
                status="not_owner",
                reason=f"{s.environment} is {owner}: nothing of it was rolled back",
            )
        try:
            result = await self._restore(target, order.strategy, order.reason)
        except WORK_FAILED as err:
            return RollbackOutcome(
                environment=s.environment, status="failed", reason=failure_of(err)
            )
        if owns:
            assert holder is not None
            holder.rolled_back = True
        if s.serving is not None and s.serving.run == order.run:
            self._close_serving("rolled_back", order.reason)
            s.serving = None
        elif owns and holder is not None and result.changed:
            # A canary that never promoted: a change that failed, for the record (DORA).
            self._record(
                ReleaseEntry(
                    run=order.run,
                    commit=holder.commit,
                    commit_time=holder.commit_time,
                    at=holder.granted_at,
                    until=workflow.now(),
                    outcome="rolled_back",
                    reason=order.reason,
                )
            )
        if target is not None and (s.serving is None or s.serving.run != target.run):
            self._restored(target, order.reason)
        outcome = RollbackOutcome(
            environment=s.environment,
            status="rolled_back" if result.changed else "unchanged",
            restored_digest=result.restored_digest,
            reason=order.reason
            if result.changed
            else f"nothing to roll back: {s.environment} already serves "
            f"{result.restored_digest or 'no release'}",
        )
        s.rollbacks[key] = outcome
        while len(s.rollbacks) > ROLLBACKS_KEPT:
            s.rollbacks.pop(next(iter(s.rollbacks)))
        return outcome

    async def _restore(self, target: Serving | None, strategy: str, reason: str) -> RestoreResult:
        s = self._s
        s.token += 1  # the rollback fences whoever wrote before it
        return await call(
            ActivityName.RESTORE,
            RestoreRequest.model_validate(
                {
                    "service": s.service,
                    "environment": s.environment,
                    "target": target.release if target else None,
                    "strategy": strategy,
                    "fence": s.token,
                    "reason": reason,
                    "components": self._components(),
                }
            ),
            RestoreResult,
            activity_id=f"restore-{s.token}",
            **work_placement(restore=True),
        )

    def _restored(self, target: Serving, reason: str) -> None:
        now = workflow.now()
        self._s.serving = target.model_copy(update={"since": now})
        self._record(
            ReleaseEntry(
                release=target.release,
                run=target.run,
                commit=target.commit,
                commit_time=target.commit_time,
                at=now,
                outcome="restored",
                reason=reason,
            )
        )

    @workflow.update(
        name="rollback_manual",
        description='Put back the release before the one serving: {"service": "hello", '
        '"environment": "staging", "by": "dave", "reason": "..."}',
    )
    async def rollback_manual(self, request: ManualRollback) -> RollbackOutcome:
        if workflow.patched(ROLLBACK_POLICY):
            refusal = await self._rollback_refusal(request)
            if refusal is not None:
                raise ApplicationError(refusal, type="NotAuthorized", non_retryable=True)
        async with self._lock:
            s = self._s
            previous = self._previous_release()
            reason = f"manual rollback by {request.by}" + (
                f": {request.reason}" if request.reason else ""
            )
            if previous is None:
                return RollbackOutcome(
                    environment=s.environment,
                    status="unchanged",
                    reason="no earlier release is recorded for this environment",
                )
            try:
                result = await self._restore(previous, "rolling", reason)
            except WORK_FAILED as err:
                return RollbackOutcome(
                    environment=s.environment, status="failed", reason=failure_of(err)
                )
            self._close_serving("rolled_back", reason)
            self._restored(previous, reason)
        await notify("warning", "rollback.manual", reason, s.service, s.environment)
        self._changes += 1
        return RollbackOutcome(
            environment=s.environment,
            status="rolled_back" if result.changed else "unchanged",
            restored_digest=result.restored_digest,
            reason=reason,
        )

    async def _rollback_refusal(self, request: ManualRollback) -> str | None:
        """The worker's verdict on who asks for a manual rollback; a refusal is recorded in
        the environment's state (bounded) and returned."""
        s = self._s
        desk = DecisionDesk()
        desk.nonces = set(s.nonces)
        refusal = desk.seen_or_stale(request)
        if request.nonce and request.signature and request.nonce not in s.nonces:
            s.nonces = [*s.nonces, request.nonce][-NONCES_KEPT:]
        answer = None
        if refusal is None:
            info = workflow.info()
            answer = await desk.verdict(
                DecisionCheck(
                    namespace=info.namespace,
                    workflow_id=info.workflow_id,
                    run_id=info.run_id,
                    subject="action:rollback",
                    environment=s.environment,
                    decision="rollback",
                    by=request.by,
                    comment=request.reason,
                    signed=Signed(
                        signed_at=request.signed_at,
                        nonce=request.nonce,
                        signature=request.signature,
                    ),
                    via="update",
                )
            )
            refusal = None if answer.accepted else answer.reason
        if refusal is None:
            return None
        workflow.logger.warning(
            "%s: rollback by %s refused: %s", s.environment, request.by, refusal
        )
        if len(s.refused) >= REFUSED_KEPT:
            s.refused.pop(0)
            s.refused_not_kept += 1
        s.refused.append(
            ActionRecord(
                action="rollback",
                by=request.by,
                accepted=False,
                at=workflow.now(),
                reason=refusal,
                via="update",
                signature=request.signature,
                signed_at=request.signed_at,
                nonce=request.nonce,
                comment=clip(request.reason),
            )
        )
        self._changes += 1
        return refusal

    @rollback_manual.validator
    def _validate_manual(self, request: ManualRollback) -> None:
        if not request.by.strip():
            raise ValueError("nobody named: say who rolls back ('by')")
        holder = self._s.holder
        if holder is not None:
            raise ValueError(
                f"{holder.run} holds {self._s.environment}'s lease: abort that run instead "
                f"(slipway abort {holder.run}), it rolls back what it changed"
            )
