"""The definition's metrics: presets, custom PromQL templates, and checks naming them; every
refusal names the file, the stage (where there is one) and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from activities.providers.metrics.prometheus import DEFAULT_TEMPLATES
from contracts.definition.loading import load_pipeline
from contracts.definition.metric_presets import PRESETS, placeholders, render, template_problem
from tests.workflows.test_spec import assert_names, only_problem, stage_of, valid, write

SAJU = 'sum(rate(saju_calculations_total{service="{service}",slot="{slot}"}[{window}]))'


def with_saju(data: dict[str, Any], where: dict[str, Any]) -> dict[str, Any]:
    where["metrics"] = {"custom": {"saju_rate": {"query": SAJU}}}
    stage_of(data, "canary")["metrics"].append({"metric": "saju_rate", "min": 5})
    return data


def test_without_metrics_every_environment_reads_traefik_as_before(tmp_path: Path) -> None:
    spec = load_pipeline(write(tmp_path, valid()))

    assert spec.metric_templates("production") == PRESETS["traefik"] == DEFAULT_TEMPLATES
    assert spec.metric_templates("development") == PRESETS["traefik"]


def test_a_custom_metric_at_the_top_level_serves_every_environment(tmp_path: Path) -> None:
    data = valid()
    spec = load_pipeline(write(tmp_path, with_saju(data, data)))

    assert spec.metric_templates("production")["saju_rate"] == SAJU
    assert spec.metric_templates("development")["saju_rate"] == SAJU
    assert spec.metric_templates("production")["success_rate"] == PRESETS["traefik"]["success_rate"]


def test_an_environment_chooses_its_preset_and_adds_its_own_metrics(tmp_path: Path) -> None:
    data = valid()
    data["metrics"] = {"custom": {"orders": {"query": "sum(rate(orders_total[{window}]))"}}}
    with_saju(data, data["environments"]["production"])
    data["environments"]["production"]["metrics"]["preset"] = "istio"
    stage_of(data, "canary")["metrics"].append({"metric": "p99_latency_ms", "max": 800})

    spec = load_pipeline(write(tmp_path, data))

    production = spec.metric_templates("production")
    assert production["p99_latency_ms"] == PRESETS["istio"]["p99_latency_ms"]
    assert "istio_requests_total" in production["error_rate"]
    assert production["saju_rate"] == SAJU
    assert production["orders"] == "sum(rate(orders_total[{window}]))"  # from the top level
    assert "saju_rate" not in spec.metric_templates("development")


def test_a_custom_metric_may_replace_a_preset_one(tmp_path: Path) -> None:
    data = valid()
    own = (
        '100 * sum(rate(http_requests_total{status!~"5.."}[{window}]))'
        " / sum(rate(http_requests_total[{window}]))"
    )
    data["metrics"] = {"preset": "http", "custom": {"success_rate": {"query": own}}}

    spec = load_pipeline(write(tmp_path, data))

    assert spec.metric_templates("production")["success_rate"] == own
    assert spec.metric_templates("production")["error_rate"] == PRESETS["http"]["error_rate"]


def test_a_check_naming_an_unknown_metric_is_refused(tmp_path: Path) -> None:
    data = valid()
    stage_of(data, "canary")["metrics"].append({"metric": "saju_rate", "min": 5})

    file, problem = only_problem(tmp_path, data)

    assert_names(problem, file, "canary", "metrics.1.metric")
    assert "unknown metric 'saju_rate'" in problem.message
    assert "p95_latency_ms" in problem.message
    assert "metrics.custom" in problem.message


def test_a_custom_metric_of_another_environment_is_unknown_here(tmp_path: Path) -> None:
    data = valid()
    with_saju(data, data["environments"]["development"])

    file, problem = only_problem(tmp_path, data)

    assert_names(problem, file, "canary", "metrics.1.metric")


def test_a_monitor_criterion_naming_an_unknown_metric_is_refused(tmp_path: Path) -> None:
    data = valid()
    data["stages"].append(
        {
            "name": "watch",
            "kind": "monitor",
            "needs": ["canary"],
            "environment": "production",
            "criteria": [{"metric": "success_rate", "min": 95}, {"metric": "qps", "min": 1}],
        }
    )

    file, problem = only_problem(tmp_path, data)

    assert_names(problem, file, "watch", "criteria.1.metric")


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("sum(rate(saju_total{svc=~'{svc}'}[{window}]))", "unknown placeholder {svc}"),
        ("sum(rate(saju_total{service=~'{service}'}[{window}])", "unclosed '('"),
        ('sum(rate(saju_total{service="{service}}[{window}]))', "unterminated string"),
        ("sum(rate(saju_total[{window}])))", "unbalanced ')'"),
        ("  ", "empty"),
    ],
)
def test_a_custom_query_that_cannot_be_promql_is_refused_naming_it(
    tmp_path: Path, query: str, says: str
) -> None:
    data = valid()
    data["environments"]["production"]["metrics"] = {"custom": {"saju_rate": {"query": query}}}

    file, problem = only_problem(tmp_path, data)

    assert_names(problem, file, None, "environments.production.metrics.custom.saju_rate.query")
    assert says in problem.message


def test_an_unknown_preset_is_refused(tmp_path: Path) -> None:
    data = valid()
    data["metrics"] = {"preset": "linkerd"}

    file, problem = only_problem(tmp_path, data)

    assert_names(problem, file, None, "metrics.preset")
    assert "traefik" in problem.message


def test_every_preset_names_the_same_metrics_with_known_placeholders() -> None:
    names = {frozenset(templates) for templates in PRESETS.values()}
    assert len(names) == 1
    for preset, templates in PRESETS.items():
        for metric, template in templates.items():
            assert template_problem(template) is None, (preset, metric)
            assert "{window}" in template


def test_rendering_replaces_only_bare_placeholders() -> None:
    text = render(
        'sum(rate(x{service=~"{service}",code=~"5.."}[{window}]))',
        {"service": "shop", "window": "30s"},
    )
    assert text == 'sum(rate(x{service=~"shop",code=~"5.."}[30s]))'
    assert placeholders('x{a="{slot}"} / y{b="{namespace}"}') == {"slot", "namespace"}
