"""Tools for the several-commits tests: runs of hello-service started with a commit time, and
gates approved as people would (the stack itself is `tests.support.devstack`)."""

from __future__ import annotations

import re
from pathlib import Path

from contracts.messages import EnvironmentState, PipelineResult, RunContext
from contracts.naming import environment_id
from demo.localstack import git, wait_for_gate
from starters.runs import start_pipeline
from tests.e2e.crashkit import approve, ended_why, outcome
from tests.support.devstack import APPROVERS, DEMO_ROLES, HELLO_SPEC, Stack
from workflows.environment.workflow import EnvironmentWorkflow

__all__ = ["approve_gate", "approve_through", "environment", "release", "start"]


def release(repo: Path, version: str) -> str:
    """A new, good commit of hello-service that reports `version`."""
    pyproject = repo / "pyproject.toml"
    text = re.sub(r'^version = ".*"$', f'version = "{version}"', pyproject.read_text(), flags=re.M)
    pyproject.write_text(text, encoding="utf-8")
    git(repo, "commit", "-q", "-am", f"hello-service {version}")
    return git(repo, "rev-parse", "HEAD")


async def start(stack: Stack, repo: Path, commit: str) -> str:
    """Start `commit`'s run; runs are ordered by git's committer time of their commit."""
    run = RunContext(
        service="hello",
        repo=str(repo),
        commit=commit,
        author="erin",
        branch="main",
    )
    started = await start_pipeline(
        stack.client, HELLO_SPEC, run, DEMO_ROLES, stack.worker.task_queue
    )
    return started.workflow_id


async def approve_gate(stack: Stack, workflow_id: str, gate: str) -> bool:
    """Approve `gate` once it opens; False if the run ended first."""
    st = await wait_for_gate(stack.client, workflow_id, gate, timeout_s=240)
    if st.state.value != "running":
        print(f"{workflow_id} ended before gate {gate}: {ended_why(st)}")
        return False
    await approve(stack.client, workflow_id, gate, APPROVERS[gate])
    return True


async def approve_through(
    stack: Stack, workflow_id: str, gates: tuple[str, ...] = tuple(APPROVERS)
) -> PipelineResult:
    """Approve `gates` as they open (as people would), then wait for the outcome."""
    for gate in gates:
        if not await approve_gate(stack, workflow_id, gate):
            break
    return await outcome(stack.client, workflow_id, 400)


async def environment(stack: Stack, name: str) -> EnvironmentState:
    handle = stack.client.get_workflow_handle(environment_id("hello", name))
    return await handle.query(EnvironmentWorkflow.state)
