"""End to end on the dev server: production requires signed decisions.

Unsigned `temporal workflow signal` approvals (what anyone with namespace access can send) are
refused and recorded; `slipway approve` signed with carol's and dave's SSH keys opens the gate;
carol's signature copied from that run onto another run is refused; dave's role, revoked in
the worker's policy file mid-run, refuses his next decision; `slipway audit` verifies every
decision of the finished runs again.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from contracts.definition.loading import validate_definition
from contracts.definition.model import PipelineSpec
from contracts.messages import Decision, PipelineState
from starters.runs import pipeline_outcome, start_pipeline
from tests.integration.test_devserver import cli_env, run_cmd, temporal_cli
from tests.support.memory import MemoryBackends
from tests.support.pipelines import run_context, wait_for_gate
from tests.support.policy import PEOPLE, make_key, write_policy
from worker import build_worker
from workflows.pipeline.workflow import PipelineWorkflow

pytestmark = pytest.mark.devserver


def gated_spec() -> PipelineSpec:
    return validate_definition(
        {
            "name": "signed",
            # A service of its own: environment workflows outlive a test on the dev server.
            "service": {"name": f"svc{uuid.uuid4().hex[:8]}"},
            "environments": {"production": {"requires_approval": True}},
            "stages": [
                {"name": "checkout", "kind": "checkout"},
                {"name": "build", "kind": "build", "needs": ["checkout"]},
                {
                    "name": "approve_production",
                    "kind": "approval",
                    "needs": ["build"],
                    "environment": "production",
                    "roles": ["cto", "devops_lead"],
                },
                {
                    "name": "deploy_production",
                    "kind": "deploy",
                    "needs": ["approve_production"],
                    "environment": "production",
                },
            ],
        },
        "signed.yaml",
    )


async def slipway(env: dict[str, str], *args: str) -> tuple[int, str]:
    code, out, err = await run_cmd(".venv/bin/python", "-m", "starters", *args, env=env)
    return code, out + err


async def unsigned_signal(dev_env: WorkflowEnvironment, workflow_id: str, who: str) -> None:
    code, _, err = await temporal_cli(
        dev_env,
        "workflow",
        "signal",
        "--workflow-id",
        workflow_id,
        "--name",
        "approve",
        "--input",
        json.dumps({"approver": who, "gate": "production"}),
    )
    assert code == 0, err


async def approvals_sent(dev_env: WorkflowEnvironment, workflow_id: str) -> list[dict[str, Any]]:
    """The approve updates a run received, as its history holds them (what anyone who can
    read the history can copy)."""
    history = await dev_env.client.get_workflow_handle(workflow_id).fetch_history()
    sent = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request
            if request.input.name == "approve":
                sent.append(json.loads(request.input.args.payloads[0].data))
    return sent


async def test_production_requires_signed_decisions_end_to_end(
    dev_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str, tmp_path: Path
) -> None:
    client = dev_env.client
    keys = {p: make_key(tmp_path, p) for p in ("carol", "dave")}
    policy = write_policy(tmp_path / "policy.yaml", keys)
    env = {**cli_env(dev_env, task_queue), "SLIPWAY_POLICY_FILE": str(policy)}
    spec = gated_spec()
    async with build_worker(client, memory.backends(), task_queue, policy_file=policy):
        first = await start_pipeline(client, spec, run_context(), {}, task_queue)
        second = await start_pipeline(client, spec, run_context(), {}, task_queue)
        one = client.get_workflow_handle(first.workflow_id)
        two = client.get_workflow_handle(second.workflow_id)
        await wait_for_gate(one, "production")

        # Two bare signals, as in the issue: refused, and the gate stays shut.
        await unsigned_signal(dev_env, first.workflow_id, "carol")
        await unsigned_signal(dev_env, first.workflow_id, "dave")
        st = await wait_for_gate(one, "production")
        assert st.pending_approvals[0].approved_by == []

        for person in ("carol", "dave"):
            code, out = await slipway(
                env,
                "approve",
                first.workflow_id,
                "--approver",
                person,
                "--gate",
                "production",
                "--comment",
                "signed",
                "--key",
                str(keys[person]),
            )
            assert code == 0, out
            assert "signed with SHA256:" in out
        result = await pipeline_outcome(one)
        assert result.state == PipelineState.SUCCEEDED

        # carol's signed approval, copied from the first run's history onto the second run.
        await wait_for_gate(two, "production")
        copied = next(
            d for d in await approvals_sent(dev_env, first.workflow_id) if d["approver"] == "carol"
        )
        assert copied["signature"].startswith("-----BEGIN SSH SIGNATURE-----")
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await two.execute_update(PipelineWorkflow.approve_update, Decision(**copied))
        assert "signature does not verify as 'carol'" in str(info.value.cause)

        # carol approves the second run herself; then dave loses devops_lead in the policy.
        code, out = await slipway(
            env,
            "approve",
            second.workflow_id,
            "--approver",
            "carol",
            "--gate",
            "production",
            "--key",
            str(keys["carol"]),
        )
        assert code == 0, out
        write_policy(policy, keys, people={**PEOPLE, "dave": []})
        code, out = await slipway(
            env,
            "approve",
            second.workflow_id,
            "--approver",
            "dave",
            "--gate",
            "production",
            "--key",
            str(keys["dave"]),
        )
        assert code == 1, out
        assert "refused: 'dave' holds no roles; gate 'production' needs one of" in out
        code, out = await slipway(
            env, "abort", second.workflow_id, "--by", "carol", "--key", str(keys["carol"])
        )
        assert code == 0, out
        aborted = await pipeline_outcome(two)
        assert aborted.state == PipelineState.ABORTED

        code, audited = await slipway(env, "audit", first.workflow_id, "--policy", str(policy))
        code_two, audited_two = await slipway(env, "audit", second.workflow_id)

    refused = [a for a in result.approvals if not a.accepted]
    assert [(a.approver, a.via) for a in refused] == [("carol", "signal"), ("dave", "signal")]
    assert all("requires a signed decision" in a.reason for a in refused)
    assert all(f"slipway approve {first.workflow_id}" in a.reason for a in refused)
    signed = [(a.approver, a.accepted, a.signer_key[:7]) for a in result.approvals if a.signature]
    assert signed == [("carol", True, "SHA256:"), ("dave", True, "SHA256:")]
    assert result.policy_hash.startswith("sha256:")

    assert code == 0, audited
    # Four: two refused unsigned signals, two signed approvals.
    assert "4 decisions, 0 whose signature does not verify" in audited
    assert 'Good "slipway-decision" signature for carol' in audited
    # The second run: the copied signature and dave's refused one are recorded as refused.
    assert code_two == 0, audited_two
    assert "refused  signature does not verify as 'carol'" in audited_two
    assert ("abort", "carol", True) in [(a.action, a.by, a.accepted) for a in aborted.actions]
