"""Issue 16 item 3, "a definition cannot weaken a gate", on the time-skipping server: each
breach reported is refused by `slipway validate` and again by the worker at a run's start,
and a run never deploys without its approval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner

import worker as worker_module
from contracts.definition import dag
from contracts.definition.loading import load_pipeline, validate_definition
from contracts.definition.model import DefinitionError, PipelineSpec
from contracts.messages import PipelineResult, PipelineState, StageState
from starters.runs import pipeline_outcome, replay_history
from tests.support.memory import MemoryBackends
from tests.support.pipelines import (
    ROOT,
    heal7,
    run_context,
    start,
    wait_for_gate,
    wait_for_stage,
)
from tests.workflows.test_pipeline import approve
from worker import build_worker
from workflows.pipeline import workflow as pipeline_module

pytestmark = pytest.mark.timeout(60)

POLICY = """\
people:
  alice: {roles: [team_lead], emails: [alice@example.com]}
  bob: {roles: [team_lead, developer], emails: [bob@example.com]}
  carol: {roles: [cto], emails: [carol@example.com]}
  dave: {roles: [devops_lead], emails: [dave@example.com]}
gates:
  "*": {signatures: optional}
  staging: {roles: [team_lead]}
  fast: {roles: [team_lead], quorum: 1}
  production: {roles: [cto, devops_lead], signatures: required}
environments:
  staging: {}
  production: {requires_approval: true, concurrency: queue}
"""


def policy_file(
    tmp_path: Path, extra: dict[str, Any] | None = None, gates: dict[str, Any] | None = None
) -> Path:
    data = yaml.safe_load(POLICY)
    data["gates"].update(gates or {})
    for env, rule in (extra or {}).items():
        data["environments"][env].update(rule)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def unchecked(change: dict[str, Any], **stage_changes: dict[str, Any]) -> PipelineSpec:
    """HEAL7 changed as a definition that never went through `slipway validate` (a script,
    `temporal workflow start`): the models' own fields are checked, no rule across them."""
    data = heal7().model_dump(mode="json", by_alias=True)
    data["source"] = "weak.yaml"
    for key, value in change.items():
        data[key] = value
    for name, fields in stage_changes.items():
        next(s for s in data["stages"] if s["name"] == name).update(fields)
    return PipelineSpec.model_validate(data)


def assert_nothing_built(memory: MemoryBackends, result: PipelineResult) -> None:
    assert memory.builder.calls == []
    assert "production" not in result.deployed
    assert all(s.state == StageState.PENDING for s in result.stages)


def test_hello_extended_with_a_gate_that_continues_is_refused(tmp_path: Path) -> None:
    """The reported definition: hello.yaml with a production gate that times out in 1 s and
    lets the run go on."""
    weak = tmp_path / "weak.yaml"
    weak.write_text(
        yaml.safe_dump(
            {
                "extends": str(ROOT / "pipelines" / "hello.yaml"),
                "name": "weak",
                "stages": [
                    {"name": "approve_production", "timeout": "1s", "on_failure": "continue"}
                ],
            }
        )
    )
    with pytest.raises(DefinitionError) as refused:
        load_pipeline(weak, extends_roots=[ROOT / "pipelines"])
    [problem] = refused.value.problems
    assert str(problem) == (
        f"{weak}: stage 'approve_production', field 'on_failure': an approval takes only "
        "on_failure: fail ('continue' would let what needs the gate run when it is rejected "
        "or times out)"
    )


def test_only_approval_ancestors_are_counted() -> None:
    spec = heal7()
    before = dag.ancestors_of_kind(spec.stages, "approval")
    assert before["deploy_production"] == ["approve_staging", "approve_production"]
    assert before["monitor"] == ["approve_staging", "approve_production"]
    assert before["deploy_staging"] == ["approve_staging"]
    assert before["build"] == []
    assert before["approve_production"] == ["approve_staging"]


async def test_a_gate_that_continues_is_refused_by_the_worker_at_start(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    spec = unchecked({}, approve_production={"timeout": "PT1S", "on_failure": "continue"})
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue, spec, run_context())
        result = await pipeline_outcome(handle)
        await replay_history(await handle.fetch_history())
    assert result.state == PipelineState.FAILED
    assert (
        "weak.yaml: stage 'approve_production', field 'on_failure': an approval takes only "
        "on_failure: fail" in result.failure
    )
    assert_nothing_built(memory, result)


async def test_a_gate_not_given_holds_what_follows_whatever_its_on_failure(
    time_env: WorkflowEnvironment,
    memory: MemoryBackends,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Defence in depth: with the start check out of the way (unsandboxed, patched out), the
    production gate times out, and nothing after it starts: the run fails, production keeps
    what it served."""
    monkeypatch.setattr(pipeline_module, "definition_problems", lambda spec: [])
    monkeypatch.setattr(worker_module, "workflow_runner", UnsandboxedWorkflowRunner)
    spec = unchecked({}, approve_production={"timeout": "PT1S", "on_failure": "continue"})
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue, spec, run_context())
        await wait_for_gate(handle, "staging")
        await approve(handle, "alice", "staging")
        result = await pipeline_outcome(handle)  # the production gate times out
    states = {s.name: s.state for s in result.stages}
    assert states["approve_production"] == StageState.FAILED
    assert "gate 'production' timed out" in result.failure
    assert result.state == PipelineState.FAILED
    for name in ("deploy_production", "canary", "monitor"):
        assert states[name] == StageState.PENDING, name
    assert "production" not in result.deployed
    assert not [e for e in memory.platform.events if "production" in e]


async def test_a_production_gate_named_staging_is_refused_at_start(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str, tmp_path: Path
) -> None:
    spec = unchecked({}, approve_production={"gate": "staging"})
    async with build_worker(
        time_env.client, memory.backends(), task_queue, policy_file=policy_file(tmp_path)
    ):
        handle = await start(time_env.client, task_queue, spec, run_context())
        result = await pipeline_outcome(handle)
    assert result.state == PipelineState.FAILED
    # The definition's own rule, and the policy's (its environments named too).
    assert "stage 'approve_production', field 'gate': gate 'staging' is named after " in (
        result.failure
    )
    assert "gate 'staging' of production is named after another environment of the " in (
        result.failure
    )
    assert_nothing_built(memory, result)


async def test_a_gates_own_name_cannot_pick_a_weaker_rule(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str, tmp_path: Path
) -> None:
    """A production gate named `fast`, which the policy lets one unsigned team lead open:
    the production rule still holds (signatures, CTO and DevOps lead)."""
    spec = heal7()
    data = spec.model_dump(mode="json", by_alias=True)
    next(s for s in data["stages"] if s["name"] == "approve_production").update(
        gate="fast", roles=["team_lead"]
    )
    spec = load_pipeline_data(data)
    async with build_worker(
        time_env.client, memory.backends(), task_queue, policy_file=policy_file(tmp_path)
    ):
        handle = await start(time_env.client, task_queue, spec, run_context(author="erin"))
        await wait_for_gate(handle, "staging")
        await approve(handle, "alice", "staging")
        st = await wait_for_gate(handle, "fast")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await approve(handle, "alice", "fast")
        result = await pipeline_outcome(handle)  # nobody signs: the gate times out
    [pending] = [p for p in st.pending_approvals if p.gate == "fast"]
    assert "gate 'fast' requires a signed decision" in str(refused.value.cause)
    assert result.state == PipelineState.FAILED
    assert "production" not in result.deployed
    assert pending.environment == "production"


def load_pipeline_data(data: dict[str, Any]) -> PipelineSpec:
    """A definition as `slipway validate` accepts it."""
    return validate_definition(data, "pipeline.yaml")


async def test_supersede_where_the_policy_queues_is_refused_at_start(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str, tmp_path: Path
) -> None:
    data = heal7().model_dump(mode="json", by_alias=True)
    data["environments"]["production"]["concurrency"] = "supersede"
    spec = load_pipeline_data(data)  # valid as a definition: the policy is the worker's
    async with build_worker(
        time_env.client, memory.backends(), task_queue, policy_file=policy_file(tmp_path)
    ):
        handle = await start(time_env.client, task_queue, spec, run_context())
        result = await pipeline_outcome(handle)
    assert result.state == PipelineState.FAILED
    assert result.failure == (
        "the worker's policy runs production with concurrency 'queue'; this run's definition "
        "asks 'supersede' (a newer commit would take the environment from a run mid-change): "
        "remove it or ask 'queue'"
    )
    assert_nothing_built(memory, result)


async def test_the_policys_freeze_holds_a_definition_without_one(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str, tmp_path: Path
) -> None:
    """The policy freezes production from an hour ago for three hours; the definition drops
    every window and names its own override role: the deploy still waits for the window's
    end, and nobody may let it through (the policy names no override role)."""
    began = datetime.now(UTC) - timedelta(hours=1)
    window = {"cron": f"{began.minute} {began.hour} * * *", "duration": "3h"}
    policy = policy_file(
        tmp_path,
        {"production": {"freeze": [window]}},
        gates={"production": {"roles": ["cto", "devops_lead"]}},
    )
    data = heal7().model_dump(mode="json", by_alias=True)
    data["environments"]["production"]["freeze"] = []
    data["environments"]["production"]["freeze_override_roles"] = ["developer"]
    spec = load_pipeline_data(data)
    async with build_worker(time_env.client, memory.backends(), task_queue, policy_file=policy):
        handle = await start(time_env.client, task_queue, spec, run_context(author="erin"))
        await wait_for_gate(handle, "staging")
        await approve(handle, "alice", "staging")
        await wait_for_gate(handle, "production")
        await approve(handle, "carol", "production")
        await approve(handle, "dave", "production")
        st = await wait_for_stage(handle, "deploy_production", StageState.WAITING)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await approve(handle, "bob", "production-freeze")
        result = await pipeline_outcome(handle)  # time skips to the window's end
    waiting = next(s for s in st.stages if s.name == "deploy_production")
    assert waiting.summary.startswith("production is frozen until ")
    assert "approves gate" not in waiting.summary  # no override offered
    assert "no approval gate named 'production-freeze' is open" in str(refused.value.cause)
    assert result.state == PipelineState.SUCCEEDED
    deployed = next(s for s in result.stages if s.name == "deploy_production")
    assert deployed.started_at is not None
    assert deployed.ended_at is not None
    assert deployed.ended_at - deployed.started_at >= timedelta(hours=1, minutes=50)


async def test_a_production_canary_without_its_approval_is_refused_at_start(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    """A canary acting on production with no deploy and no approval before it: the start
    check used to count only deploys."""
    data = heal7().model_dump(mode="json", by_alias=True)
    data["source"] = "sneaky.yaml"
    data["stages"] = [
        s for s in data["stages"] if s["name"] not in ("approve_production", "deploy_production")
    ]
    next(s for s in data["stages"] if s["name"] == "canary")["needs"] = ["uat"]
    spec = PipelineSpec.model_validate(data)
    async with build_worker(time_env.client, memory.backends(), task_queue):
        handle = await start(time_env.client, task_queue, spec, run_context())
        result = await pipeline_outcome(handle)
    assert result.state == PipelineState.FAILED
    assert "sneaky.yaml: stage 'canary', field 'needs': " in result.failure
    assert (
        "the worker's policy requires an approval gate before every deploy to production (and "
        "every canary and monitor there); this run's definition has 'canary', 'monitor' "
        "without one" in result.failure
    )
    assert_nothing_built(memory, result)
