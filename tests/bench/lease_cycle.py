"""The lease cycle alone, as a pipeline's deploy goes through it: acquire (an activity sending
the request to the environment's inbox), the grant (the acquire's own answer when the
environment is free, as here; else the environment's signal, confirmed against its state),
the report of what serves, the release; each waited for in turn
(`RunLeases.background` off), for one environment and nothing else in the workflow.

Registered by the bench worker beside the baseline; the driver times it from the history.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from contracts.activity import Artifact, DeployRequest
    from contracts.messages import LeaseNotice
    from contracts.naming import LEASE_SIGNAL

from workflows.run_leases import RunLeases

__all__ = ["LeaseCycleInput", "LeaseCycleWorkflow"]


class LeaseCycleInput(BaseModel):
    service: str
    environment: str
    commit: str


@workflow.defn(name="BenchLeaseCycleWorkflow")
class LeaseCycleWorkflow:
    @workflow.init
    def __init__(self, input: LeaseCycleInput) -> None:
        self._leases = RunLeases(
            service=input.service, run=workflow.info().workflow_id, commit=input.commit
        )

    @workflow.run
    async def run(self, input: LeaseCycleInput) -> int:
        leases = self._leases
        env = input.environment
        token = await leases.acquire(env, "queue", "deploy", lambda _holder, _position: None)
        artifact = Artifact(digest="sha256:" + input.commit.ljust(64, "0")[:64], uri="memory://")
        request = DeployRequest(
            service=input.service,
            environment=env,
            slot="stable",
            artifact=artifact,
            fence=token,
        )
        await leases.report_serving(env, request)
        await leases.release(env, "bench: cycle done")
        return token

    @workflow.signal(name=LEASE_SIGNAL)
    async def environment_lease(self, notice: LeaseNotice) -> None:
        # As a pipeline takes it: checked against the environment's state first.
        if await self._leases.confirmed(notice):
            self._leases.on_notice(notice)
