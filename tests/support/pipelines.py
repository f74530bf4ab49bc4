"""Starting pipelines in tests: definitions, run contexts, waiting for gates."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from contracts.definition.loading import load_pipeline
from contracts.definition.model import PipelineSpec
from contracts.messages import PipelineInput, PipelineStatus, RunContext, StageState
from contracts.naming import pipeline_id
from demo.localstack import gate_or_end
from workflows.pipeline.workflow import PipelineWorkflow

ROOT = Path(__file__).resolve().parents[2]
# A started pipeline run, as the tests hold it.
Handle = WorkflowHandle[PipelineWorkflow, Any]
ROLES = {
    "alice": ["team_lead"],
    "bob": ["team_lead", "developer"],
    "carol": ["cto"],
    "dave": ["devops_lead"],
    "erin": ["developer"],
    "frank": ["cto", "devops_lead"],
}


HEAL7_BACKEND = Path(__file__).with_name("heal7_backend.yaml")
"""The HEAL7 journey of one deployable, the shape the workflow tests drive (see its header)."""


def heal7() -> PipelineSpec:
    return load_pipeline(HEAL7_BACKEND)


def run_context(author: str = "bob", branch: str = "main", **kw: Any) -> RunContext:
    commit = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    fields: dict[str, Any] = {"service": "heal7-backend", "repo": "memory://heal7", **kw}
    return RunContext(commit=commit, author=author, branch=branch, **fields)


async def start(
    client: Client,
    task_queue: str,
    spec: PipelineSpec | None = None,
    run: RunContext | None = None,
    *,
    runner_task_queue: str = "",
) -> Handle:
    spec = spec or heal7()
    run = run or run_context()
    return await client.start_workflow(
        PipelineWorkflow.run,
        PipelineInput(spec=spec, run=run, roles=ROLES, runner_task_queue=runner_task_queue),
        id=pipeline_id(spec.service.name, run.branch, run.commit) + "-" + uuid.uuid4().hex[:6],
        task_queue=task_queue,
    )


async def status(handle: Handle) -> PipelineStatus:
    return await handle.query(PipelineWorkflow.status)


async def wait_for_gate(handle: Handle, gate: str, timeout_s: float = 20) -> PipelineStatus:
    """`demo.localstack.gate_or_end` for in-process runs, where nothing restarts: any
    failed query fails the test at once, and so does a run that ends, or a gate that does not
    open in time. Polled often, as runs on the time-skipping server are quick."""
    try:
        st = await gate_or_end(handle, gate, timeout_s, every_s=0.05, retry=())
    except TimeoutError:
        st = await status(handle)
    if not any(p.gate == gate for p in st.pending_approvals):
        raise AssertionError(f"gate {gate!r} never opened: {st.model_dump_json(indent=1)}")
    return st


async def wait_for_stage(
    handle: Handle,
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
