"""How a pipeline run restores the environments it changed: through its environment
workflows (leased runs) or the platform directly (runs from before leases).
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

from contracts.activity import (
    ActivityName,
    RollbackRequest,
    RollbackResult,
)
from contracts.definition.model import RollbackStage
from contracts.messages import (
    RollbackOutcome,
    StageState,
)
from workflows import telemetry
from workflows.calls import call
from workflows.pipeline.visibility import PipelineVisibility

__all__ = ["PipelineRollbacks"]


class PipelineRollbacks(PipelineVisibility):
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
