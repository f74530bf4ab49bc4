"""Signing decisions on the command line, and checking a finished run's signatures again.

The key is the person's SSH key: `--key`, else SLIPWAY_SIGNING_KEY, else git's own
`user.signingkey` when git signs with SSH (`gpg.format ssh`), so whoever already signs
commits signs decisions with no setup.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from temporalio.client import Client

from contracts.messages import PipelineResult, Signed
from contracts.signed_decisions import signed_text
from plumbing import signatures
from plumbing.worker_policy import WorkerPolicy

__all__ = ["AuditLine", "audit", "find_key", "sign_for"]


def _git_signing_key() -> Path | None:
    def config(name: str) -> str:
        try:
            out = subprocess.run(
                ["git", "config", "--get", name], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    if config("gpg.format") != "ssh":
        return None
    key = config("user.signingkey")
    if not key or key.startswith(("ssh-", "key::")):
        return None  # a literal key: ssh-keygen needs a file
    return Path(key).expanduser()


def find_key(option: Path | None) -> Path | None:
    if option is not None:
        return option
    env = os.environ.get("SLIPWAY_SIGNING_KEY", "")
    if env:
        return Path(env).expanduser()
    return _git_signing_key()


async def sign_for(
    client: Client,
    workflow_id: str,
    *,
    subject: str,
    decision: str,
    by: str,
    comment: str,
    key: Path | None,
) -> Signed:
    """A signature of this decision for the current run of `workflow_id` (no key: none)."""
    if key is None:
        return Signed()
    described = await client.get_workflow_handle(workflow_id).describe()
    at = datetime.now(UTC)
    nonce = secrets.token_hex(16)
    data = signed_text(
        namespace=client.namespace,
        workflow_id=workflow_id,
        run_id=described.run_id,
        subject=subject,
        decision=decision,
        by=by,
        at=at,
        nonce=nonce,
        comment=comment,
    )
    return Signed(signed_at=at, nonce=nonce, signature=signatures.sign(data, key))


@dataclass(frozen=True)
class AuditLine:
    what: str
    by: str
    accepted: bool
    verdict: str
    ok: bool


def audit(
    result: PipelineResult, workflow_id: str, namespace: str, policy: WorkerPolicy
) -> list[AuditLine]:
    """Every decision of a finished run, its signature verified again against `policy`'s
    allowed signers. An accepted decision whose signature does not verify is not ok; an
    unsigned one is reported as such (it counted only where its gate allowed it)."""
    lines: list[AuditLine] = []
    allowed = policy.allowed_signers()
    records = [
        (f"gate:{a.gate}", a.decision, a.approver, a.accepted, a.via, a.comment, a)
        for a in result.approvals
    ] + [
        (f"action:{x.action}", x.action, x.by, x.accepted, x.via, x.comment, x)
        for x in result.actions
    ]
    for subject, decision, by, accepted, via, comment, record in records:
        what = f"{decision} {subject.split(':', 1)[1]}" if subject.startswith("gate:") else decision
        if not record.signature:
            lines.append(AuditLine(what, by, accepted, f"unsigned ({via})", True))
            continue
        if record.signed_at is None:
            lines.append(AuditLine(what, by, accepted, "signed, but no time recorded", False))
            continue
        data = signed_text(
            namespace=namespace,
            workflow_id=workflow_id,
            run_id=record.run_id,
            subject=subject,
            decision=decision,
            by=by,
            at=record.signed_at,
            nonce=record.nonce,
            comment=comment,
        )
        answer = signatures.verify(data, record.signature, by, allowed)
        # A refused decision did not count: a bad signature there is what the run refused
        # (a copied or forged one), not a problem of the record.
        lines.append(AuditLine(what, by, accepted, answer.detail, answer.ok or not accepted))
    return lines
