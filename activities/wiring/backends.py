"""The backend Protocols that activities delegate to.

Each platform (local, kubernetes) and provider (prometheus, ECR, docker, ...) implements some of
these. Every method must be idempotent: activities run at least once, so deploying the same
digest twice, setting the same weight twice or rolling back twice must be harmless.

The methods are synchronous: the SDKs behind them (docker, kubernetes, boto3,
prometheus-api-client) block, so activities call them in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from contracts.activity import (
    Artifact,
    BrowserTestReport,
    BrowserTestRequest,
    BuildRequest,
    CheckoutRequest,
    DeployRequest,
    DeployResult,
    Endpoint,
    EndpointRequest,
    FenceRequest,
    HttpCheckReport,
    HttpCheckRequest,
    LiveScanRequest,
    LoadReport,
    LoadRequest,
    LoadTestReport,
    LoadTestRequest,
    MetricsQuery,
    MetricsSample,
    NotifyRequest,
    PublishRequest,
    ReleaseSpec,
    RestoreRequest,
    RestoreResult,
    RollbackRequest,
    RollbackResult,
    ScannerReport,
    SecretRef,
    SuiteReport,
    SuiteRequest,
    WebAuditReport,
    WebAuditRequest,
    WeightRequest,
    Workspace,
)
from contracts.definition.service_templates import StartedServices

if TYPE_CHECKING:
    from activities.helpers.secrets import SecretResolver

__all__ = [
    "Backends",
    "BackingServices",
    "BrowserTester",
    "Builder",
    "CommitScanner",
    "DeployTarget",
    "DeployerBackends",
    "Heartbeat",
    "LiveScanner",
    "LoadGenerator",
    "LoadTester",
    "MetricsProvider",
    "Notifier",
    "ReferenceChecker",
    "ReferenceCheckers",
    "Registry",
    "RunnerBackends",
    "Scanner",
    "SourceProvider",
    "SuiteRunner",
    "TrafficRouter",
    "WebAuditor",
]

Heartbeat = Callable[[str], None]
"""Called by long operations with a short progress note; activities forward it to Temporal."""


@runtime_checkable
class SourceProvider(Protocol):
    def ensure(self, request: CheckoutRequest) -> Workspace:
        """Return a checkout of the commit, reusing a cached one for the same sha."""
        ...


@runtime_checkable
class Scanner(Protocol):
    name: str

    def scan(self, path: str) -> ScannerReport:
        """Scan a source tree. Report `available=False` (with a reason) when the scanner or its
        data source cannot be reached: never an empty, passing report."""
        ...


@runtime_checkable
class CommitScanner(Protocol):
    """A scanner that reads what a server analysed for one commit (SonarQube)."""

    name: str

    def scan_commit(self, path: str, commit: str, branch: str) -> ScannerReport:
        """The server's report of `commit`'s analysis on `branch`; unavailable when it has
        none (never another commit's)."""
        ...


@runtime_checkable
class SuiteRunner(Protocol):
    def run(self, request: SuiteRequest, heartbeat: Heartbeat) -> SuiteReport:
        """Run the tests and parse their reports. A failing test is data, not an exception."""
        ...


class BackingServices(Protocol):
    def started(
        self, services: Sequence[str], progress: Heartbeat
    ) -> AbstractContextManager[StartedServices]:
        """Start `services` ('postgres:16', 'redis:7') for one test run, health-checked; stop
        them and delete their data when the block ends, however it ends."""
        ...


@runtime_checkable
class Builder(Protocol):
    def build(self, request: BuildRequest, heartbeat: Heartbeat) -> Artifact:
        """Build an artifact with a content digest; the same input yields the same digest."""
        ...


@runtime_checkable
class Registry(Protocol):
    def publish(self, request: PublishRequest) -> Artifact:
        """Store the artifact under the tags; return it with the digest the registry reports."""
        ...

    def scan(self, artifact: Artifact) -> ScannerReport:
        """Findings the registry (or an image scanner) reports for the artifact."""
        ...


@runtime_checkable
class DeployTarget(Protocol):
    def deploy(self, request: DeployRequest, heartbeat: Heartbeat) -> DeployResult:
        """Run the artifact in the slot and wait for it to be healthy (a rollout that misses
        its deadline raises a DeployFailed verdict naming the reason)."""
        ...

    def promote(self, request: DeployRequest, heartbeat: Heartbeat) -> DeployResult:
        """Make the slot's version the stable one (canary → stable, or blue/green switch)."""
        ...

    def rollback(self, request: RollbackRequest, heartbeat: Heartbeat) -> RollbackResult:
        """Legacy (runs started before environment leases): restore the previous version;
        a second call changes nothing."""
        ...

    def restore(self, request: RestoreRequest, heartbeat: Heartbeat) -> RestoreResult:
        """Put the environment back on `request.target` (canary weight 0 and canary down
        first); what already serves the target is left alone. Fenced like a deploy."""
        ...

    def fence(self, request: FenceRequest) -> ReleaseSpec | None:
        """Make `request.token` the environment's fencing token: from now on `deploy`,
        `promote`, `restore` and `set_weight` refuse a lower one (`check_fence`), at the point
        where they change anything. Returns what serves the environment now (None: nothing),
        so the environment's record starts from, and stays with, the platform's truth."""
        ...

    def check(self, request: HttpCheckRequest) -> HttpCheckReport:
        """Probe the environment (or one slot) over HTTP."""
        ...

    def endpoint(self, request: EndpointRequest) -> Endpoint:
        """Where the service answers in the environment (or one slot): the URL and headers
        that HTTP checks use, for the runner's live-test tools and generated load."""
        ...


@runtime_checkable
class ReferenceChecker(Protocol):
    """A platform whose releases take resources and secrets by reference to what exists
    (Kubernetes): what of a release's does not resolve there, before anything deploys. A
    platform without it (local) makes its resources on first use and takes every source."""

    def reference_problems(
        self, service: str, environment: str, resources: list[str], env: dict[str, str]
    ) -> list[tuple[str, str, str]]:
        """(field, reference, problem) for each resource reference that does not resolve;
        `field` is 'env.<NAME>' or 'resources'."""
        ...

    def secret_problem(self, ref: SecretRef) -> str | None:
        """Why the platform's releases cannot take `ref`, or None."""
        ...


@runtime_checkable
class ReferenceCheckers(Protocol):
    """A target that routes environments to platforms (the worker's dispatch)."""

    def reference_checker(self, environment: str) -> ReferenceChecker | None: ...


@runtime_checkable
class TrafficRouter(Protocol):
    def set_weight(self, request: WeightRequest) -> None:
        """Route `canary_weight`% of the environment's traffic to the canary slot; refused for
        a stale fencing token (`check_fence`)."""
        ...

    def verify_weight(self, request: WeightRequest) -> bool:
        """Read the routing back and say whether it matches."""
        ...


@runtime_checkable
class MetricsProvider(Protocol):
    def query(self, query: MetricsQuery) -> MetricsSample:
        """Measure the slot; a metric with no samples (or NaN) is `None`, never a pass."""
        ...


@runtime_checkable
class LoadGenerator(Protocol):
    def run(self, request: LoadRequest, heartbeat: Heartbeat) -> LoadReport:
        """Send bounded traffic to the environment's entry point."""
        ...


@runtime_checkable
class LoadTester(Protocol):
    tool: str

    def run(self, request: LoadTestRequest, heartbeat: Heartbeat) -> LoadTestReport:
        """Drive the request's load at its endpoint with a real load tool and report what it
        measured; `available=False` (with a reason) when the tool cannot run."""
        ...


@runtime_checkable
class LiveScanner(Protocol):
    name: str

    def scan(self, request: LiveScanRequest, heartbeat: Heartbeat) -> ScannerReport:
        """Scan the running service at the request's endpoint within its time budget; report
        `available=False` when the scanner or the target cannot be reached: never an empty,
        passing report."""
        ...


@runtime_checkable
class BrowserTester(Protocol):
    def run(self, request: BrowserTestRequest, heartbeat: Heartbeat) -> BrowserTestReport:
        """Run the service's browser tests against the request's endpoint; `available=False`
        (with a reason) when no browser can run them."""
        ...


@runtime_checkable
class WebAuditor(Protocol):
    def audit(self, request: WebAuditRequest, heartbeat: Heartbeat) -> WebAuditReport:
        """Audit the endpoint's pages (Lighthouse, axe); `available=False` when the tools,
        the browser or the target cannot be reached: never an empty, passing report."""
        ...


@runtime_checkable
class Notifier(Protocol):
    def send(self, request: NotifyRequest) -> None:
        """Deliver the event (a log line, a Slack message)."""
        ...


@dataclass
class RunnerBackends:
    """What the runner's activities (contracts.activity.RUNNER_ACTIVITIES) use: they run the
    commit's code, so nothing here holds a platform credential or the policy. The builder
    writes artifacts where the deployer reads them: the wheel store on a filesystem both
    share, or the registry an image builder pushes to."""

    source: SourceProvider
    tests: SuiteRunner
    builder: Builder
    scanners: dict[str, Scanner] = field(default_factory=dict)
    services: BackingServices | None = None
    load_tester: LoadTester | None = None
    live_scanners: dict[str, LiveScanner] = field(default_factory=dict)
    browser_tester: BrowserTester | None = None
    web_auditor: WebAuditor | None = None


@dataclass
class DeployerBackends:
    """What the deployer's activities use: platforms, traffic, metrics and load, the
    registry (publish, image findings) and the notifier."""

    target: DeployTarget
    router: TrafficRouter
    metrics: MetricsProvider
    notifier: Notifier
    registry: Registry | None = None
    load: LoadGenerator | None = None
    secrets: SecretResolver | None = None


@dataclass
class Backends:
    """The implementations activities delegate to, built once per worker process: both
    trust domains' (`runner()`, `deployer()`), for a worker that serves both."""

    source: SourceProvider
    tests: SuiteRunner
    builder: Builder
    target: DeployTarget
    router: TrafficRouter
    metrics: MetricsProvider
    notifier: Notifier
    scanners: dict[str, Scanner] = field(default_factory=dict)
    registry: Registry | None = None
    load: LoadGenerator | None = None
    services: BackingServices | None = None
    secrets: SecretResolver | None = None
    load_tester: LoadTester | None = None
    live_scanners: dict[str, LiveScanner] = field(default_factory=dict)
    browser_tester: BrowserTester | None = None
    web_auditor: WebAuditor | None = None

    def runner(self) -> RunnerBackends:
        return RunnerBackends(
            source=self.source,
            tests=self.tests,
            builder=self.builder,
            scanners=self.scanners,
            services=self.services,
            load_tester=self.load_tester,
            live_scanners=self.live_scanners,
            browser_tester=self.browser_tester,
            web_auditor=self.web_auditor,
        )

    def deployer(self) -> DeployerBackends:
        return DeployerBackends(
            target=self.target,
            router=self.router,
            metrics=self.metrics,
            notifier=self.notifier,
            registry=self.registry,
            load=self.load,
            secrets=self.secrets,
        )

    @classmethod
    def of(cls, runner: RunnerBackends, deployer: DeployerBackends) -> Backends:
        return cls(
            source=runner.source,
            tests=runner.tests,
            builder=runner.builder,
            scanners=runner.scanners,
            services=runner.services,
            load_tester=runner.load_tester,
            live_scanners=runner.live_scanners,
            browser_tester=runner.browser_tester,
            web_auditor=runner.web_auditor,
            target=deployer.target,
            router=deployer.router,
            metrics=deployer.metrics,
            notifier=deployer.notifier,
            registry=deployer.registry,
            load=deployer.load,
            secrets=deployer.secrets,
        )
