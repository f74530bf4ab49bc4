"""Slot metrics from Traefik's Prometheus endpoint, and the load generator that feeds them."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from activities.platforms.local import LocalPlatform, histogram_quantile
from contracts.activity import (
    LoadRequest,
    MetricName,
    MetricsQuery,
    Slot,
    WeightRequest,
)
from tests.activities.platforms.local.helpers import (
    SERVICE,
    Wheel,
    deploy_request,
    no_heartbeat,
    versions_seen,
)

ALL: list[MetricName] = ["success_rate", "error_rate", "p95_latency_ms", "cpu_percent"]


def query(slot: Slot, window_s: float = 60.0) -> MetricsQuery:
    return MetricsQuery(
        service=SERVICE, environment="production", slot=slot, window_s=window_s, metrics=ALL
    )


# --- histogram_quantile (pure) ---------------------------------------------------------------


def test_quantile_interpolates_inside_the_bucket() -> None:
    # 100 observations: 50 under 10 ms, 50 between 10 and 20 ms.
    buckets = {0.01: 50.0, 0.02: 100.0, math.inf: 100.0}
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.019)
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    assert histogram_quantile(0.95, {0.5: 1.0, 1.0: 2.0, math.inf: 10.0}) == 1.0


def test_quantile_without_observations_is_none() -> None:
    assert histogram_quantile(0.95, {0.1: 0.0, math.inf: 0.0}) is None
    assert histogram_quantile(0.95, {}) is None


# --- against Traefik --------------------------------------------------------------------------


@pytest.mark.realserver
def test_canary_errors_show_in_its_metrics_and_not_in_stables(
    platform: LocalPlatform, wheel: Wheel
) -> None:
    target, router = platform.target, platform.router
    target.deploy(deploy_request(wheel("1.0.0"), "production"), no_heartbeat)
    target.deploy(
        deploy_request(
            wheel("2.0.0", error_rate=0.5, extra_latency_ms=40),
            "production",
            slot="canary",
            strategy="canary",
        ),
        no_heartbeat,
    )
    weights = WeightRequest(service=SERVICE, environment="production", canary_weight=50)
    router.set_weight(weights)
    assert router.verify_weight(weights)
    platform.metrics.bootstrap_interval_s = 0.2

    # Nothing sent yet: no data, which is never a pass (not 0 % errors, not 100 % success).
    quiet = platform.metrics.query(query("canary"))
    assert quiet.requests == 0
    assert quiet.values["success_rate"] is None
    assert quiet.values["error_rate"] is None
    assert quiet.values["p95_latency_ms"] is None
    platform.metrics.query(query("stable"))

    seen = versions_seen(platform.entrypoint_url("production") + "/", 80)
    assert seen["1.0.0"] == 40

    canary = platform.metrics.query(query("canary"))
    assert canary.requests == 40
    assert canary.values["error_rate"] == pytest.approx(50.0, abs=10)
    assert canary.values["success_rate"] == pytest.approx(50.0, abs=10)
    p95 = canary.values["p95_latency_ms"]
    assert p95 is not None
    assert 40 <= p95 <= 300
    cpu = canary.values["cpu_percent"]
    assert cpu is not None
    assert cpu >= 0

    stable = platform.metrics.query(query("stable"))
    assert stable.requests == 40
    assert stable.values["error_rate"] == 0
    assert stable.values["success_rate"] == 100
    stable_p95 = stable.values["p95_latency_ms"]
    assert stable_p95 is not None
    assert stable_p95 < 40


@pytest.mark.realserver
def test_load_generator_sends_bounded_traffic(platform: LocalPlatform, wheel: Wheel) -> None:
    platform.target.deploy(
        deploy_request(wheel("1.0.0", error_rate=0.25), "production"), no_heartbeat
    )
    notes: list[str] = []
    report = platform.load.run(
        LoadRequest(service=SERVICE, environment="production", duration_s=1.5, rps=40),
        notes.append,
    )
    assert report.sent == 60
    assert report.errors == 15
    assert notes

    # The load marked a snapshot when it started: the query measures exactly that traffic.
    sample = platform.metrics.query(query("stable", window_s=5))
    assert sample.requests == 60
    assert sample.values["error_rate"] == pytest.approx(25.0)


def serve_and_load(platform: LocalPlatform, wheel: Wheel, duration_s: float, **app: Any) -> None:
    """Production serves 1.0.0 (`app`: its faults) and gets `duration_s` of load at 40 rps."""
    platform.target.deploy(deploy_request(wheel("1.0.0", **app), "production"), no_heartbeat)
    platform.load.run(
        LoadRequest(service=SERVICE, environment="production", duration_s=duration_s, rps=40),
        lambda _note: None,
    )


@pytest.mark.realserver
def test_a_late_query_reads_the_interval_it_names_not_the_quiet_after(
    platform: LocalPlatform, wheel: Wheel
) -> None:
    serve_and_load(platform, wheel, 1.5, error_rate=0.25)
    interval_end = datetime.now(UTC)
    platform.metrics.late_s = 0.5
    time.sleep(2.5)  # the query's worker was lost; its retry runs after the interval

    late = platform.metrics.query(
        query("stable", window_s=2).model_copy(update={"at": interval_end})
    )
    assert late.requests == 60
    assert late.values["error_rate"] == pytest.approx(25.0)
    # Asked for "the last 2 s" instead, it would read the quiet after the load: no data,
    # which fails an analysis (the soak's good canary rolled back so).
    quiet = platform.metrics.query(query("stable", window_s=2))
    assert quiet.requests == 0
    assert quiet.values["error_rate"] is None


@pytest.mark.realserver
def test_first_query_without_a_snapshot_measures_a_short_interval(
    platform: LocalPlatform, wheel: Wheel
) -> None:
    platform.target.deploy(deploy_request(wheel("1.0.0"), "production"), no_heartbeat)
    versions_seen(platform.entrypoint_url("production") + "/", 10)
    platform.metrics.bootstrap_interval_s = 0.3
    # No snapshot before: the 10 requests above are outside what it can measure.
    sample = platform.metrics.query(query("stable", window_s=30))
    assert sample.requests == 0
    assert sample.values["success_rate"] is None


@pytest.mark.realserver
def test_the_scrape_answers_p99_and_says_why_a_custom_metric_has_no_data(
    platform: LocalPlatform, wheel: Wheel
) -> None:
    serve_and_load(platform, wheel, 1.0, extra_latency_ms=30)

    sample = platform.metrics.query(
        MetricsQuery(
            service=SERVICE,
            environment="production",
            slot="stable",
            window_s=5,
            metrics=["p95_latency_ms", "p99_latency_ms", "saju_rate"],
            # A definition's templates travel with the query; this provider reads Traefik.
            templates={"saju_rate": "sum(rate(saju_calculations_total[{window}]))"},
        )
    )

    p95, p99 = sample.values["p95_latency_ms"], sample.values["p99_latency_ms"]
    assert p95 is not None
    assert p99 is not None
    # Read from Traefik's histogram buckets: on a loaded machine a few requests pass the
    # 1.2 s bucket, so p99 is only bounded by the largest finite one (5 s).
    assert 30 <= p95 <= p99 < 5000
    assert sample.values["saju_rate"] is None
    assert "SLIPWAY_METRICS=prometheus" in sample.queries["saju_rate"]
    assert "traefik_service_request_duration_seconds_bucket" in sample.queries["p99_latency_ms"]
