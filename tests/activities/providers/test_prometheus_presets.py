"""The metric presets and custom metrics against Debian's Prometheus, scraping series that a
small exporter in the test process generates at known rates.

The exporter plays an Istio mesh (`istio_requests_total`, `istio_request_duration_
milliseconds_bucket`), a service instrumented with `http_requests_total` /
`http_request_duration_seconds_bucket` and its own `saju_calculations_total`, cAdvisor and
kube-state-metrics (container CPU and CPU limits of several pods), and processes seen by a
Traefik-style scrape (`process_cpu_seconds_total` with service/environment/slot labels). Every
tick adds a fixed amount to each series, atomically with respect to scrapes, so every ratio the
presets compute is known exactly; rates are known to the tick.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from activities.providers.metrics.prometheus import PrometheusMetricsProvider
from contracts.activity import MetricsQuery, Slot
from contracts.definition.metric_presets import PRESETS
from tests.support.prometheus import exporting, prometheus_value, running_prometheus

pytestmark = pytest.mark.realserver

TICK_S = 0.1
WINDOW_S = 10.0
NAMESPACE = "shop-prod"
PRESET_METRICS = ["success_rate", "error_rate", "p95_latency_ms", "p99_latency_ms", "cpu_percent"]
SAJU = (
    'sum(rate(saju_calculations_total{namespace="{namespace}",pod=~"{service}-{slot}-.*"}'
    "[{window}]))"
)


class _Locked(Collector):
    """The inner registry's metrics, collected under the ticker's lock: a scrape never sees
    half a tick."""

    def __init__(self, inner: CollectorRegistry, lock: threading.Lock) -> None:
        self._inner, self._lock = inner, lock

    def collect(self) -> list[Metric]:
        with self._lock:
            return list(self._inner.collect())


@dataclass
class Exporter:
    """The generated series; `tick()` adds one tick's worth to each."""

    registry: CollectorRegistry
    lock: threading.Lock
    ticks: list[Callable[[], None]]

    def tick(self) -> None:
        with self.lock:
            for step in self.ticks:
                step()


def _istio(inner: CollectorRegistry, ticks: list[Callable[[], None]]) -> None:
    labels = [
        "reporter",
        "destination_workload_namespace",
        "destination_workload",
        "response_code",
    ]
    requests = Counter("istio_requests", "Istio requests", labels, registry=inner)
    duration = Histogram(
        "istio_request_duration_milliseconds",
        "Istio request durations (ms)",
        labels,
        buckets=(10, 50, 100, 500, 1000, 5000),
        registry=inner,
    )

    def step() -> None:
        canary = ("destination", NAMESPACE, "shop-canary")
        # 9 of 10 answered 200 in 20 ms, 1 answered 503 in 700 ms.
        requests.labels(*canary, "200").inc(9)
        requests.labels(*canary, "503").inc(1)
        for _ in range(9):
            duration.labels(*canary, "200").observe(20)
        duration.labels(*canary, "503").observe(700)
        # The calling side's sidecar reports the same requests: not counted twice.
        requests.labels("source", NAMESPACE, "shop-canary", "500").inc(10)
        # Stable is healthy.
        requests.labels("destination", NAMESPACE, "shop-stable", "200").inc(10)
        for _ in range(10):
            duration.labels("destination", NAMESPACE, "shop-stable", "200").observe(20)

    ticks.append(step)


def _http(inner: CollectorRegistry, ticks: list[Callable[[], None]]) -> None:
    requests = Counter(
        "http_requests", "HTTP requests", ["namespace", "pod", "code"], registry=inner
    )
    duration = Histogram(
        "http_request_duration_seconds",
        "HTTP request durations",
        ["namespace", "pod"],
        buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
        registry=inner,
    )
    saju = Counter("saju_calculations", "Saju calculations", ["namespace", "pod"], registry=inner)

    def step() -> None:
        # Two canary pods: 16 requests of 20, 4 of them 500 (20 % errors), 0.5 % slower.
        for pod in ("shop-canary-7c9f-a", "shop-canary-7c9f-b"):
            requests.labels(NAMESPACE, pod, "200").inc(8)
            requests.labels(NAMESPACE, pod, "500").inc(2)
            for _ in range(8):
                duration.labels(NAMESPACE, pod).observe(0.03)
            for _ in range(2):
                duration.labels(NAMESPACE, pod).observe(0.3)
            saju.labels(NAMESPACE, pod).inc(0.15)  # 1.5/s per pod, 3/s for the slot
        # Another service whose name starts the same: never part of shop's figures.
        requests.labels(NAMESPACE, "shopping-canary-1-a", "500").inc(50)

    ticks.append(step)


def _cpu(inner: CollectorRegistry, ticks: list[Callable[[], None]]) -> None:
    usage = Counter(
        "container_cpu_usage_seconds",
        "cAdvisor: container CPU",
        ["namespace", "pod", "container"],
        registry=inner,
    )
    limits = Gauge(
        "kube_pod_container_resource_limits",
        "kube-state-metrics: limits",
        ["namespace", "pod", "container", "resource", "unit"],
        registry=inner,
    )
    process = Counter(
        "process_cpu_seconds",
        "Process CPU",
        ["service", "environment", "slot", "pod"],
        registry=inner,
    )
    # Five canary pods with a 0.5-core limit: four use 0.1 core (20 %), one 0.3 (60 %).
    cores = {f"shop-canary-5d-{i}": 0.1 for i in range(4)} | {"shop-canary-5d-4": 0.3}
    for pod in cores:
        limits.labels(NAMESPACE, pod, "shop", "cpu", "core").set(0.5)
        limits.labels(NAMESPACE, pod, "shop", "memory", "byte").set(2**30)

    def step() -> None:
        for pod, used in cores.items():
            usage.labels(NAMESPACE, pod, "shop").inc(used * TICK_S)
            usage.labels(NAMESPACE, pod, "POD").inc(0.4 * TICK_S)  # the pause container
        # Five processes at 20 % of a core each: the slot is at 20 %, not 100 %.
        for i in range(5):
            process.labels("shop", "prod", "canary", f"p{i}").inc(0.2 * TICK_S)

    ticks.append(step)


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    inner, lock = CollectorRegistry(), threading.Lock()
    ticks: list[Callable[[], None]] = []
    for series in (_istio, _http, _cpu):
        series(inner, ticks)
    outer = CollectorRegistry()
    outer.register(_Locked(inner, lock))
    exporter = Exporter(outer, lock, ticks)
    stop = threading.Event()

    def ticker() -> None:
        # On a schedule, catching up when the thread was kept waiting (a loaded machine):
        # the series grow at their stated rates in wall-clock time, which rate() measures.
        start, done = time.monotonic(), 0
        while not stop.wait(max(0.0, start + (done + 1) * TICK_S - time.monotonic())):
            due = int((time.monotonic() - start) / TICK_S)
            for _ in range(due - done):
                exporter.tick()
            done = max(done, due)

    ticking = threading.Thread(target=ticker, daemon=True)
    with exporting(outer) as port:
        try:
            with running_prometheus(
                tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{port}"]
            ) as url:
                ticking.start()
                # A full window of ticks, so every rate covers the generated traffic only.
                deadline = time.monotonic() + 60
                while (
                    prometheus_value(url, "count_over_time(istio_requests_total[10s])") or 0
                ) < 10:
                    assert time.monotonic() < deadline, "Prometheus stored no ticks within 60 s"
                    time.sleep(0.5)
                time.sleep(WINDOW_S / 2)
                yield url
        finally:
            stop.set()
            if ticking.is_alive():
                ticking.join(timeout=5)


def query(slot: Slot, preset: str, metrics: list[str] | None = None, **custom: str) -> MetricsQuery:
    return MetricsQuery(
        service="shop",
        environment="prod",
        slot=slot,
        window_s=WINDOW_S,
        metrics=metrics or PRESET_METRICS,
        templates={**PRESETS[preset], **custom},
    )


def provider(url: str) -> PrometheusMetricsProvider:
    return PrometheusMetricsProvider(url, timeout_s=5, namespaces={"prod": NAMESPACE})


def test_istio_preset_reads_the_destination_sidecars(prometheus_url: str) -> None:
    sample = provider(prometheus_url).query(query("canary", "istio"))

    assert sample.values["success_rate"] == pytest.approx(90.0, abs=0.01)
    assert sample.values["error_rate"] == pytest.approx(10.0, abs=0.01)
    # 9 of 10 at 20 ms, 1 at 700 ms: rank 95 and 99 are in the (500, 1000] bucket.
    assert sample.values["p95_latency_ms"] == pytest.approx(750.0, abs=5)
    assert sample.values["p99_latency_ms"] == pytest.approx(950.0, abs=5)
    assert sample.values["cpu_percent"] == pytest.approx(60.0, abs=3)
    # 100 requests a second over a 10 s window.
    assert 800 <= sample.requests <= 1300
    assert 'destination_workload="shop-canary"' in sample.queries["success_rate"]
    assert f'destination_workload_namespace="{NAMESPACE}"' in sample.queries["success_rate"]


def test_the_traefik_preset_finds_nothing_on_an_istio_cluster(prometheus_url: str) -> None:
    # What every canary on Istio read before presets: no data for every traffic metric.
    sample = provider(prometheus_url).query(
        query("canary", "traefik", ["success_rate", "error_rate", "p95_latency_ms"])
    )

    assert sample.values == {"success_rate": None, "error_rate": None, "p95_latency_ms": None}
    assert "traefik_service_requests_total" in sample.queries["success_rate"]


def test_http_preset_reads_the_service_own_counters_over_its_pods(prometheus_url: str) -> None:
    sample = provider(prometheus_url).query(query("canary", "http"))

    assert sample.values["success_rate"] == pytest.approx(80.0, abs=0.01)
    assert sample.values["error_rate"] == pytest.approx(20.0, abs=0.01)
    # 8 of 10 at 30 ms, 2 at 300 ms: p95 is 3/4 of the way through (0.1, 0.5] seconds.
    assert sample.values["p95_latency_ms"] == pytest.approx(400.0, abs=5)
    assert sample.values["p99_latency_ms"] == pytest.approx(480.0, abs=5)
    assert sample.values["cpu_percent"] == pytest.approx(60.0, abs=3)


def test_cpu_is_the_busiest_pod_against_its_limit_not_a_sum(prometheus_url: str) -> None:
    istio = provider(prometheus_url).query(query("canary", "istio", ["cpu_percent"]))
    traefik = provider(prometheus_url).query(query("canary", "traefik", ["cpu_percent"]))

    # Pods at 20, 20, 20, 20 and 60 % of their 0.5-core limit (a sum would read 140 %).
    assert istio.values["cpu_percent"] == pytest.approx(60.0, abs=3)
    # Five processes at 20 % of a core each (a sum would read 100 %: a false rollback).
    assert traefik.values["cpu_percent"] == pytest.approx(20.0, abs=2)


def test_a_custom_metric_is_the_rate_of_the_service_own_counter(prometheus_url: str) -> None:
    sample = provider(prometheus_url).query(
        query("canary", "http", ["saju_rate", "p99_latency_ms"], saju_rate=SAJU)
    )

    assert sample.values["saju_rate"] == pytest.approx(3.0, rel=0.05)
    assert sample.queries["saju_rate"] == (
        'sum(rate(saju_calculations_total{namespace="shop-prod",pod=~"shop-canary-.*"}[10s]))'
    )


def test_a_slot_without_series_has_no_data_for_every_preset(prometheus_url: str) -> None:
    for preset in PRESETS:
        sample = provider(prometheus_url).query(query("blue", preset))
        assert sample.values == dict.fromkeys(PRESET_METRICS), preset
        assert sample.requests == 0


def test_the_namespace_defaults_to_the_environment_name(prometheus_url: str) -> None:
    bare = PrometheusMetricsProvider(prometheus_url, timeout_s=5)

    sample = bare.query(query("canary", "istio", ["success_rate"]))

    assert sample.values == {"success_rate": None}  # no namespace "prod" in this cluster
    assert 'destination_workload_namespace="prod"' in sample.queries["success_rate"]


def test_a_query_without_templates_uses_the_provider_defaults(
    prometheus_url: str,
) -> None:
    # How a run recorded before definitions named their metrics queries: the traefik preset.
    old = MetricsQuery(
        service="shop",
        environment="prod",
        slot="canary",
        window_s=WINDOW_S,
        metrics=["cpu_percent"],
    )

    sample = provider(prometheus_url).query(old)

    assert sample.values["cpu_percent"] == pytest.approx(20.0, abs=2)
    assert "process_cpu_seconds_total" in sample.queries["cpu_percent"]
