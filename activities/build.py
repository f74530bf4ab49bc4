"""Build once, publish by digest."""

from __future__ import annotations

from temporalio import activity

from activities._blocking import run_blocking
from activities.backends import Builder, Registry
from activities.observability import activity_log
from contracts.activity import ActivityName, Artifact, BuildRequest, PublishRequest


class BuildActivities:
    def __init__(self, builder: Builder, registry: Registry | None = None) -> None:
        self._builder = builder
        self._registry = registry

    @activity.defn(name=ActivityName.BUILD)
    async def build(self, request: BuildRequest) -> Artifact:
        activity_log(service=request.service, commit=request.commit).info("build")
        return await run_blocking(lambda progress: self._builder.build(request, progress))

    @activity.defn(name=ActivityName.PUBLISH)
    async def publish(self, request: PublishRequest) -> Artifact:
        activity_log(digest=request.artifact.digest, tags=request.tags).info("publish")
        registry = self._registry
        if registry is None:
            # No registry configured: the artifact store the builder wrote to is the registry.
            return request.artifact.model_copy(update={"tags": list(request.tags)})
        return await run_blocking(lambda _progress: registry.publish(request))
