"""Starting pipelines in tests: definitions, run contexts, waiting for gates."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from workflows.messages import PipelineInput, PipelineStatus, RunContext, StageState
from workflows.naming import pipeline_id
from workflows.pipeline import PipelineWorkflow
from workflows.spec import PipelineSpec, load_pipeline

ROOT = Path(__file__).resolve().parents[2]
ROLES = {
    "alice": ["team_lead"],
    "bob": ["team_lead", "developer"],
    "carol": ["cto"],
    "dave": ["devops_lead"],
    "erin": ["developer"],
    "frank": ["cto", "devops_lead"],
}


def heal7() -> PipelineSpec:
    return load_pipeline(ROOT / "pipelines" / "heal7.yaml")


def run_context(author: str = "bob", branch: str = "main", **kw: Any) -> RunContext:
    commit = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    fields: dict[str, Any] = {"service": "heal7-backend", "repo": "memory://heal7", **kw}
    return RunContext(commit=commit, author=author, branch=branch, **fields)


async def start(
    client: Client,
    task_queue: str,
    spec: PipelineSpec | None = None,
    run: RunContext | None = None,
) -> WorkflowHandle[PipelineWorkflow, Any]:
    spec = spec or heal7()
    run = run or run_context()
    return await client.start_workflow(
        PipelineWorkflow.run,
        PipelineInput(spec=spec, run=run, roles=ROLES),
        id=pipeline_id(spec.service.name, run.branch, run.commit) + "-" + uuid.uuid4().hex[:6],
        task_queue=task_queue,
    )


async def status(handle: WorkflowHandle[PipelineWorkflow, Any]) -> PipelineStatus:
    return await handle.query(PipelineWorkflow.status)


async def wait_for_gate(
    handle: WorkflowHandle[PipelineWorkflow, Any], gate: str, timeout_s: float = 20
) -> PipelineStatus:
    """Poll the status query until `gate` is open (bounded)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        st = await status(handle)
        if any(p.gate == gate for p in st.pending_approvals):
            return st
        if st.state.value != "running" or asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"gate {gate!r} never opened: {st.model_dump_json(indent=1)}")
        await asyncio.sleep(0.05)


async def wait_for_stage(
    handle: WorkflowHandle[PipelineWorkflow, Any],
    stage: str,
    state: StageState,
    timeout_s: float = 20,
) -> PipelineStatus:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        st = await status(handle)
        if any(s.name == stage and s.state == state for s in st.stages):
            return st
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"stage {stage!r} never reached {state}")
        await asyncio.sleep(0.05)
