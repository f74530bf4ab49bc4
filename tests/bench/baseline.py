"""The hand-written twin of the 15-stage bench definition: the same activities, called by name
with the same arguments, options and activity ids, in the same shape (one `gather` for the
fan-out), but with the flow written out instead of interpreted from a definition.

`PipelineWorkflow` / `BaselineWorkflow` run time is the orchestration overhead of the DAG
interpreter (ready sets, stage bookkeeping, status details, verdicts, the result model).
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from contracts.activity import (
        ActivityName,
        Artifact,
        BuildRequest,
        CheckoutRequest,
        DeployRequest,
        DeployResult,
        HttpCheck,
        HttpCheckReport,
        HttpCheckRequest,
        NotifyRequest,
        PublishRequest,
        ScanReport,
        ScanRequest,
        SuiteReport,
        SuiteRequest,
        Workspace,
    )
    from contracts.messages import PipelineInput
    from tests.bench.definitions import (
        INTEGRATION_COMMAND,
        PUBLISH_TAGS,
        SAST_SCANNERS,
        SECRETS_SCANNERS,
        SERVICE,
        SERVICE_PATH,
        UNIT_COMMAND,
    )
    from workflows.calls import NON_RETRYABLE, OPTIONS

__all__ = ["BaselineWorkflow"]

BASELINE_SERVICE = f"{SERVICE}-baseline"

T = TypeVar("T")


async def _call(name: ActivityName, arg: Any, result_type: type[T], activity_id: str) -> T:
    """`execute_activity` with the same per-kind options `workflows.calls.call` uses."""
    opts = OPTIONS[name]
    result: T = await workflow.execute_activity(
        name.value,
        arg,
        result_type=result_type,
        start_to_close_timeout=opts.start_to_close,
        heartbeat_timeout=opts.heartbeat,
        retry_policy=RetryPolicy(
            initial_interval=opts.initial_interval,
            backoff_coefficient=opts.backoff,
            maximum_interval=opts.max_interval,
            maximum_attempts=opts.max_attempts,
            non_retryable_error_types=NON_RETRYABLE,
        ),
        activity_id=activity_id,
    )
    return result


@workflow.defn(name="BenchBaselineWorkflow")
class BaselineWorkflow:
    @workflow.run
    async def run(self, input: PipelineInput) -> str:
        run = input.run
        ws = await _call(
            ActivityName.CHECKOUT,
            CheckoutRequest(repo=run.repo, commit=run.commit, service_path=SERVICE_PATH),
            Workspace,
            "checkout",
        )
        await asyncio.gather(
            _call(
                ActivityName.SCAN,
                ScanRequest(path=ws.path, scanners=SAST_SCANNERS),
                ScanReport,
                "sast",
            ),
            _call(
                ActivityName.RUN_TESTS,
                SuiteRequest(path=ws.path, command=UNIT_COMMAND, junit="junit.xml"),
                SuiteReport,
                "unit_tests",
            ),
            _call(
                ActivityName.RUN_TESTS,
                SuiteRequest(path=ws.path, command=INTEGRATION_COMMAND, junit="junit.xml"),
                SuiteReport,
                "integration_tests",
            ),
            _call(
                ActivityName.SCAN,
                ScanRequest(path=ws.path, scanners=SECRETS_SCANNERS),
                ScanReport,
                "secrets_scan",
            ),
        )
        # quality_gate: no activity.
        artifact = await _call(
            ActivityName.BUILD,
            BuildRequest(path=ws.path, service=SERVICE, commit=ws.commit, branch=run.branch),
            Artifact,
            "build",
        )
        branch = run.branch.replace("/", "-")
        tags = [t.format(branch=branch, sha=run.commit, sha12=run.sha12) for t in PUBLISH_TAGS]
        artifact = await _call(
            ActivityName.PUBLISH,
            PublishRequest(artifact=artifact, service=SERVICE, tags=tags),
            Artifact,
            "publish",
        )
        for env, short in (("development", "dev"), ("staging", "staging"), ("production", "prod")):
            await _call(
                ActivityName.DEPLOY,
                DeployRequest(
                    # Environments of its own: the pipeline's runs hold leases (fencing
                    # tokens) on the bench service's, which this lease-less baseline has not.
                    service=BASELINE_SERVICE,
                    environment=env,
                    slot="stable",
                    artifact=artifact,
                    strategy="rolling",
                ),
                DeployResult,
                f"deploy_{short}",
            )
            await _call(
                ActivityName.HTTP_CHECK,
                HttpCheckRequest(
                    service=SERVICE, environment=env, checks=[HttpCheck(path="/health")]
                ),
                HttpCheckReport,
                f"smoke_{short}",
            )
        await _call(
            ActivityName.NOTIFY,
            NotifyRequest(
                level="info",
                event="stage.notify",
                message=f"{SERVICE} {run.sha12} shipped",
                service=SERVICE,
            ),
            type(None),
            "notify",
        )
        return artifact.digest
