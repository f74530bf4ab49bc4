"""The in-memory platform keeps the fencing rule the real ones keep (workflow tests rely on
it to show a deposed run's writes refused)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from temporalio.exceptions import ApplicationError

from contracts.activity import (
    Artifact,
    DeployRequest,
    FenceRequest,
    RestoreRequest,
    WeightRequest,
)
from contracts.errors import ErrorType
from tests.support.memory_platform import MemoryPlatform


def test_a_stale_token_is_refused_and_nothing_changes() -> None:
    platform = MemoryPlatform()
    artifact = Artifact(digest="sha256:" + "1" * 64, uri="memory://1")
    platform.fence(FenceRequest(service="svc", environment="production", token=3))
    stale: list[Callable[[], object]] = [
        lambda: platform.deploy(
            DeployRequest(
                service="svc", environment="production", slot="stable", artifact=artifact, fence=2
            ),
            lambda _n: None,
        ),
        lambda: platform.set_weight(
            WeightRequest(service="svc", environment="production", canary_weight=10, fence=2)
        ),
        lambda: platform.restore(
            RestoreRequest(service="svc", environment="production", target=None, fence=2),
            lambda _n: None,
        ),
    ]
    for call in stale:
        with pytest.raises(ApplicationError) as refused:
            call()
        assert refused.value.type == ErrorType.STALE_LEASE
    assert platform.envs["production"].stable is None
    assert platform.envs["production"].weight == 0
