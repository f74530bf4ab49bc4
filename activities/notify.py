"""Notifications. A notifier that is down never fails the pipeline: the workflow retries the
activity a bounded number of times and then carries on."""

from __future__ import annotations

from temporalio import activity

from activities._blocking import run_blocking
from activities.backends import Notifier
from activities.observability import activity_log
from contracts.activity import ActivityName, NotifyRequest


class NotifyActivities:
    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    @activity.defn(name=ActivityName.NOTIFY)
    async def notify(self, request: NotifyRequest) -> None:
        activity_log(event=request.event, level=request.level).info("notify")
        await run_blocking(lambda _progress: self._notifier.send(request))
