"""MonitorWorkflow: the post-deploy watch (HEAL7's smart rollback).

Every `interval`, measure production's stable slot and judge the criteria. On a violation,
wait `recheck` and measure again: still violated → roll back and alert; cleared → logged as
transient and monitoring goes on. Ends healthy after `duration`. One timer and one or two
activities per interval keep the history small; if a definition asks for hours, the
workflow continues as new when Temporal suggests it, carrying its counters.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from contracts.activity import (
    ActivityName,
    RollbackRequest,
    RollbackResult,
)
from contracts.judgments import Analysis, analyse
from contracts.messages import MonitorCheck, MonitorInput, MonitorResult, RollbackOutcome
from workflows.analysis import MAX_LOST_INTERVALS, finish_load, measure, start_load
from workflows.calls import call, notify
from workflows.run_leases import rollback_through_environment

__all__ = ["MAX_CARRIED_VIOLATIONS", "MonitorWorkflow"]

MAX_CARRIED_VIOLATIONS = 50
REPEAT_LOST_INTERVAL = "monitor-repeats-interval-when-load-lost"
"""Patch id: runs recorded before this change measured an interval whose load was lost."""


@workflow.defn(name="MonitorWorkflow")
class MonitorWorkflow:
    @workflow.init
    def __init__(self, input: MonitorInput) -> None:
        self._checks = input.checks
        self._transient = input.transient
        self._violations: list[MonitorCheck] = list(input.violations)

    @workflow.run
    async def run(self, input: MonitorInput) -> MonitorResult:
        stage = input.stage
        remaining = stage.duration - timedelta(seconds=input.elapsed_s)
        while remaining > timedelta(0):
            remaining -= await self._watch(input, min(stage.interval, remaining))
            analysis = await self._measure(input)
            self._checks += 1
            if analysis.passed:
                self._maybe_continue_as_new(input, remaining)
                continue
            workflow.logger.warning("monitor violation, re-checking: %s", analysis.summary)
            remaining -= await self._watch(input, stage.recheck)
            recheck = await self._measure(input)
            if recheck.passed:
                self._transient += 1
                self._violations.append(
                    MonitorCheck(
                        at=workflow.now(), passed=True, summary=analysis.summary, rechecked=True
                    )
                )
                # The latest records only (the count keeps the total): a short interval over
                # days must not grow the result past Temporal's payload limit.
                del self._violations[:-MAX_CARRIED_VIOLATIONS]
                workflow.logger.info("transient violation cleared on re-check")
                self._maybe_continue_as_new(input, remaining)
                continue
            reason = f"confirmed after {stage.recheck.total_seconds():g}s re-check: " + (
                recheck.summary
            )
            self._violations.append(
                MonitorCheck(at=workflow.now(), passed=False, summary=reason, rechecked=True)
            )
            outcome: RollbackOutcome | None = None
            if input.lease is not None:
                outcome = await rollback_through_environment(
                    input.service,
                    stage.environment,
                    input.lease.owner,
                    reason,
                    input.lease.strategy,
                    "rollback",
                    input.lease.token,
                )
            else:
                await call(
                    ActivityName.ROLLBACK,
                    RollbackRequest(
                        service=input.service, environment=stage.environment, reason=reason
                    ),
                    RollbackResult,
                    stage=stage.name,
                )
            await self._notify(input, "error", "monitor.rolled_back", reason)
            return self._result("rolled_back", reason).model_copy(update={"rollback": outcome})
        await self._notify(
            input,
            "success",
            "monitor.healthy",
            f"{stage.environment} healthy for {stage.duration.total_seconds() / 60:g} min",
        )
        return self._result("healthy", "no confirmed violation")

    def _maybe_continue_as_new(self, input: MonitorInput, remaining: timedelta) -> None:
        """Hours-long watches roll over into a fresh history, carrying their counters."""
        if remaining > timedelta(0) and workflow.info().is_continue_as_new_suggested():
            elapsed = input.stage.duration - remaining
            workflow.continue_as_new(
                input.model_copy(
                    update={
                        "elapsed_s": elapsed.total_seconds(),
                        "checks": self._checks,
                        "transient": self._transient,
                        # Only the latest records: the count above keeps the total, and the
                        # input must stay far below Temporal's payload limit.
                        "violations": self._violations[-MAX_CARRIED_VIOLATIONS:],
                    }
                )
            )

    async def _watch(self, input: MonitorInput, duration: timedelta) -> timedelta:
        """Wait `duration` before a measurement; return the time it took. An interval whose
        generated load died with its worker measured nothing, so it is waited again, a bounded
        number of times in a row, instead of being judged."""
        watched = duration
        lost = not await self._wait(input, duration)
        repeats = 0
        while lost and repeats < MAX_LOST_INTERVALS and workflow.patched(REPEAT_LOST_INTERVAL):
            repeats += 1
            workflow.logger.warning("load lost during a monitor interval: repeating it")
            lost = not await self._wait(input, duration)
            watched += duration
        return watched

    async def _wait(self, input: MonitorInput, duration: timedelta) -> bool:
        """Sleep, generating load meanwhile if asked; False if that load did not run to its
        end."""
        load = start_load(
            input.measured or input.service,
            input.stage.environment,
            input.stage.load,
            duration.total_seconds(),
            stage=input.stage.name,
        )
        await workflow.sleep(
            duration,
            summary=f"{input.stage.name}: watching {input.stage.environment} for "
            f"{duration.total_seconds():g}s",
        )
        return await finish_load(load, cancel=False)

    async def _measure(self, input: MonitorInput) -> Analysis:
        stage = input.stage
        sample = await measure(
            input.measured or input.service,
            stage.environment,
            "stable",
            stage.criteria,
            input.metric_templates,
            stage=stage.name,
        )
        return analyse(stage.criteria, sample, stage.no_data)

    def _result(self, outcome: str, reason: str) -> MonitorResult:
        return MonitorResult.model_validate(
            {
                "outcome": outcome,
                "reason": reason,
                "checks": self._checks,
                "transient_violations": self._transient,
                "violations": self._violations,
            }
        )

    async def _notify(self, input: MonitorInput, level: str, event: str, message: str) -> None:
        await notify(
            level,
            event,
            message,
            input.service,
            input.stage.environment,
            stage=input.stage.name,
        )

    @workflow.query(description="Checks done, transient and confirmed violations so far.")
    def progress(self) -> MonitorResult:
        return self._result("healthy", "monitoring")
