"""Decisions judged by the worker's policy on the time-skipping server: signatures made with
real SSH keys, operator actions as policy-checked updates, nonces, bounded records, the
policy's hash and its gating rule at a run's start."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from contracts.definition.loading import validate_definition
from contracts.messages import (
    ActionRecord,
    CanaryControl,
    Decision,
    PipelineState,
)
from plumbing.updates import execute_update
from plumbing.worker_policy import load_policy
from starters.runs import pipeline_outcome, replay_history
from starters.signing import sign_for
from tests.support.memory import MemoryBackends
from tests.support.pipelines import Handle, heal7, run_context, start, wait_for_gate
from tests.support.policy import make_key, write_policy
from tests.workflows.test_pipeline import approve, wait_for_canary_interval
from worker import build_worker
from workflows.decision_desk import REFUSED_KEPT
from workflows.pipeline.workflow import PipelineWorkflow

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    home = tmp_path_factory.mktemp("keys")
    return {p: make_key(home, p) for p in ("alice", "carol", "dave", "erin")}


async def signed_approval(
    client: Client, handle: Handle, key: Path, by: str, gate: str
) -> Decision:
    """What `slipway approve --key` sends (`starters.signing.sign_for`)."""
    s = await sign_for(
        client, handle.id, subject=f"gate:{gate}", decision="approve", by=by, comment="", key=key
    )
    return Decision(approver=by, gate=gate, **s.model_dump())


async def test_signed_production_gate_operator_rights_and_replays(
    time_env: WorkflowEnvironment,
    memory: MemoryBackends,
    task_queue: str,
    tmp_path: Path,
    keys: dict[str, Path],
) -> None:
    policy = write_policy(tmp_path / "policy.yaml", keys)
    async with build_worker(time_env.client, memory.backends(), task_queue, policy_file=policy):
        handle = await start(time_env.client, task_queue)
        await wait_for_gate(handle, "staging")
        await approve(handle, "alice", "staging")  # staging takes unsigned decisions
        await wait_for_gate(handle, "production")
        # Unsigned: refused (update) and recorded; a flood of signals stays bounded.
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await approve(handle, "carol", "production")
        assert "gate 'production' requires a signed decision" in str(info.value.cause)
        for _ in range(REFUSED_KEPT + 5):
            await handle.signal(
                PipelineWorkflow.approve_signal,
                Decision(approver="dave", gate="production", comment="x" * 2000),
            )
        carol = await signed_approval(time_env.client, handle, keys["carol"], "carol", "production")
        record = await execute_update(handle, PipelineWorkflow.approve_update, carol)
        assert record.accepted
        assert record.signer_key.startswith("SHA256:")
        # erin's own key, erin's own name: a valid signature, but not a production role.
        erin = await signed_approval(time_env.client, handle, keys["erin"], "erin", "production")
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await execute_update(handle, PipelineWorkflow.approve_update, erin)
        assert "'erin' holds ['developer']; gate 'production' needs one of" in str(info.value.cause)
        # The same signed decision again: its nonce was used in this run.
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await execute_update(
                handle,
                PipelineWorkflow.approve_update,
                erin.model_copy(update={"gate": "production"}),
            )
        assert "nonce was already used in this run" in str(info.value.cause)
        dave = await signed_approval(time_env.client, handle, keys["dave"], "dave", "production")
        await execute_update(handle, PipelineWorkflow.approve_update, dave)
        await wait_for_canary_interval(time_env, handle)

        # Operator actions: erin may not promote a canary; dave may pause it (signed), and
        # his signed pause cannot be sent twice.
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await execute_update(handle, "promote", CanaryControl(by="erin"))
        assert "'erin' holds ['developer']; promote needs one of" in str(info.value.cause)
        pause = await sign_for(
            time_env.client,
            handle.id,
            subject="action:pause",
            decision="pause",
            by="dave",
            comment="",
            key=keys["dave"],
        )
        control = CanaryControl(by="dave", **pause.model_dump())
        paused = await execute_update(handle, "pause", control, result_type=ActionRecord)
        assert paused.accepted
        assert paused.signer_key
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await execute_update(handle, "pause", control, result_type=ActionRecord)
        assert "nonce was already used" in str(info.value.cause)
        # A bare signal (the Web UI) by someone without the right is refused and recorded.
        await handle.signal(PipelineWorkflow.promote, CanaryControl(by="alice"))
        await execute_update(handle, "resume", CanaryControl(by="dave"), result_type=ActionRecord)
        result = await pipeline_outcome(handle)
        # The history with its verdicts replays against this code (no policy file is read).
        await replay_history(await handle.fetch_history())

    assert result.state == PipelineState.SUCCEEDED
    assert result.policy_hash == load_policy(policy).hash
    accepted = [(a.approver, a.gate, bool(a.signature)) for a in result.approvals if a.accepted]
    assert accepted == [
        ("alice", "staging", False),
        ("carol", "production", True),
        ("dave", "production", True),
    ]
    refused = [a for a in result.approvals if not a.accepted]
    assert (refused[0].approver, refused[0].via) == ("carol", "update")
    assert "slipway approve" in refused[0].reason  # the command that would have counted
    # Kept up to the bound (comments clipped), the rest counted.
    kept = len(refused) + sum(1 for a in result.actions if not a.accepted)
    assert kept == REFUSED_KEPT
    assert result.refused_not_kept > 0
    assert all(len(a.comment) <= 500 for a in result.approvals)
    actions = [(a.action, a.by, a.accepted, a.via) for a in result.actions]
    assert ("pause", "dave", True, "update") in actions
    assert ("resume", "dave", True, "update") in actions


async def test_alice_may_not_promote_through_a_signal(
    time_env: WorkflowEnvironment,
    memory: MemoryBackends,
    task_queue: str,
    tmp_path: Path,
    keys: dict[str, Path],
) -> None:
    policy = write_policy(tmp_path / "policy.yaml", keys, gates={"*": {"signatures": "optional"}})
    async with build_worker(time_env.client, memory.backends(), task_queue, policy_file=policy):
        handle = await start(time_env.client, task_queue)
        await wait_for_gate(handle, "staging")
        await approve(handle, "alice", "staging")
        await wait_for_gate(handle, "production")
        await approve(handle, "carol", "production")
        await approve(handle, "dave", "production")
        await wait_for_canary_interval(time_env, handle)
        await handle.signal(PipelineWorkflow.promote, CanaryControl(by="alice"))
        result = await pipeline_outcome(handle)
    canary = next(s for s in result.stages if s.name == "canary")
    # All five steps ran: alice's promote did not skip them.
    assert canary.summary == "promoted after 5 analyses (0 failed)"
    [refused] = [a for a in result.actions if not a.accepted]
    assert (refused.action, refused.by, refused.via) == ("promote", "alice", "signal")
    assert "promote needs one of ['cto', 'devops_lead']" in refused.reason


async def test_a_run_without_the_gate_the_policy_requires_does_not_start(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "people:\n  dave: {roles: [devops_lead]}\n"
        "environments:\n  production: {requires_approval: true}\n"
    )
    spec = validate_definition(
        {
            "name": "ungated",
            "service": {"name": "heal7-backend"},
            "environments": {"production": {}},
            "stages": [
                {"name": "checkout", "kind": "checkout"},
                {"name": "build", "kind": "build", "needs": ["checkout"]},
                {
                    "name": "deploy_prod",
                    "kind": "deploy",
                    "needs": ["build"],
                    "environment": "production",
                },
            ],
        },
        "ungated.yaml",
    )
    async with build_worker(time_env.client, memory.backends(), task_queue, policy_file=policy):
        handle = await start(time_env.client, task_queue, spec, run_context())
        result = await pipeline_outcome(handle)
    assert result.state == PipelineState.FAILED
    assert "requires an approval gate before every deploy to production" in result.failure
    assert memory.builder.calls == []
    assert "production" not in memory.platform.envs or not memory.platform.envs["production"].stable


async def test_a_control_sent_straight_to_the_canary_is_ignored(
    time_env: WorkflowEnvironment,
    memory: MemoryBackends,
    task_queue: str,
    tmp_path: Path,
    keys: dict[str, Path],
) -> None:
    """`temporal workflow signal` to the canary child skips the pipeline's policy check: the
    canary ignores it and says so in its result."""
    from contracts.messages import CanaryResult
    from contracts.naming import canary_id
    from workflows.canary import CanaryWorkflow

    policy = write_policy(tmp_path / "policy.yaml", keys, gates={"*": {"signatures": "optional"}})
    async with build_worker(time_env.client, memory.backends(), task_queue, policy_file=policy):
        handle = await start(time_env.client, task_queue)
        await wait_for_gate(handle, "staging")
        await approve(handle, "alice", "staging")
        await wait_for_gate(handle, "production")
        await approve(handle, "carol", "production")
        await approve(handle, "dave", "production")
        await wait_for_canary_interval(time_env, handle)
        child = time_env.client.get_workflow_handle(canary_id(handle.id, "canary"))
        await child.signal(CanaryWorkflow.promote, CanaryControl(by="erin"))
        result = await pipeline_outcome(handle)
        canary = CanaryResult.model_validate(await child.result())
    assert result.state == PipelineState.SUCCEEDED
    assert canary.reason == "all steps passed"
    assert len(canary.steps) == 5
    [ignored] = canary.ignored_controls
    assert ignored.startswith("promote by erin")
    assert "not through the pipeline" in ignored


@pytest.mark.devserver
async def test_a_manual_rollback_is_judged_by_the_policy(
    dev_env: WorkflowEnvironment,
    memory: MemoryBackends,
    task_queue: str,
    tmp_path: Path,
    keys: dict[str, Path],
) -> None:
    from temporalio.client import WorkflowUpdateFailedError

    from contracts.messages import RollbackOutcome
    from contracts.naming import environment_id
    from workflows.environment.workflow import EnvironmentWorkflow
    from workflows.rollback import ManualRollback

    policy = write_policy(tmp_path / "policy.yaml", keys, gates={"*": {"signatures": "optional"}})
    # On the dev server (the time-skipping one was seen to lose this update under load), with a
    # service of its own: environment workflows live as long as the server.
    base = heal7()
    name = f"heal7{uuid.uuid4().hex[:6]}"
    spec = base.model_copy(update={"service": base.service.model_copy(update={"name": name})})
    async with build_worker(dev_env.client, memory.backends(), task_queue, policy_file=policy):
        for _ in range(2):  # two releases reach staging: there is one to go back to
            run = run_context(branch="develop", service=name)
            handle = await start(dev_env.client, task_queue, spec, run)
            await wait_for_gate(handle, "staging")
            await approve(handle, "alice", "staging")
            await pipeline_outcome(handle)
        staging = dev_env.client.get_workflow_handle(environment_id(spec.service.name, "staging"))
        request = ManualRollback(service=spec.service.name, environment="staging", by="erin")
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await execute_update(staging, "rollback_manual", request, result_type=RollbackOutcome)
        assert "'erin' holds ['developer']; rollback needs one of" in str(info.value.cause)
        state = await staging.query(EnvironmentWorkflow.state)
        assert [(r.action, r.by, r.accepted) for r in state.refused] == [
            ("rollback", "erin", False)
        ]
        done = await execute_update(
            staging,
            "rollback_manual",
            request.model_copy(update={"by": "dave"}),
            result_type=RollbackOutcome,
        )
    assert done.status == "rolled_back"
    assert done.reason == "manual rollback by dave"


async def test_the_retired_rollback_workflow_rolls_nothing_back(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str
) -> None:
    # Started by hand, it would roll production back for anyone, with no judgment.
    from temporalio.client import WorkflowFailureError

    from workflows.rollback import ManualRollback, RollbackWorkflow

    memory.platform.already_serving("production", "sha256:" + "1" * 64)
    async with build_worker(time_env.client, memory.backends(), task_queue):
        with pytest.raises(WorkflowFailureError) as info:
            await time_env.client.execute_workflow(
                RollbackWorkflow.run,
                ManualRollback(service="heal7-backend", environment="production", by="mallory"),
                id=f"rollback-{uuid.uuid4().hex[:8]}",
                task_queue=task_queue,
            )
    assert "RollbackWorkflow is retired; nothing was rolled back" in str(info.value.cause)
    assert "slipway rollback --service heal7-backend --environment production" in str(
        info.value.cause
    )
    assert not [e for e in memory.platform.events if "rollback" in e or "weight" in e]
