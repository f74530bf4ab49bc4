"""The local platform in one object: what a worker or the demo builds in one line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import structlog

from activities.helpers.http_load import HttpLoadGenerator
from activities.helpers.secrets import SecretResolver
from activities.platforms.local.metrics import TraefikMetricsProvider
from activities.platforms.local.slots import SlotManager
from activities.platforms.local.target import LocalDeployTarget
from activities.platforms.local.traefik import TraefikRouter
from contracts.activity import LoadRequest, WeightRequest

__all__ = ["DEFAULT_BASE_PORT", "DEFAULT_ENVIRONMENTS", "LocalPlatform"]

DEFAULT_ENVIRONMENTS = ("development", "staging", "production")
DEFAULT_BASE_PORT = 18080

_log = structlog.get_logger("slipway.platform.local")


class LocalPlatform:
    """Slots, Traefik router, deploy target, metrics provider and load generator on loopback,
    all keeping their state under `state_dir`.

    Ports: Traefik's API and /metrics on `base_port`, then one entrypoint per environment on
    `base_port + 1`, `base_port + 2`, ... in the order given (development 18081, staging 18082,
    production 18083 by default). `ports` and `api_port` override the layout (tests use free
    ports). Nothing starts until `start()`; `stop()` stops every slot process and Traefik.
    """

    def __init__(
        self,
        state_dir: Path | str,
        *,
        environments: Sequence[str] = DEFAULT_ENVIRONMENTS,
        base_port: int = DEFAULT_BASE_PORT,
        ports: Mapping[str, int] | None = None,
        api_port: int | None = None,
        traefik_binary: Path | None = None,
        ready_timeout_s: float = 30.0,
        secrets: SecretResolver | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        entrypoints = (
            dict(ports)
            if ports is not None
            else {env: base_port + 1 + i for i, env in enumerate(environments)}
        )
        # A release's settings and secret values go into its processes' environment.
        self.slots = SlotManager(
            self.state_dir,
            ready_timeout_s=ready_timeout_s,
            config_env=secrets.values if secrets is not None else None,
        )
        self.router = TraefikRouter(
            self.state_dir,
            entrypoints,
            api_port if api_port is not None else base_port,
            binary=traefik_binary,
        )
        self.target = LocalDeployTarget(self.slots, self.router, self.state_dir)
        self.metrics = TraefikMetricsProvider(self.router, self.slots, self.state_dir)
        self.load = HttpLoadGenerator(
            self.target.endpoint, on_start=self._mark_load, on_end=self._mark_load
        )
        self.router.on_weight = self._mark_weight

    # An analysis interval starts at a weight change or with its load, and ends with its load:
    # snapshot the metrics there, so the query at its end (or late) measures the interval.
    # Best effort: without the mark, a query falls back to a short measurement of its own.
    def _mark_weight(self, request: WeightRequest) -> None:
        self._mark(request.service, request.environment)

    def _mark_load(self, request: LoadRequest) -> None:
        self._mark(request.service, request.environment)

    def _mark(self, service: str, environment: str) -> None:
        try:
            self.metrics.mark(service, environment)
        except RuntimeError as error:
            _log.warning("metrics_mark_failed", environment=environment, error=str(error))

    @property
    def environments(self) -> list[str]:
        return list(self.router.entrypoints)

    def entrypoint_port(self, environment: str) -> int:
        return self.router.entrypoint_port(environment)

    def entrypoint_url(self, environment: str) -> str:
        """Where `environment`'s users (and the load generator) send requests."""
        return self.router.entrypoint_url(environment)

    def start(self) -> None:
        """Start Traefik (or reuse the one a previous worker left running)."""
        self.router.start()

    def stop(self) -> None:
        """Stop every slot process recorded under the state dir, then Traefik."""
        try:
            self.slots.stop_all()
        finally:
            self.router.stop()

    def __enter__(self) -> LocalPlatform:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
