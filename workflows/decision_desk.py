"""A run's side of people's decisions: the worker's verdict, the nonces seen, the records.

Workflow code cannot read the worker's policy file, so each decision is judged by the
`check_decision` activity (the policy in force now, the SSH signature) and its verdict is
recorded in history. A regular activity, not a local one: decisions are taken in signal and
update handlers, beside each other, and a local activity's result is recorded only when the
workflow task ends, so on replay a concurrent decision can find a gate in another state than
it found it (a test with a local one failed so: "Missing associated machine for
LocalActivity"). What needs no file is checked here first, cheaply and deterministically: a
nonce already used in this run (a replayed signature) and a signature too far from the run's
clock. Refused decisions are kept up to a bound, with a count of the rest, so a flood of
refused signals cannot push the run's result past Temporal's payload limits.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from contracts.activity import ActivityName
from contracts.messages import (
    ActionRecord,
    ApprovalRecord,
    DecisionCheck,
    DecisionVerdict,
    Signed,
)
from contracts.signed_decisions import COMMENT_LIMIT, freshness_refusal
from workflows.calls import call

__all__ = ["REFUSED_KEPT", "DecisionDesk", "clip"]

REFUSED_KEPT = 50
"""Refused decisions kept in a run's record; the rest are counted."""
CHECK_TIMEOUT = timedelta(seconds=10)
"""A check reads a file and runs ssh-keygen (milliseconds): an attempt lost with its worker
is retried after this, while a person waits for the answer."""


def clip(text: str, limit: int = COMMENT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DecisionDesk:
    def __init__(self) -> None:
        self.nonces: set[str] = set()
        self.approvals: list[ApprovalRecord] = []
        self.actions: list[ActionRecord] = []
        self.refused_not_kept = 0

    def seen_or_stale(self, signed: Signed) -> str | None:
        """Cheap refusal of a signed decision (replayed nonce, stale time); marks its nonce
        used, so a copy sent at the same moment is refused too."""
        if not signed.signature:
            return None
        if not signed.nonce:
            return "a signed decision needs a nonce"
        refusal = freshness_refusal(signed.signed_at, workflow.now(), signed.nonce in self.nonces)
        self.nonces.add(signed.nonce)
        return refusal

    async def verdict(self, check: DecisionCheck) -> DecisionVerdict:
        """The worker's verdict; a policy the worker cannot read refuses (fails closed)."""
        try:
            return await call(
                ActivityName.CHECK_DECISION,
                check,
                DecisionVerdict,
                timeout=CHECK_TIMEOUT,
                summary=f"{check.by}: {check.decision} {check.subject}",
            )
        except ActivityError as err:
            cause = err.cause if err.cause is not None else err
            return DecisionVerdict(
                accepted=False, reason=f"the worker's policy check failed: {cause}"
            )

    def keep_approval(self, record: ApprovalRecord) -> None:
        if not record.accepted and self._refused() >= REFUSED_KEPT:
            self.refused_not_kept += 1
            return
        self.approvals.append(record)

    def keep_action(self, record: ActionRecord) -> None:
        if not record.accepted and self._refused() >= REFUSED_KEPT:
            self.refused_not_kept += 1
            return
        self.actions.append(record)

    def _refused(self) -> int:
        return sum(1 for r in self.approvals if not r.accepted) + sum(
            1 for a in self.actions if not a.accepted
        )

    def summary_of_refused(self) -> str:
        if not self.refused_not_kept:
            return ""
        return f"and {self.refused_not_kept:,} more refused decisions not kept"
