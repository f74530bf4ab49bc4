"""Two commits of one service started together, end to end on real processes: the Temporal dev
server, a worker subprocess on the local platform (Traefik, hello-service releases), the demo
definition. Development and staging supersede, so the older run ends `superseded` (naming the
newer) and the newer reaches production; neither fails. Asserted from the runs' results, the
production environment workflow's record and HTTP. (Production's queue has its own module and
stack, `test_many_commits_queue.py`, so the two run side by side.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from contracts.messages import PipelineState
from demo.localstack import commit_fault, make_service_repo, production_version, wait_for_gate
from tests.e2e.commitskit import approve_gate, approve_through, environment, start
from tests.support.devstack import Stack, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.realserver]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path_factory.mktemp("many"), "many") as started:
        yield started


async def test_two_commits_at_once_the_newer_supersedes(stack: Stack) -> None:
    repo = stack.home / "repo"
    first = make_service_repo(repo)
    second = commit_fault(repo, version="0.2.0")
    older = await start(stack, repo, first)
    newer = await start(stack, repo, second)
    # The newer is let through staging first. Whichever build finishes first, the older then
    # meets the newer in development or in staging; approving both at once would race the two
    # builds, and an older run that has left staging before the newer arrives rightly succeeds.
    assert await approve_gate(stack, newer, "staging")
    await wait_for_gate(stack.client, newer, "production", timeout_s=240)
    lost, won = await asyncio.gather(
        approve_through(stack, older), approve_through(stack, newer, ("production",))
    )
    assert lost.state == PipelineState.SUPERSEDED, lost.failure
    assert lost.superseded_by == newer
    assert won.state == PipelineState.SUCCEEDED, won.failure
    assert production_version(stack.production_port).get("version") == "0.2.0"
    prod = await environment(stack, "production")
    assert prod.serving is not None
    assert prod.serving.run == newer
