"""Canary and post-deploy metrics from Prometheus, by PromQL templates.

Each metric is one PromQL template (`contracts.definition.metric_presets`): `{service}`, `{slot}`,
`{namespace}`, `{environment}` and `{window}` are replaced per query. The templates come with
each query, from the definition (`metrics: {preset, custom}`); a query without them (a run
recorded before definitions named their metrics) uses the provider's own, by default the
`traefik` preset, so the local platform's router and a Traefik ingress in production are
measured the same way. `{namespace}` is the environment's Kubernetes namespace (`namespaces=`,
the worker's SLIPWAY_KUBE_NAMESPACES), else the environment's name.

"No data" is never a pass: an empty result, NaN (0/0 when no request was made in the window) or
an infinite value is `None`, and the judge decides what that means. A Prometheus that cannot be
reached raises, so Temporal retries; a template Prometheus rejects is a configuration verdict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from contracts.activity import MetricsQuery, MetricsSample
from contracts.definition.metric_presets import (
    PRESETS,
    REQUESTS,
    label_value,
    render,
    template_problem,
    window_duration,
)
from contracts.errors import ErrorType, verdict

__all__ = ["DEFAULT_TEMPLATES", "REQUESTS", "PrometheusMetricsProvider", "window_duration"]

DEFAULT_TEMPLATES: dict[str, str] = dict(PRESETS["traefik"])
"""The templates of a query that brings none: the `traefik` preset."""

_STATUS = re.compile(r"HTTP Status Code (\d{3})")


class PrometheusMetricsProvider:
    """MetricsProvider over Prometheus's HTTP API (prometheus-api-client `custom_query`).

    `templates` overrides the defaults per metric (keys: metric names and `requests`) for
    queries that bring no templates of their own; `namespaces` maps an environment to its
    Kubernetes namespace for `{namespace}`; `timeout_s` bounds each query. Queries are made
    once: retrying is Temporal's job."""

    def __init__(
        self,
        url: str,
        templates: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
        namespaces: Mapping[str, str] | None = None,
    ) -> None:
        self._url = url.rstrip("/")
        self._templates = {**DEFAULT_TEMPLATES, **(templates or {})}
        for metric, text in self._templates.items():
            problem = template_problem(text)
            if problem:
                raise ValueError(f"PromQL template for {metric!r}: {problem}")
        self._namespaces = dict(namespaces or {})
        self._timeout_s = timeout_s
        # No retries in the client: a failed query raises at once and Temporal retries the
        # activity with backoff, within its own deadline.
        self._prometheus = PrometheusConnect(
            url=self._url, retry=Retry(total=0, raise_on_status=False), timeout=timeout_s
        )

    def query(self, query: MetricsQuery) -> MetricsSample:
        values: dict[str, float | None] = {}
        queries: dict[str, str] = {}
        for metric in query.metrics:
            queries[metric] = self.promql(metric, query)
            values[metric] = self._value(metric, queries[metric], query.at)
        requests_value = (
            self._value(REQUESTS, self.promql(REQUESTS, query), query.at)
            if self._template(REQUESTS, query)
            else None
        )
        return MetricsSample(
            values=values,
            requests=round(requests_value) if requests_value is not None else 0,
            source=f"prometheus {self._url}",
            queries=queries,
        )

    def _template(self, metric: str, query: MetricsQuery) -> str | None:
        if query.templates:
            return query.templates.get(metric)
        return self._templates.get(metric)

    def promql(self, metric: str, query: MetricsQuery) -> str:
        """The PromQL sent for `metric` of `query` (shown in logs and errors)."""
        template = self._template(metric, query)
        if template is None:
            raise verdict(
                ErrorType.CONFIGURATION,
                f"no PromQL template for metric {metric!r}: name a preset metric or define it "
                "under the definition's metrics.custom",
            )
        problem = template_problem(template)
        if problem:
            raise verdict(ErrorType.CONFIGURATION, f"PromQL template for {metric!r}: {problem}")
        return render(
            template,
            {
                "service": label_value(query.service),
                "environment": label_value(query.environment),
                "slot": label_value(query.slot),
                "namespace": label_value(
                    self._namespaces.get(query.environment, query.environment)
                ),
                "window": window_duration(query.window_s),
            },
        )

    def _value(self, metric: str, promql: str, at: datetime | None) -> float | None:
        # An instant query evaluated at the window's end (Prometheus' `time`), not at "now".
        params = {"time": f"{at.timestamp():.3f}"} if at is not None else None
        try:
            result: Any = self._prometheus.custom_query(
                promql, params=params, timeout=self._timeout_s
            )
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
