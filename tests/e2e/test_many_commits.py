"""Several commits of one service in flight, end to end on real processes: the Temporal dev
server, a worker subprocess on the local platform (Traefik, hello-service releases), the demo
definition. Asserted from the runs' results, the environment workflows' records and HTTP.

1. Two commits started together: development and staging supersede, so the older one ends
   `superseded` (naming the newer) and the newer reaches production. Neither fails.
2. Two more commits, both approved for production: production queues, the older goes first,
   the newer waits `queued behind` it, and production ends on the newer.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from starters.localstack import (
    commit_fault,
    git,
    make_service_repo,
    production_version,
    wait_for_gate,
)
from starters.runs import start_pipeline
from tests.e2e.crashkit import approve, outcome
from tests.support.devstack import APPROVERS, DEMO_ROLES, HELLO_SPEC, Stack, running_stack
from workflows.environment import EnvironmentWorkflow
from workflows.messages import EnvironmentState, PipelineResult, PipelineState, RunContext
from workflows.naming import environment_id
from workflows.pipeline import PipelineWorkflow

pytestmark = [pytest.mark.e2e, pytest.mark.realserver]

T0 = datetime.now(UTC) - timedelta(hours=1)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path_factory.mktemp("many"), "many") as started:
        yield started


def release(repo: Path, version: str) -> str:
    """A new, good commit of hello-service that reports `version`."""
    pyproject = repo / "pyproject.toml"
    text = re.sub(r'^version = ".*"$', f'version = "{version}"', pyproject.read_text(), flags=re.M)
    pyproject.write_text(text, encoding="utf-8")
    git(repo, "commit", "-q", "-am", f"hello-service {version}")
    return git(repo, "rev-parse", "HEAD")


async def start(stack: Stack, repo: Path, commit: str, minute: int) -> str:
    run = RunContext(
        service="hello",
        repo=str(repo),
        commit=commit,
        author="erin",
        branch="main",
        commit_time=T0 + timedelta(minutes=minute),
    )
    started = await start_pipeline(
        stack.client, HELLO_SPEC, run, DEMO_ROLES, stack.worker.task_queue
    )
    return started.workflow_id


async def approve_gate(stack: Stack, workflow_id: str, gate: str) -> bool:
    """Approve `gate` once it opens; False if the run ended first."""
    st = await wait_for_gate(stack.client, workflow_id, gate, timeout_s=240)
    if st.state.value != "running":
        return False
    await approve(stack.client, workflow_id, gate, APPROVERS[gate])
    return True


async def approve_through(stack: Stack, workflow_id: str) -> PipelineResult:
    """Approve every gate as it opens (as people would), then wait for the outcome."""
    for gate in APPROVERS:
        if not await approve_gate(stack, workflow_id, gate):
            break
    return await outcome(stack.client, workflow_id, 400)


async def environment(stack: Stack, name: str) -> EnvironmentState:
    handle = stack.client.get_workflow_handle(environment_id("hello", name))
    return await handle.query(EnvironmentWorkflow.state)


async def test_two_commits_at_once_the_newer_supersedes(stack: Stack) -> None:
    repo = stack.home / "repo"
    first = make_service_repo(repo)
    second = commit_fault(repo, version="0.2.0")
    older = await start(stack, repo, first, 0)
    newer = await start(stack, repo, second, 1)
    results = await asyncio.gather(approve_through(stack, older), approve_through(stack, newer))
    lost, won = results
    assert lost.state == PipelineState.SUPERSEDED, lost.failure
    assert lost.superseded_by == newer
    assert won.state == PipelineState.SUCCEEDED, won.failure
    assert production_version(stack.production_port).get("version") == "0.2.0"
    prod = await environment(stack, "production")
    assert prod.serving is not None
    assert prod.serving.run == newer


async def test_production_queues_and_ends_on_the_newer_commit(stack: Stack) -> None:
    repo = stack.home / "repo"
    third = release(repo, "0.3.0")
    fourth = release(repo, "0.4.0")
    older = await start(stack, repo, third, 2)
    assert await approve_gate(stack, older, "staging")
    await wait_for_gate(stack.client, older, "production", timeout_s=240)
    newer = await start(stack, repo, fourth, 3)
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
