"""The canary's pre-flight and the definition's metrics, through whole HEAL7 runs on the
time-skipping server with in-memory backends.

The definition names its metrics (a preset per environment, custom PromQL); the templates
travel with every query, and before the first step every check's query is asked of the stable
version: one with no data stops the canary before any traffic moves, quoting the query."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from contracts.activity import MetricsQuery
from contracts.definition.loading import validate_definition
from contracts.definition.model import PipelineSpec
from contracts.messages import StageState
from starters.runs import pipeline_outcome
from tests.support.memory import MemoryBackends
from tests.support.pipelines import HEAL7_BACKEND, start
from tests.workflows.test_pipeline import OLD, approve_all, stage
from worker import build_worker

pytestmark = pytest.mark.timeout(60)

HEAL7 = HEAL7_BACKEND  # the one-deployable journey the engine tests drive
SAJU = (
    'sum(rate(saju_calculations_total{namespace="{namespace}",pod=~"{service}-{slot}-.*"}'
    "[{window}]))"
)


def heal7_on_istio() -> PipelineSpec:
    """HEAL7 with production on Istio and the service's own calculations rate as a check."""
    data: dict[str, Any] = yaml.safe_load(HEAL7.read_text(encoding="utf-8"))
    data["environments"]["production"]["metrics"] = {
        "preset": "istio",
        "custom": {"saju_rate": {"query": SAJU}},
    }
    for raw in data["stages"]:
        if raw["name"] == "canary":
            raw["metrics"].append({"metric": "saju_rate", "min": 1, "window": "1m"})
    return validate_definition(data, str(HEAL7))


def healthy(query: MetricsQuery, n: int) -> dict[str, float | None]:
    return {
        "success_rate": 100.0,
        "error_rate": 0.0,
        "p95_latency_ms": 50.0,
        "cpu_percent": 10.0,
        "saju_rate": 3.0,
    }


def weight_events(memory: MemoryBackends) -> list[str]:
    return [e for e in memory.platform.events if e.startswith("weight production")]


async def test_a_query_without_data_on_stable_fails_the_canary_before_traffic_moves(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    memory.platform.already_serving("production", OLD)

    def no_saju_on_stable(query: MetricsQuery, n: int) -> dict[str, float | None]:
        values = healthy(query, n)
        if query.slot == "stable":
            values["saju_rate"] = None  # e.g. the stable version does not export it
        return values

    memory.metrics.script = no_saju_on_stable
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue, spec=heal7_on_istio())
        await approve_all(handle)
        result = await pipeline_outcome(handle)

    state, summary = stage(result, "canary")
    assert state == StageState.FAILED
    assert "pre-flight against the stable version failed" in summary
    # The query is quoted as sent, with the environment's values in it.
    assert (
        'saju_rate: no data from \'sum(rate(saju_calculations_total{namespace="production",'
        'pod=~"heal7-backend-stable-.*"}[60s]))\''
    ) in summary
    assert "success_rate" not in summary  # the queries that answered are not blamed
    # No weight was ever given to the canary, and production still serves the old version.
    assert all(e == "weight production 0" for e in weight_events(memory))
    assert memory.platform.envs["production"].stable == OLD
    assert not [q for q in memory.metrics.queries if q.slot == "canary"]


async def test_the_preset_and_custom_templates_travel_with_every_query(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    memory.platform.already_serving("production", OLD)
    memory.metrics.script = healthy
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue, spec=heal7_on_istio())
        await approve_all(handle)
        result = await pipeline_outcome(handle)

    assert stage(result, "canary") == (StageState.SUCCEEDED, "promoted after 5 analyses (0 failed)")
    production = [q for q in memory.metrics.queries if q.environment == "production"]
    # The pre-flight asked stable first, once per window, before any canary query.
    assert [q.slot for q in production[:2]] == ["stable", "stable"]
    assert production[2].slot == "canary"
    minute = next(q for q in production if q.slot == "canary" and q.window_s == 60)
    assert minute.templates["saju_rate"] == SAJU
    assert "istio_requests_total" in minute.templates["success_rate"]
    assert "istio_requests_total" in minute.templates["requests"]
    # Only what the query's checks name (and the request count) travels.
    assert set(minute.templates) == {"success_rate", "saju_rate", "requests"}
    # Staging keeps the default (traefik) preset: its environment names none.
    staging = [q for q in memory.metrics.queries if q.environment == "staging"]
    assert all("traefik_service" in t for q in staging for t in q.templates.values())
    # Each analysis names its interval's end, so a query that runs late still reads it.
    canary = heal7_on_istio().stage("canary")
    assert canary.kind == "canary"
    ends = sorted({q.at for q in production if q.slot == "canary" and q.at is not None})
    assert len(ends) == 5
    assert all(b - a >= canary.interval for a, b in pairwise(ends))


async def test_nothing_serving_yet_means_no_preflight(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    # The first release to production: no stable version to ask, and it would have no data.
    memory.metrics.script = lambda q, n: {} if q.slot == "stable" else healthy(q, n)
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue, spec=heal7_on_istio())
        await approve_all(handle)
        result = await pipeline_outcome(handle)

    assert stage(result, "canary")[0] == StageState.SUCCEEDED
    canary_window = [q for q in memory.metrics.queries if q.environment == "production"][:1]
    assert canary_window[0].slot == "canary"


async def test_preflight_false_goes_straight_to_the_first_step(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    memory.platform.already_serving("production", OLD)
    memory.metrics.script = lambda q, n: {} if q.slot == "stable" else healthy(q, n)
    spec = heal7_on_istio()
    canary = spec.stage("canary").model_copy(update={"preflight": False})
    spec = spec.model_copy(
        update={"stages": [canary if s.name == "canary" else s for s in spec.stages]}
    )
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue, spec=spec)
        await approve_all(handle)
        result = await pipeline_outcome(handle)

    assert stage(result, "canary")[0] == StageState.SUCCEEDED
    production = [q for q in memory.metrics.queries if q.environment == "production"]
    assert production[0].slot == "canary"
