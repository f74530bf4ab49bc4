"""Named metrics as PromQL templates: the presets, the placeholders, and rendering.

A metric is a PromQL template with placeholders `{service}`, `{slot}`, `{namespace}`,
`{environment}` and `{window}`. A placeholder is a bare name in braces, which PromQL itself
never writes (its braces always hold a matcher such as `{code="500"}`), so the two read apart
without escaping. Label values are inserted regex-escaped, so a placeholder fits both `=` and
`=~` matchers (valid service, environment and namespace names have no regex metacharacters).

Three presets name the same metrics for three ways of collecting them:

- `traefik`: Traefik's `traefik_service_requests_total` and
  `traefik_service_request_duration_seconds_bucket`, whose service label is
  `<service>-<environment>-<slot>@<provider>`; CPU from `process_cpu_seconds_total` of the
  slot's processes, whose scrape targets carry `service`, `environment` and `slot` labels.
  What the local platform runs, and a Traefik ingress in production.
- `istio`: the sidecars' `istio_requests_total` and
  `istio_request_duration_milliseconds_bucket` for the destination workload
  `<service>-<slot>` in `{namespace}` (the Kubernetes platform's Deployment names).
- `http`: the service's own `http_requests_total{code}` and
  `http_request_duration_seconds_bucket`, from pods `<service>-<slot>-...` in `{namespace}`
  (the `namespace` and `pod` labels Kubernetes service discovery gives every target).

`cpu_percent` is the busiest single pod against its limit, never a sum over pods (five pods at
20% are 20%, not 100%): for `istio` and `http`, cAdvisor's container CPU over
kube-state-metrics' CPU limit; for `traefik`, each process against one core.

Pure: imported by the definition's validation and by the workflows as well as by providers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

__all__ = [
    "BUILTIN_METRICS",
    "LATENCY_METRICS",
    "PERCENT_METRICS",
    "PLACEHOLDERS",
    "PRESETS",
    "REQUESTS",
    "Preset",
    "label_value",
    "placeholders",
    "render",
    "template_problem",
    "window_duration",
]

Preset = Literal["traefik", "istio", "http"]

REQUESTS = "requests"
"""The template key of the request count reported as `MetricsSample.requests`."""

PLACEHOLDERS = frozenset({"service", "slot", "namespace", "environment", "window"})
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

PERCENT_METRICS = frozenset({"success_rate", "error_rate", "cpu_percent"})
LATENCY_METRICS = frozenset({"p95_latency_ms", "p99_latency_ms"})


def _http_family(
    requests: str, buckets: str, selector: str, code: str, to_ms: str
) -> dict[str, str]:
    """success/error rate, p95/p99 and the request count over one request counter and one
    latency histogram; `selector` picks the slot's series, `code` names the status label."""
    total = f"sum(rate({requests}{{{selector}}}[{{window}}]))"

    def share(matcher: str) -> str:
        # A slot that answered only errors has no non-5xx series: `or vector(0)` makes that
        # 0 %, while a slot with no requests at all still divides by an empty result: no data.
        return (
            f'100 * (sum(rate({requests}{{{selector},{code}{matcher}"5.."}}[{{window}}]))'
            f" or vector(0)) / {total}"
        )

    def quantile(q: str) -> str:
        return (
            f"histogram_quantile({q}, sum by (le) (rate("
            f"{buckets}{{{selector}}}[{{window}}]))){to_ms}"
        )

    return {
        "success_rate": share("!~"),
        "error_rate": share("=~"),
        "p95_latency_ms": quantile("0.95"),
        "p99_latency_ms": quantile("0.99"),
        REQUESTS: f"sum(increase({requests}{{{selector}}}[{{window}}]))",
    }


_TRAEFIK_SERVICE = 'service=~"{service}-{environment}-{slot}(@.*)?"'
_TARGET = 'service=~"{service}",environment=~"{environment}",slot=~"{slot}"'
_ISTIO_WORKLOAD = (
    'reporter="destination",destination_workload_namespace="{namespace}",'
    'destination_workload="{service}-{slot}"'
)
_POD = 'namespace="{namespace}",pod=~"{service}-{slot}-.*"'
_KUBERNETES_CPU = (
    "100 * max(sum by (pod) (rate(container_cpu_usage_seconds_total{"
    + _POD
    + ',container!="",container!="POD"}[{window}]))'
    " / sum by (pod) (kube_pod_container_resource_limits{" + _POD + ',resource="cpu"}))'
)

PRESETS: dict[str, dict[str, str]] = {
    "traefik": {
        **_http_family(
            "traefik_service_requests_total",
            "traefik_service_request_duration_seconds_bucket",
            _TRAEFIK_SERVICE,
            "code",
            " * 1000",
        ),
        # Each process against one core; the busiest one is the slot's figure.
        "cpu_percent": "100 * max(rate(process_cpu_seconds_total{" + _TARGET + "}[{window}]))",
    },
    "istio": {
        **_http_family(
            "istio_requests_total",
            "istio_request_duration_milliseconds_bucket",
            _ISTIO_WORKLOAD,
            "response_code",
            "",
        ),
        "cpu_percent": _KUBERNETES_CPU,
    },
    "http": {
        **_http_family(
            "http_requests_total",
            "http_request_duration_seconds_bucket",
            _POD,
            "code",
            " * 1000",
        ),
        "cpu_percent": _KUBERNETES_CPU,
    },
}
"""Preset → metric → PromQL template; every preset names the same metrics."""

BUILTIN_METRICS = frozenset(PRESETS["traefik"]) - {REQUESTS}
"""The metric names a check may use without defining them."""


def placeholders(template: str) -> set[str]:
    """The placeholder names a template uses."""
    return {m.group(1) for m in _PLACEHOLDER.finditer(template)}


def window_duration(seconds: float) -> str:
    """A PromQL range for `seconds`: whole seconds as `60s`, anything finer in milliseconds."""
    millis = max(1, round(seconds * 1000))
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def label_value(value: str) -> str:
    """`value` as a literal inside a double-quoted PromQL (regex) matcher: regex
    metacharacters escaped (as `\\\\.` in PromQL source), quotes and backslashes escaped."""
    escaped = re.sub(r"([.+*?()|\[\]{}^$])", r"\\\\\1", value.replace("\\", "\\\\\\\\"))
    return escaped.replace('"', '\\"')


def render(template: str, values: Mapping[str, str]) -> str:
    """The template with every placeholder replaced by `values[name]` (already escaped or
    formatted: see `label_value`, `window_duration`). Raises KeyError on a missing one."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


_SAMPLE = {
    "service": "shop",
    "slot": "canary",
    "namespace": "shop-prod",
    "environment": "production",
    "window": "60s",
}
_PAIRS = {")": "(", "]": "[", "}": "{"}


def template_problem(template: str) -> str | None:
    """Why `template` cannot be a metric's PromQL, or None: empty, an unknown placeholder, or
    (rendered with sample values) unbalanced brackets or an unterminated string. Prometheus
    judges the rest; a query it rejects fails the pre-flight, before any traffic moves."""
    if not template.strip():
        return "the query is empty"
    unknown = sorted(placeholders(template) - PLACEHOLDERS)
    if unknown:
        return f"unknown placeholder {{{unknown[0]}}}; use " + ", ".join(
            f"{{{p}}}" for p in sorted(PLACEHOLDERS)
        )
    text = render(template, _SAMPLE)
    stack: list[str] = []
    quote: str | None = None
    escaped = False
    for char in text:
        if quote is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
            continue
        if char in "\"'`":
            quote = char
        elif char in "([{":
            stack.append(char)
        elif char in _PAIRS and (not stack or stack.pop() != _PAIRS[char]):
            return f"unbalanced {char!r} in {text!r}"
    if quote is not None:
        return f"unterminated string in {text!r}"
    if stack:
        return f"unclosed {stack[-1]!r} in {text!r}"
    return None
