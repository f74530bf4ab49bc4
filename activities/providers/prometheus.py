"""Canary and post-deploy metrics from Prometheus, by PromQL templates.

Each metric is one PromQL template; `$service`, `$environment`, `$slot` and `$window` are
replaced per query (`string.Template` placeholders, because PromQL itself is full of braces).
The defaults read Traefik's own metrics, so the local platform's router and a Traefik ingress
in production are measured the same way:

- traffic: `traefik_service_requests_total{service, code}` and
  `traefik_service_request_duration_seconds_bucket{service, le}`, where the Traefik service of a
  slot is named `<service>-<environment>-<slot>` (Traefik appends `@<provider>`, e.g.
  `shop-prod-canary@file`, hence the regex match);
- cpu: `process_cpu_seconds_total` of the slot's own process, whose scrape target carries
  `service`, `environment` and `slot` labels (static labels, or Kubernetes relabelling).

Override any template with `templates={"p95_latency_ms": "..."}` (for Istio, nginx, ...). The
placeholders are replaced by regex-escaped literals, so use them in `=~` matchers.

"No data" is never a pass: an empty result, NaN (0/0 when no request was made in the window) or
an infinite value is `None`, and the judge decides what that means. A Prometheus that cannot be
reached raises, so Temporal retries; a template Prometheus rejects is a configuration verdict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from string import Template
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from activities.contracts import MetricsQuery, MetricsSample
from activities.errors import ErrorType, verdict

__all__ = ["DEFAULT_TEMPLATES", "REQUESTS", "PrometheusMetricsProvider", "window_duration"]

REQUESTS = "requests"
"""The template key of the request count reported as `MetricsSample.requests`."""

_TRAEFIK_SERVICE = 'service=~"$service-$environment-$slot(@.*)?"'
_TARGET = 'service=~"$service",environment=~"$environment",slot=~"$slot"'

DEFAULT_TEMPLATES: dict[str, str] = {
    # A slot that answered only errors has no non-5xx series: `or vector(0)` makes that 0 %,
    # while a slot with no requests at all still divides by an empty result: no data.
    "success_rate": (
        "100 * (sum(rate(traefik_service_requests_total{"
        + _TRAEFIK_SERVICE
        + ',code!~"5.."}[$window])) or vector(0))'
        " / sum(rate(traefik_service_requests_total{" + _TRAEFIK_SERVICE + "}[$window]))"
    ),
    "error_rate": (
        "100 * (sum(rate(traefik_service_requests_total{"
        + _TRAEFIK_SERVICE
        + ',code=~"5.."}[$window])) or vector(0))'
        " / sum(rate(traefik_service_requests_total{" + _TRAEFIK_SERVICE + "}[$window]))"
    ),
    "p95_latency_ms": (
        "histogram_quantile(0.95, sum by (le) (rate("
        "traefik_service_request_duration_seconds_bucket{" + _TRAEFIK_SERVICE + "}[$window]"
        "))) * 1000"
    ),
    "cpu_percent": "100 * sum(rate(process_cpu_seconds_total{" + _TARGET + "}[$window]))",
    REQUESTS: ("sum(increase(traefik_service_requests_total{" + _TRAEFIK_SERVICE + "}[$window]))"),
}
"""PromQL per metric for Traefik's metric names; see the module docstring."""

_PLACEHOLDERS = {"service", "environment", "slot", "window"}
_STATUS = re.compile(r"HTTP Status Code (\d{3})")


def window_duration(seconds: float) -> str:
    """A PromQL range for `seconds`: whole seconds as `60s`, anything finer in milliseconds."""
    millis = max(1, round(seconds * 1000))
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _label_value(value: str) -> str:
    """`value` as a literal inside a double-quoted PromQL regex matcher: regex metacharacters
    escaped (as `\\\\.` in PromQL source), quotes and backslashes escaped for the string."""
    escaped = re.sub(r"([.+*?()|\[\]{}^$])", r"\\\\\1", value.replace("\\", "\\\\\\\\"))
    return escaped.replace('"', '\\"')


class PrometheusMetricsProvider:
    """MetricsProvider over Prometheus's HTTP API (prometheus-api-client `custom_query`).

    `templates` overrides the defaults per metric (keys: the `MetricName`s and `requests`);
    `timeout_s` bounds each query. Queries are made once: retrying is Temporal's job."""

    def __init__(
        self,
        url: str,
        templates: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._url = url.rstrip("/")
        self._templates = {**DEFAULT_TEMPLATES, **(templates or {})}
        for metric, text in self._templates.items():
            unknown = {
                m.group("named") or m.group("braced")
                for m in Template.pattern.finditer(text)
                if m.group("named") or m.group("braced")
            } - _PLACEHOLDERS
            if unknown:
                raise ValueError(
                    f"PromQL template for {metric!r} uses unknown placeholder(s) "
                    f"{sorted(unknown)}; available: {sorted(_PLACEHOLDERS)}"
                )
        self._timeout_s = timeout_s
        # No retries in the client: a failed query raises at once and Temporal retries the
        # activity with backoff, within its own deadline.
        self._prometheus = PrometheusConnect(
            url=self._url, retry=Retry(total=0, raise_on_status=False), timeout=timeout_s
        )

    def query(self, query: MetricsQuery) -> MetricsSample:
        values: dict[str, float | None] = {}
        for metric in query.metrics:
            values[metric] = self._value(metric, query)
        requests_value = self._value(REQUESTS, query) if self._templates.get(REQUESTS) else None
        return MetricsSample(
            values=values,
            requests=round(requests_value) if requests_value is not None else 0,
            source=f"prometheus {self._url}",
        )

    def promql(self, metric: str, query: MetricsQuery) -> str:
        """The PromQL sent for `metric` of `query` (shown in logs and errors)."""
        template = self._templates.get(metric)
        if template is None:
            raise verdict(
                ErrorType.CONFIGURATION,
                f"no PromQL template for metric {metric!r}: pass one in templates=",
            )
        return Template(template).substitute(
            service=_label_value(query.service),
            environment=_label_value(query.environment),
            slot=_label_value(query.slot),
            window=window_duration(query.window_s),
        )

    def _value(self, metric: str, query: MetricsQuery) -> float | None:
        promql = self.promql(metric, query)
        try:
            result: Any = self._prometheus.custom_query(promql, timeout=self._timeout_s)
        except PrometheusApiClientException as error:
            status = _STATUS.search(str(error))
            if status and status.group(1) in ("400", "422"):
                raise verdict(
                    ErrorType.CONFIGURATION,
                    f"Prometheus rejected the PromQL for {metric!r} ({promql}): {error}",
                ) from error
            raise RuntimeError(
                f"Prometheus at {self._url} failed the query for {metric!r}: {error}"
            ) from error
        except requests.RequestException as error:
            raise ConnectionError(
                f"Prometheus at {self._url} could not be queried for {metric!r}: {error}"
            ) from error
        return _single_value(metric, promql, result)


def _single_value(metric: str, promql: str, result: Any) -> float | None:
    """The one number a template yields; None for no data. Several series are ambiguous: the
    template must aggregate them (sum, avg, max) itself."""
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        raw: Any = result[1]  # a scalar result: [timestamp, "value"]
    elif isinstance(result, list):
        if not result:
            return None
        if len(result) > 1:
            raise verdict(
                ErrorType.CONFIGURATION,
                f"PromQL for {metric!r} returned {len(result)} series, expected one "
                f"(aggregate it with sum/avg/max): {promql}",
            )
        sample = result[0].get("value") if isinstance(result[0], dict) else None
        if not isinstance(sample, list | tuple) or len(sample) != 2:
            return None
        raw = sample[1]
    else:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
