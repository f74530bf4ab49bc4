"""The demo's two releases, end to end on real processes: the Temporal dev server, a worker
subprocess on the local platform (Traefik + hello-service processes), approvals through the
`slipway` CLI. Asserted from the workflow results and from outside (HTTP to production's
entry point, Traefik's own API)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from activities.platforms.local import LocalPlatform
from contracts.activity import WeightRequest
from starters.demo import deliver
from starters.localstack import commit_fault, make_service_repo, production_version
from tests.support.devstack import Stack, running_stack
from workflows.messages import PipelineState, StageState

pytestmark = [pytest.mark.e2e, pytest.mark.realserver]


@pytest_asyncio.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path, "e2e") as started:
        yield started


async def test_good_release_is_promoted_and_slow_release_is_rolled_back(stack: Stack) -> None:
    repo = stack.repo
    address, queue = stack.server.address, stack.worker.task_queue

    good = await deliver(address, queue, repo, make_service_repo(repo), "0.1.0")
    result = good.result
    assert result.state == PipelineState.SUCCEEDED, result.failure
    assert result.artifact is not None
    digest = result.artifact.digest
    assert result.deployed == {"development": digest, "staging": digest, "production": digest}
    serving = production_version(stack.production_port)
    assert (serving["version"], serving["digest"]) == ("0.1.0", digest)
    assert [a.approver for a in result.approvals if a.accepted] == ["alice", "carol", "dave"]

    slow = await deliver(
        address, queue, repo, commit_fault(repo, extra_latency_ms=800), "0.2.0 slow"
    )
    result = slow.result
    assert result.state == PipelineState.ROLLED_BACK
    canary = next(s for s in result.stages if s.name == "canary")
    assert canary.state == StageState.FAILED
    assert "p95_latency_ms" in canary.summary
    assert "production" in result.rolled_back
    # From outside: production still answers with the first release, and Traefik sends no
    # traffic to a canary any more.
    serving = production_version(stack.production_port)
    assert (serving["version"], serving["digest"]) == ("0.1.0", digest)
    platform = LocalPlatform(stack.platform_dir, base_port=stack.worker.base_port)
    assert platform.router.verify_weight(
        WeightRequest(service="hello", environment="production", canary_weight=0)
    )
