"""The Slipway worker: the pipeline workflows plus the activities of the configured platform.

    python worker.py            # platform from SLIPWAY_* settings, Temporal from env config

Runs until SIGINT/SIGTERM, then stops polling and lets running activities finish (graceful
shutdown); Temporal hands anything unfinished to another replica.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from temporalio.client import Client
from temporalio.worker import Worker

from activities.backends import Backends
from activities.build import BuildActivities
from activities.decisions import DecisionActivities
from activities.deploy import DeployActivities
from activities.environments import EnvironmentActivities
from activities.metrics import MetricsActivities
from activities.notify import NotifyActivities
from activities.scan import ScanActivities
from activities.source import SourceActivities
from activities.test import SuiteActivities
from contracts import deployer_proof
from plumbing.sandbox import workflow_runner
from workflows.registry import WORKFLOWS

__all__ = ["DEFAULT_POLICY", "activities_for", "build_worker", "main"]

DEFAULT_POLICY = Path(__file__).resolve().parent / "pipelines" / "policy.yaml"
"""The demo's policy (unsigned decisions count); production workers name their own."""


def activities_for(
    backends: Backends,
    client: Client,
    *,
    search_attributes: bool = False,
    policy_file: Path = DEFAULT_POLICY,
) -> list[Callable[..., Any]]:
    """Bound activity methods, one object per concern, sharing the injected backends (and
    the worker's client, for the messages runs send to environment workflows; the policy
    file, which decisions are judged against)."""
    source = SourceActivities(backends.source)
    scan = ScanActivities(backends.scanners, backends.registry)
    test = SuiteActivities(backends.tests, backends.services)
    build = BuildActivities(backends.builder, backends.registry)
    deploy = DeployActivities(backends.target, backends.router)
    metrics = MetricsActivities(backends.metrics, backends.load)
    notify = NotifyActivities(backends.notifier)
    environments = EnvironmentActivities(client, search_attributes=search_attributes)
    decisions = DecisionActivities(policy_file)
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
        environments.control_canary,
        environments.run_status,
        decisions.check_decision,
        decisions.policy_in_force,
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
    policy_file: Path = DEFAULT_POLICY,
    **options: Any,
) -> Worker:
    """A worker running every workflow and the activities bound to `backends`.
    `search_attributes`: the namespace has ours (see `ensure_search_attributes`);
    `policy_file`: the worker's policy (SLIPWAY_POLICY_FILE). A process whose deployer key
    was not installed (`main` installs the configured one) gets a random one: enough for
    workers that share this process, not for replicas in others."""
    if not deployer_proof.has_key():
        deployer_proof.install_key(os.urandom(32))
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[*WORKFLOWS, *extra_workflows],
        activities=activities_for(
            backends, client, search_attributes=search_attributes, policy_file=policy_file
        ),
        # Blocking SDK calls run in threads (asyncio.to_thread); size the pool like the
        # activity slots so a busy worker never starves.
        activity_executor=ThreadPoolExecutor(max_concurrent_activities),
        max_concurrent_activities=max_concurrent_activities,
        # Runs parked at an approval gate for days need not all stay in memory: an evicted
        # run is replayed from history when its approval arrives (tens of ms, see bench).
        max_cached_workflows=max_cached_workflows,
        # The sandbox `slipway replay` uses too (plumbing/sandbox.py).
        workflow_runner=workflow_runner(),
        graceful_shutdown_timeout=timedelta(seconds=30),
        **options,
    )


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
    from activities.observability import (
        configure_logging,
        secrets_in_environment,
        secrets_in_settings,
    )
    from activities.settings import ConfigurationError, Settings
    from activities.worker_policy import PolicyError, load_policy
    from plumbing.codec import CodecError, codec_from_env
    from plumbing.connection import connect, task_queue

    try:
        settings = Settings.load()
    except ConfigurationError as err:
        raise SystemExit(f"worker: {err}") from None
    # Secret values are masked wherever they show up in a log line, tracebacks included.
    configure_logging(
        settings.log_level,
        secrets=[*secrets_in_settings(settings), *secrets_in_environment(os.environ)],
    )
    log = structlog.get_logger("slipway.worker")
    try:
        policy = load_policy(settings.policy_file)
    except PolicyError as err:
        raise SystemExit(f"worker: {err}") from None
    try:
        codec_from_env()  # a bad key ring stops the worker before it starts anything
    except CodecError as err:
        raise SystemExit(f"worker: payload encryption: {err}") from None
    key_file = settings.deployer_key_file or settings.state_dir / "deployer.key"
    try:
        key_file.parent.mkdir(parents=True, exist_ok=True)
        deployer_proof.install_key(deployer_proof.key_from_file(key_file))
    except (OSError, ValueError) as err:
        raise SystemExit(f"worker: deployer key {key_file}: {err}") from None
    try:
        backends = backends_from_settings(settings)
    except ConfigurationError as err:
        raise SystemExit(f"worker: {err}") from None
    except Exception as err:  # an engine or API that does not answer: one sentence, and the
        # traceback in the log for whoever needs it
        log.error("backends did not start", exc_info=True)
        raise SystemExit(f"worker: its backends did not start: {err}") from None
    client = await connect(metrics_port=settings.metrics_port)
    indexed = await ensure_search_attributes(client)
    worker = build_worker(
        client,
        backends,
        task_queue(),
        max_concurrent_activities=settings.max_activities,
        max_cached_workflows=settings.max_cached_workflows,
        search_attributes=indexed,
        policy_file=settings.policy_file,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "worker started",
        task_queue=task_queue(),
        platform=settings.platform,
        policy=policy.path,
        policy_hash=policy.hash,
    )
    async with worker:
        await stop.wait()
        log.info("worker stopping")


if __name__ == "__main__":
    asyncio.run(main())
