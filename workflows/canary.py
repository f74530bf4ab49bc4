"""CanaryWorkflow: shift traffic step by step, analyse each interval, promote or abort.

First a pre-flight: every check's query runs against the stable version (under generated load
if the stage asks for it), and one that returns no data aborts the canary, quoting the query,
before any traffic moves: queries written for another mesh would otherwise read "no data" at
every step and abort for the wrong reason, late. An environment where nothing serves yet has
no stable version to ask, and skips it.

Then for each weight (step_weight .. max_weight): set the weight, wait one interval (with synthetic
load if the stage asks), measure the canary slot and judge every check. A failed analysis
keeps the weight and counts a failure; `threshold` failures abort (weight 0, canary scaled
down). All steps passed → promote (100% to the new version). Signals pause/resume/promote/
abort steer it; a cancelled canary (the pipeline was aborted) aborts before it ends.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

from contracts import deployer_proof
from contracts.activity import (
    ActivityName,
    DeployRequest,
    DeployResult,
    FenceRequest,
    ReleaseSpec,
    RollbackRequest,
    RollbackResult,
    WeightRequest,
)
from contracts.judgments import analyse
from contracts.messages import (
    CanaryControl,
    CanaryInput,
    CanaryOrder,
    CanaryResult,
    CanaryStatus,
    CanaryStep,
    RollbackOutcome,
)
from workflows.analysis import MAX_LOST_INTERVALS, finish_load, measure, start_load
from workflows.calls import call, notify
from workflows.run_leases import rollback_through_environment

__all__ = ["CanaryWorkflow"]

REPEAT_LOST_INTERVAL = "repeat-interval-when-load-lost"
"""Patch id: runs recorded before this change judged an interval whose load was lost."""
REPEAT_LOST_PREFLIGHT = "repeat-preflight-when-load-lost"
"""Patch id: runs recorded before this change measured a pre-flight whose load was lost."""
PREFLIGHT = "metrics-preflight-on-stable"
"""Patch id: runs recorded before this change went to the first step without a pre-flight."""
IGNORED_KEPT = 20


@workflow.defn(name="CanaryWorkflow")
class CanaryWorkflow:
    @workflow.init
    def __init__(self, input: CanaryInput) -> None:
        self._input = input
        self._weight = 0
        self._paused = False
        self._promote_now: CanaryControl | None = None
        self._abort: CanaryControl | None = None
        self._failed = 0
        self._steps: list[CanaryStep] = []
        self._lost_intervals = 0
        self._rolled_back: RollbackOutcome | None = None
        self._preflight_step: CanaryStep | None = None
        self._ignored: list[str] = []

    @workflow.run
    async def run(self, input: CanaryInput) -> CanaryResult:
        stage = input.stage
        await self._notify("info", "canary.started", f"canary of {input.artifact.version} starts")
        try:
            reason = await self._preflight()
            if reason is None:
                reason = await self._progress()
        except (asyncio.CancelledError, ActivityError) as err:
            if not is_cancelled_exception(err):
                raise
            # The pipeline was aborted (or cancelled): take traffic off the canary first.
            await asyncio.shield(asyncio.ensure_future(self._rollback("pipeline aborted")))
            raise
        if reason is not None:
            await self._rollback(reason)
            await self._notify("error", "canary.rolled_back", reason)
            await workflow.wait_condition(workflow.all_handlers_finished)
            return CanaryResult(
                outcome="aborted",
                reason=reason,
                failed_checks=self._failed,
                steps=self._steps,
                rollback=self._rolled_back,
                preflight=self._preflight_step,
                ignored_controls=self._ignored,
            )
        await call(
            ActivityName.PROMOTE,
            self._deploy_request(),
            DeployResult,
            timeout=max(stage.progress_deadline * 5, timedelta(minutes=5)),
            stage=stage.name,
        )
        self._weight = 100
        why = f"promoted by {self._promote_now.by}" if self._promote_now else "all steps passed"
        await self._notify("success", "canary.promoted", why)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return CanaryResult(
            outcome="promoted",
            reason=why,
            failed_checks=self._failed,
            steps=self._steps,
            preflight=self._preflight_step,
            ignored_controls=self._ignored,
        )

    async def _preflight(self) -> str | None:
        """Ask every check's query of the stable version; return an abort reason naming each
        query that found no data, or None to go on."""
        stage, service = self._input.stage, self._measured
        if not stage.preflight or not workflow.patched(PREFLIGHT):
            return None
        if self._input.lease is not None:
            serving = await call(
                ActivityName.FENCE,
                FenceRequest(
                    service=self._input.service,
                    environment=stage.environment,
                    token=self._input.lease.token,
                    components=self._components,
                ),
                ReleaseSpec,  # or None: nothing serves
                activity_id="preflight:serving",
                summary=f"{stage.name}: pre-flight: what serves {stage.environment}",
            )
            if serving is None:
                workflow.logger.info("nothing serves in %s yet: no pre-flight", stage.environment)
                return None
        interval = stage.interval.total_seconds()
        load = start_load(service, stage.environment, stage.load, interval, stage=stage.name)
        while load is not None:
            # Quiet environments: the stable version gets the same traffic a step would.
            interrupted = await self._wait_interval(stage.interval)
            load_lost = not await finish_load(load, cancel=interrupted)
            if interrupted:
                return None  # the step loop acts on the abort or promote
            if not self._repeat_lost_interval(load_lost, REPEAT_LOST_PREFLIGHT, "the pre-flight"):
                break
            load = start_load(service, stage.environment, stage.load, interval, stage=stage.name)
        sample = await measure(
            service,
            stage.environment,
            "stable",
            stage.metrics,
            self._input.metric_templates,
            stage=stage.name,
        )
        empty = [
            m
            for m in dict.fromkeys(c.metric for c in stage.metrics)
            if sample.values.get(m) is None
        ]
        summary = (
            "; ".join(
                f"{m}: no data from {sample.queries[m]!r}"
                if m in sample.queries
                else f"{m}: no data ({sample.source or 'no query answered'})"
                for m in empty
            )
            or "every query answered"
        )
        self._preflight_step = CanaryStep(
            weight=0,
            at=workflow.now(),
            passed=not empty,
            summary=summary,
            judgments=analyse(stage.metrics, sample, stage.no_data).judgments,
            sample=sample,
        )
        if not empty:
            return None
        return f"pre-flight against the stable version failed: {summary}"

    async def _progress(self) -> str | None:
        """Walk the weights; return an abort reason, or None to promote."""
        stage = self._input.stage
        for weight in stage.weights:
            while True:
                await workflow.wait_condition(lambda: not self._paused or self._interrupted)
                if self._abort:
                    return f"aborted by {self._abort.by or 'an operator'}: {self._abort.reason}"
                if self._promote_now:
                    return None
                if self._weight != weight:
                    await call(
                        ActivityName.SET_WEIGHT,
                        WeightRequest(
                            service=self._input.service,
                            environment=stage.environment,
                            canary_weight=weight,
                            fence=self._input.lease.token if self._input.lease else 0,
                            components=self._components,
                        ),
                        type(None),
                        timeout=stage.progress_deadline,
                        stage=stage.name,
                    )
                    self._weight = weight
                step = await self._analyse(weight)
                if step is None:  # interrupted during the interval
                    continue
                if step.passed:
                    break
                self._failed += 1
                if self._failed >= stage.threshold:
                    return (
                        f"{self._failed} failed analyses reached threshold {stage.threshold} "
                        f"at weight {weight}%: {step.summary}"
                    )
        return None

    async def _analyse(self, weight: int) -> CanaryStep | None:
        stage = self._input.stage
        interval = stage.interval.total_seconds()
        load = start_load(self._measured, stage.environment, stage.load, interval, stage=stage.name)
        interrupted = await self._wait_interval(stage.interval)
        load_lost = not await finish_load(load, cancel=interrupted)
        if interrupted:
            return None
        if self._repeat_lost_interval(
            load_lost, REPEAT_LOST_INTERVAL, f"the interval at {weight}%"
        ):
            return None
        sample = await measure(
            self._measured,
            stage.environment,
            "canary",
            stage.metrics,
            self._input.metric_templates,
            stage=stage.name,
        )
        analysis = analyse(stage.metrics, sample, stage.no_data)
        step = CanaryStep(
            weight=weight,
            at=workflow.now(),
            passed=analysis.passed,
            summary=analysis.summary,
            judgments=analysis.judgments,
            sample=sample,
        )
        self._steps.append(step)
        workflow.logger.info("canary %s%%: %s", weight, analysis.summary)
        return step

    def _repeat_lost_interval(self, load_lost: bool, patch: str, what: str) -> bool:
        """True when an interval's generated traffic died with a worker and the interval is
        to be run again: without that traffic it measures nothing, so it is repeated instead
        of judged, a bounded number of times in a row."""
        if not load_lost or self._lost_intervals >= MAX_LOST_INTERVALS:
            self._lost_intervals = 0
            return False
        if not workflow.patched(patch):
            return False
        self._lost_intervals += 1
        workflow.logger.warning("load lost during %s: repeating it", what)
        return True

    @property
    def _measured(self) -> str:
        """Whose traffic is generated and whose metrics are judged: a bundle's named
        artifact, else the service."""
        return self._input.measured or self._input.service

    @property
    def _components(self) -> list[str]:
        """A bundle's deployables: the weight moves for all of them (one joint canary)."""
        return [c.name for c in self._input.artifact.components]

    @property
    def _interrupted(self) -> bool:
        return self._abort is not None or self._promote_now is not None

    async def _wait_interval(self, interval: timedelta) -> bool:
        """Sleep one interval; return True if abort/promote arrived meanwhile."""
        try:
            await workflow.wait_condition(
                lambda: self._interrupted,
                timeout=interval,
                timeout_summary=f"{self._input.stage.name}: analysis interval of "
                f"{interval.total_seconds():g}s at {self._weight}%",
            )
        except TimeoutError:
            return False
        return True

    async def _rollback(self, reason: str) -> None:
        lease = self._input.lease
        if lease is not None:
            # The environment puts back what served before this run, once per run: the
            # pipeline's own rollback after an abort finds it done.
            self._rolled_back = await rollback_through_environment(
                self._input.service,
                self._input.stage.environment,
                lease.owner,
                reason,
                lease.strategy,
                "rollback",
                lease.token,
            )
            self._weight = 0
            return
        await call(
            ActivityName.ROLLBACK,
            RollbackRequest(
                service=self._input.service,
                environment=self._input.stage.environment,
                reason=reason,
            ),
            RollbackResult,
            stage=self._input.stage.name,
        )
        self._weight = 0

    def _deploy_request(self) -> DeployRequest:
        return DeployRequest(
            service=self._input.service,
            environment=self._input.stage.environment,
            slot="canary",
            artifact=self._input.artifact,
            strategy="canary",
            run_command=self._input.run_command,
            health_path=self._input.health_path,
            ready_path=self._input.ready_path,
            fence=self._input.lease.token if self._input.lease else 0,
            config=self._input.config,
            env=dict(self._input.env),
        )

    async def _notify(self, level: str, event: str, message: str) -> None:
        await notify(
            level,
            event,
            message,
            self._input.service,
            self._input.stage.environment,
            stage=self._input.stage.name,
        )

    def _from_pipeline(self, action: str, control: CanaryControl) -> bool:
        """A control counts only when its pipeline forwarded it (after checking it against
        the worker's policy); one sent straight here (`temporal workflow signal` to the
        child) is ignored and noted."""
        token = self._input.control_token
        if self._input.controls == "signal" and (not token or control.token == token):
            return True
        workflow.logger.warning("%s by %r sent straight to the canary: ignored", action, control.by)
        self._ignored = [
            *self._ignored[-(IGNORED_KEPT - 1) :],
            f"{action} by {control.by or '?'} at {workflow.now():%H:%M:%S}: not through the "
            f"pipeline (use `slipway {action}` on the pipeline run)",
        ]
        return False

    @workflow.signal(description='Hold the canary at its current weight: {"by": "dave"}')
    def pause(self, control: CanaryControl) -> None:
        if self._from_pipeline("pause", control):
            self._paused = True

    @workflow.signal(description='Continue a paused canary: {"by": "dave"}')
    def resume(self, control: CanaryControl) -> None:
        if self._from_pipeline("resume", control):
            self._paused = False

    @workflow.signal(description='Skip remaining steps and promote now: {"by": "dave"}')
    def promote(self, control: CanaryControl) -> None:
        if self._from_pipeline("promote", control):
            self._promote_now = control

    @workflow.signal(description='Abort: weight 0, canary down: {"by": "dave", "reason": ".."}')
    def abort(self, control: CanaryControl) -> None:
        if self._from_pipeline("abort", control):
            self._abort = control

    @workflow.update(
        description="A control its pipeline checked against the worker's policy, signed by a "
        "deployer. Not for people: use `slipway pause|resume|promote|abort` on the pipeline run."
    )
    def control(self, order: CanaryOrder) -> None:
        action, control = order.action, order.control
        if action == "pause":
            self._paused = True
        elif action == "resume":
            self._paused = False
        elif action == "promote":
            self._promote_now = control
        else:
            self._abort = control

    @control.validator
    def _validate_control(self, order: CanaryOrder) -> None:
        if order.canary != workflow.info().workflow_id:
            raise ValueError(f"this control is meant for {order.canary}")
        refusal = deployer_proof.check("control", order, order.proof)
        if refusal is not None:
            workflow.logger.warning("%s by %r: %s", order.action, order.control.by, refusal)
            raise ValueError(refusal)

    @workflow.query(description="Current weight, pause state, failed checks and every step.")
    def status(self) -> CanaryStatus:
        return CanaryStatus(
            weight=self._weight,
            paused=self._paused,
            failed_checks=self._failed,
            steps=self._steps,
        )
