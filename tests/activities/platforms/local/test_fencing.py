"""Fencing on the local platform: a deposed lease holder's late write is refused at the commit
point, and a restore puts back exactly the recorded release (real processes, real Traefik)."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError

from activities.platforms.local import LocalPlatform
from contracts.activity import (
    FenceRequest,
    ReleaseSpec,
    RestoreRequest,
    WeightRequest,
)
from contracts.errors import ErrorType
from tests.activities.platforms.local.helpers import (
    SERVICE,
    Wheel,
    deploy_request,
    no_heartbeat,
    versions_seen,
)

pytestmark = pytest.mark.realserver
PROD = "production"


def fence(platform: LocalPlatform, token: int) -> ReleaseSpec | None:
    return platform.target.fence(FenceRequest(service=SERVICE, environment=PROD, token=token))


def test_a_stale_token_is_refused_for_deploy_weight_and_restore(
    platform: LocalPlatform, wheel: Wheel
) -> None:
    v1, v2 = wheel("1.0.0"), wheel("2.0.0")
    assert fence(platform, 1) is None  # nothing serves yet
    platform.target.deploy(deploy_request(v1, PROD).model_copy(update={"fence": 1}), no_heartbeat)
    found = fence(platform, 2)  # the lease moves on to another run
    assert found is not None
    assert found.digest == v1.digest
    late = deploy_request(v2, PROD, "canary", "canary").model_copy(update={"fence": 1})
    with pytest.raises(ApplicationError) as refused:
        platform.target.deploy(late, no_heartbeat)
    assert refused.value.type == ErrorType.STALE_LEASE
    assert "superseded by token 2" in str(refused.value)
    with pytest.raises(ApplicationError):
        platform.target.set_weight(
            WeightRequest(service=SERVICE, environment=PROD, canary_weight=50, fence=1)
        )
    with pytest.raises(ApplicationError):
        platform.target.restore(
            RestoreRequest(service=SERVICE, environment=PROD, target=None, fence=1),
            no_heartbeat,
        )
    # Nothing of the refused calls happened: v1 alone answers.
    assert set(versions_seen(platform.entrypoint_url(PROD), 20)) == {"1.0.0"}


def test_restore_puts_back_the_recorded_release_and_again_changes_nothing(
    platform: LocalPlatform, wheel: Wheel
) -> None:
    v1, v2 = wheel("1.0.0"), wheel("2.0.0")
    fence(platform, 1)
    platform.target.deploy(deploy_request(v1, PROD).model_copy(update={"fence": 1}), no_heartbeat)
    baseline = fence(platform, 2)
    assert baseline is not None
    platform.target.deploy(deploy_request(v2, PROD).model_copy(update={"fence": 2}), no_heartbeat)
    assert set(versions_seen(platform.entrypoint_url(PROD), 10)) == {"2.0.0"}
    restore = RestoreRequest(service=SERVICE, environment=PROD, target=baseline, fence=3)
    first = platform.target.restore(restore, no_heartbeat)
    assert (first.restored_digest, first.changed) == (v1.digest, True)
    assert set(versions_seen(platform.entrypoint_url(PROD), 20)) == {"1.0.0"}
    again = platform.target.restore(restore, no_heartbeat)
    assert (again.restored_digest, again.changed) == (v1.digest, False)
    # The deployer that was rolled back cannot come back with its old token.
    with pytest.raises(ApplicationError):
        platform.target.deploy(
            deploy_request(v2, PROD).model_copy(update={"fence": 2}), no_heartbeat
        )
