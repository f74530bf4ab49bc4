"""The local platform: real processes per slot on loopback, a real Traefik with weighted
services, metrics scraped from Traefik, and an HTTP load generator.

    platform = LocalPlatform(".demo/platform")
    platform.start()
    DeployActivities(platform.target, platform.router)
    MetricsActivities(platform.metrics, platform.load)
"""

from __future__ import annotations

from activities.helpers.http_load import HttpLoadGenerator
from activities.platforms.local.metrics import TraefikMetricsProvider, histogram_quantile
from activities.platforms.local.platform import (
    DEFAULT_BASE_PORT,
    DEFAULT_ENVIRONMENTS,
    LocalPlatform,
)
from activities.platforms.local.slots import SlotManager, SlotRevision, SlotState
from activities.platforms.local.target import LocalDeployTarget, ReleaseRecord, Undo
from activities.platforms.local.traefik import RouteState, TraefikRouter, find_traefik

__all__ = [
    "DEFAULT_BASE_PORT",
    "DEFAULT_ENVIRONMENTS",
    "HttpLoadGenerator",
    "LocalDeployTarget",
    "LocalPlatform",
    "ReleaseRecord",
    "RouteState",
    "SlotManager",
    "SlotRevision",
    "SlotState",
    "TraefikMetricsProvider",
    "TraefikRouter",
    "Undo",
    "find_traefik",
    "histogram_quantile",
]
