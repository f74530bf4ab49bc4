"""A pipeline run's state and what it shows: the status query, the Web UI's details,
search attributes, stage outcomes, and the result it ends with.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from temporalio import workflow

from contracts import judgments as policy
from contracts.definition.model import ApprovalStage
from contracts.messages import (
    AbortRequest,
    ApprovalRecord,
    DecisionVerdict,
    EnvironmentInForce,
    PendingApproval,
    PipelineInput,
    PipelineResult,
    PipelineState,
    PipelineStatus,
    StageState,
    StageStatus,
)
from contracts.naming import ENVIRONMENT, PIPELINE_STATUS, SERVICE, STAGE
from workflows import telemetry
from workflows.calls import notify
from workflows.decision_desk import DecisionDesk
from workflows.run_leases import RunLeases
from workflows.stages.run_state import RunState

__all__ = ["CANCELLED_BY_TEMPORAL", "EVIDENCE_KINDS", "PipelineVisibility", "trusted_commit_time"]

EVIDENCE_KINDS = (
    *("scan", "test", "quality_gate", "image_scan", "e2e", "smoke", "canary"),
    *("load_test", "dast", "browser", "web_audit"),
)
"""Stage kinds whose summaries an approver sees as evidence."""
CANCELLED_BY_TEMPORAL = AbortRequest(
    by="(cancel request)", reason="cancelled from the Web UI or `temporal workflow cancel`"
)


class PipelineVisibility:
    """The run's fields (set in `__init__`) and everything that shows them."""

    def __init__(self, input: PipelineInput) -> None:
        self._input = input
        self._spec = input.spec
        self._started_at = workflow.now()
        self._stages = {
            s.name: StageStatus(name=s.name, kind=s.kind, environment=s.environment_name)
            for s in self._spec.stages
        }
        self._state = RunState(input=input, workflow_id=workflow.info().workflow_id)
        self._open_gates: dict[str, ApprovalStage] = {}
        self._gate_deadlines: dict[str, datetime | None] = {}
        self._decided_gates: set[str] = set()
        self._votes: list[policy.ApprovalVote] = []
        self._desk = DecisionDesk()
        self._records: list[ApprovalRecord] = self._desk.approvals
        # Set by `run` for runs under the worker's policy (WORKER_POLICY): decisions are
        # judged by the worker then, and gates need what the policy in force says.
        self._worker_policy = False
        self._policy_hash = ""
        self._gate_rules: dict[str, DecisionVerdict] = {}
        # Set by `run` (GATES_HOLD): the definition is checked again at start, a gate that
        # was not given holds everything after it, and the policy's environment rules count.
        self._gates_hold = False
        self._gates_before: dict[str, list[str]] = {}
        self._env_in_force: dict[str, EnvironmentInForce] = {}
        self._abort: AbortRequest | None = None
        self._pipeline_state = PipelineState.RUNNING
        self._failure = ""
        self._running: dict[str, asyncio.Task[None]] = {}
        # Created here (no commands) so a lease signal arriving first has somewhere to go;
        # `run` decides whether this run uses leases at all.
        self._lease_book = RunLeases(
            service=input.spec.service.name,
            run=workflow.info().workflow_id,
            commit=input.run.commit,
            commit_time=input.run.commit_time,
            components=sorted(input.spec.artifacts),
        )
        self._rollback_failed: list[str] = []
        # Whether lease notices are checked against the environment's state
        # (CONFIRMED_NOTICES); None until the run uses leases.
        self._confirm_notices: bool | None = None
        # Set by `run` (TRUSTED_COMMIT_TIME): the commit's time is git's, never after the run
        # started; the starter's `commit_time` orders nothing.
        self._trusted_time = False
        # Set by `run` for a pull-request run (PULL_REQUEST_RUNS): the only stages it runs.
        self._pull_request_stages: frozenset[str] | None = None

    def _note_retry(self, stage: str, attempt: int, failure: str) -> None:
        status = self._stages[stage]
        status.attempt = attempt
        status.summary = f"attempt {attempt}, last failure: {failure}"[:300]
        self._publish_details()

    def _stop_reason(self) -> str:
        superseded = self._lease_book.superseded
        if superseded is not None:
            return f"cancelled: superseded by {superseded.by}"
        by = self._abort.by if self._abort is not None else "abort"
        return "cancelled by abort" if by != CANCELLED_BY_TEMPORAL.by else "cancelled by request"

    def _stopping(self) -> bool:
        return self._abort is not None or self._lease_book.superseded is not None

    def _finish(self, name: str, state: StageState, summary: str) -> None:
        status = self._stages[name]
        if status.state.finished:
            return
        status.state = state
        status.summary = summary
        status.ended_at = workflow.now()
        workflow.logger.info("stage %s %s: %s", name, state.value, summary)
        if status.started_at is not None:
            telemetry.stage_finished(
                self._state.service,
                name,
                status.kind,
                state.value,
                status.ended_at - status.started_at,
            )
        self._publish_details()

    async def _notify(self, level: str, event: str, message: str, env: str = "") -> None:
        await notify(level, event, message, self._state.service, env)

    def _author(self) -> str:
        """The commit's author as git names it (the checkout read it); a source that knows
        none (the in-memory one) leaves what the starter said."""
        workspace = self._state.workspace
        return (workspace.author if workspace else None) or self._input.run.author

    # --- visibility -----------------------------------------------------------------------

    @workflow.query(description="Stages with state and timings, open approvals, artifact.")
    def status(self) -> PipelineStatus:
        return PipelineStatus(
            state=self._pipeline_state,
            service=self._state.service,
            commit=self._input.run.commit,
            pull_request=self._input.run.pull_request,
            stages=list(self._stages.values()),
            pending_approvals=[self._pending(g) for g in self._open_gates.values()],
            artifact=self._state.artifact,
            deployed=dict(self._state.deployed),
        )

    def _pending(self, gate: ApprovalStage) -> PendingApproval:
        run = self._input.run
        evidence = {
            s.name: f"{s.state.value}: {s.summary}"
            for s in self._stages.values()
            if s.kind in EVIDENCE_KINDS and s.state.finished
        }
        rule = self._gate_rules.get(gate.gate_name)
        return PendingApproval(
            gate=gate.gate_name,
            environment=gate.environment,
            roles=rule.gate_roles if rule is not None and rule.gate_roles else gate.roles,
            quorum=gate.required_quorum,
            approved_by=[v.approver for v in self._votes if v.gate == gate.gate_name],
            deadline=self._gate_deadlines.get(gate.gate_name),
            service=self._state.service,
            commit=run.commit,
            author=run.author,
            diff_url=run.diff_url,
            digest=self._state.artifact.digest if self._state.artifact else None,
            evidence=evidence,
        )

    def _set_attributes(
        self,
        *,
        stage: str | None = None,
        environment: str | None = None,
        status: str | None = None,
    ) -> None:
        # Only runs started with our search attributes upsert them: a namespace that lacks
        # them would otherwise fail every workflow task (the starter sets them, or says why).
        if workflow.info().typed_search_attributes.get(SERVICE) is None:
            return
        updates = []
        if stage is not None:
            updates.append(STAGE.value_set(stage))
        if environment is not None:
            updates.append(ENVIRONMENT.value_set(environment))
        if status is not None:
            updates.append(PIPELINE_STATUS.value_set(status))
        if updates:
            workflow.upsert_search_attributes(updates)

    def _publish_details(self) -> None:
        """A markdown table of the stages for the Web UI's 'current details'."""
        run = self._input.run
        pr = f" (pull request #{run.pull_request})" if run.pull_request is not None else ""
        lines = [
            f"**{self._state.service}** `{run.sha12}`{pr} by {run.author}"
            f" — {self._pipeline_state.value}",
            "",
            "| stage | kind | state | summary |",
            "|---|---|---|---|",
        ]
        for s in self._stages.values():
            summary = s.summary.replace("|", "\\|")[:120]
            lines.append(f"| {s.name} | {s.kind} | {s.state.value} | {summary} |")
        for gate in self._open_gates.values():
            lines.append("")
            lines.append(
                f"Waiting for approval of **{gate.gate_name}** by {', '.join(gate.roles)}: "
                f'send update `approve` with `{{"approver": "<you>", "gate": "{gate.gate_name}"}}`'
            )
        workflow.set_current_details("\n".join(lines))

    def _commit_time(self) -> datetime | None:
        """The commit's time as git records it (the checkout's committer time), never later
        than this run's start: whoever makes a commit sets its time, and a time in the future
        must not make a run newer than the runs started after it."""
        workspace = self._state.workspace
        return trusted_commit_time(workspace.commit_time if workspace else None, self._started_at)

    def _result(self) -> PipelineResult:
        production = self._state.production_at
        commit_time = (
            self._commit_time()
            if self._trusted_time
            else self._input.run.commit_time
            or (self._state.workspace.commit_time if self._state.workspace else None)
        )
        lead = (
            (production - commit_time).total_seconds()
            if production and commit_time and "production" in self._state.deployed
            else None
        )
        return PipelineResult(
            state=self._pipeline_state,
            service=self._state.service,
            commit=self._input.run.commit,
            pull_request=self._input.run.pull_request,
            stages=list(self._stages.values()),
            approvals=self._records,
            actions=self._desk.actions,
            refused_not_kept=self._desk.refused_not_kept,
            policy_hash=self._policy_hash,
            artifact=self._state.artifact,
            deployed=dict(self._state.deployed),
            rolled_back=list(self._state.rolled_back),
            failure=self._failure,
            superseded_by=self._lease_book.superseded.by if self._lease_book.superseded else "",
            started_at=self._started_at,
            ended_at=workflow.now(),
            lead_time_s=lead,
        )


def trusted_commit_time(committed: datetime | None, started: datetime) -> datetime | None:
    """`committed` (git's committer time), clamped to `started` (the run's start); a time
    without a zone is taken as UTC (git always gives one)."""
    if committed is None:
        return None
    if committed.tzinfo is None:
        committed = committed.replace(tzinfo=UTC)
    return min(committed, started)
