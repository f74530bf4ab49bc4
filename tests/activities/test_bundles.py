"""The bundle layer over a one-service platform: what serves is the bundle of what each
component serves, and taking a canary away reaches every component."""

from __future__ import annotations

from activities.helpers.bundles import BundledTarget
from contracts.activity import (
    Artifact,
    Component,
    DeployRequest,
    FenceRequest,
    RestoreRequest,
    WeightRequest,
    bundle_of,
)
from tests.support.memory_platform import MemoryPlatform


def _artifact(tag: str) -> Artifact:
    return Artifact(digest="sha256:" + tag * 64, uri=f"memory://{tag}")


def _bundle(backend: str, frontend: str) -> Artifact:
    return bundle_of(
        [
            Component(name="backend", artifact=_artifact(backend)),
            Component(name="frontend", artifact=_artifact(frontend)),
        ]
    )


def _platform() -> tuple[MemoryPlatform, BundledTarget]:
    platform = MemoryPlatform()
    platform.per_service = True
    return platform, BundledTarget(platform, platform)


def test_what_serves_is_the_bundle_of_what_each_component_serves() -> None:
    platform, bundled = _platform()
    release = _bundle("a", "b")
    result = bundled.deploy(
        DeployRequest(
            service="heal7", environment="prod", slot="stable", artifact=release, fence=1
        ),
        lambda note: None,
    )
    assert result.digest == release.digest
    assert result.changed
    assert platform.envs["heal7-backend@prod"].stable == _artifact("a").digest
    fence = FenceRequest(service="heal7", environment="prod", token=2)
    found = bundled.fence(fence.model_copy(update={"components": ["backend", "frontend"]}))
    assert found is not None
    assert found.digest == release.digest
    # Someone changed the frontend outside Slipway: the bundle that serves is another one.
    platform.envs["heal7-frontend@prod"].stable = _artifact("c").digest
    found = bundled.fence(
        fence.model_copy(update={"token": 3, "components": ["backend", "frontend"]})
    )
    assert found is not None
    assert found.digest == _bundle("a", "c").digest
    # A fence of components that never ran: nothing serves.
    assert bundled.fence(fence.model_copy(update={"token": 4, "components": ["docs"]})) is None


def test_weights_move_together_and_a_restore_without_target_takes_every_canary_away() -> None:
    platform, bundled = _platform()
    canary = _bundle("a", "b")
    bundled.deploy(
        DeployRequest(service="heal7", environment="prod", slot="canary", artifact=canary, fence=1),
        lambda note: None,
    )
    weight = WeightRequest(
        service="heal7",
        environment="prod",
        canary_weight=30,
        fence=1,
        components=["backend", "frontend"],
    )
    bundled.set_weight(weight)
    assert bundled.verify_weight(weight)
    assert platform.envs["heal7-frontend@prod"].weight == 30
    platform.envs["heal7-frontend@prod"].weight = 0  # one router lost its setting
    assert not bundled.verify_weight(weight)
    result = bundled.restore(
        RestoreRequest(
            service="heal7",
            environment="prod",
            target=None,
            fence=2,
            components=["backend", "frontend"],
        ),
        lambda note: None,
    )
    assert result.changed
    assert result.restored_digest is None
    for name in ("backend", "frontend"):
        env = platform.envs[f"heal7-{name}@prod"]
        assert env.canary is None, name
        assert env.weight == 0, name


def test_each_component_gets_only_the_resources_its_env_refers_to() -> None:
    # On the local platform a resource is one server per (service, environment, kind): a
    # frontend that reaches no database must not get one of its own.
    platform, bundled = _platform()
    seen: dict[str, list[str]] = {}
    platform.before_deploy = lambda request: seen.update({request.service: request.resources})
    backend_env = {"DATABASE_URL": "{services.postgres.url}", "REDIS_URL": "{services.redis.url}"}
    release = bundle_of(
        [
            Component(name="backend", artifact=_artifact("a"), env=backend_env),
            Component(name="frontend", artifact=_artifact("b")),
        ]
    )
    bundled.deploy(
        DeployRequest(
            service="heal7",
            environment="prod",
            slot="stable",
            artifact=release,
            fence=1,
            resources=["postgres:16", "redis:7"],
        ),
        lambda note: None,
    )
    assert seen == {"heal7-backend": ["postgres:16", "redis:7"], "heal7-frontend": []}
