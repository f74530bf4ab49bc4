"""The environment leases one pipeline run holds (workflow side, deterministic).

Before a run changes an environment it asks that environment's workflow for the lease and, if
queued, waits for the grant (a signal). Every platform call then carries the lease's fencing
token. The environment may take the lease away (a newer commit superseded this run): the
notice arrives as a signal and `superseded` says by whom. Rollbacks are asked of the
environment, which puts back what served before this run, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

from contracts.activity import ActivityName, DeployRequest, ReleaseSpec
from contracts.messages import (
    Concurrency,
    LeaseAnswer,
    LeaseCheck,
    LeaseNotice,
    LeaseRelease,
    LeaseRequest,
    RollbackOrder,
    RollbackOutcome,
    ServingReport,
)
from workflows.calls import call

__all__ = ["RunLeases", "SupersededError"]


class SupersededError(Exception):
    """This run lost (or could not get) an environment to a newer commit."""


@dataclass
class RunLeases:
    service: str
    run: str
    commit: str
    commit_time: datetime | None = None
    components: list[str] = field(default_factory=list)
    """The run's deployables (`artifacts:`), named in every lease request."""
    held: dict[str, int] = field(default_factory=dict)
    """Environment → fencing token, for leases held by this run."""
    tokens: dict[str, int] = field(default_factory=dict)
    """Environment → the last token this run held (kept after release: its rollback names
    the lease it changed the environment under)."""
    queued: dict[str, str] = field(default_factory=dict)
    """Environment → the run this one waits behind."""
    superseded: LeaseNotice | None = None
    notices: dict[str, LeaseNotice] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)
    """Environments this run may have changed (what an abort rolls back), in order."""
    rolled_back: dict[str, RollbackOutcome] = field(default_factory=dict)
    background: bool = False
    """Reports and releases are sent in the background (LEASE_MESSAGES_IN_BACKGROUND), in
    order per environment; the run settles them before anything else it says to that
    environment, and before it ends."""
    refused_reports: dict[str, str] = field(default_factory=dict)
    """Environment → why it refused this run's report (sent in the background)."""
    confirming: int = 0
    """Notices being checked against their environment's state right now (`confirmed`)."""
    _posts: dict[str, asyncio.Task[None]] = field(default_factory=dict, repr=False)

    @property
    def run_id(self) -> str:
        return workflow.info().run_id

    def token(self, environment: str) -> int:
        return self.held.get(environment, 0)

    def on_notice(self, notice: LeaseNotice) -> None:
        """The environment's signal: a grant we wait for, or the lease taken away."""
        if notice.run_id != self.run_id:
            return  # meant for an earlier run of this workflow id (before a reset)
        if notice.status == "superseded":
            self.held.pop(notice.environment, None)
            if self.superseded is None:
                self.superseded = notice
        else:
            self.notices[notice.environment] = notice

    async def confirmed(self, notice: LeaseNotice) -> bool:
        """Whether the environment's own state says what `notice` says (a signal can come
        from any Temporal client: a forged grant with a high token would let a queued run
        deploy and fence out the holder; a forged superseded notice would stop a run). A
        regular activity, not a local one: it runs beside the run's own flow, and a local
        activity's completion order is not its history order on replay."""
        if notice.run_id != self.run_id:
            return True  # on_notice ignores it anyway
        self.confirming += 1
        try:
            return await self._confirm(notice)
        finally:
            self.confirming -= 1

    async def _confirm(self, notice: LeaseNotice) -> bool:
        return await call(
            ActivityName.CONFIRM_LEASE,
            LeaseCheck(
                service=self.service,
                environment=notice.environment,
                run=self.run,
                run_id=self.run_id,
                status=notice.status,
                token=notice.token,
            ),
            bool,
            activity_id=f"confirm:{notice.environment}:{workflow.uuid4().hex[:8]}",
        )

    def _request_id(self, op: str, environment: str) -> str:
        return f"{self.run}/{self.run_id}/{op}/{environment}/{workflow.uuid4()}"

    async def acquire(
        self,
        environment: str,
        policy: Concurrency,
        stage: str,
        on_queued: Callable[[str, int], None],
    ) -> int:
        """The lease's token, once granted; raises SupersededError if a newer run has it."""
        if environment in self.held:
            return self.held[environment]
        answer = await call(
            ActivityName.ACQUIRE_LEASE,
            LeaseRequest(
                service=self.service,
                environment=environment,
                run=self.run,
                run_id=self.run_id,
                commit=self.commit,
                commit_time=self.commit_time,
                policy=policy,
                request_id=self._request_id("acquire", environment),
                components=self.components,
            ),
            LeaseAnswer,
            activity_id=f"{stage}:lease",
        )
        if answer.status == "superseded":
            self.superseded = LeaseNotice(
                environment=environment,
                run_id=self.run_id,
                status="superseded",
                by=answer.by,
                reason=answer.reason,
            )
            raise SupersededError(answer.reason)
        if answer.status in ("queued", "pending"):
            # Queued, or taken by the environment's inbox (`pending`): the answer comes as a
            # notice. Waiting holds nothing (no activity slot, no timeout): a slow lease is
            # waited for, never a failure of the run.
            self.queued[environment] = answer.holder
            if answer.status == "queued" or (answer.holder and policy == "queue"):
                on_queued(answer.holder, answer.position)
            await workflow.wait_condition(
                lambda: environment in self.notices or self.superseded is not None
            )
            self.queued.pop(environment, None)
            if environment not in self.notices:
                assert self.superseded is not None
                raise SupersededError(self.superseded.reason)
            notice = self.notices[environment]
            if answer.status == "pending":
                del self.notices[environment]  # used: a later acquire waits for its own
            answer = LeaseAnswer(status="granted", token=notice.token)
        self.held[environment] = answer.token
        self.tokens[environment] = answer.token
        if environment not in self.changed:
            # From here on this run may change it: an abort asks the environment to undo
            # whatever it did (the environment knows whether anything changed).
            self.changed.append(environment)
        return answer.token

    def _post(self, environment: str, what: str, send: Callable[[], Awaitable[None]]) -> None:
        """Send a message in the background, after those sent before it to `environment`."""
        before = self._posts.get(environment)

        async def in_order() -> None:
            if before is not None:
                await before
            try:
                await send()
            except ActivityError as err:
                if is_cancelled_exception(err):
                    raise
                cause = err.cause or err
                workflow.logger.warning("%s of %s not taken: %s", what, environment, cause)
                if what == "report":
                    self.refused_reports[environment] = str(cause)

        self._posts[environment] = asyncio.ensure_future(in_order())

    async def settle(self, environment: str | None = None) -> None:
        """Wait until the messages sent in the background (to `environment`, or to all) are
        delivered or refused."""
        posts = self._posts if environment is None else {environment: self._posts.get(environment)}
        for task in list(posts.values()):
            if task is not None:
                await task

    async def report_serving(
        self, environment: str, request: DeployRequest, release_phase: str = ""
    ) -> None:
        """Tell the environment this run's release serves it now (in the background when
        `background`: nothing this run does next needs the answer)."""
        if self.background:
            self._post(
                environment,
                "report",
                lambda: self._report(environment, request, release_phase),
            )
            return
        await self._report(environment, request, release_phase)

    async def _report(
        self, environment: str, request: DeployRequest, release_phase: str = ""
    ) -> None:
        await call(
            ActivityName.REPORT_SERVING,
            ServingReport(
                service=self.service,
                environment=environment,
                run=self.run,
                run_id=self.run_id,
                token=self.token(environment),
                release=ReleaseSpec(
                    artifact=request.artifact,
                    run_command=list(request.run_command),
                    health_path=request.health_path,
                    ready_path=request.ready_path,
                    config=request.config,
                    env=dict(request.env),
                    release_phase=release_phase,
                ),
                commit=self.commit,
                commit_time=self.commit_time,
                request_id=self._request_id("report", environment),
            ),
            type(None),
            activity_id=f"report:{environment}",
        )

    def release_later(self, environment: str, reason: str) -> None:
        """Done with the environment: the release is sent in the background."""
        token = self.held.pop(environment, 0)
        self.queued.pop(environment, None)
        self._post(environment, "release", lambda: self._release(environment, reason, token))

    async def release(self, environment: str, reason: str) -> None:
        """Done with the environment (or leaving its queue)."""
        token = self.held.pop(environment, 0)
        self.queued.pop(environment, None)
        await self.settle(environment)
        await self._release(environment, reason, token)

    async def _release(self, environment: str, reason: str, token: int) -> None:
        await call(
            ActivityName.RELEASE_LEASE,
            LeaseRelease(
                service=self.service,
                environment=environment,
                run=self.run,
                run_id=self.run_id,
                reason=reason,
                token=token,
                request_id=self._request_id("release", environment),
            ),
            type(None),
            activity_id=f"release:{environment}",
        )

    async def rollback(
        self, environment: str, reason: str, strategy: str, activity_id: str
    ) -> RollbackOutcome:
        await self.settle(environment)  # the environment knows what this run reported first
        return await rollback_through_environment(
            self.service,
            environment,
            self.run,
            reason,
            strategy,
            activity_id,
            self.tokens.get(environment, 0),
        )


def _run_id_of(run: str) -> str:
    """The run id of pipeline `run`: ours, or our parent's when a canary or monitor asks."""
    info = workflow.info()
    if info.workflow_id == run:
        return info.run_id
    if info.parent is not None and info.parent.workflow_id == run:
        return info.parent.run_id
    return ""


async def rollback_through_environment(
    service: str,
    environment: str,
    run: str,
    reason: str,
    strategy: str,
    activity_id: str,
    token: int = 0,
) -> RollbackOutcome:
    """Ask the environment to put back what served before `run` changed it (the pipeline, its
    canary and its monitor all ask the same way, naming the run id and the lease token it
    changed the environment under; the environment does it once per run)."""
    return await call(
        ActivityName.REQUEST_ROLLBACK,
        RollbackOrder.model_validate(
            {
                "service": service,
                "environment": environment,
                "run": run,
                "run_id": _run_id_of(run),
                "token": token,
                "reason": reason,
                "strategy": strategy,
                "request_id": f"{run}/{workflow.info().workflow_id}/rollback/{environment}/"
                f"{workflow.uuid4()}",
            }
        ),
        RollbackOutcome,
        activity_id=activity_id,
    )
