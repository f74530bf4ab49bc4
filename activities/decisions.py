"""The worker's judgment of people's decisions, against the policy file it holds.

`check_decision` looks at the policy file again for every decision and parses it again when it
changed (`plumbing.worker_policy.PolicyCache`: a revoked role or key stops working at once),
verifies the decision's SSH signature against the policy's allowed signers
and checks roles, rights and the self-approval rule. Its verdict is recorded in the run's
history, so a replay never reads the file. `policy_in_force` gives a run the policy's hash at
its start and checks that the run's definition gates what the policy says must be gated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from temporalio import activity

from activities.wiring.observability import activity_log
from contracts.activity import ActivityName
from contracts.errors import ErrorType, verdict
from contracts.messages import (
    DecisionCheck,
    DecisionVerdict,
    EnvironmentAsk,
    EnvironmentInForce,
    PolicyInForce,
    PolicyStart,
)
from contracts.signed_decisions import signed_text
from plumbing import signatures
from plumbing.worker_policy import (
    LoadedPolicy,
    PolicyError,
    WorkerPolicy,
    gating_problems,
    holds_any,
    is_author,
    policy_cache,
)

__all__ = [
    "DecisionActivities",
    "environments_in_force",
    "judge_decision",
    "signed_command",
]

Verifier = Callable[[bytes, str, str, dict[str, list[str]]], signatures.Verified]


def signed_command(check: DecisionCheck) -> str:
    """The command that would have counted, for a refusal's message."""
    if check.subject.startswith("gate:"):
        verb = "approve" if check.decision == "approve" else "reject"
        return f"slipway {verb} {check.workflow_id} --approver {check.by} --gate {check.gate}"
    if check.decision == "rollback":
        return f"slipway rollback --environment {check.environment} --by {check.by} ..."
    return f"slipway {check.decision} {check.workflow_id} --by {check.by}"


def judge_decision(
    policy: WorkerPolicy, policy_hash: str, check: DecisionCheck, verify: Verifier
) -> DecisionVerdict:
    person = policy.people.get(check.by)

    def refuse(reason: str) -> DecisionVerdict:
        return DecisionVerdict(
            accepted=False,
            reason=reason,
            roles=list(person.roles) if person else [],
            policy_hash=policy_hash,
        )

    if not check.by.strip():
        return refuse("nobody named: say who decides ('approver' or 'by')")
    if person is None:
        who = "approver" if check.subject.startswith("gate:") else "person"
        return refuse(f"unknown {who} {check.by!r}: not in the worker's policy")
    if check.subject.startswith("gate:"):
        rule = policy.gate_rule(check.gate, check.environment)
        required = rule.signatures
        allowed_roles = list(rule.roles) if rule.roles is not None else check.definition_roles
    else:
        action = policy.action_rule(check.decision)
        required = action.signatures
        allowed_roles = list(action.roles) if action.roles is not None else []
        rule = None
    key = ""
    signed = check.signed
    if signed.signature:
        if signed.signed_at is None:
            return refuse("the signature has no time ('signed_at')")
        data = signed_text(
            namespace=check.namespace,
            workflow_id=check.workflow_id,
            run_id=check.run_id,
            subject=check.subject,
            decision=check.decision,
            by=check.by,
            at=signed.signed_at,
            nonce=signed.nonce,
            comment=check.comment,
        )
        answer = verify(data, signed.signature, check.by, policy.allowed_signers())
        if not answer.ok:
            return refuse(answer.detail)
        key = answer.key
    elif required == "required":
        where = f"gate {check.gate!r}" if rule is not None else f"{check.decision!r}"
        return refuse(
            f"{where} requires a signed decision: an unsigned one ({check.via}, e.g. the Web "
            f"UI or `temporal workflow {check.via}`) does not count; use: "
            f"{signed_command(check)}"
        )
    if rule is not None:
        if not holds_any(person, allowed_roles):
            return refuse(
                f"{check.by!r} holds {sorted(person.roles) or 'no roles'}; gate {check.gate!r} "
                f"needs one of {sorted(allowed_roles)}"
            )
        self_ok = rule.allow_self_approval and check.definition_allows_self_approval
        if not self_ok and is_author(check.by, person, check.author):
            return refuse(
                f"{check.by!r} authored this commit ({check.author}) and may not approve or "
                "reject it"
            )
    elif allowed_roles and not holds_any(person, allowed_roles):
        return refuse(
            f"{check.by!r} holds {sorted(person.roles) or 'no roles'}; {check.decision} needs "
            f"one of {sorted(allowed_roles)}"
        )
    return DecisionVerdict(
        accepted=True,
        roles=list(person.roles),
        gate_roles=allowed_roles if rule is not None else [],
        gate_quorum=rule.quorum if rule is not None else None,
        signer_key=key,
        policy_hash=policy_hash,
    )


def environments_in_force(
    policy: WorkerPolicy, asks: dict[str, EnvironmentAsk]
) -> dict[str, EnvironmentInForce]:
    """Concurrency and freeze of each environment the policy lists, for one run: the
    policy's, made stricter by the definition. Concurrency: 'queue' if either says so, else
    the definition's, else the policy's. Freeze windows: the policy's and the definition's.
    Override roles: the policy's when it says anything of the environment's freeze (those
    the definition also names, if it names any), else the definition's."""
    out: dict[str, EnvironmentInForce] = {}
    for env, ask in asks.items():
        rule = policy.environments.get(env)
        if rule is None:
            continue
        said = [c for c in (rule.concurrency, ask.concurrency) if c is not None]
        concurrency = "queue" if "queue" in said else (said[0] if said else None)
        windows = list(rule.freeze)
        windows += [w for w in ask.freeze if w not in windows]
        if rule.governs_freeze:
            roles = list(rule.freeze_override_roles)
            if ask.freeze_override_roles:
                roles = [r for r in roles if r in ask.freeze_override_roles]
        else:
            roles = list(ask.freeze_override_roles)
        out[env] = EnvironmentInForce(
            concurrency=concurrency, freeze=windows, freeze_override_roles=roles
        )
    return out


class DecisionActivities:
    """`policy_file`: the worker's policy (SLIPWAY_POLICY_FILE), looked at on each call and
    parsed again when it changed (the process's `PolicyCache` of it)."""

    def __init__(self, policy_file: Path) -> None:
        self._policy = policy_cache(policy_file)

    def _load(self) -> LoadedPolicy:
        try:
            return self._policy.load()
        except PolicyError as err:
            # A broken policy file refuses every decision until it is fixed (fail closed),
            # rather than retrying forever or accepting what it cannot judge.
            raise verdict(ErrorType.CONFIGURATION, str(err)) from None

    @activity.defn(name=ActivityName.CHECK_DECISION)
    async def check_decision(self, check: DecisionCheck) -> DecisionVerdict:
        loaded = self._load()
        answer = await asyncio.to_thread(
            judge_decision, loaded.policy, loaded.hash, check, signatures.verify
        )
        activity_log(subject=check.subject, by=check.by, accepted=answer.accepted).info(
            "check_decision", reason=answer.reason
        )
        return answer

    @activity.defn(name=ActivityName.POLICY_IN_FORCE)
    async def policy_in_force(self, start: PolicyStart) -> PolicyInForce:
        loaded = self._load()
        return PolicyInForce(
            hash=loaded.hash,
            path=loaded.path,
            problems=gating_problems(loaded.policy, start),
            environments=environments_in_force(loaded.policy, start.environments),
        )
