"""Users, a Traefik-like edge and Prometheus for a canary environment of the fake cluster.

`TraefikTraffic` plays the ingress in front of one environment of `FakeKubeApi`: every tick it
sends a fixed number of requests, split between the stable and canary slots by the weight the
VirtualService's default route gives the canary right now (a slot scaled to 0 gets nothing).
A slot whose Deployment runs a version listed in `failing_versions` answers 500, the others
200. It exposes what it served under Traefik's metric names, with Traefik's service label
`<service>-<environment>-<slot>`, which is what `PrometheusMetricsProvider`'s default
templates read. `tests.support.prometheus.running_prometheus` scrapes it.

So the metrics the canary analysis reads are caused by what the platform did to the cluster:
no traffic reaches the canary before a weight is set, and a bad version shows errors only
once it is routed to.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from activities.platforms.kubernetes._objects import VERSION
from tests.fakes.kube_api import FakeKubeApi
from tests.support.prometheus import TRAEFIK_BUCKETS

__all__ = ["TraefikTraffic"]

SLOTS = ("stable", "canary")
CODES = ("200", "500")


def _canary_weight(virtual_service: dict[str, Any]) -> int:
    """The canary's share of the default (match-less) route; 0 without one."""
    for route in virtual_service.get("spec", {}).get("http", []):
        if route.get("match"):
            continue
        for destination in route.get("route", []):
            if destination.get("destination", {}).get("subset") == "canary":
                return int(destination.get("weight", 0))
    return 0


class TraefikTraffic:
    """Constant user traffic through the environment's routing; see the module docstring."""

    def __init__(
        self,
        fake: FakeKubeApi,
        namespace: str,
        service: str,
        environment: str,
        *,
        requests_per_tick: int = 10,
        tick_s: float = 0.1,
        latency_s: float = 0.05,
        failing_versions: Sequence[str] = (),
    ) -> None:
        self._fake = fake
        self._namespace, self._service, self._environment = namespace, service, environment
        self._per_tick, self._tick_s, self._latency_s = requests_per_tick, tick_s, latency_s
        self.failing_versions = set(failing_versions)
        self.served: Tally[tuple[str, str]] = Tally()
        """(slot, code) → requests answered so far."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._registry = CollectorRegistry()
        labels = ["service", "code", "method", "protocol"]
        self._requests = Counter(
            "traefik_service_requests",
            "Traefik: requests per service",
            labels,
            registry=self._registry,
        )
        self._durations = Histogram(
            "traefik_service_request_duration_seconds",
            "Traefik: request durations per service",
            labels,
            buckets=TRAEFIK_BUCKETS,
            registry=self._registry,
        )
        # Every series exists at 0 before the first scrape, as Traefik's do once a service
        # has been routed to, so rate() sees the first increase.
        for slot in SLOTS:
            for code in CODES:
                self._requests.labels(*self._labels(slot, code))
                self._durations.labels(*self._labels(slot, code))
        self._server: Any = None
        self._threads: list[threading.Thread] = []
        self.port = 0

    def traefik_service(self, slot: str) -> str:
        return f"{self._service}-{self._environment}-{slot}"

    def _labels(self, slot: str, code: str) -> tuple[str, str, str, str]:
        return (self.traefik_service(slot), code, "GET", "http")

    def _slot_state(self, slot: str) -> tuple[int, str]:
        """(replicas, version annotation) of the slot's Deployment."""
        deployment = self._fake.deployment(self._namespace, f"{self._service}-{slot}")
        replicas = deployment.spec.replicas if deployment.spec is not None else 0
        annotations = (deployment.metadata.annotations if deployment.metadata else None) or {}
        return int(replicas or 0), annotations.get(VERSION, "")

    def tick(self) -> None:
        """Serve one tick's requests as the cluster is routed right now."""
        weight = _canary_weight(self._fake.virtual_service(self._namespace, self._service))
        states = {slot: self._slot_state(slot) for slot in SLOTS}
        canary = round(self._per_tick * weight / 100) if states["canary"][0] > 0 else 0
        shares = {"canary": canary, "stable": self._per_tick - canary}
        with self._lock:
            for slot, count in shares.items():
                replicas, version = states[slot]
                if count <= 0 or replicas <= 0:
                    continue
                code = "500" if version in self.failing_versions else "200"
                labels = self._labels(slot, code)
                # Histograms first: a scrape that sees a request counted sees its latency too.
                for _ in range(count):
                    self._durations.labels(*labels).observe(self._latency_s)
                self._requests.labels(*labels).inc(count)
                self.served[(slot, code)] += count

    def _run(self) -> None:
        while not self._stop.wait(self._tick_s):
            self.tick()

    def start(self) -> None:
        self.tick()
        self._server, exporter = start_http_server(0, addr="127.0.0.1", registry=self._registry)
        self.port = int(self._server.server_port)
        users = threading.Thread(target=self._run, name="traefik-traffic", daemon=True)
        users.start()
        self._threads = [exporter, users]

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self.served)

    def __enter__(self) -> TraefikTraffic:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
