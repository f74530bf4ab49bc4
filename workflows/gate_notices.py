"""People are told when an approval gate waits for them, and when their commit is rejected.

A gate that opens notifies its approvers (the worker's policy names the people holding the
gate's roles) with the command that answers it; a rejection (by a person, or a timeout)
notifies the commit's author.
"""

from __future__ import annotations

from temporalio import workflow

from contracts.activity import NotifyAudience
from contracts.definition.model import ApprovalStage
from workflows.calls import notify

__all__ = ["GATE_NOTICES", "gate_opened", "gate_rejected"]

GATE_NOTICES = "gate-notices"
"""Patch id: runs recorded before it opened approval gates and took rejections without
notifying anyone."""


async def gate_opened(stage: ApprovalStage, service: str) -> None:
    run = workflow.info().workflow_id
    gate = stage.gate_name
    quorum = f", {stage.quorum} of them" if stage.quorum else ""
    command = f"slipway approve {run} --gate {gate} --approver YOU --comment '...'"
    await notify(
        "info",
        "approval.waiting",
        f"gate '{gate}' ({stage.name}) of {run} waits for {', '.join(stage.roles)}{quorum}: "
        f"`{command}` (or `slipway reject ...` with the same arguments)",
        service,
        stage.environment,
        stage=stage.name,
        fields={"gate": gate, "run": run, "approve": command},
        audience=NotifyAudience(roles=list(stage.roles), gate=gate, environment=stage.environment),
    )


async def gate_rejected(stage: ApprovalStage, service: str, author: str, why: str) -> None:
    run = workflow.info().workflow_id
    gate = stage.gate_name
    await notify(
        "warning",
        "approval.rejected",
        f"gate '{gate}' ({stage.name}) of {run} was {why}: the run stops here",
        service,
        stage.environment,
        stage=stage.name,
        fields={"gate": gate, "run": run},
        audience=NotifyAudience(author=author or "(unknown author)"),
    )
