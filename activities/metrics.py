"""Metrics for canary analysis and the post-deploy monitor, and the load that feeds them."""

from __future__ import annotations

from temporalio import activity

from activities.helpers.blocking import run_blocking
from activities.wiring.backends import LoadGenerator, MetricsProvider
from activities.wiring.observability import activity_log
from contracts.activity import ActivityName, LoadReport, LoadRequest, MetricsQuery, MetricsSample


class MetricsActivities:
    def __init__(self, provider: MetricsProvider, load: LoadGenerator | None = None) -> None:
        self._provider = provider
        self._load = load

    @activity.defn(name=ActivityName.QUERY_METRICS)
    async def query_metrics(self, query: MetricsQuery) -> MetricsSample:
        sample = await run_blocking(lambda _progress: self._provider.query(query))
        activity_log(environment=query.environment, slot=query.slot).info(
            "metrics", values=sample.values, requests=sample.requests
        )
        return sample

    @activity.defn(name=ActivityName.GENERATE_LOAD)
    async def generate_load(self, request: LoadRequest) -> LoadReport:
        load = self._load
        if load is None:
            # Production traffic comes from users; nothing to generate.
            return LoadReport(sent=0, errors=0)
        return await run_blocking(lambda progress: load.run(request, progress))
