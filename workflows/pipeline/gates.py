"""Approval gates, freeze windows and operator actions of a pipeline run: updates with
validators, and signal twins for the Web UI, judged by the same rules (and by the worker's
policy, for runs under it).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import cast

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from contracts import judgments as policy
from contracts.activity import (
    ActivityName,
)
from contracts.definition import freeze
from contracts.definition.model import ApprovalStage
from contracts.messages import (
    AbortRequest,
    ActionRecord,
    ApprovalRecord,
    CanaryControl,
    CanaryOrder,
    Decision,
    DecisionCheck,
    DecisionVerdict,
    PipelineState,
    Signed,
    StageState,
    StageStatus,
)
from contracts.naming import canary_id
from workflows import gate_notices, telemetry
from workflows.calls import call
from workflows.decision_desk import clip
from workflows.gate_notices import GATE_NOTICES
from workflows.pipeline.visibility import PipelineVisibility
from workflows.stages.run_state import StageFailedError

__all__ = ["PipelineGates"]


class PipelineGates(PipelineVisibility):
    async def _wait_for_freeze(self, env: str, status: StageStatus) -> None:
        """A deploy in a freeze window waits for its end, or for the freeze gate's approval
        by one of the environment's `freeze_override_roles`."""
        env_policy = self._spec.environments.get(env)
        # The policy's windows with the definition's, when the policy lists the environment.
        rules = self._env_in_force.get(env) or env_policy
        if rules is None or not rules.freeze:
            return
        windows = [(w.cron, w.duration, w.timezone) for w in rules.freeze]
        frozen = freeze.frozen_until(windows, workflow.now())
        if frozen is None:
            return
        until, window = frozen
        roles = rules.freeze_override_roles
        gate = ApprovalStage(
            name=f"{status.name}_freeze",
            kind="approval",
            environment=env,
            gate=f"{env}-freeze",
            roles=roles or ["(nobody)"],
            quorum=1,
            timeout=until - workflow.now(),
        )
        how = f"; to deploy now, one of {roles} approves gate '{gate.gate_name}'" if roles else ""
        status.state = StageState.WAITING
        status.summary = f"{env} is frozen until {until:%Y-%m-%d %H:%M} UTC ({window}){how}"
        if roles:
            self._open_gates[gate.gate_name] = gate
            self._gate_deadlines[gate.gate_name] = until
        self._publish_details()
        try:
            # The window's end (a timeout) lets the deploy go on, as the override gate does.
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._state_of(gate) == "approved" or self._stopping(),
                    timeout=until - workflow.now(),
                    timeout_summary=f"{status.name}: {env} is frozen until "
                    f"{until:%Y-%m-%d %H:%M} UTC",
                )
        finally:
            self._open_gates.pop(gate.gate_name, None)
        status.state = StageState.RUNNING
        status.summary = ""
        self._publish_details()

    # --- approval gates -----------------------------------------------------------------

    async def _gate(self, stage: ApprovalStage) -> str:
        name = stage.gate_name
        self._open_gates[name] = stage
        deadline = workflow.now() + stage.timeout if stage.timeout else None
        self._gate_deadlines[name] = deadline
        self._stages[stage.name].state = StageState.WAITING
        self._publish_details()
        notices = workflow.patched(GATE_NOTICES)
        if notices:
            await gate_notices.gate_opened(stage, self._state.service)
        try:
            await workflow.wait_condition(
                lambda: self._state_of(stage) != "pending" or self._abort is not None,
                # The notice took some of the gate's time: its deadline stays where it was.
                timeout=deadline - workflow.now() if notices and deadline else stage.timeout,
                timeout_summary=(
                    f"{stage.name}: {name} approval times out in {_human(stage.timeout)}"
                    if stage.timeout
                    else None
                ),
            )
        except TimeoutError:
            self._records.append(
                ApprovalRecord(
                    gate=name,
                    approver="(timeout)",
                    decision="reject",
                    accepted=True,
                    at=workflow.now(),
                    via="timeout",
                    reason=f"no decision within {stage.timeout}",
                )
            )
            if notices:
                why = f"rejected: no decision within {stage.timeout}"
                await gate_notices.gate_rejected(stage, self._state.service, self._author(), why)
            raise StageFailedError(
                f"gate {name!r} timed out after {stage.timeout}: rejected"
            ) from None
        finally:
            self._open_gates.pop(name, None)
            self._decided_gates.add(name)
        outcome = self._state_of(stage)
        opened = self._stages[stage.name].started_at or workflow.now()
        telemetry.approval_waited(self._state.service, name, workflow.now() - opened, outcome)
        if outcome == "pending" and self._abort is not None:
            # asyncio.wait_for may prefer a ready result over our cancellation.
            raise asyncio.CancelledError
        people = [r for r in self._records if r.gate == name and r.accepted]
        if outcome == "rejected":
            who = next((r for r in people if r.decision == "reject"), None)
            why = f": {who.comment}" if who and who.comment else ""
            if notices:
                by = f"rejected by {who.approver if who else '?'}{why}"
                await gate_notices.gate_rejected(stage, self._state.service, self._author(), by)
            raise StageFailedError(f"rejected by {who.approver if who else '?'}{why}")
        if outcome != "approved":
            raise StageFailedError("gate closed without a decision")
        return "approved by " + ", ".join(r.approver for r in people)

    def _state_of(self, gate: ApprovalStage) -> str:
        """The gate's state under the policy in force: runs under the worker's policy count
        each vote with the roles its person held when deciding, and the gate's roles as the
        worker's policy last said; older runs use the roles their starter supplied."""
        if not self._worker_policy:
            return policy.approval_state(gate, self._votes, self._input.roles)
        rule = self._gate_rules.get(gate.gate_name)
        if rule is not None and rule.gate_roles:
            quorum = max(rule.gate_quorum or 0, gate.quorum or 0) or None
            gate = gate.model_copy(update={"roles": rule.gate_roles, "quorum": quorum})
        held = {v.approver: v.roles for v in self._votes}
        return policy.approval_state(gate, self._votes, held)

    def _refusal(self, decision: Decision, approve: bool) -> str | None:
        gate = self._open_gates.get(decision.gate)
        decided = decision.gate in self._decided_gates or (
            gate is not None and self._state_of(gate) != "pending"
        )
        if self._worker_policy:
            # Who the person is and what they hold is the worker's to judge (check_decision).
            return policy.gate_refusal(
                gate,
                gate_name=decision.gate,
                approver=decision.approver,
                votes=self._votes,
                decided=decided,
            )
        return policy.approval_refusal(
            gate,
            gate_name=decision.gate,
            approver=decision.approver,
            approve=approve,
            roles=self._input.roles,
            author=self._input.run.author,
            votes=self._votes,
            decided=decided,
        )

    def _check(
        self, subject: str, decision: str, by: str, comment: str, signed: Signed
    ) -> DecisionCheck:
        info = workflow.info()
        gate = self._open_gates.get(subject.removeprefix("gate:"))
        return DecisionCheck(
            namespace=info.namespace,
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            subject=subject,
            gate=gate.gate_name if gate else "",
            environment=gate.environment if gate else "",
            decision=decision,
            by=by,
            comment=comment,
            signed=Signed(
                signed_at=signed.signed_at, nonce=signed.nonce, signature=signed.signature
            ),
            author=self._author(),
            definition_roles=list(gate.roles) if gate else [],
            definition_allows_self_approval=gate.allow_self_approval if gate else False,
        )

    async def _decide(self, decision: Decision, approve: bool, via: str) -> ApprovalRecord:
        """Judge one decision (an update or a signal), record it, and count it if accepted.
        A refused update fails with the reason; a refused signal is only recorded (its
        sender cannot be told)."""
        verb = "approve" if approve else "reject"
        refusal = self._refusal(decision, approve)
        answer: DecisionVerdict | None = None
        if self._worker_policy:
            refusal = refusal or self._desk.seen_or_stale(decision)
            if refusal is None:
                check = self._check(
                    f"gate:{decision.gate}", verb, decision.approver, decision.comment, decision
                )
                check.via = via
                answer = await self._desk.verdict(check)
                # The gate may have been decided while the worker judged.
                refusal = self._refusal(decision, approve) or (
                    None if answer.accepted else answer.reason
                )
        if refusal is None:
            return self._accept(decision, approve, via, answer)
        workflow.logger.warning("refused %s %s: %s", decision.approver, via, refusal)
        record = self._decision_record(decision, approve, via, answer, refusal)
        self._desk.keep_approval(record)
        self._publish_details()
        if via == "update" and self._worker_policy:
            raise ApplicationError(refusal, type="NotAuthorized", non_retryable=True)
        return record

    def _decision_record(
        self,
        decision: Decision,
        approve: bool,
        via: str,
        answer: DecisionVerdict | None,
        refusal: str = "",
    ) -> ApprovalRecord:
        return ApprovalRecord.model_validate(
            {
                "gate": decision.gate,
                "approver": decision.approver,
                "decision": "approve" if approve else "reject",
                "accepted": not refusal,
                "at": workflow.now(),
                "comment": clip(decision.comment),
                "reason": refusal,
                "via": via,
                "signature": decision.signature,
                "signed_at": decision.signed_at,
                "nonce": decision.nonce,
                "signer_key": answer.signer_key if answer else "",
                "run_id": workflow.info().run_id if decision.signature else "",
            }
        )

    def _accept(
        self, decision: Decision, approve: bool, via: str, answer: DecisionVerdict | None = None
    ) -> ApprovalRecord:
        if answer is not None and answer.gate_roles:
            self._gate_rules[decision.gate] = answer
        self._votes.append(
            policy.ApprovalVote(
                gate=decision.gate,
                approver=decision.approver,
                approve=approve,
                roles=answer.roles if answer else [],
            )
        )
        record = self._decision_record(decision, approve, via, answer)
        self._records.append(record)
        self._publish_details()
        return record

    async def _approve(self, decision: Decision) -> ApprovalRecord:
        return await self._decide(decision, True, "update")

    # Typed as what callers get back (the SDK's typing keeps the coroutine of an async
    # handler declared with a name), so `execute_update(PipelineWorkflow.approve_update, ..)`
    # is an ApprovalRecord to mypy.
    approve_update = cast(
        "workflow.UpdateMethodMultiParam[[PipelineGates, Decision], ApprovalRecord]",
        workflow.update(
            name="approve",
            description='Approve an open gate: {"approver": "carol", "gate": "production", '
            '"comment": "LGTM"} (`slipway approve` also signs it)',
        )(_approve),
    )
    del _approve

    @approve_update.validator
    def _validate_approve(self, decision: Decision) -> None:
        refusal = self._refusal(decision, True)
        if refusal:
            raise ValueError(refusal)

    async def _reject(self, decision: Decision) -> ApprovalRecord:
        return await self._decide(decision, False, "update")

    reject_update = cast(
        "workflow.UpdateMethodMultiParam[[PipelineGates, Decision], ApprovalRecord]",
        workflow.update(
            name="reject",
            description='Reject an open gate: {"approver": "carol", "gate": "production", '
            '"comment": "why"} (`slipway reject` also signs it)',
        )(_reject),
    )
    del _reject

    @reject_update.validator
    def _validate_reject(self, decision: Decision) -> None:
        refusal = self._refusal(decision, False)
        if refusal:
            raise ValueError(refusal)

    @workflow.signal(
        name="approve",
        description="Approve an open gate (refusals are recorded in the result): "
        '{"approver": "carol", "gate": "production", "comment": "LGTM"}',
    )
    async def approve_signal(self, decision: Decision) -> None:
        await self._decide(decision, True, "signal")

    @workflow.signal(
        name="reject",
        description="Reject an open gate (refusals are recorded in the result): "
        '{"approver": "carol", "gate": "production", "comment": "why"}',
    )
    async def reject_signal(self, decision: Decision) -> None:
        await self._decide(decision, False, "signal")

    # --- operator actions ---------------------------------------------------------------

    def _action_refusal(self, action: str, by: str) -> str | None:
        """What refuses an action before the worker is asked."""
        if not by.strip():
            return "nobody named: say who acts ('by')"
        if self._pipeline_state != PipelineState.RUNNING or self._abort is not None:
            return f"the run is {self._pipeline_state.value}" + (
                f", aborted by {self._abort.by}" if self._abort is not None else ""
            )
        if action != "abort" and not self._state.canaries:
            return self._no_canary(action)
        return None

    def _no_canary(self, action: str) -> str:
        """Why a canary control has nothing to act on: the canary has not started yet, or it
        has already finished (a `promote` that arrives after the canary promoted itself)."""
        canaries = [s for s in self._stages.values() if s.kind == "canary"]
        finished = [s for s in canaries if s.state.finished]
        if canaries and len(finished) == len(canaries):
            done = "; ".join(f"{s.name} {s.state.value}: {s.summary}" for s in finished)
            return f"the canary has already finished ({done}): nothing to {action}"
        if not canaries:
            return f"this run has no canary stage: nothing to {action}"
        return f"no canary is running yet: nothing to {action}"

    async def _act(
        self, action: str, request: AbortRequest | CanaryControl, via: str
    ) -> ActionRecord:
        """Judge an operator action like a decision, then do it: an abort stops the run, the
        canary controls go to the running canary."""
        refusal = self._action_refusal(action, request.by) or self._desk.seen_or_stale(request)
        answer: DecisionVerdict | None = None
        if refusal is None:
            check = self._check(f"action:{action}", action, request.by, request.reason, request)
            check.via = via
            answer = await self._desk.verdict(check)
            refusal = self._action_refusal(action, request.by) or (
                None if answer.accepted else answer.reason
            )
        record = ActionRecord(
            action=action,
            by=request.by,
            accepted=refusal is None,
            at=workflow.now(),
            reason=refusal or "",
            via="update" if via == "update" else "signal",
            signature=request.signature,
            signed_at=request.signed_at,
            nonce=request.nonce,
            signer_key=answer.signer_key if answer else "",
            run_id=workflow.info().run_id if request.signature else "",
            comment=clip(request.reason),
        )
        self._desk.keep_action(record)
        if refusal is not None:
            workflow.logger.warning("refused %s by %s (%s): %s", action, request.by, via, refusal)
            self._publish_details()
            if via == "update":
                raise ApplicationError(refusal, type="NotAuthorized", non_retryable=True)
            return record
        if isinstance(request, AbortRequest):
            if self._abort is None:
                self._abort = request
        else:
            await self._forward(action, request)
        return record

    def _validate_action(self, action: str, request: AbortRequest | CanaryControl) -> None:
        refusal = self._action_refusal(action, request.by)
        if refusal:
            raise ValueError(refusal)

    @workflow.signal(
        description='Stop the run and roll back what it deployed: {"by": "dave", "reason": ".."}'
    )
    async def abort(self, request: AbortRequest) -> None:
        if self._worker_policy:
            await self._act("abort", request, "signal")
        elif self._abort is None and self._pipeline_state == PipelineState.RUNNING:
            self._abort = request

    @workflow.update(
        name="abort",
        description='Stop the run and roll back what it deployed: {"by": "dave", "reason": ".."}'
        " (checked against the worker's policy; `slipway abort` signs it)",
    )
    async def abort_update(self, request: AbortRequest) -> ActionRecord:
        return await self._act("abort", request, "update")

    @abort_update.validator
    def _validate_abort(self, request: AbortRequest) -> None:
        self._validate_action("abort", request)

    async def _forward(self, signal: str, control: CanaryControl) -> None:
        if not self._state.canaries:
            workflow.logger.warning("%s from %s ignored: no canary is running", signal, control.by)
        if self._state.signed_controls:
            for stage in list(self._state.canaries):
                await self._send_signed(signal, control, stage)
            return
        forwarded = control.model_copy(update={"token": self._state.control_token})
        for handle in list(self._state.canaries.values()):
            await handle.signal(signal, forwarded)

    async def _send_signed(self, action: str, control: CanaryControl, stage: str) -> None:
        """A checked control to this run's canary as an update a deployer signs: a canary
        takes controls from nobody else."""
        order = CanaryOrder.model_validate(
            {
                "canary": canary_id(workflow.info().workflow_id, stage),
                "action": action,
                "control": control.model_copy(update={"token": ""}),
                "request_id": f"{workflow.info().workflow_id}/{workflow.info().run_id}/"
                f"{action}/{stage}/{workflow.uuid4()}",
            }
        )
        try:
            await call(
                ActivityName.CONTROL_CANARY,
                order,
                type(None),
                activity_id=f"{stage}:{action}:{workflow.uuid4().hex[:8]}",
                summary=f"{action} the canary {stage} for {control.by}",
            )
        except ActivityError as err:
            workflow.logger.warning("%s of canary %s not delivered: %s", action, stage, err)

    async def _control(self, action: str, control: CanaryControl) -> None:
        if self._worker_policy:
            await self._act(action, control, "signal")
        else:
            await self._forward(action, control)

    @workflow.signal(description='Pause the running canary: {"by": "dave"}')
    async def pause(self, control: CanaryControl) -> None:
        await self._control("pause", control)

    @workflow.signal(description='Resume the paused canary: {"by": "dave"}')
    async def resume(self, control: CanaryControl) -> None:
        await self._control("resume", control)

    @workflow.signal(description='Promote the running canary now: {"by": "dave"}')
    async def promote(self, control: CanaryControl) -> None:
        await self._control("promote", control)

    @workflow.update(
        name="pause", description='Pause the running canary: {"by": "dave"} (policy-checked)'
    )
    async def pause_update(self, control: CanaryControl) -> ActionRecord:
        return await self._act("pause", control, "update")

    @pause_update.validator
    def _validate_pause(self, control: CanaryControl) -> None:
        self._validate_action("pause", control)

    @workflow.update(
        name="resume", description='Resume the paused canary: {"by": "dave"} (policy-checked)'
    )
    async def resume_update(self, control: CanaryControl) -> ActionRecord:
        return await self._act("resume", control, "update")

    @resume_update.validator
    def _validate_resume(self, control: CanaryControl) -> None:
        self._validate_action("resume", control)

    @workflow.update(
        name="promote",
        description='Promote the running canary now: {"by": "dave"} (policy-checked)',
    )
    async def promote_update(self, control: CanaryControl) -> ActionRecord:
        return await self._act("promote", control, "update")

    @promote_update.validator
    def _validate_promote(self, control: CanaryControl) -> None:
        self._validate_action("promote", control)


def _human(span: timedelta) -> str:
    """A duration as people write it in definitions: 24h, 90m, 45s."""
    seconds = int(span.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
