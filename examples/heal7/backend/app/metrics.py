"""The backend's Prometheus metrics, one registry per app (tests build several apps).

A canary can judge the HTTP families like any service's, and `saju_calculations_total` is
the service-specific one the HEAL7 design names (e.g. `rate(saju_calculations_total[1m])`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["KNOWN_PATHS", "Metrics"]

# Only known paths become label values: a scanner probing random URLs must not create a
# time series per URL.
KNOWN_PATHS = frozenset({"/", "/health", "/ready", "/metrics", "/api/saju", "/api/stats"})

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CALCULATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by method, path and status code.",
            ["method", "path", "code"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by method and path.",
            ["method", "path"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self.calculations = Counter(
            "saju_calculations",
            "Four-pillar calculations answered, by source (computed or cache).",
            ["source"],
            registry=self.registry,
        )
        # Exported at 0 from the start: a series that appears only with the first calculation
        # makes rate() over a window in which the process started read too low (Prometheus
        # cannot know the counter began at 0 in that window).
        for source in ("computed", "cache"):
            self.calculations.labels(source=source)
        self.calculation_duration = Histogram(
            "saju_calculation_duration_seconds",
            "Time to compute the four pillars (not counting cache, storage or HTTP).",
            buckets=CALCULATION_BUCKETS,
            registry=self.registry,
        )
        self.cache_errors = Counter(
            "saju_cache_errors",
            "Redis calls that failed; the answer was calculated instead.",
            registry=self.registry,
        )

    def observe_request(self, method: str, path: str, code: int, seconds: float) -> None:
        label = path if path in KNOWN_PATHS else "other"
        self.requests.labels(method=method, path=label, code=str(code)).inc()
        self.request_duration.labels(method=method, path=label).observe(seconds)
