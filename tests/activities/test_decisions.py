"""The worker's judgment of decisions: its policy file, real SSH signatures (ssh-keygen)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from activities.decisions import environments_in_force, judge_decision
from contracts.definition.model import FreezeWindow
from contracts.messages import (
    DecisionCheck,
    EnvironmentAsk,
    EnvironmentInForce,
    GateAsk,
    PolicyStart,
    Signed,
)
from contracts.signed_decisions import NAMESPACE, freshness_refusal, signed_text
from plumbing import signatures
from plumbing.worker_policy import PolicyError, gating_problems, is_author, load_policy
from tests.support.policy import make_key, public_key, write_policy

AT = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    home = tmp_path_factory.mktemp("keys")
    return {p: make_key(home, p) for p in ("carol", "dave", "mallory")}


def check(
    by: str, *, run_id: str = "run-1", subject: str = "gate:production", **kw: object
) -> DecisionCheck:
    fields: dict[str, object] = {
        "namespace": "default",
        "workflow_id": "pipeline-hello-main-abc",
        "run_id": run_id,
        "subject": subject,
        "gate": subject.removeprefix("gate:") if subject.startswith("gate:") else "",
        "environment": subject.removeprefix("gate:") if subject.startswith("gate:") else "",
        "decision": "approve" if subject.startswith("gate:") else subject.split(":")[1],
        "by": by,
        "author": "erin <erin@example.com>",
        "definition_roles": ["cto", "devops_lead"],
        **kw,
    }
    return DecisionCheck.model_validate(fields)


def signed(c: DecisionCheck, key: Path, *, nonce: str = "n1", **change: str) -> DecisionCheck:
    """`c` with a signature by `key` over its fields (some fields changed before signing)."""
    fields = {
        "namespace": c.namespace,
        "workflow_id": c.workflow_id,
        "run_id": c.run_id,
        "subject": c.subject,
        "decision": c.decision,
        "by": c.by,
        "comment": c.comment,
        **change,
    }
    data = signed_text(at=AT, nonce=nonce, **fields)
    sig = signatures.sign(data, key)
    return c.model_copy(update={"signed": Signed(signed_at=AT, nonce=nonce, signature=sig)})


def judge(policy_file: Path, c: DecisionCheck) -> tuple[bool, str]:
    loaded = load_policy(policy_file)
    verdict = judge_decision(loaded.policy, loaded.hash, c, signatures.verify)
    return verdict.accepted, verdict.reason


def test_a_signed_decision_by_the_right_person_is_accepted(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    policy = write_policy(tmp_path / "policy.yaml", keys)
    loaded = load_policy(policy)
    verdict = judge_decision(
        loaded.policy, loaded.hash, signed(check("carol"), keys["carol"]), signatures.verify
    )
    assert verdict.accepted, verdict.reason
    assert verdict.signer_key.startswith("SHA256:")
    assert verdict.roles == ["cto"]
    assert verdict.gate_roles == ["cto", "devops_lead"]
    assert verdict.policy_hash == loaded.hash


def test_unsigned_decisions_are_refused_where_the_gate_requires_signatures(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    policy = write_policy(tmp_path / "policy.yaml", keys)
    ok, reason = judge(policy, check("carol", via="signal"))
    assert not ok
    assert "gate 'production' requires a signed decision" in reason
    # The refusal names the command that would have counted.
    assert "slipway approve pipeline-hello-main-abc --approver carol --gate production" in reason
    # Staging takes unsigned decisions (the "*" rule): the Web UI keeps working there.
    ok, reason = judge(
        policy, check("alice", subject="gate:staging", definition_roles=["team_lead"])
    )
    assert ok, reason


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"run_id": "run-2"}, "another run"),
        ({"workflow_id": "pipeline-hello-main-def"}, "another workflow"),
        ({"subject": "gate:staging"}, "another gate"),
        ({"decision": "reject"}, "another decision"),
        ({"comment": "LGTM"}, "another comment"),
    ],
)
def test_a_signature_made_for_something_else_does_not_verify(
    tmp_path: Path, keys: dict[str, Path], change: dict[str, str], why: str
) -> None:
    policy = write_policy(tmp_path / "policy.yaml", keys)
    ok, reason = judge(policy, signed(check("carol"), keys["carol"], **change))
    assert not ok, why
    assert "signature does not verify as 'carol'" in reason


def test_someone_elses_key_does_not_sign_for_carol(tmp_path: Path, keys: dict[str, Path]) -> None:
    policy = write_policy(tmp_path / "policy.yaml", keys)
    ok, reason = judge(policy, signed(check("carol"), keys["mallory"]))
    assert not ok
    assert "does not verify as 'carol'" in reason


def test_a_revoked_role_refuses_the_next_decision(tmp_path: Path, keys: dict[str, Path]) -> None:
    policy = write_policy(tmp_path / "policy.yaml", keys)
    assert judge(policy, signed(check("dave"), keys["dave"]))[0]
    write_policy(policy, keys, people={"carol": ["cto"], "dave": []})
    ok, reason = judge(policy, signed(check("dave"), keys["dave"], nonce="n2"))
    assert not ok
    assert "'dave' holds no roles; gate 'production' needs one of ['cto', 'devops_lead']" in reason


def test_the_policy_not_the_definition_says_who_may_approve(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    policy = write_policy(tmp_path / "policy.yaml", keys)
    # A starter who lists 'developer' as production's role does not let erin in.
    ok, reason = judge(policy, check("erin", definition_roles=["developer"]))
    assert not ok
    assert "gate 'production' requires a signed decision" in reason
    # Signed with carol's key in erin's name: not erin's signature.
    ok, reason = judge(
        policy,
        signed(check("erin", definition_roles=["developer"]), keys["carol"]),
    )
    assert not ok
    assert "'erin' has no signing key in the policy" in reason


def test_the_author_is_who_git_says(tmp_path: Path, keys: dict[str, Path]) -> None:
    policy = write_policy(tmp_path / "policy.yaml", keys, gates={"*": {"signatures": "optional"}})
    c = check("carol", author="Carol Example <carol@example.com>")
    ok, reason = judge(policy, c)
    assert not ok
    assert "'carol' authored this commit (Carol Example <carol@example.com>)" in reason
    assert judge(policy, check("carol", author="Erin <erin@example.com>"))[0]
    assert is_author("erin", None, "erin <someone@else>")
    assert not is_author("carol", None, "")


def test_operator_rights(tmp_path: Path, keys: dict[str, Path]) -> None:
    policy = write_policy(tmp_path / "policy.yaml", keys)
    ok, reason = judge(policy, check("erin", subject="action:promote"))
    assert not ok
    assert "'erin' holds ['developer']; promote needs one of ['cto', 'devops_lead']" in reason
    assert judge(policy, check("dave", subject="action:promote"))[0]
    ok, reason = judge(policy, check("mallory", subject="action:abort"))
    assert (ok, reason) == (False, "unknown person 'mallory': not in the worker's policy")


def test_signatures_use_their_own_namespace(tmp_path: Path, keys: dict[str, Path]) -> None:
    """A signature made for git (namespace 'git') is not a decision."""
    import subprocess

    data = signed_text(
        namespace="default",
        workflow_id="w",
        run_id="r",
        subject="gate:production",
        decision="approve",
        by="carol",
        at=AT,
        nonce="n",
    )
    git_sig = subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-q", "-f", str(keys["carol"]), "-n", "git"],
        input=data,
        capture_output=True,
        check=True,
    ).stdout.decode()
    answer = signatures.verify(data, git_sig, "carol", {"carol": [public_key(keys["carol"])]})
    assert not answer.ok
    good = signatures.sign(data, keys["carol"])
    answer = signatures.verify(data, good, "carol", {"carol": [public_key(keys["carol"])]})
    assert answer.ok
    assert f'"{NAMESPACE}" signature for carol' in answer.detail


def test_freshness_and_replay() -> None:
    assert freshness_refusal(AT, AT, seen=False) is None
    assert "already used in this run" in str(freshness_refusal(AT, AT, seen=True))
    late = AT.replace(hour=4)
    assert "more than 10 minutes from now" in str(freshness_refusal(AT, late, seen=False))


def test_policy_errors_name_the_file_and_field(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"nowhere.yaml: policy file not found"):
        load_policy(tmp_path / "nowhere.yaml")
    bad = tmp_path / "policy.yaml"
    bad.write_text("people:\n  carol: {roles: cto}\ngates:\n  production: {signatures: maybe}\n")
    with pytest.raises(PolicyError) as info:
        load_policy(bad)
    text = str(info.value)
    assert "policy.yaml: field 'people.carol.roles'" in text
    assert "policy.yaml: field 'gates.production.signatures'" in text
    bad.write_text("people:\n  'carol smith': {roles: [cto]}\n")
    with pytest.raises(PolicyError, match="person 'carol smith': use letters"):
        load_policy(bad)


def test_the_policy_says_which_environments_need_a_gate(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("environments:\n  production: {requires_approval: true}\n")
    loaded = load_policy(policy)
    problems = gating_problems(
        loaded.policy,
        PolicyStart(
            workflow_id="w",
            gated={"production": False, "staging": False},
            ungated={"production": ["canary"], "staging": ["deploy_staging"]},
        ),
    )
    # A canary changes production as a deploy does (issue 16: it was not counted).
    assert problems == [
        "the worker's policy requires an approval gate before every deploy to production (and "
        "every canary and monitor there); this run's definition has 'canary' without one"
    ]
    assert not gating_problems(
        loaded.policy, PolicyStart(workflow_id="w", gated={"production": True})
    )


def test_a_gate_the_policys_people_cannot_meet_is_refused_at_start(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "people:\n"
        "  carol: {roles: [cto]}\n"
        "  dave: {roles: [devops_lead]}\n"
        "  erin: {roles: [cto, devops_lead]}\n"
        "gates:\n"
        "  audit: {roles: [auditor]}\n"
    )
    loaded = load_policy(policy)

    def problems(**gate: object) -> list[str]:
        ask = GateAsk.model_validate({"gate": "production", "environment": "production", **gate})
        return gating_problems(loaded.policy, PolicyStart(workflow_id="w", gates=[ask]))

    # Three people can cover both roles, each by a different person, three times over.
    assert problems(roles=["cto", "devops_lead"]) == []
    assert problems(roles=["cto", "devops_lead"], quorum=3) == []
    # A quorum larger than the role holders, and a role nobody holds.
    assert problems(roles=["cto", "devops_lead"], quorum=4) == [
        "gate 'production' needs 4 distinct approvers covering ['cto', 'devops_lead']; the "
        "worker's policy has 3 (carol, dave, erin): it could only time out"
    ]
    assert problems(roles=["auditor"], times_out=False) == [
        "gate 'production' needs 1 distinct approvers covering ['auditor']; the worker's "
        "policy has 0 (nobody): it would wait forever"
    ]
    # The policy's own gate rule is what counts, whatever the definition asks.
    assert problems(gate="audit", roles=["cto"]) == [
        "gate 'audit' needs 1 distinct approvers covering ['auditor']; the worker's policy "
        "has 0 (nobody): it could only time out"
    ]


GATED_POLICY = """\
people:
  alice: {roles: [team_lead]}
  carol: {roles: [cto]}
  dave: {roles: [devops_lead]}
gates:
  "*": {signatures: optional}
  staging: {roles: [team_lead], allow_self_approval: true}
  production: {roles: [cto, devops_lead], signatures: required}
  hotfix: {roles: [team_lead], quorum: 3, allow_self_approval: true}
environments:
  staging: {}
  production:
    requires_approval: true
    concurrency: queue
    freeze: [{cron: "0 18 * * FRI", duration: 62h, timezone: Asia/Seoul}]
    freeze_override_roles: [cto]
"""


def test_a_gates_name_only_makes_its_environments_rule_stricter(tmp_path: Path) -> None:
    """Issue 16: a production gate named `staging` was judged by the staging rule alone."""
    (tmp_path / "policy.yaml").write_text(GATED_POLICY)
    policy = load_policy(tmp_path / "policy.yaml").policy
    staging_named = policy.gate_rule("staging", "production")
    assert staging_named.roles == ["team_lead", "cto", "devops_lead"]
    assert staging_named.signatures == "required"
    assert staging_named.allow_self_approval is False
    hotfix = policy.gate_rule("hotfix", "production")
    assert (hotfix.roles, hotfix.quorum, hotfix.signatures) == (
        ["team_lead", "cto", "devops_lead"],
        3,
        "required",
    )
    # A rule by name over a lax floor still counts in full; no rule by name: the floor.
    assert policy.gate_rule("hotfix", "staging").quorum == 3
    assert policy.gate_rule("production", "production") == policy.gates["production"]
    # One unsigned team-lead approval no longer opens a production gate named `staging`.
    verdict = judge_decision(
        policy,
        "h",
        check("alice", subject="gate:staging", environment="production"),
        signatures.verify,
    )
    assert not verdict.accepted
    assert "gate 'staging' requires a signed decision" in verdict.reason


def test_the_policys_environments_bound_the_definitions(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(GATED_POLICY)
    policy = load_policy(tmp_path / "policy.yaml").policy
    start = PolicyStart(
        workflow_id="w",
        gates=[
            GateAsk(gate="staging", environment="production", roles=["team_lead"]),
            GateAsk(gate="production-freeze", environment="production", roles=["cto"]),
        ],
        environments={"production": EnvironmentAsk(concurrency="supersede")},
    )
    problems = gating_problems(policy, start)
    assert problems == [
        "gate 'staging' of production is named after another environment of the worker's "
        "policy; name it after its own environment or no environment",
        "gate 'production-freeze' is the freeze override gate of production; give the "
        "approval another name",
        "the worker's policy runs production with concurrency 'queue'; this run's definition "
        "asks 'supersede' (a newer commit would take the environment from a run mid-change): "
        "remove it or ask 'queue'",
    ]
    # Stricter is allowed: queue where the policy says nothing, more windows, fewer roles.
    own = FreezeWindow(cron="0 9 * * MON", duration="1h")
    forced = environments_in_force(
        policy,
        {
            "production": EnvironmentAsk(freeze=[own], freeze_override_roles=["cto", "erin"]),
            "staging": EnvironmentAsk(concurrency="queue", freeze_override_roles=["developer"]),
            "development": EnvironmentAsk(concurrency="supersede"),
        },
    )
    assert forced == {
        "production": EnvironmentInForce(
            concurrency="queue",
            freeze=[*policy.environments["production"].freeze, own],
            freeze_override_roles=["cto"],
        ),
        "staging": EnvironmentInForce(concurrency="queue", freeze_override_roles=["developer"]),
    }
    # A definition naming only other roles leaves nobody to override the policy's freeze.
    narrowed = environments_in_force(
        policy, {"production": EnvironmentAsk(freeze_override_roles=["developer"])}
    )
    assert narrowed["production"].freeze_override_roles == []
