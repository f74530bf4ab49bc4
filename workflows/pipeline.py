"""PipelineWorkflow: interprets a pipeline definition (a DAG of stages) for one commit.

Every stage whose needs are done runs, concurrently. A failed stage applies its `on_failure`
policy: `fail` stops scheduling, `continue` lets dependents run, `rollback` also restores the
environments this run deployed. Approval gates wait for people (updates with validators, and
signal twins for the Web UI, checked by the same policy; refused signals are recorded).
`abort` stops the run and rolls back what it deployed.

A failed run ends the workflow as *failed* (so CI's `--wait` exits non-zero and a new start
for the commit is allowed); the full `PipelineResult` travels in the failure's details.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import cast

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

from contracts import judgments as policy
from contracts.activity import (
    ActivityName,
    RollbackRequest,
    RollbackResult,
)
from contracts.definition import dag, freeze
from contracts.definition.loading import definition_problems
from contracts.definition.model import ApprovalStage, RollbackStage, Stage
from contracts.errors import ErrorType
from contracts.messages import (
    AbortRequest,
    ActionRecord,
    ApprovalRecord,
    CanaryControl,
    CanaryOrder,
    Concurrency,
    Decision,
    DecisionCheck,
    DecisionVerdict,
    EnvironmentInForce,
    LeaseNotice,
    PendingApproval,
    PipelineInput,
    PipelineResult,
    PipelineState,
    PipelineStatus,
    PolicyInForce,
    RollbackOutcome,
    Signed,
    StageState,
    StageStatus,
)
from contracts.naming import ENVIRONMENT, PIPELINE_STATUS, SERVICE, STAGE, canary_id
from contracts.start_check import policy_start
from workflows import gate_notices, telemetry
from workflows.calls import call, notify
from workflows.decision_desk import DecisionDesk, clip
from workflows.environment import LEASE_SIGNAL
from workflows.gate_notices import GATE_NOTICES
from workflows.run_leases import RunLeases, SupersededError
from workflows.stages import RunState, StageFailedError, run_stage

__all__ = [
    "ENVIRONMENT_LEASES",
    "GATES_HOLD",
    "PIPELINE_FAILED",
    "TRUSTED_COMMIT_TIME",
    "WORKER_POLICY",
    "PipelineWorkflow",
    "trusted_commit_time",
]

PIPELINE_FAILED = "PipelineFailed"
"""`ApplicationError.type` of a failed run; its first detail is the PipelineResult."""
ENVIRONMENT_LEASES = "environment-leases"
"""Patch id: runs recorded before it acted on environments without leases, and rolled back
with the platform's own notion of 'the previous version'."""
WORKER_POLICY = "worker-policy"
"""Patch id: runs recorded before it judged decisions by the roles their starter supplied,
with no signatures and no checks on operator actions."""
TRUSTED_COMMIT_TIME = "trusted-commit-time"
"""Patch id: runs recorded before it ordered their commit in environments (and measured lead
time) by the commit time their starter supplied (`--commit-time`), trusted as given: a time
in the future made a run newer than every later one."""
GATES_HOLD = "gates-hold"
"""Patch id: runs recorded before it checked only what the policy said of their deploys at
start (not the definition's own rules again, nor canaries and monitors, nor the policy's
concurrency and freeze), let an approval with `on_failure: continue` that was not given
open the way to what needs it, and judged environments by their definition alone."""
STALE_LEASE_GRACE = timedelta(minutes=1)
"""How long a stage refused for a stale lease waits for the notice that says by whom."""
LEASED_KINDS = ("deploy", "canary", "monitor")
"""Stage kinds that change an environment: they run under its lease."""
ACTING_KINDS = ("deploy", "canary", "monitor", "e2e", "smoke", "load_test", "dast")
"""Stage kinds that act on an environment: its lease is kept until they are all done."""
EVIDENCE_KINDS = (
    *("scan", "test", "quality_gate", "image_scan", "e2e", "smoke", "canary"),
    *("load_test", "dast"),
)
"""Stage kinds whose summaries an approver sees as evidence."""
CANCELLED_BY_TEMPORAL = AbortRequest(
    by="(cancel request)", reason="cancelled from the Web UI or `temporal workflow cancel`"
)
LEASE_MESSAGES_IN_BACKGROUND = "lease-messages-in-background"
"""Patch id: runs recorded before it waited for each report and release to be taken before
their next stage started."""
CONFIRMED_NOTICES = "lease-notices-confirmed"
"""Patch id: runs recorded before it took a lease notice (a signal anyone may send) at its
word; since, each is checked against the environment's own state first."""
POLICY_CHECK_AS_ACTIVITY = "policy-in-force-as-activity-again"
"""Patch id: runs recorded between LOCAL_POLICY_CHECK and it read the policy with a local
activity. A replay after a worker was killed mid-run once failed with a nondeterminism error
right after that local activity (not reproduced since); the pipeline runs no local activity
now, so its command order never depends on when one completed."""
LOCAL_POLICY_CHECK = "policy-in-force-as-local-activity"
"""Patch id: runs recorded before it read the worker's policy with a regular activity."""
SIGNED_CANARY_CONTROLS = "canary-controls-signed-by-deployer"
"""Patch id: canaries started before it took controls as signals carrying a token that sat in
their input (readable by anyone who can read history); newer ones take them only as updates
signed by a deployer (contracts/deployer_proof.py)."""


@workflow.defn(name="PipelineWorkflow")
class PipelineWorkflow:
    @workflow.init
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

    # --- the run ------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: PipelineInput) -> PipelineResult:
        if workflow.patched(WORKER_POLICY):
            self._worker_policy = True
            self._state.control_token = str(workflow.uuid4())
            self._state.signed_controls = workflow.patched(SIGNED_CANARY_CONTROLS)
            self._gates_hold = workflow.patched(GATES_HOLD)
            problems = await self._start_under_policy()
            if problems:
                self._failure = "; ".join(problems)
                self._pipeline_state = PipelineState.FAILED
                return await self._finish_run()
        if workflow.patched(ENVIRONMENT_LEASES):
            # Decided here, in the run's own flow, not in the signal handler: a patch first
            # met in a handler lands wherever the signal happened to arrive.
            self._confirm_notices = workflow.patched(CONFIRMED_NOTICES)
            if workflow.patched(TRUSTED_COMMIT_TIME):
                self._trusted_time = True
                self._lease_book.commit_time = None  # the checkout's, at the first lease
            self._state.leases = self._lease_book
            self._state.on_retry = self._note_retry
            return await self._run_leased()
        self._publish_details()
        rollback_for = await self._schedule()
        if self._abort is not None:
            self._pipeline_state = PipelineState.ABORTED
            self._failure = f"aborted by {self._abort.by}: {self._abort.reason}".rstrip(": ")
            await self._roll_back(list(reversed(self._state.touched)), self._failure)
        elif rollback_for:
            await self._roll_back(rollback_for, self._failure)
            self._pipeline_state = PipelineState.ROLLED_BACK
        elif self._failure:
            self._pipeline_state = (
                PipelineState.ROLLED_BACK if self._state.rolled_back else PipelineState.FAILED
            )
        else:
            self._pipeline_state = PipelineState.SUCCEEDED
        return await self._finish_run()

    async def _run_leased(self) -> PipelineResult:
        """The run with environment leases: every change of an environment under its lease,
        rollbacks asked of the environment, superseded runs ending as such."""
        leases = self._lease_book
        leases.background = workflow.patched(LEASE_MESSAGES_IN_BACKGROUND)
        self._publish_details()
        try:
            rollback_for = await self._schedule()
        except asyncio.CancelledError:
            # Request Cancellation (Web UI, `temporal workflow cancel`) is an abort: stop the
            # stages (children are cancelled, and wait for), roll back, release, report.
            if self._abort is None:
                self._abort = CANCELLED_BY_TEMPORAL
            await self._stop_running("cancelled by " + self._abort.by)
            rollback_for = []
        await self._settle_messages()
        if leases.superseded is not None:
            notice = leases.superseded
            self._pipeline_state = PipelineState.SUPERSEDED
            self._failure = f"superseded by {notice.by} in {notice.environment}: {notice.reason}"
        elif self._abort is not None:
            self._failure = f"aborted by {self._abort.by}: {self._abort.reason}".rstrip(": ")
            await self._roll_back(list(reversed(leases.changed)), self._failure)
            self._pipeline_state = PipelineState.ABORTED
        elif rollback_for:
            await self._roll_back(rollback_for, self._failure)
        for env, outcome in self._state.child_rollbacks.items():
            # A canary or monitor rolled back on its own (its stage may not ask for more).
            if env not in self._state.rolled_back and env not in self._rollback_failed:
                await self._record_rollback(env, outcome, None, outcome.reason)
        if self._pipeline_state == PipelineState.RUNNING:
            if self._rollback_failed:
                self._pipeline_state = PipelineState.ROLLBACK_FAILED
            elif self._failure:
                self._pipeline_state = (
                    PipelineState.ROLLED_BACK if self._state.rolled_back else PipelineState.FAILED
                )
            else:
                self._pipeline_state = PipelineState.SUCCEEDED
        elif self._rollback_failed:
            self._pipeline_state = PipelineState.ROLLBACK_FAILED
        for env in [*leases.held, *leases.queued]:
            await leases.release(env, f"run {self._pipeline_state.value}")
        return await self._finish_run()

    async def _settle_messages(self) -> None:
        """The reports and releases sent in the background are taken before the run ends. A
        refused report means another run holds the environment now: its notice is on the way
        (the run ends superseded); without one, the run failed."""
        leases = self._lease_book
        await leases.settle()
        if not leases.refused_reports or leases.superseded is not None:
            return
        await workflow.wait_condition(
            lambda: leases.superseded is not None or self._abort is not None,
            timeout=STALE_LEASE_GRACE,
        )
        if leases.superseded is None and not self._failure:
            env, why = next(iter(leases.refused_reports.items()))
            self._failure = f"{env} did not record this run's release: {why}"

    async def _start_under_policy(self) -> list[str]:
        """Record the hash of the worker's policy in force, and what it says of this run's
        definition (an environment it requires approval for, changed without one; a gate
        its people cannot meet; a concurrency weaker than its own). Under GATES_HOLD the
        definition's own rules are checked again first (it may not have come through
        `slipway validate`), and canaries and monitors count as changes like deploys."""
        problems = [str(p) for p in definition_problems(self._spec)] if self._gates_hold else []
        answer = await call(
            ActivityName.POLICY_IN_FORCE,
            policy_start(self._spec, workflow.info().workflow_id, gates_hold=self._gates_hold),
            PolicyInForce,
            # Runs recorded between the two patches read it with a local activity.
            local=not workflow.patched(POLICY_CHECK_AS_ACTIVITY)
            and workflow.patched(LOCAL_POLICY_CHECK),
        )
        self._policy_hash = answer.hash
        self._env_in_force = dict(answer.environments)
        return [*problems, *answer.problems]

    async def _finish_run(self) -> PipelineResult:
        self._set_attributes(status=self._pipeline_state.value)
        self._publish_details()
        await workflow.wait_condition(workflow.all_handlers_finished)
        result = self._result()
        telemetry.pipeline_finished(
            result.service,
            result.state.value,
            timedelta(seconds=result.lead_time_s) if result.lead_time_s is not None else None,
        )
        if self._pipeline_state != PipelineState.SUCCEEDED:
            raise ApplicationError(
                f"pipeline {self._pipeline_state.value}: {self._failure}",
                result,
                type=PIPELINE_FAILED,
                non_retryable=True,
            )
        return result

    async def _stop_running(self, why: str) -> None:
        """Cancel the running stages and wait until they have stopped (a child canary rolls
        its traffic back before it reports cancelled)."""
        running = self._running
        for task in running.values():
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)
        for name in running:
            self._finish(name, StageState.CANCELLED, why)
        running.clear()

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

    async def _schedule(self) -> list[str]:
        """Run stages as their needs finish. Return environments to roll back, if any."""
        stages = self._spec.stages
        by_name = self._spec.by_name
        started: set[str] = set()
        finished: set[str] = set()
        running = self._running
        rollback_for: list[str] = []
        leased = self._state.leases is not None
        if self._gates_hold:
            # Acyclic: the definition was checked again at start.
            self._gates_before = dag.ancestors_of_kind(stages, "approval")
        while True:
            if not self._failure and not self._stopping():
                for name in dag.ready(stages, finished, started):
                    started.add(name)
                    skip = self._skip_reason(by_name[name])
                    if skip:
                        self._finish(name, StageState.SKIPPED, skip)
                        finished.add(name)
                        continue
                    running[name] = asyncio.ensure_future(self._run_one(by_name[name]))
                if any(n not in started for n in dag.ready(stages, finished, started)):
                    continue  # skipping unlocked more stages
            if not running:
                return rollback_for
            await workflow.wait_condition(
                lambda: self._stopping() or any(t.done() for t in running.values())
            )
            if self._stopping():
                await self._stop_running(self._stop_reason())
                return []
            for name in [n for n, t in running.items() if t.done()]:
                running.pop(name).result()
                finished.add(name)
                status = self._stages[name]
                if status.state != StageState.FAILED:
                    continue
                stage = by_name[name]
                if stage.on_failure == "continue" and not (
                    self._gates_hold and isinstance(stage, ApprovalStage)
                ):
                    continue  # an approval that was not given always stops the run
                self._failure = self._failure or f"stage {name!r} failed: {status.summary}"
                if stage.on_failure == "rollback":
                    for env in self._rollback_targets(stage):
                        if env not in rollback_for:
                            rollback_for.append(env)
            if leased and not self._failure:
                await self._release_finished(finished)

    async def _release_finished(self, finished: set[str]) -> None:
        """Give an environment back once every stage acting on it is done."""
        for env in list(self._lease_book.held):
            acting = [
                s.name
                for s in self._spec.stages
                if s.environment_name == env and s.kind in ACTING_KINDS
            ]
            if not all(name in finished for name in acting):
                continue
            if self._lease_book.background:
                self._lease_book.release_later(env, "its stages are done")
            else:
                await self._lease_book.release(env, "its stages are done")

    def _skip_reason(self, stage: Stage) -> str:
        run = self._input.run
        if stage.when is not None and not policy.branch_matches(run.branch, stage.when.branches):
            return f"branch {run.branch!r} not in {stage.when.branches}"
        env = stage.environment_name
        env_policy = self._spec.environments.get(env) if env else None
        if env_policy is not None and not policy.branch_matches(run.branch, env_policy.branches):
            return f"environment {env!r} takes branches {env_policy.branches}"
        skipped = [n for n in stage.needs if self._stages[n].state == StageState.SKIPPED]
        if skipped:
            return f"needs {skipped[0]!r}, which was skipped"
        # Whatever any stage's on_failure says, nothing runs after an approval that was not
        # given (its state is final: a stage is ready only once all it needs has finished).
        for gate in self._gates_before.get(stage.name, ()):
            state = self._stages[gate].state
            if state != StageState.SUCCEEDED:
                return f"approval {gate!r} was not given ({state.value}): not started"
        return ""

    def _rollback_targets(self, stage: Stage) -> list[str]:
        env = stage.environment_name
        changed = (
            self._lease_book.changed if self._state.leases is not None else self._state.touched
        )
        touched = [e for e in changed if e not in self._state.rolled_back]
        if env is not None:
            return [env] if env in touched else []
        return list(reversed(touched))

    async def _run_one(self, stage: Stage) -> None:
        status = self._stages[stage.name]
        status.state = StageState.RUNNING
        status.attempt += 1
        status.started_at = workflow.now()
        self._set_attributes(stage=stage.name, environment=stage.environment_name)
        self._publish_details()
        try:
            if isinstance(stage, ApprovalStage):
                summary = await self._gate(stage)
            else:
                await self._hold(stage)
                summary = await run_stage(stage, self._state)
        except SupersededError as lost:
            self._finish(stage.name, StageState.CANCELLED, f"superseded: {lost}")
            return
        except StageFailedError as failed:
            if failed.error_type == ErrorType.STALE_LEASE and self._state.leases is not None:
                # The platform refused this run's token: a newer run took the environment.
                # Its notice is on the way (a signal); the stage ends as superseded then.
                await workflow.wait_condition(
                    lambda: self._lease_book.superseded is not None or self._abort is not None,
                    timeout=STALE_LEASE_GRACE,
                )
            if self._stopping():  # it failed because we cancelled it
                self._finish(stage.name, StageState.CANCELLED, self._stop_reason())
                raise asyncio.CancelledError from failed
            self._finish(stage.name, StageState.FAILED, str(failed))
            return
        except asyncio.CancelledError:
            self._finish(stage.name, StageState.CANCELLED, self._stop_reason())
            raise
        self._finish(stage.name, StageState.SUCCEEDED, summary)

    async def _hold(self, stage: Stage) -> None:
        """Take the lease of the environment `stage` changes (waiting in its queue)."""
        env = stage.environment_name
        leases = self._state.leases
        if leases is None or env is None or stage.kind not in LEASED_KINDS:
            return
        if leases.commit_time is None and self._state.workspace is not None:
            leases.commit_time = (
                self._commit_time() if self._trusted_time else self._state.workspace.commit_time
            )
        await leases.settle(env)  # what this run told the environment before is taken first
        status = self._stages[stage.name]
        if stage.kind == "deploy":
            await self._wait_for_freeze(env, status)

        def queued(holder: str, position: int) -> None:
            status.state = StageState.QUEUED
            status.summary = f"queued behind {holder} for {env} (position {position} on arrival)"
            self._set_attributes(status="queued")
            self._publish_details()

        await leases.acquire(env, self._concurrency(env), stage.name, queued)
        if status.state == StageState.QUEUED:
            status.state = StageState.RUNNING
            status.summary = ""
            self._set_attributes(status="running")
            self._publish_details()

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

    def _concurrency(self, environment: str) -> Concurrency:
        forced = self._env_in_force.get(environment)
        if forced is not None and forced.concurrency is not None:
            return forced.concurrency  # the policy's, or the definition's if stricter
        env_policy = self._spec.environments.get(environment)
        if env_policy is not None and env_policy.concurrency is not None:
            return env_policy.concurrency
        return "queue" if environment == "production" else "supersede"

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

    async def _roll_back(self, environments: list[str], reason: str) -> None:
        """Restore each environment, through its `rollback` stage when the definition has one
        (so the stage shows in status), else directly. Honors `auto_rollback: false`."""
        for env in environments:
            if env in self._state.rolled_back:
                continue
            env_policy = self._spec.environments.get(env)
            if env_policy is not None and not env_policy.auto_rollback:
                self._failure += (
                    f"; {env} needs a manual rollback (auto_rollback is off): "
                    f"slipway rollback --environment {env}"
                )
                continue
            stage = next(
                (
                    s
                    for s in self._spec.stages
                    if isinstance(s, RollbackStage)
                    and s.environment in (env, None)
                    and self._stages[s.name].state == StageState.PENDING
                ),
                None,
            )
            if stage is not None:
                status = self._stages[stage.name]
                status.state = StageState.RUNNING
                status.started_at = workflow.now()
                self._set_attributes(stage=stage.name, environment=env)
            if self._state.leases is not None:
                await self._roll_back_leased(env, reason, stage)
                continue
            try:
                result = await call(
                    ActivityName.ROLLBACK,
                    RollbackRequest(service=self._state.service, environment=env, reason=reason),
                    RollbackResult,
                    activity_id=f"{stage.name if stage else 'rollback'}:{env}",
                )
            except ActivityError as err:
                if stage is not None:
                    self._finish(stage.name, StageState.FAILED, f"{env}: {err.cause or err}")
                self._failure += f"; rollback of {env} FAILED: {err.cause or err}"
                continue
            self._state.rolled_back.append(env)
            telemetry.rolled_back(self._state.service, env)
            restored = result.restored_digest or "previous version"
            if result.restored_digest:
                self._state.deployed[env] = result.restored_digest
            else:
                self._state.deployed.pop(env, None)
            if stage is not None:
                self._finish(stage.name, StageState.SUCCEEDED, f"{env} restored to {restored}")
            await self._notify("error", "pipeline.rolled_back", f"{env} rolled back: {reason}", env)

    async def _roll_back_leased(self, env: str, reason: str, stage: RollbackStage | None) -> None:
        """Ask the environment to put back what served before this run; say what happened."""
        activity_id = f"{stage.name if stage else 'rollback'}:{env}"
        try:
            outcome = await self._lease_book.rollback(
                env, reason, self._state.strategy(env), activity_id
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            outcome = RollbackOutcome(environment=env, status="failed", reason=str(err.cause))
        await self._record_rollback(env, outcome, stage.name if stage else None, reason)

    async def _record_rollback(
        self, env: str, outcome: RollbackOutcome, stage: str | None, reason: str
    ) -> None:
        if outcome.status == "rolled_back":
            if env not in self._state.rolled_back:
                self._state.rolled_back.append(env)
                telemetry.rolled_back(self._state.service, env)
            # `deployed` is what this run put in place and still serves (lead time reads it).
            self._state.deployed.pop(env, None)
            summary = f"{env} restored to {outcome.restored_digest or 'no earlier release'}"
            if stage is not None:
                self._finish(stage, StageState.SUCCEEDED, summary)
            await self._notify("error", "pipeline.rolled_back", f"{summary}: {reason}", env)
        elif outcome.status == "failed":
            if env not in self._rollback_failed:
                self._rollback_failed.append(env)
            if stage is not None:
                self._finish(stage, StageState.FAILED, f"{env}: {outcome.reason}")
            self._failure += f"; rollback of {env} FAILED: {outcome.reason}"
            await self._notify(
                "error",
                "pipeline.rollback_failed",
                f"rollback of {env} failed ({outcome.reason}): manual intervention needed, "
                f"see `slipway env {self._state.service}`",
                env,
            )
        else:
            if stage is not None:
                self._finish(stage, StageState.SKIPPED, outcome.reason)
            self._failure += f"; {env} not rolled back: {outcome.reason}"

    async def _notify(self, level: str, event: str, message: str, env: str = "") -> None:
        await notify(level, event, message, self._state.service, env)

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

    def _author(self) -> str:
        """The commit's author as git names it (the checkout read it); a source that knows
        none (the in-memory one) leaves what the starter said."""
        workspace = self._state.workspace
        return (workspace.author if workspace else None) or self._input.run.author

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
        "workflow.UpdateMethodMultiParam[[PipelineWorkflow, Decision], ApprovalRecord]",
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
        "workflow.UpdateMethodMultiParam[[PipelineWorkflow, Decision], ApprovalRecord]",
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

    @workflow.signal(
        name=LEASE_SIGNAL,
        description="Sent by an environment workflow: the lease this run waits for, or that a "
        "newer commit took it. Not for people.",
    )
    async def environment_lease(self, notice: LeaseNotice) -> None:
        if self._confirm_notices is None:
            # Before the run asked any environment for anything: not an environment's.
            workflow.logger.warning("lease notice before any lease request ignored")
            return
        if self._confirm_notices and not await self._lease_book.confirmed(notice):
            workflow.logger.warning(
                "%s notice for %s ignored: the environment's state does not say so "
                "(not sent by the environment)",
                notice.status,
                notice.environment,
            )
            return
        self._lease_book.on_notice(notice)

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

    # --- visibility -----------------------------------------------------------------------

    @workflow.query(description="Stages with state and timings, open approvals, artifact.")
    def status(self) -> PipelineStatus:
        return PipelineStatus(
            state=self._pipeline_state,
            service=self._state.service,
            commit=self._input.run.commit,
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
        lines = [
            f"**{self._state.service}** `{self._input.run.sha12}` by {self._input.run.author}"
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


def _human(span: timedelta) -> str:
    """A duration as people write it in definitions: 24h, 90m, 45s."""
    seconds = int(span.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def trusted_commit_time(committed: datetime | None, started: datetime) -> datetime | None:
    """`committed` (git's committer time), clamped to `started` (the run's start); a time
    without a zone is taken as UTC (git always gives one)."""
    if committed is None:
        return None
    if committed.tzinfo is None:
        committed = committed.replace(tzinfo=UTC)
    return min(committed, started)
