"""Checkout: a working tree of one commit, cached by sha."""

from __future__ import annotations

from temporalio import activity

from activities.helpers.blocking import run_blocking
from activities.wiring.backends import SourceProvider
from activities.wiring.observability import activity_log
from contracts.activity import ActivityName, CheckoutRequest, Workspace


class SourceActivities:
    def __init__(self, source: SourceProvider) -> None:
        self._source = source

    @activity.defn(name=ActivityName.CHECKOUT)
    async def checkout(self, request: CheckoutRequest) -> Workspace:
        activity_log(repo=request.repo, commit=request.commit).info("checkout")
        return await run_blocking(lambda _progress: self._source.ensure(request))
