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
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from contracts import judgments as policy
from contracts.activity import (
    ActivityName,
    ReferenceCheckResult,
)
from contracts.definition import dag
from contracts.definition.loading import definition_problems
from contracts.definition.model import ApprovalStage, Stage
from contracts.definition.triggers import pull_request_stages
from contracts.errors import ErrorType
from contracts.messages import (
    Concurrency,
    LeaseNotice,
    PipelineInput,
    PipelineResult,
    PipelineState,
    PolicyInForce,
    StageState,
)
from contracts.naming import LEASE_SIGNAL
from contracts.references import DEPLOYING_KINDS, reference_check, refers_to_nothing
from contracts.start_check import policy_start
from workflows import telemetry
from workflows.calls import call
from workflows.pipeline.gates import PipelineGates
from workflows.pipeline.rollbacks import PipelineRollbacks
from workflows.pipeline.visibility import (
    CANCELLED_BY_TEMPORAL,
    trusted_commit_time,
)
from workflows.run_leases import SupersededError
from workflows.stages.dispatch import run_stage
from workflows.stages.run_state import StageFailedError

__all__ = [
    "ENVIRONMENT_LEASES",
    "GATES_HOLD",
    "PIPELINE_FAILED",
    "PULL_REQUEST_RUNS",
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
PULL_REQUEST_RUNS = "pull-request-runs"
"""Patch id: pull-request runs (`run.pull_request` set) run only the stages
`on.pull_request` gives them, never one that touches an environment or the registry. Runs
recorded before it had no such field (their inputs carry none): every stage was theirs."""
STALE_LEASE_GRACE = timedelta(minutes=1)
"""How long a stage refused for a stale lease waits for the notice that says by whom."""
LEASED_KINDS = ("deploy", "canary", "monitor")
"""Stage kinds that change an environment: they run under its lease."""
ACTING_KINDS = (
    *("deploy", "canary", "monitor", "e2e", "smoke"),
    *("load_test", "dast", "browser", "web_audit"),
)
"""Stage kinds that act on an environment: its lease is kept until they are all done."""
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
REFERENCES_CHECKED = "references-checked"
"""Patch id: runs recorded before it did not check at their start that every secret and
resource their releases refer to resolves; a missing one failed the deploy that used it."""
REFERENCES_WHEN_ANY = "references-checked-when-any"
"""Patch id: runs recorded before it asked the deployer to check references even when their
releases named none (an activity round trip for nothing)."""
LOCAL_POLICY_CHECK = "policy-in-force-as-local-activity"
"""Patch id: runs recorded before it read the worker's policy with a regular activity."""
SIGNED_CANARY_CONTROLS = "canary-controls-signed-by-deployer"
"""Patch id: canaries started before it took controls as signals carrying a token that sat in
their input (readable by anyone who can read history); newer ones take them only as updates
signed by a deployer (contracts/deployer_proof.py)."""


@workflow.defn(name="PipelineWorkflow")
class PipelineWorkflow(PipelineGates, PipelineRollbacks):
    """Scheduling: stages run as their needs finish, under their environments' leases."""

    @workflow.init
    def __init__(self, input: PipelineInput) -> None:
        super().__init__(input)

    # --- the run ------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: PipelineInput) -> PipelineResult:
        if input.run.pull_request is not None and workflow.patched(PULL_REQUEST_RUNS):
            on = self._spec.on
            chosen, _ = pull_request_stages(self._spec.stages, on.pull_request if on else None)
            self._pull_request_stages = frozenset(chosen)
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
        await self._wait_for_superseded()
        if leases.superseded is None and not self._failure:
            env, why = next(iter(leases.refused_reports.items()))
            self._failure = f"{env} did not record this run's release: {why}"

    async def _wait_for_superseded(self) -> None:
        """Wait for the notice that says which run took an environment from this one: up to
        STALE_LEASE_GRACE, and on for as long as a notice that arrived is still being checked
        against the environment's state (a worker killed while checking it costs the check's
        timeout, which may outlast the grace). Without a notice the caller fails on its own
        evidence; the grace running out is not an error of the workflow."""
        leases = self._lease_book

        def answered() -> bool:
            return leases.superseded is not None or self._abort is not None

        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(answered, timeout=STALE_LEASE_GRACE)
        if not answered() and leases.confirming:
            await workflow.wait_condition(lambda: answered() or not leases.confirming)

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
        references: list[str] = []
        if workflow.patched(REFERENCES_CHECKED) and (deployed := self._environments_deployed()):
            # Every secret and resource the releases use, where this run will deploy: one
            # that does not resolve fails the run now, not the deploy after the stages
            # before it have run (no value is read into history, only whether it resolves).
            request = reference_check(self._spec, deployed)
            if not (refers_to_nothing(request) and workflow.patched(REFERENCES_WHEN_ANY)):
                checked = await call(ActivityName.CHECK_REFERENCES, request, ReferenceCheckResult)
                references = checked.sentences()
        return [*problems, *answer.problems, *references]

    def _environments_deployed(self) -> list[str]:
        """The environments a deploy or canary stage of this run will change: those its
        branch filters (the stage's `when:`, the environment's `branches:`) do not skip; none
        for a pull-request run."""
        wanted: list[str] = []
        for stage in self._spec.stages:
            env = stage.environment_name
            if stage.kind not in DEPLOYING_KINDS or env is None or env in wanted:
                continue
            if not self._filtered_out(stage):
                wanted.append(env)
        return wanted

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

    def _filtered_out(self, stage: Stage) -> str:
        """Why this run's kind (pull request) or branch leaves the stage out, or ""."""
        run = self._input.run
        if self._pull_request_stages is not None and stage.name not in self._pull_request_stages:
            return f"not a stage of pull-request runs (#{run.pull_request})"
        if stage.when is not None and not policy.branch_matches(run.branch, stage.when.branches):
            return f"branch {run.branch!r} not in {stage.when.branches}"
        env = stage.environment_name
        env_policy = self._spec.environments.get(env) if env else None
        if env_policy is not None and not policy.branch_matches(run.branch, env_policy.branches):
            return f"environment {env!r} takes branches {env_policy.branches}"
        return ""

    def _skip_reason(self, stage: Stage) -> str:
        if filtered := self._filtered_out(stage):
            return filtered
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
                await self._wait_for_superseded()
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

    def _concurrency(self, environment: str) -> Concurrency:
        forced = self._env_in_force.get(environment)
        if forced is not None and forced.concurrency is not None:
            return forced.concurrency  # the policy's, or the definition's if stricter
        env_policy = self._spec.environments.get(environment)
        if env_policy is not None and env_policy.concurrency is not None:
            return env_policy.concurrency
        return "queue" if environment == "production" else "supersede"

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
                "%s notice for %s ignored: the environment's state does not say so now "
                "(a newer commit took the lease since, or the environment did not send it)",
                notice.status,
                notice.environment,
            )
            return
        self._lease_book.on_notice(notice)
