"""The Slipway worker: the pipeline workflows plus the activities of the configured platform.

    python worker.py                   # both trust domains in one process (make worker, demo)
    python worker.py --role deployer   # workflows + every activity that changes an environment
    python worker.py --role runner     # only the untrusted work: checkout, scan, test, command,
                                       # build (contracts.activity.RUNNER_ACTIVITIES)

The *deployer* polls the task queue (SLIPWAY_TASK_QUEUE), and `<task queue>-environment-work`
for the environments' own work (`PipelineWorker`), and holds the policy, the codec key, the
platform and registry credentials. The *runner* polls the runner's queue
(SLIPWAY_RUNNER_TASK_QUEUE, default `<task queue>-runner`), registers no workflow, and reads
neither the policy nor a platform credential; it needs the codec key only when payloads are
encrypted (its inputs and results are payloads). `all` runs both in one process: every
activity on the task queue too, for runs started without a runner queue.

Runs until SIGINT/SIGTERM, then stops polling and lets running activities finish (graceful
shutdown); Temporal hands anything unfinished to another replica.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import structlog
from temporalio.client import Client
from temporalio.worker import Worker, WorkerConfig

from activities.build import BuildActivities
from activities.decisions import DecisionActivities
from activities.deploy import DeployActivities
from activities.environments import EnvironmentActivities
from activities.live_tests import LiveTestActivities
from activities.metrics import MetricsActivities
from activities.notify import NotifyActivities
from activities.scan import ScanActivities
from activities.source import SourceActivities
from activities.testing import SuiteActivities
from activities.web_tests import WebTestActivities
from activities.wiring.backends import Backends, DeployerBackends, RunnerBackends
from contracts import deployer_proof
from contracts.activity import ActivityName
from contracts.naming import environment_work_queue
from plumbing.deployer_key import key_from_file
from plumbing.sandbox import workflow_runner
from plumbing.settings import Role
from workflows.registry import WORKFLOWS

if TYPE_CHECKING:
    from plumbing.settings import Settings

__all__ = [
    "DEFAULT_POLICY",
    "ENVIRONMENT_WORK",
    "PipelineWorker",
    "activities_for",
    "build_deployer_worker",
    "build_runner_worker",
    "build_worker",
    "deployer_activities",
    "main",
    "runner_activities",
]

DEFAULT_POLICY = Path(__file__).resolve().parent / "pipelines" / "policy.yaml"
"""The demo's policy (unsigned decisions count); production workers name their own."""


ENVIRONMENT_WORK = frozenset({ActivityName.FENCE, ActivityName.RUN_STATUS, ActivityName.RESTORE})
"""What environment workflows send to their own queue (`environment_work_queue`)."""
ENVIRONMENT_WORK_SLOTS = 10
"""Its slots: fences and holder checks take a moment; a restore can wait minutes for a
rollout, so ten rollbacks at once delay fences (never deadlock them)."""


class PipelineWorker:
    """The pipeline's worker: the workflows and the deployer's activities on the task queue,
    and the environments' own work (fence, holder check, restore) on `environment_work_queue`
    in slots of its own. An acquire or a rollback waits in an environment's update for that
    work while its activity holds a slot of the task queue; were the work on the same queue,
    enough waiting messages would hold every slot it needs."""

    def __init__(self, main: Worker, environment_work: Worker) -> None:
        self.main = main
        self.environment_work = environment_work
        self._running = contextlib.AsyncExitStack()

    @property
    def task_queues(self) -> list[str]:
        return [self.main.task_queue, self.environment_work.task_queue]

    def config(self) -> WorkerConfig:
        return self.main.config()

    async def __aenter__(self) -> PipelineWorker:
        async with contextlib.AsyncExitStack() as starting:  # one that fails stops the other
            await starting.enter_async_context(self.environment_work)
            await starting.enter_async_context(self.main)
            self._running = starting.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._running.aclose()  # the workflows stop first, then their work


def runner_activities(backends: RunnerBackends) -> list[Callable[..., Any]]:
    """The runner's activities, exactly `RUNNER_ACTIVITIES`: they run the commit's code and
    get nothing that moves an environment (no client, no policy, no registry to publish)."""
    source = SourceActivities(backends.source)
    scan = ScanActivities(backends.scanners)
    test = SuiteActivities(backends.tests, backends.services)
    build = BuildActivities(backends.builder)
    live = LiveTestActivities(backends.load_tester, backends.live_scanners)
    web = WebTestActivities(backends.browser_tester, backends.web_auditor)
    return [
        source.checkout,
        scan.scan,
        test.run_tests,
        test.run_command,
        build.build,
        live.load_test,
        live.live_scan,
        web.browser_tests,
        web.web_audit,
    ]


def deployer_activities(
    backends: DeployerBackends,
    client: Client,
    *,
    search_attributes: bool = False,
    policy_file: Path = DEFAULT_POLICY,
) -> list[Callable[..., Any]]:
    """The deployer's activities: every one that changes or judges an environment, with the
    worker's client (messages to environment workflows) and policy file (decisions)."""
    scan = ScanActivities({}, backends.registry)
    build = BuildActivities(None, backends.registry)
    deploy = DeployActivities(backends.target, backends.router, backends.secrets)
    metrics = MetricsActivities(backends.metrics, backends.load)
    notify = NotifyActivities(backends.notifier, policy_file)
    environments = EnvironmentActivities(client, search_attributes=search_attributes)
    decisions = DecisionActivities(policy_file)
    return [
        scan.scan_image,
        build.publish,
        deploy.deploy,
        deploy.promote,
        deploy.set_weight,
        deploy.rollback,
        deploy.fence,
        deploy.restore,
        deploy.http_check,
        deploy.resolve_endpoint,
        deploy.check_references,
        metrics.query_metrics,
        metrics.generate_load,
        notify.notify,
        environments.acquire_lease,
        environments.report_serving,
        environments.release_lease,
        environments.request_rollback,
        environments.control_canary,
        environments.run_status,
        environments.confirm_lease,
        decisions.check_decision,
        decisions.policy_in_force,
    ]


def activities_for(
    backends: Backends,
    client: Client,
    *,
    search_attributes: bool = False,
    policy_file: Path = DEFAULT_POLICY,
) -> list[Callable[..., Any]]:
    """Both trust domains' activities, one object per concern, sharing the injected backends
    (and the worker's client, for the messages runs send to environment workflows; the policy
    file, which decisions are judged against)."""
    return [
        *runner_activities(backends.runner()),
        *deployer_activities(
            backends.deployer(),
            client,
            search_attributes=search_attributes,
            policy_file=policy_file,
        ),
    ]


def build_worker(
    client: Client,
    backends: Backends | DeployerBackends,
    task_queue: str,
    *,
    max_concurrent_activities: int = 20,
    max_cached_workflows: int = 300,
    extra_workflows: Sequence[type] = (),
    search_attributes: bool = False,
    policy_file: Path = DEFAULT_POLICY,
    **options: Any,
) -> PipelineWorker:
    """A worker running every workflow, bound to `backends`, on one task queue (and the
    environments' own work on theirs, `PipelineWorker`). With
    `Backends` it runs both trust domains' activities (tests, and `--role all` for runs
    without a runner queue); with `DeployerBackends` it is the deployer: the deployer's
    activities, none of the runner's (a run that sends one here has it fail as not
    registered, never run beside credentials).
    `search_attributes`: the namespace has ours (see `ensure_search_attributes`);
    `policy_file`: the worker's policy (SLIPWAY_POLICY_FILE)."""
    if isinstance(backends, Backends):
        activities = activities_for(
            backends, client, search_attributes=search_attributes, policy_file=policy_file
        )
    else:
        activities = deployer_activities(
            backends, client, search_attributes=search_attributes, policy_file=policy_file
        )
    main = _workflow_worker(
        client,
        task_queue,
        activities,
        max_concurrent_activities=max_concurrent_activities,
        max_cached_workflows=max_cached_workflows,
        extra_workflows=extra_workflows,
        **options,
    )
    # The activities' method names are their registered names (ActivityName values).
    own_work = [fn for fn in activities if fn.__name__ in ENVIRONMENT_WORK]
    if {fn.__name__ for fn in own_work} != ENVIRONMENT_WORK:  # else fences would wait for ever
        raise ValueError(f"the worker's activities lack some of {sorted(ENVIRONMENT_WORK)}")
    environment_work = Worker(
        client,
        task_queue=environment_work_queue(task_queue),
        activities=own_work,
        activity_executor=ThreadPoolExecutor(ENVIRONMENT_WORK_SLOTS),
        max_concurrent_activities=ENVIRONMENT_WORK_SLOTS,
        graceful_shutdown_timeout=timedelta(seconds=30),
        **{k: v for k, v in options.items() if k in ("interceptors", "identity")},
    )
    return PipelineWorker(main, environment_work)


build_deployer_worker = build_worker
"""The deployer's worker: `build_worker` given `DeployerBackends`."""


def build_runner_worker(
    client: Client,
    backends: RunnerBackends,
    task_queue: str,
    *,
    max_concurrent_activities: int = 20,
    **options: Any,
) -> Worker:
    """The runner: the runner's activities only, on the runner's task queue, and no
    workflow: workflow code decides what moves an environment, so it runs where the
    policy is. Refuses `workflows` and `activities`."""
    for refused in ("workflows", "activities", "workflow_runner"):
        if refused in options:
            raise ValueError(
                f"a runner worker takes no {refused}: it runs the runner's activities "
                "(RUNNER_ACTIVITIES) only; workflows and the deployer's activities run on "
                "the deployer"
            )
    return Worker(
        client,
        task_queue=task_queue,
        activities=runner_activities(backends),
        activity_executor=ThreadPoolExecutor(max_concurrent_activities),
        max_concurrent_activities=max_concurrent_activities,
        graceful_shutdown_timeout=timedelta(seconds=30),
        **options,
    )


def _workflow_worker(
    client: Client,
    task_queue: str,
    activities: Sequence[Callable[..., Any]],
    *,
    max_concurrent_activities: int,
    max_cached_workflows: int,
    extra_workflows: Sequence[type],
    **options: Any,
) -> Worker:
    """Workflows run where the deployer key is. A process whose key was not installed
    (`main` installs the configured one) gets a random one: enough for workers that share
    this process, not for replicas in others."""
    if not deployer_proof.has_key():
        deployer_proof.install_key(os.urandom(32))
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[*WORKFLOWS, *extra_workflows],
        activities=activities,
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

    from contracts.naming import SEARCH_ATTRIBUTES

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


def parse_role(argv: Sequence[str] | None = None) -> Role | None:
    """`--role deployer|runner|all`; None when not given (SLIPWAY_ROLE, else `all`)."""
    parser = argparse.ArgumentParser(prog="worker.py", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--role",
        choices=get_args(Role),
        default=None,
        help="the trust domain(s) to serve (default: SLIPWAY_ROLE, else all)",
    )
    role: Role | None = parser.parse_args(argv).role
    return role


async def main(argv: Sequence[str] | None = None) -> None:
    from activities.providers.execution.sandbox import configure as configure_sandbox
    from activities.wiring.factory import (
        backends_from_settings,
        deployer_backends_from_settings,
        runner_backends_from_settings,
    )
    from activities.wiring.observability import (
        configure_logging,
        secrets_in_environment,
        secrets_in_settings,
    )
    from plumbing.codec import CodecError, codec_from_env
    from plumbing.connection import connect, runner_task_queue, task_queue
    from plumbing.settings import ConfigurationError, Settings
    from plumbing.worker_policy import PolicyError, load_policy

    role = parse_role(argv)
    try:
        settings = Settings.for_role(role)
    except ConfigurationError as err:
        raise SystemExit(f"worker: {err}") from None
    # Secret values are masked wherever they show up in a log line, tracebacks included.
    configure_logging(
        settings.log_level,
        secrets=[*secrets_in_settings(settings), *secrets_in_environment(os.environ)],
    )
    log = structlog.get_logger("slipway.worker")
    deployer = settings.role != "runner"
    policy = None
    if deployer:  # the runner never reads the policy: it judges nothing
        try:
            policy = load_policy(settings.policy_file)
        except PolicyError as err:
            raise SystemExit(f"worker: {err}") from None
    try:
        # A bad key ring stops the worker before it starts anything. The runner needs the
        # key only when payloads are encrypted: its inputs and results are payloads.
        codec_from_env()
    except CodecError as err:
        raise SystemExit(f"worker: payload encryption: {err}") from None
    # Untrusted steps (tests, command stages, builds, installs, scanners) run in a sandbox,
    # or are refused where it cannot run unless the policy (a runner, which reads no policy:
    # SLIPWAY_SANDBOX) says `sandbox: off`.
    sandbox = configure_sandbox(policy.policy.sandbox if policy else settings.sandbox)
    if sandbox.active:
        log.info(sandbox.describe())
    else:
        log.warning(sandbox.describe())
    if deployer:  # the runner never holds the key that moves environments
        key_file = settings.deployer_key_file or settings.state_dir / "deployer.key"
        try:
            key_file.parent.mkdir(parents=True, exist_ok=True)
            deployer_proof.install_key(key_from_file(key_file))
        except (OSError, ValueError) as err:
            raise SystemExit(f"worker: deployer key {key_file}: {err}") from None
    try:
        backends = _backends_for(
            settings,
            backends_from_settings,
            runner_backends_from_settings,
            deployer_backends_from_settings,
        )
    except ConfigurationError as err:
        raise SystemExit(f"worker: {err}") from None
    except Exception as err:  # an engine or API that does not answer: one sentence, and the
        # traceback in the log for whoever needs it
        log.error("backends did not start", exc_info=True)
        raise SystemExit(f"worker: its backends did not start: {err}") from None
    client = await connect(metrics_port=settings.metrics_port)
    queue, runner_queue = task_queue(), runner_task_queue()
    workers: list[Worker | PipelineWorker] = []
    if isinstance(backends, RunnerBackends):
        workers.append(
            build_runner_worker(
                client, backends, runner_queue, max_concurrent_activities=settings.max_activities
            )
        )
    else:
        indexed = await ensure_search_attributes(client)
        options: dict[str, Any] = {
            "max_concurrent_activities": settings.max_activities,
            "max_cached_workflows": settings.max_cached_workflows,
            "search_attributes": indexed,
            "policy_file": settings.policy_file,
        }
        if isinstance(backends, Backends):
            # `all`: every activity on the task queue (runs started without a runner queue)
            # and the runner's on the runner's queue, one set of backends.
            workers.append(build_worker(client, backends, queue, **options))
            workers.append(
                build_runner_worker(
                    client,
                    backends.runner(),
                    runner_queue,
                    max_concurrent_activities=settings.max_activities,
                )
            )
        else:
            workers.append(build_deployer_worker(client, backends, queue, **options))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "worker started",
        role=settings.role,
        task_queues=[
            q
            for w in workers
            for q in (w.task_queues if isinstance(w, PipelineWorker) else [w.task_queue])
        ],
        platform=settings.platform if deployer else None,
        policy=policy.path if policy else None,
        policy_hash=policy.hash if policy else None,
        sandbox="bwrap" if sandbox.active else f"{sandbox.mode}, not sandboxed",
    )
    async with contextlib.AsyncExitStack() as running:
        for worker in workers:
            await running.enter_async_context(worker)
        await stop.wait()
        log.info("worker stopping")


def _backends_for(
    settings: Settings,
    both: Callable[[Settings], Backends],
    runner: Callable[[Settings], RunnerBackends],
    deployer: Callable[[Settings], DeployerBackends],
) -> Backends | RunnerBackends | DeployerBackends:
    """What the role builds: a runner never starts a platform or a registry client; a
    deployer never starts backing services (it would stop a runner's on the same host)."""
    if settings.role == "runner":
        return runner(settings)
    if settings.role == "deployer":
        return deployer(settings)
    return both(settings)


if __name__ == "__main__":
    asyncio.run(main())
