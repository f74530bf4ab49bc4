"""Whom a gate's and a rejection's notifications name, from the worker's policy."""

from __future__ import annotations

from pathlib import Path

from activities.notify import NotifyActivities, recipients
from contracts.activity import NotifyAudience, NotifyRequest
from plumbing.worker_policy import WorkerPolicy
from tests.support.memory_platform import MemoryNotifier

POLICY = WorkerPolicy.model_validate(
    {
        "people": {
            "carol": {"roles": ["cto"], "emails": ["carol@example.com"]},
            "dave": {"roles": ["devops_lead"]},
            "erin": {"roles": ["developer"], "emails": ["erin@example.com"]},
            "frank": {"roles": ["cto", "devops_lead"]},
        },
        "gates": {"production": {"roles": ["cto", "devops_lead"]}},
    }
)


def test_a_gate_names_the_people_holding_its_roles_the_policy_pinning_them() -> None:
    # The definition asks for a team lead; the policy's production rule adds its roles.
    audience = NotifyAudience(roles=["cto"], gate="production", environment="production")
    assert recipients(POLICY, audience) == (
        "carol (cto), dave (devops_lead), frank (cto, devops_lead) [roles cto, devops_lead]"
    )
    staging = NotifyAudience(roles=["team_lead"], gate="staging", environment="staging")
    assert recipients(POLICY, staging) == "nobody holds roles team_lead"
    assert recipients(None, staging) == "nobody holds roles team_lead"


def test_a_rejection_names_the_author_by_the_policys_people() -> None:
    by_email = NotifyAudience(author="Erin Example <erin@example.com>")
    assert recipients(POLICY, by_email) == "erin <erin@example.com>"
    stranger = NotifyAudience(author="Zed <zed@example.org>")
    assert recipients(POLICY, stranger) == "Zed <zed@example.org>"


async def test_the_activity_reads_the_policy_file_and_adds_who_to_the_fields(
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("people:\n  carol: {roles: [cto], emails: [carol@example.com]}\n")
    notifier = MemoryNotifier()
    activities = NotifyActivities(notifier, policy)
    request = NotifyRequest(
        level="info",
        event="approval.waiting",
        message="waits",
        audience=NotifyAudience(roles=["cto"], gate="production", environment="production"),
    )

    await activities.notify(request)
    await activities.notify(request.model_copy(update={"audience": None}))

    assert [n.fields.get("to") for n in notifier.sent] == ["carol (cto) [roles cto]", None]
