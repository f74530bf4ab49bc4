"""Two commits of one service both approved for production, end to end on real processes (the
stack of `test_many_commits.py`, started for this module alone): production queues, the older
goes first, the newer waits `queued behind` it, and production ends on the newer. Asserted
from the runs' results and status, the production environment workflow's record and HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from contracts.messages import PipelineState
from demo.localstack import make_service_repo, production_version, wait_for_gate
from tests.e2e.commitskit import approve_gate, environment, release, start
from tests.e2e.crashkit import outcome
from tests.support.devstack import Stack, running_stack
from workflows.pipeline.workflow import PipelineWorkflow

pytestmark = [pytest.mark.e2e, pytest.mark.realserver]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path_factory.mktemp("queue"), "queue") as started:
        yield started


async def test_production_queues_and_ends_on_the_newer_commit(stack: Stack) -> None:
    repo = stack.home / "repo"
    make_service_repo(repo)
    third = release(repo, "0.3.0")
    fourth = release(repo, "0.4.0")
    older = await start(stack, repo, third)
    assert await approve_gate(stack, older, "staging")
    await wait_for_gate(stack.client, older, "production", timeout_s=240)
    newer = await start(stack, repo, fourth)
    assert await approve_gate(stack, newer, "staging")
    await wait_for_gate(stack.client, newer, "production", timeout_s=240)
    assert await approve_gate(stack, older, "production")
    assert await approve_gate(stack, newer, "production")
    handle = stack.client.get_workflow_handle(newer)
    queued = ""
    for _ in range(200):
        st = await handle.query(PipelineWorkflow.status)
        queued = next((s.summary for s in st.stages if s.state.value == "queued"), queued)
        if queued or st.state.value != "running":
            break
        await asyncio.sleep(0.2)
    first, second = await asyncio.gather(
        outcome(stack.client, older, 400), outcome(stack.client, newer, 400)
    )
    assert queued.startswith(f"queued behind {older} for production")
    assert first.state == PipelineState.SUCCEEDED, first.failure
    assert second.state == PipelineState.SUCCEEDED, second.failure
    assert production_version(stack.production_port).get("version") == "0.4.0"
    prod = await environment(stack, "production")
    served = [e.run for e in prod.releases if e.outcome in ("serving", "replaced")]
    assert served[-2:] == [older, newer]
