"""Signed decisions: the exact text a person signs, and the workflow's cheap checks on it.

A decision (approve, reject, promote, pause, resume, abort, rollback) can carry an SSH
signature made with `ssh-keygen -Y sign -n slipway-decision` (what git does for SSH commit
signing). The signed text names the Temporal namespace, the workflow and run it is meant for,
the gate or action, the decision, who decides, when, a nonce and the comment, so a signature
copied onto another run, another gate or another time does not verify, and a replay onto the
same run is refused by its nonce. Pure: the workflow, the CLI and the worker build the same
text from the same fields.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = [
    "COMMENT_LIMIT",
    "NAMESPACE",
    "SIGNATURE_MAX_AGE",
    "freshness_refusal",
    "signed_text",
]

NAMESPACE = "slipway-decision"
"""The `ssh-keygen -Y` namespace: a signature made for git commits (namespace `git`) or any
other purpose never verifies as a decision."""
SIGNATURE_MAX_AGE = timedelta(minutes=10)
"""How far a signed decision's time may be from the run's clock when it arrives."""
COMMENT_LIMIT = 500
"""Characters of a comment kept in the run's record (results stay under Temporal's limits)."""


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def signed_text(
    *,
    namespace: str,
    workflow_id: str,
    run_id: str,
    subject: str,
    decision: str,
    by: str,
    at: datetime,
    nonce: str,
    comment: str = "",
) -> bytes:
    """The bytes a decision's signature covers. `subject` is the gate (`gate:production`)
    or the action (`action:promote`); one field per line, so no value can run into the
    next (newlines in values are escaped)."""
    fields = {
        "namespace": namespace,
        "workflow": workflow_id,
        "run": run_id,
        "subject": subject,
        "decision": decision,
        "by": by,
        "at": _iso(at),
        "nonce": nonce,
        "comment": comment,
    }
    lines = ["slipway decision v1"]
    for key, value in fields.items():
        escaped = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        lines.append(f"{key}: {escaped}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def freshness_refusal(at: datetime | None, now: datetime, seen: bool) -> str | None:
    """Why a signed decision's time or nonce refuses it here, or None. `seen`: this run
    already took a decision with the same nonce (a replay)."""
    if seen:
        return "this signature's nonce was already used in this run (a replayed decision)"
    if at is None:
        return "a signed decision must say when it was signed ('at')"
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    if abs(now - at) > SIGNATURE_MAX_AGE:
        return (
            f"signed at {_iso(at)}, more than {int(SIGNATURE_MAX_AGE.total_seconds() // 60)} "
            "minutes from now: sign the decision again"
        )
    return None
