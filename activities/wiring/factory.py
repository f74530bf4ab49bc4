"""Build a worker's backends from `Settings`: the one place that knows every implementation.

Clients of external systems (docker, kubernetes, boto3, Prometheus) are created here once per
worker and injected; nothing is built at import time. Environments can use different
platforms (`SLIPWAY_ENVIRONMENT_PLATFORMS`): a small dispatcher routes each call by the
request's environment.

The two trust domains build their own parts: a runner-only worker builds the source, test,
scanner, backing-services and builder backends and never a platform, a registry client or a
notifier; a deployer-only worker the reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from activities.wiring.backends import (
    Backends,
    Builder,
    DeployerBackends,
    DeployTarget,
    Heartbeat,
    LoadGenerator,
    MetricsProvider,
    Notifier,
    ReferenceChecker,
    Registry,
    RunnerBackends,
    Scanner,
    TrafficRouter,
)
from contracts.activity import (
    Artifact,
    DeployRequest,
    DeployResult,
    Endpoint,
    EndpointRequest,
    FenceRequest,
    HttpCheckReport,
    HttpCheckRequest,
    LoadReport,
    LoadRequest,
    MetricsQuery,
    MetricsSample,
    PublishRequest,
    ReleaseSpec,
    RestoreRequest,
    RestoreResult,
    RollbackRequest,
    RollbackResult,
    ScannerReport,
    WeightRequest,
)
from plumbing.settings import ConfigurationError, Settings

if TYPE_CHECKING:
    from activities.providers.backing_services import LocalBackingServices
    from activities.providers.backing_services.docker import DockerBackingServices
    from activities.providers.backing_services.kubernetes import KubernetesBackingServices

__all__ = [
    "EnvironmentDispatch",
    "backends_from_settings",
    "deployer_backends_from_settings",
    "runner_backends_from_settings",
]


class EnvironmentDispatch:
    """DeployTarget + TrafficRouter + MetricsProvider + LoadGenerator that routes each call to
    the platform configured for the request's environment."""

    def __init__(
        self,
        targets: Mapping[str, DeployTarget],
        routers: Mapping[str, TrafficRouter],
        metrics: Mapping[str, MetricsProvider],
        loads: Mapping[str, LoadGenerator | None],
        default: str,
    ) -> None:
        self._targets, self._routers = dict(targets), dict(routers)
        self._metrics, self._loads = dict(metrics), dict(loads)
        self._default = default

    def _pick(self, table: Mapping[str, Any], environment: str) -> Any:
        return table.get(environment, table[self._default])

    def deploy(self, request: DeployRequest, heartbeat: Heartbeat) -> DeployResult:
        target: DeployTarget = self._pick(self._targets, request.environment)
        return target.deploy(request, heartbeat)

    def promote(self, request: DeployRequest, heartbeat: Heartbeat) -> DeployResult:
        target: DeployTarget = self._pick(self._targets, request.environment)
        return target.promote(request, heartbeat)

    def rollback(self, request: RollbackRequest, heartbeat: Heartbeat) -> RollbackResult:
        target: DeployTarget = self._pick(self._targets, request.environment)
        return target.rollback(request, heartbeat)

    def restore(self, request: RestoreRequest, heartbeat: Heartbeat) -> RestoreResult:
        target: DeployTarget = self._pick(self._targets, request.environment)
        return target.restore(request, heartbeat)

    def fence(self, request: FenceRequest) -> ReleaseSpec | None:
        target: DeployTarget = self._pick(self._targets, request.environment)
        return target.fence(request)

    def check(self, request: HttpCheckRequest) -> HttpCheckReport:
        target: DeployTarget = self._pick(self._targets, request.environment)
        return target.check(request)

    def endpoint(self, request: EndpointRequest) -> Endpoint:
        target: DeployTarget = self._pick(self._targets, request.environment)
        return target.endpoint(request)

    def reference_checker(self, environment: str) -> ReferenceChecker | None:
        """The platform of `environment` if it takes resources and secrets by reference."""
        target = self._pick(self._targets, environment)
        return target if isinstance(target, ReferenceChecker) else None

    def set_weight(self, request: WeightRequest) -> None:
        router: TrafficRouter = self._pick(self._routers, request.environment)
        router.set_weight(request)

    def verify_weight(self, request: WeightRequest) -> bool:
        router: TrafficRouter = self._pick(self._routers, request.environment)
        return router.verify_weight(request)

    def query(self, query: MetricsQuery) -> MetricsSample:
        provider: MetricsProvider = self._pick(self._metrics, query.environment)
        return provider.query(query)

    def run(self, request: LoadRequest, heartbeat: Heartbeat) -> LoadReport:
        load: LoadGenerator | None = self._pick(self._loads, request.environment)
        if load is None:  # no endpoint to load (a Kubernetes platform without ingress URLs)
            return LoadReport(sent=0, errors=0)
        return load.run(request, heartbeat)


class _EcrPublishing:
    """registry=ecr: images are pushed with the docker SDK (ECR is a docker registry with a
    token login); repositories, tag immutability and scan findings come from the ECR API."""

    def __init__(self, docker: Registry, ecr: Registry) -> None:
        self._docker, self._ecr = docker, ecr

    def publish(self, request: PublishRequest) -> Artifact:
        return self._docker.publish(request)

    def scan(self, artifact: Artifact) -> ScannerReport:
        return self._ecr.scan(artifact)


def _scanners(settings: Settings) -> dict[str, Scanner]:
    from activities.providers.scanners.tools import SonarQubeGate, default_scanners

    scanners = default_scanners()
    if settings.sonarqube_url and settings.sonarqube_token is not None:
        scanners["sonarqube"] = SonarQubeGate(
            settings.sonarqube_url,
            settings.sonarqube_token.get_secret_value(),
            settings.sonarqube_project,
        )
    return scanners


def _docker_client(settings: Settings) -> Callable[[], Any]:
    import docker

    def client() -> Any:
        if settings.docker_host:
            return docker.DockerClient(base_url=settings.docker_host)
        return docker.from_env()

    return client


def _builder(settings: Settings) -> Builder:
    """The runner's. An image builder pushes what it builds (the registry then holds the
    artifact for the deployer), so it needs a push credential; for ECR, an identity allowed
    to push to (and create) the service repositories."""
    if settings.builder == "wheel":
        from activities.providers.builders.wheel_builder import WheelBuilder

        return WheelBuilder(settings.state_dir / "artifacts")

    from activities.providers.builders.docker_builder import DockerBuilder

    client = _docker_client(settings)
    if settings.registry == "ecr":
        from activities.providers.builders.ecr import EcrRegistry, ecr_client

        ecr = EcrRegistry(ecr_client(settings.ecr_endpoint_url or None, settings.aws_region))
        return DockerBuilder(
            client,
            settings.docker_registry,
            repository_for=ecr.repository_for,
            auth=ecr.docker_auth,
        )
    return DockerBuilder(client, settings.docker_registry)


def _registry(settings: Settings) -> Registry | None:
    """The deployer's: publishing by digest and image findings. The local registry reads the
    wheel store the runner's builder writes (`$SLIPWAY_STATE_DIR/artifacts`, a filesystem both
    share); artifacts are content-addressed and publish checks the bytes' hash."""
    if settings.builder == "wheel":
        from activities.providers.builders.wheel_builder import LocalRegistry

        return LocalRegistry(settings.state_dir / "artifacts")

    from activities.providers.builders.docker_registry import DockerRegistry

    client = _docker_client(settings)
    if settings.registry == "ecr":
        from activities.providers.builders.ecr import EcrRegistry, ecr_client

        ecr = EcrRegistry(ecr_client(settings.ecr_endpoint_url or None, settings.aws_region))
        pusher = DockerRegistry(
            client,
            settings.docker_registry,
            repository_for=ecr.repository_for,
            auth=ecr.docker_auth,
        )
        return _EcrPublishing(pusher, ecr)
    return DockerRegistry(client, settings.docker_registry)


def _notifier(settings: Settings) -> Notifier:
    from activities.providers.notify.notifiers import LogNotifier, SlackNotifier

    if settings.notifier == "slack" and settings.slack_webhook_url is not None:
        return SlackNotifier(settings.slack_webhook_url.get_secret_value())
    return LogNotifier()


def backends_from_settings(settings: Settings) -> Backends:
    """Every backend the settings ask for, both trust domains' (a worker serving both); a
    missing piece raises ConfigurationError."""
    # The runner's first, before a platform starts anything: an engine that does not answer
    # stops the worker here.
    runner = runner_backends_from_settings(settings)
    return Backends.of(runner, deployer_backends_from_settings(settings))


def runner_backends_from_settings(settings: Settings) -> RunnerBackends:
    """The runner's backends: git checkouts, test venvs and backing services, scanners and
    the builder. No platform, no registry client besides the builder's push, no notifier."""
    from activities.providers.live.browser_tests import PlaywrightBrowserTester
    from activities.providers.live.locust_load import LocustLoadTester
    from activities.providers.live.wapiti_scan import WapitiScanner
    from activities.providers.live.web_audit import WebAuditor
    from activities.providers.source.git_source import GitSource
    from activities.providers.testing.runner import SubprocessSuiteRunner

    # An engine that does not answer stops the worker here. A worker that was killed mid-run
    # left its servers running: stop them.
    services = _backing_services(settings)
    services.clean_leftovers()
    return RunnerBackends(
        source=GitSource(Path(settings.state_dir) / "git"),
        tests=SubprocessSuiteRunner(venv_root=Path(settings.state_dir) / "venvs"),
        builder=_builder(settings),
        scanners=_scanners(settings),
        services=services,
        load_tester=LocustLoadTester(),
        live_scanners={"wapiti": WapitiScanner()},
        browser_tester=PlaywrightBrowserTester(
            venv_root=Path(settings.state_dir) / "venvs",
            results_root=Path(settings.state_dir) / "browser-results",
        ),
        web_auditor=WebAuditor(),
    )


def deployer_backends_from_settings(settings: Settings) -> DeployerBackends:
    """The deployer's backends: the platforms of every environment, metrics and load, the
    registry and the notifier."""
    targets: dict[str, DeployTarget] = {}
    routers: dict[str, TrafficRouter] = {}
    metrics: dict[str, MetricsProvider] = {}
    loads: dict[str, LoadGenerator | None] = {}

    prometheus: MetricsProvider | None = None
    if settings.metrics == "prometheus":
        from activities.providers.metrics.prometheus import PrometheusMetricsProvider

        # `{namespace}` in a metric's PromQL: the namespace the kubernetes platform deploys to.
        prometheus = PrometheusMetricsProvider(
            settings.prometheus_url, namespaces=settings.kube_namespaces
        )

    # The deployer's secret sources; the local platform reads values from them at each start.
    from activities.helpers.secrets import (
        SecretBackend,
        SecretResolver,
        SecretsManagerSecrets,
        secretsmanager_client,
    )
    from plumbing.secret_store import LocalSecretStore, secret_store_path

    sources: dict[str, SecretBackend] = {}
    if "local" in settings.secret_sources:
        sources["local"] = LocalSecretStore(secret_store_path(settings.state_dir))
    if "secretsmanager" in settings.secret_sources:
        sources["secretsmanager"] = SecretsManagerSecrets(
            secretsmanager_client(settings.secretsmanager_endpoint_url or None, settings.aws_region)
        )
    secrets = SecretResolver(sources)

    for name in sorted(settings.platforms):
        envs = [e for e in settings.environments if settings.platform_for(e) == name]
        if name == settings.platform:
            envs.append("*")
        if name == "local":
            from activities.platforms.local import LocalPlatform

            local = LocalPlatform(
                settings.state_dir / "platform",
                environments=settings.environments,
                base_port=settings.base_port,
                secrets=secrets,
            )
            # Started, never stopped by the worker: environments keep serving while workers
            # restart (a new worker finds Traefik and the slots from the state on disk).
            local.start()
            for env in envs:
                targets[env], routers[env], loads[env] = local.target, local.target, local.load
                metrics[env] = prometheus or local.metrics
        elif name == "kubernetes":
            from activities.helpers.http_load import HttpLoadGenerator
            from activities.platforms.kubernetes import KubernetesPlatform, load_api_client

            kube = KubernetesPlatform(
                load_api_client(settings.kubeconfig or None),
                settings.kube_namespaces,
                base_url_for=settings.kube_ingress_urls or None,
                release_deadline_s=settings.kube_release_deadline_s,
            )
            # Environments on Kubernetes take `from: kubernetes` secrets (secretKeyRef).
            secrets.add("kubernetes", kube.secrets())
            # Generated load (a canary's `load:`) goes to the ingress, as users' traffic does;
            # without ingress URLs there is nowhere to send it.
            kube_load = HttpLoadGenerator(kube.endpoint) if settings.kube_ingress_urls else None
            for env in envs:
                targets[env], routers[env], loads[env] = kube, kube, kube_load
                if prometheus is None:
                    raise ConfigurationError("kubernetes needs SLIPWAY_METRICS=prometheus")
                metrics[env] = prometheus

    dispatch = EnvironmentDispatch(targets, routers, metrics, loads, default="*")
    return DeployerBackends(
        target=dispatch,
        router=dispatch,
        metrics=dispatch,
        notifier=_notifier(settings),
        registry=_registry(settings),
        load=dispatch,
        secrets=secrets,
    )


def _backing_services(
    settings: Settings,
) -> LocalBackingServices | DockerBackingServices | KubernetesBackingServices:
    if settings.backing_services == "docker":
        import docker

        from activities.providers.backing_services.docker import DockerBackingServices

        def client() -> Any:
            # The engine the builder uses: SLIPWAY_DOCKER_HOST, else DOCKER_HOST & co.
            if settings.docker_host:
                return docker.DockerClient(base_url=settings.docker_host)
            return docker.from_env()

        return DockerBackingServices(client)
    if settings.backing_services == "kubernetes":
        from activities.platforms.kubernetes import load_api_client
        from activities.platforms.kubernetes._api import KubeApi
        from activities.providers.backing_services.kubernetes import KubernetesBackingServices

        api = KubeApi(load_api_client(settings.kubeconfig or None))
        return KubernetesBackingServices(api, settings.backing_services_namespace)
    from activities.providers.backing_services import LocalBackingServices

    return LocalBackingServices(settings.state_dir / "services")
