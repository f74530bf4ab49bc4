"""Build once, publish by digest."""

from __future__ import annotations

from temporalio import activity

from activities.helpers.blocking import run_blocking
from activities.wiring.backends import Builder, Registry
from activities.wiring.observability import activity_log
from contracts.activity import ActivityName, Artifact, BuildRequest, PublishRequest


class BuildActivities:
    """`build` is the runner's (it runs the commit's build), `publish` the deployer's (it
    holds the registry's credentials); a deployer-only worker has no builder."""

    def __init__(self, builder: Builder | None, registry: Registry | None = None) -> None:
        self._builder = builder
        self._registry = registry

    @activity.defn(name=ActivityName.BUILD)
    async def build(self, request: BuildRequest) -> Artifact:
        activity_log(service=request.service, commit=request.commit).info("build")
        builder = self._builder
        if builder is None:
            raise RuntimeError("this worker has no builder: builds are the runner's work")
        return await run_blocking(lambda progress: builder.build(request, progress))

    @activity.defn(name=ActivityName.PUBLISH)
    async def publish(self, request: PublishRequest) -> Artifact:
        activity_log(digest=request.artifact.digest, tags=request.tags).info("publish")
        registry = self._registry
        if registry is None:
            # No registry configured: the artifact store the builder wrote to is the registry.
            return request.artifact.model_copy(update={"tags": list(request.tags)})
        return await run_blocking(lambda _progress: registry.publish(request))
