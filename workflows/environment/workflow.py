"""EnvironmentWorkflow: the one owner of what a (service, environment) serves.

A long-lived entity workflow (id `environment-{service}-{environment}`), started by the first
message a pipeline sends it (update-with-start; signal-with-start before). It holds:
- what serves now, and the run that put it there;
- a bounded release history;
- the lease: which run may change the environment, with a fencing token every platform call
  carries, and the runs queued behind it.

Granting a lease first raises the platform's fence to the new token, so a deposed holder's
late deploy is refused at the platform's commit point. A rollback is "put back the release
that served when this run got the lease", executed here under a fresh token: idempotent per
run, and never for a run that no longer holds the environment. Updates are serialised by one
lock (they await activities); the history is kept small with continue-as-new.

Lease messages are a mailbox (patch `lease-mailbox`). The `acquire` and `release` updates only
check the deployer's proof, put the message in an inbox and answer at once (`pending`, or
`granted` to the run that already holds the lease); the workflow's main loop takes the inbox in
arrival order under the lock, with the same rules as before (fence, grant, supersede, queue),
and tells each run its answer with LEASE_SIGNAL. An acquire that finds the environment free
(nobody holds it, queues or waits in the inbox) waits in its update for the main loop and
answers granted there, after the fence: the usual case needs no notice and no activity to
confirm one. (So did runs recorded between the patches `lease-answered-in-update` and
`environment-fence-as-activity`, with a local-activity fence; runs between that one and
`environment-work-queue` answered every acquire with a notice.) Why this design rather than
the others:
- Nothing waits while holding what the work it waits for needs. Before, the `acquire_lease`
  activity held an activity slot while its update awaited the FENCE activity, which needs a slot
  of the same worker: with as many runs acquiring as the worker has slots, no fence could run
  (a deadlock, issue 19). Now the fence runs in slots of its own (the work queue), an acquire
  waits in its update for at most that one fence, and a run queued behind another waits for
  its lease in its own workflow state (a condition on a signal), which holds no slot, no
  timeout and survives any restart. Local activities for the lease messages would only move
  the wait to other slots (and make a minutes-long wait a local activity).
- Failure has one meaning per place. An update fails only as a verdict on the message (no
  deployer's proof). A fence that keeps failing (platform down, worker overloaded) is retried
  here, later, with the request still in the inbox: the run keeps waiting, never fails for it
  (a crash or overload is not a verdict). Superseded is a verdict, and arrives as a notice.
- Updates complete within the workflow task that delivers them, but for the one acquire to a
  free environment waiting for its fence (a second finds the inbox busy and is answered
  pending), so a burst of one service's commits stays far below Temporal's limit of updates
  in flight per workflow.

FENCE, RUN_STATUS and RESTORE are regular activities on the environment's own work queue
(`environment_work_queue`, patch `environment-work-queue`), which every deployer worker polls
with slots of its own (`worker.PipelineWorker`). Their results are events in history, so a
replay meets them in the workflow task they arrived in. As local activities (patch
`environment-work-as-local-activities`) a result could reach a replay one workflow task early,
beside an update, and the environment failed every replay. And on a queue of their own, no
activity waiting for this workflow's answer (an acquire for a fence, a `request_rollback` for
its restore) can hold the slots they need.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow

from contracts import lease_rules as leases
from contracts.activity import (
    ActivityName,
    FenceRequest,
    ReleaseSpec,
    RunRef,
)
from contracts.messages import (
    EnvironmentInput,
    LeaseAnswer,
    LeaseHolder,
    LeaseNotice,
    LeaseRelease,
    LeaseRequest,
    ReleaseEntry,
    Serving,
    ServingReport,
    WaitingRun,
)
from contracts.naming import LEASE_SIGNAL
from workflows.calls import call
from workflows.environment.record import (
    FENCE_AS_ACTIVITY,
    WORK_FAILED,
    WORK_QUEUE,
    as_utc,
    bounded_by,
    failure_of,
    work_placement,
)
from workflows.environment.rollbacks import EnvironmentRollbacks

__all__ = ["EnvironmentWorkflow"]

LEASE_MAILBOX = "lease-mailbox"
"""Patch id: before it, `acquire` and `release` took the lock and fenced inside the update, so
the message activity that sent them held an activity slot until the fence (which needs one)
had run."""
LEASE_ANSWERED_IN_UPDATE = "lease-answered-in-update"
"""Patch id: an acquire that finds the lease free, nobody queued and the inbox empty waits in
its update for the main loop to serve it and answers granted (or superseded) there, with no
notice: the run needs no signal, and no activity to confirm one. Before it, every answer but a
retried holder's came as a LEASE_SIGNAL notice."""
HOLDER_CHECK_KEPT = "holder-check-timer-kept"
"""Patch id: before it, each wait of the main loop with a holder and a queue had a
HOLDER_CHECK timeout of its own, cancelled by the change that ended the wait."""
FENCE_RETRY = timedelta(seconds=30)
"""How long the inbox waits after a fence failed all its attempts before it tries again."""
HOLDER_CHECK = timedelta(minutes=1)
HISTORY_LIMIT = 2_000
LEASE_REQUESTS_KEPT = 500


def _fence_awaited_in_update() -> bool:
    """Whether an acquire to a free environment waits in its update for its fence: since
    WORK_QUEUE (the fence on the environment's work queue), and in runs recorded between
    lease-answered-in-update and FENCE_AS_ACTIVITY (a local-activity fence). Runs between
    those two answered with a notice."""
    if workflow.patched(WORK_QUEUE):
        return True
    return not workflow.patched(FENCE_AS_ACTIVITY) and workflow.patched(LEASE_ANSWERED_IN_UPDATE)


@workflow.defn(name="EnvironmentWorkflow")
class EnvironmentWorkflow(EnvironmentRollbacks):
    """The main loop and the lease: the inbox taken in arrival order, grants, queues, supersedes,
    reports and releases."""

    @workflow.init
    def __init__(self, input: EnvironmentInput) -> None:
        super().__init__(input)
        self._holder_check: asyncio.Task[None] | None = None

    @workflow.run
    async def run(self, input: EnvironmentInput) -> None:
        while not self._rollover_due():
            if self._mail_waiting():
                if not await self._serve_inbox():
                    await workflow.sleep(FENCE_RETRY)
                continue
            seen = self._changes
            waiting = self._s.holder is not None and bool(self._s.queue)
            if waiting and workflow.patched(HOLDER_CHECK_KEPT):
                await self._wait_or_check_holder(seen)
                continue
            try:
                await workflow.wait_condition(
                    lambda seen=seen: (  # type: ignore[misc]
                        self._changes != seen or self._rollover_due() or self._mail_waiting()
                    ),
                    timeout=HOLDER_CHECK if waiting else None,
                )
            except TimeoutError:
                async with self._lock:
                    await self._check_holder()
        await workflow.wait_condition(lambda: workflow.all_handlers_finished())
        workflow.continue_as_new(
            EnvironmentInput(service=input.service, environment=input.environment, state=self._s)
        )

    async def _wait_or_check_holder(self, seen: int) -> None:
        """Wait for a change, or check the holder when HOLDER_CHECK has passed. The check's
        timer is one of its own, kept across changes and never cancelled (patch
        HOLDER_CHECK_KEPT): a timeout per wait cancelled its timer at every change, and the
        time-skipping test server strands a workflow task that cancels a timer which fired
        while the task was at the worker (temporalio/sdk-java#3088)."""
        if self._holder_check is None:
            self._holder_check = asyncio.ensure_future(workflow.sleep(HOLDER_CHECK))
        check = self._holder_check
        await workflow.wait_condition(
            lambda: (
                self._changes != seen
                or self._rollover_due()
                or self._mail_waiting()
                or check.done()
            )
        )
        if check.done():
            self._holder_check = None
            async with self._lock:
                await self._check_holder()

    def _rollover_due(self) -> bool:
        info = workflow.info()
        return (
            not self._lock.locked()
            and not self._mail_waiting()
            and (
                info.is_continue_as_new_suggested()
                or info.get_current_history_length() > HISTORY_LIMIT
            )
        )

    def _mail_waiting(self) -> bool:
        return bool(self._inbox) or self._regrant

    async def _serve_inbox(self) -> bool:
        """Answer the lease messages in arrival order; False if a fence failed (the message
        stays first in the inbox and is served again later)."""
        async with self._lock:
            if self._regrant and not await self._regranted():
                return False
            while self._inbox:
                message = self._inbox[0]
                if isinstance(message, LeaseRelease):
                    self._inbox.pop(0)
                    self._release(message)
                    if not await self._regranted():
                        return False
                    continue
                try:
                    answer = await self._acquire(message)
                except WORK_FAILED as err:
                    workflow.logger.warning(
                        "%s: fence failed (%s); %s waits, tried again in %s",
                        self._s.environment,
                        failure_of(err),
                        message.run,
                        FENCE_RETRY,
                    )
                    self._stop_awaiting()
                    return False
                self._inbox.pop(0)
                await self._answer(message, answer)
        self._changes += 1
        return True

    def _stop_awaiting(self) -> None:
        """A fence failed: updates waiting for their answer answer `pending` now (their
        request stays in the inbox, and its answer comes as a notice), so no update stays in
        flight while the fence waits to be tried again."""
        for rid, answer in self._awaited.items():
            if answer is None:
                self._awaited[rid] = LeaseAnswer(status="pending")

    async def _regranted(self) -> bool:
        """The lease is free: grant it to the queue's next run (False: its fence failed)."""
        self._regrant = False
        try:
            await self._grant_next()
        except WORK_FAILED as err:
            workflow.logger.warning(
                "%s: fence failed (%s); the queue waits, tried again in %s",
                self._s.environment,
                failure_of(err),
                FENCE_RETRY,
            )
            self._regrant = True
            return False
        return True

    async def _answer(self, request: LeaseRequest, answer: LeaseAnswer) -> None:
        """Tell the run what became of its request (a queued one hears when it is its turn);
        an update waiting for the answer carries it instead."""
        if request.request_id in self._awaited and self._awaited[request.request_id] is None:
            self._awaited[request.request_id] = answer
            return
        env = self._s.environment
        if answer.status == "granted":
            told = await self._tell(
                request.run,
                LeaseNotice(
                    environment=env, run_id=request.run_id, status="granted", token=answer.token
                ),
            )
            holder = self._s.holder
            if not told and holder is not None and holder.run == request.run:
                self._s.holder = None  # that run is gone: the next one
                if not await self._regranted():
                    return
        elif answer.status == "superseded":
            await self._tell(
                request.run,
                LeaseNotice(
                    environment=env,
                    run_id=request.run_id,
                    status="superseded",
                    by=answer.by,
                    reason=answer.reason,
                ),
            )

    # --- lease ---------------------------------------------------------------------------

    @workflow.signal(
        description="Started the workflow if needed (signal-with-start, before update-with-start "
        "replaced it); no effect."
    )
    def wake(self) -> None:
        pass

    @workflow.update(
        description="A pipeline run asks for the lease: granted, queued or superseded."
    )
    async def acquire(self, request: LeaseRequest) -> LeaseAnswer:
        if self._mailbox or workflow.patched(LEASE_MAILBOX):
            self._mailbox = True
            s = self._s
            free = s.holder is None and not s.queue and not self._inbox and not self._regrant
            answer = self._take_request(request)
            if answer.status != "pending" or not free or not _fence_awaited_in_update():
                return answer
            # Nothing stood before it, so its answer is one fence away, waited for here while
            # the sender's activity holds a slot: the fence runs in slots that activity cannot
            # hold.
            rid = request.request_id
            self._awaited[rid] = None
            await workflow.wait_condition(lambda: self._awaited[rid] is not None)
            answered = self._awaited.pop(rid)
            assert answered is not None
            return answered
        async with self._lock:
            answer = await self._acquire(request)
        self._changes += 1
        return answer

    def _take_request(self, request: LeaseRequest) -> LeaseAnswer:
        """The inbox takes the request; the answer comes as a LEASE_SIGNAL notice. A run that
        holds the lease already (a retried message) has its answer now."""
        s = self._s
        holder = s.holder
        if (
            holder is not None
            and holder.run == request.run
            and holder.run_id == request.run_id
            and not holder.rolled_back
            and not any(m.run == request.run for m in self._inbox)
        ):
            return LeaseAnswer(status="granted", token=holder.token)
        if request.request_id in s.lease_requests:
            # Served before: the activity's retry after a continue-as-new (a queued run keeps
            # waiting for its turn), or a copy out of a history sent again (nothing happens).
            if any(w.run_id == request.run_id for w in s.queue):
                return LeaseAnswer(status="pending", holder=holder.run if holder else "")
            return LeaseAnswer(
                status="superseded", reason=f"lease request {request.request_id} was answered"
            )
        if request.proof:
            self._taken(request)
        self._inbox.append(request)
        ahead = sum(isinstance(m, LeaseRequest) for m in self._inbox) - 1
        return LeaseAnswer(
            status="pending",
            holder=holder.run if holder else "",
            position=len(s.queue) + ahead + 1,
        )

    @acquire.validator
    def _validate_acquire(self, request: LeaseRequest) -> None:
        self._from_deployer("acquire", request, request.proof)

    def _taken(self, request: LeaseRequest) -> None:
        """Remember a deployer's lease request (bounded): a copy sent again does nothing."""
        s = self._s
        s.lease_requests = [*s.lease_requests, request.request_id][-LEASE_REQUESTS_KEPT:]

    async def _acquire(self, request: LeaseRequest) -> LeaseAnswer:
        s = self._s
        # The mailbox dedups when it takes a message (`_take_request`); the inbox may serve
        # one message twice (its fence failed the first time).
        if not self._mailbox and request.request_id in s.lease_requests:
            # Asked before: the activity's retry after a continue-as-new, or a copy out of a
            # history sent again. Only the same run's standing is repeated; nothing changes.
            holder = s.holder
            if holder is not None and (holder.run, holder.run_id) == (request.run, request.run_id):
                return LeaseAnswer(status="granted", token=holder.token)
            waiting = next((w for w in s.queue if w.run_id == request.run_id), None)
            if waiting is not None:
                return self._queued(waiting)
            return LeaseAnswer(
                status="superseded", reason=f"lease request {request.request_id} was answered"
            )
        if request.proof and not self._mailbox:  # a deployer's (since proofs)
            self._taken(request)
        if request.components:
            # Kept across runs: a component a later run drops is still fenced and restored.
            s.components = sorted({*s.components, *request.components})
        trusted = self._trusted_times()
        holder = s.holder
        if holder is not None and holder.run == request.run:
            if holder.run_id == request.run_id and not holder.rolled_back:
                return LeaseAnswer(status="granted", token=holder.token)
            # The same pipeline again (reset by `slipway retry`): it takes a fresh token.
            s.holder = None
        waiting = next((w for w in s.queue if w.run == request.run), None)
        if waiting is not None:
            return self._queued(waiting)
        s.seq += 1
        candidate = WaitingRun(
            run=request.run,
            run_id=request.run_id,
            commit=request.commit,
            commit_time=request.commit_time,
            order=s.seq,
            requested_at=workflow.now(),
        )
        if trusted:
            candidate = bounded_by(candidate, candidate.requested_at)
        if leases.behind_serving(candidate, s.serving):
            assert s.serving is not None
            return LeaseAnswer(
                status="superseded",
                by=s.serving.run,
                reason=f"{s.environment} serves a newer commit ({s.serving.commit[:12]})",
            )
        if s.holder is None:
            token = await self._grant(candidate)
            return LeaseAnswer(status="granted", token=token)
        current = s.holder
        if request.policy == "supersede":
            if not leases.newer_than(candidate, current):
                return LeaseAnswer(
                    status="superseded",
                    by=current.run,
                    reason=f"{current.run} deploys a newer commit to {s.environment}",
                )
            token = await self._grant(candidate)
            await self._tell(
                current.run,
                LeaseNotice(
                    environment=s.environment,
                    run_id=current.run_id,
                    status="superseded",
                    by=candidate.run,
                    reason=f"{candidate.run} deploys a newer commit to {s.environment}",
                ),
            )
            return LeaseAnswer(status="granted", token=token)
        s.queue = leases.enqueue(s.queue, candidate)
        return self._queued(candidate)

    def _queued(self, waiting: WaitingRun) -> LeaseAnswer:
        holder = self._s.holder
        position = next(i for i, w in enumerate(self._s.queue) if w.run == waiting.run) + 1
        return LeaseAnswer(status="queued", holder=holder.run if holder else "", position=position)

    async def _grant(self, run: WaitingRun) -> int:
        """Hand the lease to `run` under a new token, raising the platform's fence first."""
        s = self._s
        s.token += 1
        found = await call(
            ActivityName.FENCE,
            FenceRequest(
                service=s.service,
                environment=s.environment,
                token=s.token,
                components=self._components(),
            ),
            ReleaseSpec,  # or None: nothing serves
            activity_id=f"fence-{s.token}",
            **work_placement(),
        )
        if found is not None and (s.serving is None or s.serving.release.digest != found.digest):
            # The platform serves something this record does not know (the first lease on an
            # existing environment, or a change made outside Slipway): that is what serves.
            workflow.logger.warning(
                "%s: the platform serves %s; recording it", s.environment, found.digest
            )
            self._close_serving("replaced", "changed outside Slipway")
            s.serving = Serving(
                release=found, run="(found on the platform)", commit="", since=workflow.now()
            )
            self._record(
                ReleaseEntry(
                    release=found,
                    run=s.serving.run,
                    commit="",
                    at=workflow.now(),
                    outcome="serving",
                    reason="found on the platform when a lease was granted",
                )
            )
        s.holder = LeaseHolder(
            run=run.run,
            run_id=run.run_id,
            commit=run.commit,
            commit_time=run.commit_time,
            token=s.token,
            order=run.order,
            granted_at=workflow.now(),
            baseline=s.serving,
        )
        workflow.logger.info("%s: lease %s to %s", s.environment, s.token, run.run)
        return s.token

    async def _grant_next(self) -> None:
        """The lease is free: give it to the first queued run that is not behind what serves."""
        s = self._s
        while s.holder is None and s.queue:
            nxt = s.queue.pop(0)
            if leases.behind_serving(nxt, s.serving):
                assert s.serving is not None
                await self._tell(
                    nxt.run,
                    LeaseNotice(
                        environment=s.environment,
                        run_id=nxt.run_id,
                        status="superseded",
                        by=s.serving.run,
                        reason=f"{s.environment} serves a newer commit "
                        f"({s.serving.commit[:12]}) now",
                    ),
                )
                continue
            try:
                token = await self._grant(nxt)
            except WORK_FAILED:
                if self._mailbox:
                    s.queue.insert(0, nxt)  # still first in line when the fence is tried again
                raise
            told = await self._tell(
                nxt.run,
                LeaseNotice(
                    environment=s.environment, run_id=nxt.run_id, status="granted", token=token
                ),
            )
            if not told:  # that run is gone: the next one
                s.holder = None

    async def _tell(self, run: str, notice: LeaseNotice) -> bool:
        try:
            await workflow.get_external_workflow_handle(run).signal(LEASE_SIGNAL, notice)
        except Exception as err:  # the run has ended (or never existed): nobody to tell
            workflow.logger.warning("%s: cannot tell %s: %s", self._s.environment, run, err)
            return False
        return True

    async def _check_holder(self) -> None:
        """A holder that ended without releasing (terminated) must not block the queue."""
        holder = self._s.holder
        if holder is None:
            return
        status = await call(
            ActivityName.RUN_STATUS,
            RunRef(workflow_id=holder.run, run_id=holder.run_id),
            str,
            **work_placement(),
        )
        if status != "running" and self._s.holder is holder:
            workflow.logger.warning(
                "%s: holder %s is %s; releasing its lease", self._s.environment, holder.run, status
            )
            self._s.holder = None
            await self._grant_next()

    @workflow.update(description="The lease holder reports that its release serves now.")
    def report(self, report: ServingReport) -> None:
        s = self._s
        serving = s.serving
        if serving and serving.run == report.run and serving.release.digest == report.digest:
            return  # a retry
        now = workflow.now()
        commit_time = report.commit_time
        if self._trusted_times() and commit_time is not None:
            commit_time = min(as_utc(commit_time), now)
        self._close_serving("replaced")
        baseline = s.holder.baseline if s.holder else None
        s.serving = Serving(
            release=report.release,
            run=report.run,
            commit=report.commit,
            commit_time=commit_time,
            since=now,
            before=baseline.model_copy(update={"before": None}) if baseline else None,
        )
        self._record(
            ReleaseEntry(
                release=report.release,
                run=report.run,
                commit=report.commit,
                commit_time=commit_time,
                at=now,
                outcome="serving",
            )
        )
        self._changes += 1

    @report.validator
    def _validate_report(self, report: ServingReport) -> None:
        self._from_deployer("report", report, report.proof)
        holder = self._s.holder
        if holder is None or holder.run != report.run or holder.token != report.token:
            owner = holder.run if holder else "nobody"
            raise ValueError(
                f"{report.run} does not hold {self._s.environment}'s lease (token "
                f"{report.token}; held by {owner}): its release is not recorded"
            )
        if holder.rolled_back:
            raise ValueError(f"{report.run}'s release in {self._s.environment} was rolled back")

    @workflow.update(description="A run is done with the environment, or leaves its queue.")
    async def release(self, request: LeaseRelease) -> None:
        if self._mailbox or workflow.patched(LEASE_MAILBOX):
            self._mailbox = True
            self._inbox.append(request)  # the main loop frees the lease and grants the next
            return
        async with self._lock:  # runs recorded before the mailbox: released in the update
            held = self._s.holder
            self._release(request)
            if held is not None and self._s.holder is None:
                await self._grant_next()
        self._changes += 1

    def _release(self, request: LeaseRelease) -> None:
        """The holder gives the lease back (the caller grants the next), or a run leaves the
        queue."""
        s = self._s
        if (
            s.holder is not None
            and s.holder.run == request.run
            and (not request.token or request.token == s.holder.token)
        ):
            s.holder = None
        else:
            s.queue = [w for w in s.queue if w.run != request.run]

    @release.validator
    def _validate_release(self, request: LeaseRelease) -> None:
        self._from_deployer("release", request, request.proof)
