"""PrometheusMetricsProvider against Debian's Prometheus scraping traffic we generate.

A prometheus_client exporter in the test process plays Traefik: it exposes Traefik's metric
names with known counts and latencies, Prometheus scrapes it every second, and the provider's
answers are compared with what was generated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
)
from temporalio.exceptions import ApplicationError

from activities.providers.metrics.prometheus import PrometheusMetricsProvider, window_duration
from activities.wiring.backends import MetricsProvider
from contracts.activity import MetricName, MetricsQuery, Slot
from contracts.errors import ErrorType
from tests.support.ports import free_port
from tests.support.prometheus import (
    TRAEFIK_BUCKETS,
    exporting,
    prometheus_value,
    running_prometheus,
)

pytestmark = pytest.mark.realserver

ALL_METRICS: list[MetricName] = ["success_rate", "error_rate", "p95_latency_ms", "cpu_percent"]
WAIT_S = 30.0


@dataclass(frozen=True)
class Generated:
    """The Prometheus that scraped our traffic, and what we sent."""

    url: str
    canary_requests: int
    before_traffic: datetime


def _wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"Prometheus did not show {what} within {WAIT_S:.0f}s")
        time.sleep(0.25)


def _traefik_service(slot: str) -> str:
    return f"shop-prod-{slot}@file"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    registry = CollectorRegistry()  # plays Traefik
    process_registry = CollectorRegistry()  # plays the canary slot's own process
    ProcessCollector(registry=process_registry)  # process_cpu_seconds_total
    requests_total = Counter(
        "traefik_service_requests",
        "Traefik: requests per service",
        ["service", "code", "method", "protocol"],
        registry=registry,
    )
    duration = Histogram(
        "traefik_service_request_duration_seconds",
        "Traefik: request durations per service",
        ["service", "code", "method", "protocol"],
        buckets=TRAEFIK_BUCKETS,
        registry=registry,
    )
    # Every series exists at 0 before the first scrape, as Traefik's do once a service has
    # been routed to, so rate() sees the increase from 0. "stable" gets no traffic at all.
    traffic = {
        "canary": [("200", 80, 0.05), ("404", 10, 0.05), ("500", 10, 0.5)],
        "green": [("500", 5, 0.05)],
        "stable": [("200", 0, 0.05)],
    }
    for slot, codes in traffic.items():
        for code, _, _ in codes:
            labels = (_traefik_service(slot), code, "GET", "http")
            requests_total.labels(*labels)
            duration.labels(*labels)

    workdir: Path = tmp_path_factory.mktemp("prometheus")
    with exporting(registry) as traefik_port, exporting(process_registry) as process_port:
        # The slot's process is labelled with its service, environment and slot, as a
        # Kubernetes relabelling of pod labels would.
        shop = {
            "job_name": "shop",
            "static_configs": [
                {
                    "targets": [f"127.0.0.1:{process_port}"],
                    "labels": {"service": "shop", "environment": "prod", "slot": "canary"},
                }
            ],
        }
        with running_prometheus(workdir, [f"127.0.0.1:{traefik_port}"], more_jobs=[shop]) as url:
            _wait_for(
                lambda: prometheus_value(url, "count(traefik_service_requests_total)") is not None,
                "the first scrape",
            )
            before_traffic = datetime.now(UTC)
            time.sleep(1.5)  # a scrape of the quiet before the traffic
            # Histograms first, counters last: once the counters show everything, the scrape
            # that saw them saw the complete histograms as well.
            for slot, codes in traffic.items():
                for code, count, seconds in codes:
                    for _ in range(count):
                        duration.labels(_traefik_service(slot), code, "GET", "http").observe(
                            seconds
                        )
            for slot, codes in traffic.items():
                for code, count, _ in codes:
                    requests_total.labels(_traefik_service(slot), code, "GET", "http").inc(count)
            _wait_for(
                lambda: (
                    prometheus_value(
                        url,
                        'sum(traefik_service_requests_total{service=~"shop-prod-.*"}) + sum('
                        'traefik_service_request_duration_seconds_count{service=~"shop-prod-.*"})',
                    )
                    == 2 * 105
                ),
                "the generated traffic",
            )
            # A few more scrapes, so the window's last sample is close to the query's end and
            # increase() extrapolates little.
            time.sleep(3)
            yield Generated(url=url, canary_requests=100, before_traffic=before_traffic)


def _query_for(slot: Slot, metrics: list[MetricName] | None = None) -> MetricsQuery:
    return MetricsQuery(
        service="shop",
        environment="prod",
        slot=slot,
        window_s=60,
        metrics=metrics or ALL_METRICS,
    )


def test_provider_satisfies_the_protocol() -> None:
    assert isinstance(PrometheusMetricsProvider("http://127.0.0.1:1"), MetricsProvider)


def test_measures_what_was_generated(generated: Generated) -> None:
    provider = PrometheusMetricsProvider(generated.url, timeout_s=5)

    sample = provider.query(_query_for("canary"))

    assert sample.values["success_rate"] == pytest.approx(90.0, abs=0.01)
    assert sample.values["error_rate"] == pytest.approx(10.0, abs=0.01)
    # 90 requests at 50 ms and 10 at 500 ms: rank 95 lies halfway through the (0.3, 1.2] bucket.
    assert sample.values["p95_latency_ms"] == pytest.approx(750.0, abs=1.0)
    cpu = sample.values["cpu_percent"]
    assert cpu is not None
    assert cpu >= 0
    # increase() extrapolates to the window's end: a little more than was sent, never less.
    assert generated.canary_requests <= sample.requests <= generated.canary_requests * 1.4
    assert sample.source == f"prometheus {generated.url}"


def test_a_query_is_evaluated_at_the_end_it_names(generated: Generated) -> None:
    # A query that runs late reads the interval it judges: here, one that ended before the
    # traffic was sent sees none of it, though the traffic is inside the last 60 s.
    provider = PrometheusMetricsProvider(generated.url, timeout_s=5)
    query = _query_for("canary", ["success_rate"])

    before = provider.query(query.model_copy(update={"at": generated.before_traffic}))
    now = provider.query(query)

    assert before.values == {"success_rate": None}
    assert before.requests == 0
    assert now.values["success_rate"] == pytest.approx(90.0, abs=0.01)


def test_only_errors_is_zero_success_not_no_data(generated: Generated) -> None:
    provider = PrometheusMetricsProvider(generated.url, timeout_s=5)

    sample = provider.query(_query_for("green", ["success_rate", "error_rate"]))

    assert sample.values == {"success_rate": 0.0, "error_rate": pytest.approx(100.0)}


def test_a_slot_without_requests_or_series_is_no_data(generated: Generated) -> None:
    provider = PrometheusMetricsProvider(generated.url, timeout_s=5)

    idle = provider.query(_query_for("stable"))  # series at 0: rates are 0/0 = NaN
    absent = provider.query(_query_for("blue"))  # no series at all: empty results

    for sample in (idle, absent):
        assert sample.values == dict.fromkeys(ALL_METRICS)
        assert sample.requests == 0


def test_a_template_can_be_overridden_per_metric(generated: Generated) -> None:
    only_2xx = (
        "100 * sum(rate(traefik_service_requests_total"
        '{service=~"{service}-{environment}-{slot}@.*",code=~"2.."}[{window}]))'
        " / sum(rate(traefik_service_requests_total"
        '{service=~"{service}-{environment}-{slot}@.*"}[{window}]))'
    )
    provider = PrometheusMetricsProvider(generated.url, {"success_rate": only_2xx}, timeout_s=5)

    sample = provider.query(_query_for("canary", ["success_rate", "error_rate"]))

    assert sample.values["success_rate"] == pytest.approx(80.0, abs=0.01)
    assert sample.values["error_rate"] == pytest.approx(10.0, abs=0.01)  # still the default


def test_a_template_prometheus_rejects_is_a_configuration_verdict(generated: Generated) -> None:
    provider = PrometheusMetricsProvider(
        generated.url, {"error_rate": "sum(rate(nope[{window}])) by (a b)"}, timeout_s=5
    )

    with pytest.raises(ApplicationError) as raised:
        provider.query(_query_for("canary", ["error_rate"]))

    assert raised.value.type == ErrorType.CONFIGURATION
    assert raised.value.non_retryable
    assert "error_rate" in str(raised.value)


def test_a_template_returning_several_series_is_a_configuration_verdict(
    generated: Generated,
) -> None:
    per_code = (
        "rate(traefik_service_requests_total"
        '{service=~"{service}-{environment}-{slot}@.*"}[{window}])'
    )
    provider = PrometheusMetricsProvider(generated.url, {"error_rate": per_code}, timeout_s=5)

    with pytest.raises(ApplicationError) as raised:
        provider.query(_query_for("canary", ["error_rate"]))

    assert raised.value.type == ErrorType.CONFIGURATION
    assert "3 series" in str(raised.value)


def test_an_unreachable_prometheus_raises_a_retryable_error() -> None:
    provider = PrometheusMetricsProvider(f"http://127.0.0.1:{free_port()}", timeout_s=2)

    started = time.monotonic()
    with pytest.raises(ConnectionError):
        provider.query(_query_for("canary"))
    assert time.monotonic() - started < 2  # no retries inside the backend


def test_templates_with_unknown_placeholders_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown placeholder \{svc\}"):
        PrometheusMetricsProvider("http://127.0.0.1:1", {"success_rate": "up{job=~'{svc}'}"})


def test_window_duration() -> None:
    assert window_duration(60) == "60s"
    assert window_duration(0.25) == "250ms"
    assert window_duration(90.5) == "90500ms"
