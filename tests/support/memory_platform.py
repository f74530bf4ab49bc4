"""In-memory backends: every Protocol, no processes, for workflow tests and benchmarks.

They behave like the real ones where a workflow can tell (idempotent deploys, rollback
restores the previous digest, weights read back) and record every call so tests can assert
what happened. Behaviour is scripted through plain attributes and callables.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from activities.wiring.backends import Heartbeat
from contracts.activity import (
    Artifact,
    BuildRequest,
    CheckoutRequest,
    DeployRequest,
    DeployResult,
    EndpointRequest,
    FenceRequest,
    Finding,
    FunctionComplexity,
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
    Severity,
    SuiteReport,
    SuiteRequest,
    WeightRequest,
    Workspace,
)
from contracts.activity import Endpoint as HttpEndpoint
from contracts.definition.metric_presets import label_value, render, window_duration
from contracts.definition.service_templates import Endpoint, StartedServices, parse_service

__all__ = [
    "MemoryBackingServices",
    "MemoryBuilder",
    "MemoryLiveScanner",
    "MemoryLoadTester",
    "MemoryNotifier",
    "MemoryPlatform",
    "MemoryScanner",
    "MemorySource",
    "MemorySuiteRunner",
    "ScriptedMetrics",
]


class MemorySource:
    """Checkouts that exist only as names; `delay_s` simulates a slow clone; `commit_times`
    are the committer times git records (by commit sha; else 2026-01-01)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls: list[CheckoutRequest] = []
        self.commit_times: dict[str, datetime] = {}

    def ensure(self, request: CheckoutRequest) -> Workspace:
        self.calls.append(request)
        time.sleep(self.delay_s)
        return Workspace(
            path=f"/memory/{request.commit[:12]}/{request.service_path}",
            commit=request.commit,
            commit_time=self.commit_times.get(request.commit, datetime(2026, 1, 1, tzinfo=UTC)),
        )


class MemoryScanner:
    """A scanner returning the findings it was given."""

    def __init__(
        self,
        name: str,
        findings: list[Finding] | None = None,
        available: bool = True,
        delay_s: float = 0.0,
        metrics: dict[str, float] | None = None,
        complexity_counts: dict[int, int] | None = None,
        worst_functions: list[FunctionComplexity] | None = None,
    ) -> None:
        self.name = name
        self.metrics = metrics or {}
        self.complexity_counts = complexity_counts or {}
        self.worst_functions = worst_functions or []
        self.findings = findings or []
        self.available = available
        self.delay_s = delay_s
        self.calls = 0

    def scan(self, path: str) -> ScannerReport:
        self.calls += 1
        time.sleep(self.delay_s)
        if not self.available:
            return ScannerReport(scanner=self.name, available=False, reason="scripted outage")
        return ScannerReport(
            scanner=self.name,
            findings=self.findings,
            metrics=self.metrics,
            complexity_counts=self.complexity_counts,
            worst_functions=self.worst_functions,
        )

    @staticmethod
    def finding(scanner: str, severity: Severity, rule: str = "R1") -> Finding:
        return Finding(scanner=scanner, rule=rule, severity=severity, message="scripted")


class MemorySuiteRunner:
    """Test results per command keyword; `delays` per keyword to show stages overlap."""

    def __init__(self) -> None:
        self.reports: dict[str, SuiteReport] = {}
        self.delays: dict[str, float] = {}
        self.calls: list[tuple[str, float, float]] = []  # (command, start, end) wall times

    def run(self, request: SuiteRequest, heartbeat: Heartbeat) -> SuiteReport:
        key = " ".join(request.command)
        start = time.monotonic()
        for word, delay in self.delays.items():
            if word in key:
                time.sleep(delay)
        self.calls.append((key, start, time.monotonic()))
        for word, report in self.reports.items():
            if word in key:
                return report
        return SuiteReport(
            exit_code=0, tests=10, failures=0, errors=0, skipped=0, coverage_pct=90.0
        )


class MemoryBackingServices:
    """Backing services that start nothing: endpoints on made-up ports, for the memory
    platform's pipelines (the local ones really run PostgreSQL and Redis)."""

    def __init__(self) -> None:
        self.started_sets: list[list[str]] = []

    @contextlib.contextmanager
    def started(self, services: Sequence[str], progress: Heartbeat) -> Iterator[StartedServices]:
        self.started_sets.append(list(services))
        started = StartedServices()
        for position, text in enumerate(services):
            wanted = parse_service(text)
            version = wanted.version or "0"
            port = 40000 + position
            started.endpoints[wanted.kind] = Endpoint(
                wanted.kind, "127.0.0.1", port, "memory", "memory", "memory",
                f"{wanted.kind}://memory:memory@127.0.0.1:{port}/memory", version,
            )  # fmt: skip
            started.notes.append(f"{wanted.kind} {version} (memory)")
        yield started


class MemoryBuilder:
    """Digest = sha256 of (service, commit): the same commit always gives the same digest.
    Like the real builders, a commit already built is not built again (`built` counts real
    builds, `calls` every request)."""

    def __init__(self) -> None:
        self.calls: list[BuildRequest] = []
        self.built: list[str] = []
        self.scanned: list[str] = []  # the uri of every image scanned
        self.published: list[str] = []  # and of every one published

    def build(self, request: BuildRequest, heartbeat: Heartbeat) -> Artifact:
        self.calls.append(request)
        key = f"{request.service}@{request.commit}"
        if key not in self.built:
            self.built.append(key)
        digest = hashlib.sha256(key.encode()).hexdigest()
        return Artifact(
            digest=f"sha256:{digest}",
            uri=f"memory://{request.service}/{digest}",
            size_bytes=1234,
            version=request.commit[:12],
        )

    def publish(self, request: PublishRequest) -> Artifact:
        self.published.append(request.artifact.uri)
        return request.artifact.model_copy(update={"tags": list(request.tags)})

    def scan(self, artifact: Artifact) -> ScannerReport:
        self.scanned.append(artifact.uri)
        return ScannerReport(scanner="trivy")


@dataclass
class _Env:
    stable: str | None = None
    previous: list[str] = field(default_factory=list)
    canary: str | None = None
    weight: int = 0


class MemoryPlatform:
    """DeployTarget + TrafficRouter kept in a dict; records every call in `events`.
    Fencing tokens are checked like the real platforms do (`fences`, per environment)."""

    def __init__(self) -> None:
        self.envs: dict[str, _Env] = {}
        self.per_service = False
        self.fences: dict[str, int] = {}  # "service/environment" → highest token
        # Called (unlocked) at the start of deploy: tests hold a deploy "in flight" here.
        self.before_deploy: Callable[[DeployRequest], None] | None = None
        self.events: list[str] = []
        self.restores: list[RestoreRequest] = []
        self.fail_deploy: set[str] = set()
        # Environment → how many more deploys fail like a flaky API (retryable).
        self.transient_failures: dict[str, int] = {}
        self.failing_checks: set[str] = set()
        self.checks: list[HttpCheckRequest] = []
        self.fail_restore: set[str] = set()
        # Environment → how many more fences fail like an unreachable API (retryable, or
        # final when `fence_failures_final`: no attempt of that call is left).
        self.fence_failures: dict[str, int] = {}
        self.fence_failures_final = False
        # Environment → seconds an HTTP check takes (holds a run on that environment).
        self.check_delay_s: dict[str, float] = {}
        self._lock = threading.Lock()

    def already_serving(self, environment: str, digest: str) -> None:
        """Arrange a test: `environment` serves `digest` before the run starts."""
        self._env(environment).stable = digest

    def _env(self, name: str, service: str = "") -> _Env:
        return self.envs.setdefault(self.key(service, name), _Env())

    def key(self, service: str, environment: str) -> str:
        """Where `envs` keeps a service's environment: by environment alone (one service,
        what most tests ship), or "<service>@<environment>" once `per_service` is set (a
        bundle's components are several services)."""
        return f"{service}@{environment}" if self.per_service and service else environment

    def _fence(self, service: str, environment: str, token: int) -> None:
        from contracts.errors import check_fence

        key = f"{service}/{environment}"  # like the real platforms: per service
        try:
            self.fences[key] = check_fence(self.fences.get(key, 0), token, service, environment)
        except Exception:
            self.events.append(f"refused {environment} token {token}")
            raise

    def fence(self, request: FenceRequest) -> ReleaseSpec | None:
        with self._lock:
            if self.fence_failures.get(request.environment, 0) > 0:
                self.fence_failures[request.environment] -= 1
                self.events.append(f"fence {request.environment} failed")
                if self.fence_failures_final:
                    from temporalio.exceptions import ApplicationError

                    raise ApplicationError(
                        f"{request.environment} API: unavailable", non_retryable=True
                    )
                raise ConnectionError(f"{request.environment} API: connection refused")
            self._fence(request.service, request.environment, request.token)
            stable = self._env(request.environment, request.service).stable
            if stable is None:
                return None
            return ReleaseSpec(artifact=Artifact(digest=stable, uri=f"memory://{stable}"))

    def deploy(self, request: DeployRequest, heartbeat: Heartbeat) -> DeployResult:
        from contracts.errors import ErrorType, verdict

        if self.before_deploy is not None:
            self.before_deploy(request)
        with self._lock:
            self._fence(request.service, request.environment, request.fence)
            self.events.append(
                f"deploy {self.key(request.service, request.environment)} {request.slot}"
            )
            if self.key(request.service, request.environment) in self.fail_deploy:
                raise verdict(ErrorType.DEPLOY_FAILED, f"{request.environment}: scripted failure")
            if self.transient_failures.get(request.environment, 0) > 0:
                self.transient_failures[request.environment] -= 1
                raise ConnectionError(f"{request.environment} API: connection refused")
            env = self._env(request.environment, request.service)
            digest = request.release_digest  # artifact and configuration
            if request.slot == "canary":
                changed = env.canary != digest
                env.canary = digest
                return DeployResult(
                    environment=request.environment,
                    slot="canary",
                    digest=digest,
                    previous_digest=env.stable,
                    changed=changed,
                )
            changed = env.stable != digest
            if changed and env.stable:
                env.previous.append(env.stable)
            env.stable = digest
            return DeployResult(
                environment=request.environment, slot="stable", digest=digest, changed=changed
            )

    def promote(self, request: DeployRequest, heartbeat: Heartbeat) -> DeployResult:
        with self._lock:
            self._fence(request.service, request.environment, request.fence)
            self.events.append(f"promote {request.environment}")
            env = self._env(request.environment, request.service)
            digest = request.release_digest  # artifact and configuration
            changed = env.stable != digest
            if changed and env.stable:
                env.previous.append(env.stable)
            env.stable, env.canary, env.weight = digest, None, 0
            return DeployResult(
                environment=request.environment, slot="stable", digest=digest, changed=changed
            )

    def rollback(self, request: RollbackRequest, heartbeat: Heartbeat) -> RollbackResult:
        with self._lock:
            self.events.append(f"rollback {request.environment}")
            env = self._env(request.environment, request.service)
            changed = env.canary is not None or env.weight != 0
            env.canary, env.weight = None, 0
            if env.previous and env.stable is not None and request.reason != "canary-only":
                # Restore the last version that served before this release.
                env.stable = env.previous.pop()
                changed = True
            return RollbackResult(
                environment=request.environment, restored_digest=env.stable, changed=changed
            )

    def restore(self, request: RestoreRequest, heartbeat: Heartbeat) -> RestoreResult:
        with self._lock:
            self._fence(request.service, request.environment, request.fence)
            if self.key(request.service, request.environment) in self.fail_restore:
                from contracts.errors import ErrorType, verdict

                raise verdict(ErrorType.DEPLOY_FAILED, f"{request.environment}: scripted failure")
            env = self._env(request.environment, request.service)
            target = request.target.digest if request.target else None
            self.events.append(f"restore {request.environment} {target}")
            self.restores.append(request)
            changed = env.canary is not None or env.weight != 0
            env.canary, env.weight = None, 0
            if target is not None and env.stable != target:
                if env.stable:
                    env.previous.append(env.stable)
                env.stable = target
                changed = True
            return RestoreResult(
                environment=request.environment, restored_digest=env.stable, changed=changed
            )

    def check(self, request: HttpCheckRequest) -> HttpCheckReport:
        self.events.append(f"check {request.environment}")
        self.checks.append(request)
        time.sleep(self.check_delay_s.get(request.environment, 0.0))
        if request.environment in self.failing_checks:
            return HttpCheckReport(
                passed=0,
                failed=len(request.checks),
                failures=[f"GET {c.path}: 500" for c in request.checks],
            )
        return HttpCheckReport(passed=len(request.checks), failed=0)

    def endpoint(self, request: EndpointRequest) -> HttpEndpoint:
        self.events.append(f"endpoint {request.environment}")
        return HttpEndpoint(
            base_url=f"http://{request.environment}.memory.invalid",
            headers={"Host": request.service},
        )

    def set_weight(self, request: WeightRequest) -> None:
        with self._lock:
            self._fence(request.service, request.environment, request.fence)
            self.events.append(
                f"weight {self.key(request.service, request.environment)} {request.canary_weight}"
            )
            self._env(request.environment, request.service).weight = request.canary_weight

    def verify_weight(self, request: WeightRequest) -> bool:
        return self._env(request.environment, request.service).weight == request.canary_weight


MetricsScript = Callable[[MetricsQuery, int], dict[str, float | None]]


class ScriptedMetrics:
    """Metrics from a function of (query, n-th query for that slot); default: healthy."""

    def __init__(self, script: MetricsScript | None = None) -> None:
        self.script = script or (lambda q, n: {m: _HEALTHY.get(m) for m in q.metrics})
        self.queries: list[MetricsQuery] = []
        self._count: dict[tuple[str, str], int] = {}

    def query(self, query: MetricsQuery) -> MetricsSample:
        key = (query.environment, query.slot)
        n = self._count.get(key, 0)
        self._count[key] = n + 1
        self.queries.append(query)
        values = self.script(query, n)
        return MetricsSample(
            values={m: values.get(m) for m in query.metrics},
            requests=100,
            source="memory",
            queries=self._queries(query),
        )

    @staticmethod
    def _queries(query: MetricsQuery) -> dict[str, str]:
        """The PromQL a Prometheus would have been asked, for the templates the query brought."""
        values = {
            "service": label_value(query.service),
            "environment": label_value(query.environment),
            "slot": query.slot,
            "namespace": label_value(query.environment),
            "window": window_duration(query.window_s),
        }
        return {
            m: render(query.templates[m], values) for m in query.metrics if m in query.templates
        }

    def run(self, request: LoadRequest, heartbeat: Heartbeat) -> LoadReport:
        return LoadReport(sent=0, errors=0)


_HEALTHY: dict[str, float | None] = {
    "success_rate": 100.0,
    "error_rate": 0.0,
    "p95_latency_ms": 50.0,
    "p99_latency_ms": 90.0,
    "cpu_percent": 10.0,
}


class MemoryNotifier:
    def __init__(self) -> None:
        self.sent: list[NotifyRequest] = []

    def send(self, request: NotifyRequest) -> None:
        self.sent.append(request)


class MemoryLoadTester:
    """LoadTester answering with scripted figures (`report`), recording each request."""

    tool = "locust"

    def __init__(self) -> None:
        self.requests: list[LoadTestRequest] = []
        self.report = LoadTestReport(
            requests=1200, failures=0, rps=40.0, p50_ms=8.0, p95_ms=20.0, p99_ms=40.0
        )

    def run(self, request: LoadTestRequest, heartbeat: Heartbeat) -> LoadTestReport:
        self.requests.append(request)
        return self.report


class MemoryLiveScanner:
    """LiveScanner answering with scripted findings, recording each request."""

    def __init__(self, name: str = "wapiti", findings: list[Finding] | None = None) -> None:
        self.name = name
        self.findings = list(findings or [])
        self.requests: list[LiveScanRequest] = []

    def scan(self, request: LiveScanRequest, heartbeat: Heartbeat) -> ScannerReport:
        self.requests.append(request)
        return ScannerReport(scanner=self.name, findings=list(self.findings))
