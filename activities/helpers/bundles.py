"""A run's several deployables (a bundle) on platforms that know one service at a time.

Each component of a bundle is the platform service `<service>-<component>`, with its own
slots, routes and fencing token. This layer fans every environment operation out to the
components, in name order, and answers for the bundle: what serves is the bundle of what
serves each component, so the environment's record (one release per environment) and the
workflows above it (leases, canary, monitor, rollback) stay unaware of how many there are.

Traffic moves for every component together: one joint canary. A component that fails to
deploy fails the bundle's deploy; the rollback that follows restores every component.
"""

from __future__ import annotations

from collections.abc import Callable

from activities.wiring.backends import DeployTarget, Heartbeat, TrafficRouter
from contracts.activity import (
    Component,
    DeployRequest,
    DeployResult,
    Endpoint,
    EndpointRequest,
    FenceRequest,
    HttpCheckReport,
    HttpCheckRequest,
    ReleaseConfig,
    ReleaseSpec,
    RestoreRequest,
    RestoreResult,
    RollbackRequest,
    RollbackResult,
    WeightRequest,
    bundle_of,
    component_service,
)
from contracts.definition.service_templates import parse_service, template_references

__all__ = ["BundledTarget"]

_DeployOp = Callable[[DeployRequest, Heartbeat], DeployResult]


def _component_release(part: Component, config: ReleaseConfig) -> ReleaseSpec:
    return ReleaseSpec(
        artifact=part.artifact,
        run_command=part.run_command,
        health_path=part.health_path,
        ready_path=part.ready_path,
        config=config.for_component(part.name),
        env=part.env,
    )


def _used(resources: list[str], env: dict[str, str]) -> list[str]:
    """The environment's resources a component's `env:` refers to: a component that uses
    none (a frontend of static pages) gets no server of its own."""
    kinds = {kind for value in env.values() for kind, _ in template_references(value)}
    return [r for r in resources if parse_service(r).kind in kinds]


class BundledTarget:
    """`DeployTarget` and `TrafficRouter` over `target`/`router`, for bundles and plain
    releases alike (a plain release passes straight through)."""

    def __init__(self, target: DeployTarget, router: TrafficRouter) -> None:
        self._target = target
        self._router = router

    # --- releases ------------------------------------------------------------------------

    def deploy(self, request: DeployRequest, heartbeat: Heartbeat) -> DeployResult:
        return self._each_deploy(request, heartbeat, self._target.deploy)

    def promote(self, request: DeployRequest, heartbeat: Heartbeat) -> DeployResult:
        return self._each_deploy(request, heartbeat, self._target.promote)

    def _each_deploy(
        self, request: DeployRequest, heartbeat: Heartbeat, op: _DeployOp
    ) -> DeployResult:
        bundle = request.artifact
        if bundle.kind != "bundle":
            return op(request, heartbeat)
        results = [
            op(
                request.model_copy(
                    update={
                        "service": component_service(request.service, part.name),
                        "artifact": part.artifact,
                        "run_command": part.run_command,
                        "health_path": part.health_path,
                        "ready_path": part.ready_path,
                        "config": request.config.for_component(part.name),
                        "env": part.env,
                        "release": part.release,
                        "resources": _used(request.resources, part.env),
                    }
                ),
                heartbeat,
            )
            for part in bundle.components
        ]
        first = results[0]
        phases = [
            f"{part.name}: {r.release_phase}"
            for part, r in zip(bundle.components, results, strict=True)
            if r.release_phase
        ]
        return DeployResult(
            environment=request.environment,
            slot=first.slot,
            digest=request.release_digest,
            previous_digest=None,
            endpoint=first.endpoint,
            changed=any(r.changed for r in results),
            release_phase="; ".join(phases),
        )

    def restore(self, request: RestoreRequest, heartbeat: Heartbeat) -> RestoreResult:
        target = request.target
        parts = {p.name: p for p in (target.artifact.components if target else [])}
        names = sorted({*parts, *request.components})
        if not names:
            return self._target.restore(request, heartbeat)
        results = {
            name: self._target.restore(
                request.model_copy(
                    update={
                        "service": component_service(request.service, name),
                        "target": (
                            _component_release(parts[name], target.config)
                            if target is not None and name in parts
                            else None
                        ),
                        "components": [],
                    }
                ),
                heartbeat,
            )
            for name in names
        }
        return RestoreResult(
            environment=request.environment,
            restored_digest=target.digest if target is not None else None,
            changed=any(r.changed for r in results.values()),
        )

    def fence(self, request: FenceRequest) -> ReleaseSpec | None:
        if not request.components:
            return self._target.fence(request)
        serving: list[Component] = []
        configs: dict[str, ReleaseConfig] = {}
        for name in sorted(request.components):
            found = self._target.fence(
                request.model_copy(
                    update={"service": component_service(request.service, name), "components": []}
                )
            )
            if found is not None:
                serving.append(
                    Component(
                        name=name,
                        artifact=found.artifact,
                        run_command=found.run_command,
                        health_path=found.health_path,
                        ready_path=found.ready_path,
                        env=found.env,
                    )
                )
                if not found.config.is_empty:
                    configs[name] = found.config
        if not serving:
            return None
        # Each component's config as it runs: the same release digest as the bundle's record.
        return ReleaseSpec(artifact=bundle_of(serving), config=ReleaseConfig(components=configs))

    def check(self, request: HttpCheckRequest) -> HttpCheckReport:
        # Checks name the component's service themselves (the stage's `artifact:`).
        return self._target.check(request)

    def endpoint(self, request: EndpointRequest) -> Endpoint:
        # Like checks: the request names the component's service.
        return self._target.endpoint(request)

    def rollback(self, request: RollbackRequest, heartbeat: Heartbeat) -> RollbackResult:
        # Runs from before leases never had bundles.
        return self._target.rollback(request, heartbeat)

    # --- traffic -------------------------------------------------------------------------

    def set_weight(self, request: WeightRequest) -> None:
        for part in self._parts(request):
            self._router.set_weight(part)

    def verify_weight(self, request: WeightRequest) -> bool:
        return all(self._router.verify_weight(part) for part in self._parts(request))

    @staticmethod
    def _parts(request: WeightRequest) -> list[WeightRequest]:
        if not request.components:
            return [request]
        return [
            request.model_copy(
                update={"service": component_service(request.service, name), "components": []}
            )
            for name in sorted(request.components)
        ]
