"""Measuring an environment for the canary and the monitor (workflow-side, deterministic).

Checks may ask for different windows (HEAL7: success rate over 1 min, latency over 30 s);
one query per distinct window, concurrently, merged into one sample. A query that fails after
its retries yields no data for its metrics: the judgment decides what no data means.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

from contracts.activity import (
    ActivityName,
    LoadReport,
    LoadRequest,
    MetricName,
    MetricsQuery,
    MetricsSample,
    Slot,
)
from contracts.definition.metric_presets import REQUESTS
from contracts.definition.model import LoadSpec, MetricCheck
from workflows.calls import call

__all__ = ["MAX_LOST_INTERVALS", "finish_load", "measure", "start_load"]

MAX_LOST_INTERVALS = 2
"""An interval whose generated load died with its worker measured nothing: it is run again
instead of judged, at most this many times in a row (then judged as it is)."""


async def measure(
    service: str,
    environment: str,
    slot: Slot,
    checks: Sequence[MetricCheck],
    templates: Mapping[str, str] | None = None,
    *,
    stage: str | None = None,
) -> MetricsSample:
    """Every check's metric over its window; `templates` (metric → PromQL, from the
    definition) travel with the queries, only the ones the checks name."""
    end = workflow.now()  # the interval just ended; the query may run much later
    by_window: dict[float, list[MetricName]] = {}
    for check in checks:
        metrics = by_window.setdefault(check.window.total_seconds(), [])
        if check.metric not in metrics:
            metrics.append(check.metric)

    async def one(window_s: float, metrics: list[MetricName]) -> MetricsSample:
        query = MetricsQuery(
            service=service,
            environment=environment,
            slot=slot,
            window_s=window_s,
            metrics=metrics,
            templates=_needed(templates, metrics),
            at=end,
        )
        try:
            return await call(ActivityName.QUERY_METRICS, query, MetricsSample, stage=stage)
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            workflow.logger.warning("metrics query failed, counting as no data: %s", err.cause)
            return MetricsSample(values=dict.fromkeys(metrics), source=f"error: {err.cause or err}")

    samples = await asyncio.gather(*(one(w, m) for w, m in sorted(by_window.items())))
    values: dict[str, float | None] = {}
    queries: dict[str, str] = {}
    for check in checks:
        for window_s, sample in zip(sorted(by_window), samples, strict=True):
            if window_s == check.window.total_seconds() and check.metric in sample.values:
                values[check.metric] = sample.values[check.metric]
                if check.metric in sample.queries:
                    queries[check.metric] = sample.queries[check.metric]
    return MetricsSample(
        values=values,
        requests=max((s.requests for s in samples), default=0),
        source=", ".join(sorted({s.source for s in samples if s.source})),
        queries=queries,
    )


def _needed(templates: Mapping[str, str] | None, metrics: Sequence[str]) -> dict[str, str]:
    if not templates:
        return {}
    wanted = [*metrics, REQUESTS]
    return {name: templates[name] for name in wanted if name in templates}


def start_load(
    service: str,
    environment: str,
    load: LoadSpec | None,
    duration_s: float,
    *,
    stage: str | None = None,
) -> asyncio.Task[LoadReport] | None:
    """Start the load generator for one analysis interval, if the stage asks for load."""
    if load is None or duration_s <= 0:
        return None
    request = LoadRequest(
        service=service,
        environment=environment,
        duration_s=duration_s,
        rps=load.rps,
        path=load.path,
    )
    return asyncio.ensure_future(call(ActivityName.GENERATE_LOAD, request, LoadReport, stage=stage))


async def finish_load(task: asyncio.Task[LoadReport] | None, *, cancel: bool) -> bool:
    """Wait for the interval's load (it runs as long as the interval). Return False if it was
    asked for and did not run to its end (its worker died, or it failed)."""
    if task is None:
        return True
    if cancel and not task.done():
        task.cancel()
        try:
            await task
        except (ActivityError, asyncio.CancelledError):
            workflow.logger.info("load generator stopped early")
        return True
    try:
        await task
    except ActivityError as err:
        if is_cancelled_exception(err):
            raise  # the canary or monitor itself is being cancelled
        workflow.logger.warning("load generator failed: %s", err.cause)
        return False
    return True
