"""Two services on one environment's entrypoint (a bundle's components) through real
Traefik: each is reached by its Host, moves its canary weight with the other, and a restore
puts both back."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from activities.helpers.bundles import BundledTarget
from activities.platforms.local import LocalPlatform
from contracts.activity import (
    Artifact,
    Component,
    DeployRequest,
    FenceRequest,
    HttpCheck,
    HttpCheckRequest,
    ReleaseSpec,
    RestoreRequest,
    WeightRequest,
    bundle_of,
)
from tests.activities.platforms.local.helpers import RUN_COMMAND, no_heartbeat

Wheel = Callable[..., Artifact]
pytestmark = pytest.mark.realserver


def bundle(api: Artifact, web: Artifact) -> Artifact:
    return bundle_of(
        [
            Component(name="api", artifact=api, run_command=RUN_COMMAND),
            Component(name="web", artifact=web, run_command=RUN_COMMAND),
        ]
    )


def seen(url: str, host: str | None, n: int, **headers: str) -> Counter[str]:
    answers: Counter[str] = Counter()
    with httpx.Client(timeout=5.0, headers={**({"Host": host} if host else {}), **headers}) as c:
        for _ in range(n):
            response = c.get(url)
            ok = response.status_code == 200
            answers[response.json()["version"] if ok else f"HTTP {response.status_code}"] += 1
    return answers


def test_two_services_share_an_entrypoint_and_move_together(
    platform: LocalPlatform, wheel: Wheel
) -> None:
    bundled = BundledTarget(platform.target, platform.router)
    url = platform.entrypoint_url("production") + "/"
    v1 = bundle(wheel("1.0.0"), wheel("1.5.0"))
    stable = DeployRequest(
        service="shop", environment="production", slot="stable", artifact=v1, fence=1
    )
    assert bundled.deploy(stable, no_heartbeat).digest == v1.digest
    # The first component owns the bare entrypoint; each is reached by its Host.
    assert seen(url, None, 4) == {"1.0.0": 4}
    assert seen(url, "shop-api.localhost", 4) == {"1.0.0": 4}
    assert seen(url, "shop-web.localhost", 4) == {"1.5.0": 4}
    check = HttpCheckRequest(
        service="shop-web",
        environment="production",
        checks=[HttpCheck(path="/", contains='"version": "1.5.0"')],
    )
    assert platform.target.check(check).failed == 0, platform.target.check(check).failures

    v2 = bundle(wheel("2.0.0"), wheel("2.5.0"))
    canary = stable.model_copy(update={"slot": "canary", "artifact": v2, "strategy": "canary"})
    bundled.deploy(canary, no_heartbeat)
    weight = WeightRequest(
        service="shop",
        environment="production",
        canary_weight=100,
        fence=1,
        components=["api", "web"],
    )
    bundled.set_weight(weight)
    assert bundled.verify_weight(weight)
    assert seen(url, "shop-api.localhost", 4) == {"2.0.0": 4}
    assert seen(url, "shop-web.localhost", 4) == {"2.5.0": 4}
    # A slot header reaches the slot of the service its Host names.
    assert seen(url, "shop-web.localhost", 2, **{"X-Slipway-Slot": "stable"}) == {"1.5.0": 2}

    restored = bundled.restore(
        RestoreRequest(
            service="shop",
            environment="production",
            target=ReleaseSpec(artifact=v1),
            strategy="canary",
            fence=2,
            components=["api", "web"],
        ),
        no_heartbeat,
    )
    assert restored.changed
    assert seen(url, "shop-api.localhost", 4) == {"1.0.0": 4}
    assert seen(url, "shop-web.localhost", 4) == {"1.5.0": 4}
    fenced = bundled.fence(
        FenceRequest(service="shop", environment="production", token=3, components=["api", "web"])
    )
    assert fenced is not None
    assert fenced.digest == v1.digest  # what serves is the first bundle again
