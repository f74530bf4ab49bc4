"""Notifications. A notifier that is down never fails the pipeline: the workflow retries the
activity a bounded number of times and then carries on.

A notification with an audience (an approval gate that opened, a rejection) names its people
from the worker's policy, read at each call: the field `to` lists them."""

from __future__ import annotations

from pathlib import Path

from temporalio import activity

from activities.helpers.blocking import run_blocking
from activities.wiring.backends import Notifier
from activities.wiring.observability import activity_log
from contracts.activity import ActivityName, NotifyAudience, NotifyRequest
from plumbing.worker_policy import PolicyError, WorkerPolicy, is_author, policy_cache

__all__ = ["NotifyActivities", "recipients"]


def recipients(policy: WorkerPolicy | None, audience: NotifyAudience) -> str:
    """Who `audience` is, for a person to read: `carol (cto), dave (devops-lead)` for a
    gate's roles; `erin <erin@example.com>` for an author the policy knows."""
    if audience.author:
        if policy is not None:
            for name, person in policy.people.items():
                if is_author(name, person, audience.author):
                    return f"{name} <{person.emails[0]}>" if person.emails else name
        return audience.author
    roles = list(audience.roles)
    if policy is not None:
        pinned = policy.gate_rule(audience.gate, audience.environment).roles
        roles = list(pinned) if pinned else roles
    people = []
    if policy is not None:
        for name, person in sorted(policy.people.items()):
            held = [r for r in person.roles if r in roles]
            if held:
                people.append(f"{name} ({', '.join(held)})")
    wanted = "roles " + ", ".join(roles) if roles else "no role"
    return ", ".join(people) + f" [{wanted}]" if people else f"nobody holds {wanted}"


class NotifyActivities:
    """`policy_file`: the worker's policy (deployers), for notifications with an audience;
    without one (or when it cannot be read) the audience is named as the run gives it."""

    def __init__(self, notifier: Notifier, policy_file: Path | None = None) -> None:
        self._notifier = notifier
        self._policy = policy_cache(policy_file) if policy_file is not None else None

    def _addressed(self, request: NotifyRequest) -> NotifyRequest:
        if request.audience is None:
            return request
        policy = None
        if self._policy is not None:
            try:
                policy = self._policy.load().policy
            except PolicyError as err:
                activity_log().warning("notify_without_policy", reason=str(err))
        to = recipients(policy, request.audience)
        return request.model_copy(update={"fields": {"to": to, **request.fields}})

    @activity.defn(name=ActivityName.NOTIFY)
    async def notify(self, request: NotifyRequest) -> None:
        activity_log(event=request.event, level=request.level).info("notify")
        addressed = self._addressed(request)
        await run_blocking(lambda _progress: self._notifier.send(addressed))
