"""PipelineWorkflow as a careless change would make it: an extra timer before the stages.
Runs recorded with it must fail to replay against the real code (a nondeterminism error)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts.messages import PipelineInput, PipelineResult
    from workflows.pipeline.workflow import PipelineWorkflow


@workflow.defn(name="PipelineWorkflow")
class ChangedPipelineWorkflow(PipelineWorkflow):
    @workflow.run
    async def run(self, input: PipelineInput) -> PipelineResult:
        await workflow.sleep(timedelta(milliseconds=10))
        return await super().run(input)
