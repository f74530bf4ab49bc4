"""The Slipway worker: the pipeline workflows plus the activities of the configured platform.

    python worker.py            # platform from SLIPWAY_* settings, Temporal from env config

Runs until SIGINT/SIGTERM, then stops polling and lets running activities finish (graceful
shutdown); Temporal hands anything unfinished to another replica.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import structlog
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.backends import Backends
from activities.build import BuildActivities
from activities.deploy import DeployActivities
from activities.environments import EnvironmentActivities
from activities.metrics import MetricsActivities
from activities.notify import NotifyActivities
from activities.scan import ScanActivities
from activities.source import SourceActivities
from activities.test import TestActivities
from workflows.canary import CanaryWorkflow
from workflows.environment import EnvironmentWorkflow
from workflows.monitor import MonitorWorkflow
from workflows.pipeline import PipelineWorkflow
from workflows.rollback import RollbackWorkflow

__all__ = ["WORKFLOWS", "activities_for", "build_worker", "main"]

WORKFLOWS: Sequence[type] = (
    PipelineWorkflow,
    CanaryWorkflow,
    MonitorWorkflow,
    EnvironmentWorkflow,
    # Kept for manual rollbacks started before environment workflows took them over.
    RollbackWorkflow,
)


def activities_for(
    backends: Backends, client: Client, *, search_attributes: bool = False
) -> list[Callable[..., Any]]:
    """Bound activity methods, one object per concern, sharing the injected backends (and
    the worker's client, for the messages runs send to environment workflows)."""
    source = SourceActivities(backends.source)
    scan = ScanActivities(backends.scanners, backends.registry)
    test = TestActivities(backends.tests)
    build = BuildActivities(backends.builder, backends.registry)
    deploy = DeployActivities(backends.target, backends.router)
    metrics = MetricsActivities(backends.metrics, backends.load)
    notify = NotifyActivities(backends.notifier)
    environments = EnvironmentActivities(client, search_attributes=search_attributes)
    return [
        source.checkout,
        scan.scan,
        scan.scan_image,
        test.run_tests,
        test.run_command,
        build.build,
        build.publish,
        deploy.deploy,
        deploy.promote,
        deploy.set_weight,
        deploy.rollback,
        deploy.fence,
        deploy.restore,
        deploy.http_check,
        metrics.query_metrics,
        metrics.generate_load,
        notify.notify,
        environments.acquire_lease,
        environments.report_serving,
        environments.release_lease,
        environments.request_rollback,
        environments.run_status,
    ]


def build_worker(
    client: Client,
    backends: Backends,
    task_queue: str,
    *,
    max_concurrent_activities: int = 20,
    max_cached_workflows: int = 300,
    extra_workflows: Sequence[type] = (),
    search_attributes: bool = False,
    **options: Any,
) -> Worker:
    """A worker running every workflow and the activities bound to `backends`.
    `search_attributes`: the namespace has ours (see `ensure_search_attributes`)."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[*WORKFLOWS, *extra_workflows],
        activities=activities_for(backends, client, search_attributes=search_attributes),
        # Blocking SDK calls run in threads (asyncio.to_thread); size the pool like the
        # activity slots so a busy worker never starves.
        activity_executor=ThreadPoolExecutor(max_concurrent_activities),
        max_concurrent_activities=max_concurrent_activities,
        # Runs parked at an approval gate for days need not all stay in memory: an evicted
        # run is replayed from history when its approval arrives (tens of ms, see bench).
        max_cached_workflows=max_cached_workflows,
        # Our workflow modules and their pure dependencies hold no per-run state: sharing
        # them across runs instead of re-importing per run saves ~200 kB per cached run.
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
        ),
        graceful_shutdown_timeout=timedelta(seconds=30),
        **options,
    )


PASSTHROUGH = ("workflows", "activities", "pydantic", "pydantic_core", "yaml", "annotated_types")


async def ensure_search_attributes(client: Client) -> bool:
    """Register our search attributes if the namespace lacks them (dev server, self-hosted);
    whether the namespace has them now. Temporal Cloud refuses this call from workers: there,
    create them once in the console."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import (
        AddSearchAttributesRequest,
        ListSearchAttributesRequest,
    )

    from workflows.naming import SEARCH_ATTRIBUTES

    log = structlog.get_logger("slipway.worker")
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        missing = {
            key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
            for key in SEARCH_ATTRIBUTES
            if key.name not in existing.custom_attributes
        }
        if missing:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
            )
            log.info("search attributes registered", names=sorted(missing))
    except Exception as exc:
        log.warning("could not check/register search attributes", error=str(exc))
        return False
    return True


async def main() -> None:
    from activities.factory import backends_from_settings
    from activities.observability import configure_logging
    from activities.settings import ConfigurationError, Settings
    from starters.connection import connect, task_queue

    try:
        settings = Settings.load()
    except ConfigurationError as err:
        raise SystemExit(f"worker: {err}") from None
    configure_logging(settings.log_level)
    log = structlog.get_logger("slipway.worker")
    backends = backends_from_settings(settings)
    client = await connect(metrics_port=settings.metrics_port)
    indexed = await ensure_search_attributes(client)
    worker = build_worker(
        client,
        backends,
        task_queue(),
        max_concurrent_activities=settings.max_activities,
        max_cached_workflows=settings.max_cached_workflows,
        search_attributes=indexed,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker started", task_queue=task_queue(), platform=settings.platform)
    try:
        async with worker:
            await stop.wait()
            log.info("worker stopping")
    finally:
        backends.close()


if __name__ == "__main__":
    asyncio.run(main())
