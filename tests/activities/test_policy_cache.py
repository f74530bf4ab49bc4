"""The worker's policy is parsed once per change of its file, and every decision is still judged
by the file as it is at that decision: an edit between two decisions (a revoked role) applies
to the second, even one that keeps the file's size and modification time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.decisions import DecisionActivities
from contracts.messages import DecisionCheck
from plumbing.worker_policy import PolicyCache, PolicyError, policy_cache

# Two policies of the same length: alice and bobby swap roles.
ALICE_LEADS = "people:\n  alice: {roles: [team_lead]}\n  bobby: {roles: [onlookr_x]}\n"
BOBBY_LEADS = "people:\n  alice: {roles: [onlookr_x]}\n  bobby: {roles: [team_lead]}\n"


def test_the_two_policies_differ_only_in_content() -> None:
    assert len(ALICE_LEADS.encode()) == len(BOBBY_LEADS.encode())
    assert ALICE_LEADS != BOBBY_LEADS


def decision(by: str) -> DecisionCheck:
    return DecisionCheck.model_validate(
        {
            "namespace": "default",
            "workflow_id": "pipeline-hello-main-abc",
            "run_id": "run-1",
            "subject": "gate:staging",
            "gate": "staging",
            "environment": "staging",
            "decision": "approve",
            "by": by,
            "author": "erin <erin@example.com>",
            "definition_roles": ["team_lead"],
        }
    )


async def judged(activities: DecisionActivities, by: str) -> tuple[bool, str]:
    verdict = await ActivityEnvironment().run(activities.check_decision, decision(by))
    return verdict.accepted, verdict.reason


def identity(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def rewrite_keeping_size_and_mtime(path: Path, text: str) -> None:
    """Rewrite `path` in place (same inode) and give it back its modification time to the
    nanosecond: only the bytes tell the new file from the old."""
    before = path.stat()
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


async def test_an_edit_that_keeps_size_and_mtime_applies_to_the_next_decision(
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(ALICE_LEADS, encoding="utf-8")
    activities = DecisionActivities(policy)
    cache = policy_cache(policy)

    assert await judged(activities, "alice") == (True, "")
    assert (await judged(activities, "bobby"))[0] is False
    assert cache.parses == 1  # the second decision used the parsed policy

    was = identity(policy)
    rewrite_keeping_size_and_mtime(policy, BOBBY_LEADS)
    assert identity(policy) == was  # (st_dev, st_ino, st_size, st_mtime_ns) all unchanged

    accepted, reason = await judged(activities, "alice")
    assert not accepted
    assert "'alice' holds ['onlookr_x']" in reason
    assert (await judged(activities, "bobby"))[0] is True
    assert cache.parses == 2  # the hash told the new file from the old


async def test_an_ordinary_edit_and_a_replaced_file_apply_at_once(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(ALICE_LEADS, encoding="utf-8")
    activities = DecisionActivities(policy)
    assert (await judged(activities, "alice"))[0] is True

    # alice revoked (the file shrinks).
    policy.write_text("people:\n  bobby: {roles: [team_lead]}\n", encoding="utf-8")
    accepted, reason = await judged(activities, "alice")
    assert not accepted
    assert "unknown approver 'alice'" in reason

    # A new file renamed over the old (a ConfigMap update): another inode.
    fresh = tmp_path / "policy.new"
    fresh.write_text(ALICE_LEADS, encoding="utf-8")
    fresh.replace(policy)
    assert (await judged(activities, "alice"))[0] is True


async def test_a_broken_or_missing_file_refuses_every_decision(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(ALICE_LEADS, encoding="utf-8")
    activities = DecisionActivities(policy)
    assert (await judged(activities, "alice"))[0] is True

    policy.write_text("people: [not, a, mapping\n", encoding="utf-8")
    for _ in range(2):  # never the last good policy, and the failure is not cached
        with pytest.raises(ApplicationError, match="not valid YAML"):
            await judged(activities, "alice")
    policy.unlink()
    with pytest.raises(ApplicationError, match="policy file not found"):
        await judged(activities, "alice")
    policy.write_text(ALICE_LEADS, encoding="utf-8")
    assert (await judged(activities, "alice"))[0] is True


def test_the_cache_hands_out_one_parsed_policy_per_content(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(ALICE_LEADS, encoding="utf-8")
    cache = PolicyCache(policy)
    first = cache.load()
    assert cache.load() is first
    assert cache.parses == 1
    assert first.hash.startswith("sha256:")
    assert policy_cache(policy) is policy_cache(str(policy))
    with pytest.raises(PolicyError, match="policy file not found"):
        PolicyCache(tmp_path / "absent.yaml").load()
