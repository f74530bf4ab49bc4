"""Bad command-line arguments are refused before anything connects: a sentence naming the
option, exit code 2 (no Temporal server is running here; a check that let the argument
through would fail differently, with "cannot connect", exit 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from contracts.messages import RunContext
from starters import cli
from starters.cli import app
from starters.runs import StartedRun

ROOT = Path(__file__).resolve().parents[2]
HEAL7 = str(ROOT / "pipelines" / "heal7.yaml")
SHA = "0123456789abcdef0123456789abcdef01234567"
START = ["start", "--definition", HEAL7, "--repo", ".", "--author", "erin"]

CASES = {
    "branch name as a sha": ([*START, "--commit", "main"], "'main' is not a full commit sha"),
    "short sha": ([*START, "--commit", SHA[:12]], "is not a full commit sha"),
    "service with a slash": (
        [*START, "--commit", SHA, "--service", "a/b"],
        "'a/b' is not a service name",
    ),
    "service with a space": ([*START, "--commit", SHA, "--service", "a b"], "not a service name"),
    "branch as an option": ([*START, "--commit", SHA, "--branch", "-x"], "not a valid git branch"),
    "repo as an option": (
        ["start", "--definition", HEAL7, "--repo", "--upload-pack=x", "--author", "e",
         "--commit", SHA],
        "is not a repository path",
    ),
    "policy file is a directory": (["validate", HEAL7, "--policy", str(ROOT)], "policy"),
    "gate with a path": (
        ["approve", "pipeline-x", "--approver", "carol", "--gate", "../prod"],
        "is not a valid name",
    ),
    "environment with a space": (
        ["rollback", "--service", "hello", "--environment", "prod uction", "--by", "dave"],
        "is not a valid name",
    ),
    "service query injection": (["env", "x' OR 'a'='a"], "is not a service name"),
    "negative watch interval": (["watch", "pipeline-x", "--interval", "-1"], "--interval"),
    "zero dora days": (["dora", "--service", "hello", "--days", "0"], "--days"),
    "history file is a directory": (["replay", "--file", str(ROOT)], "not a readable history"),
    "validate against a missing policy": (
        ["validate", HEAL7, "--policy", str(ROOT / "nowhere.yaml")],
        "policy file not found",
    ),
    "roles are the policy's": (["validate", HEAL7, "--roles", "x.yaml"], "No such option"),
    "pull request zero": ([*START, "--commit", SHA, "--pull-request", "0"], "--pull-request"),
    "base as a branch": ([*START, "--commit", SHA, "--base", "main"], "'main' is not a full"),
    "no stage for a pull request": (
        ["start", "--definition", str(ROOT / "tests" / "starters" / "gate_first.yaml"),
         "--repo", ".", "--commit", SHA, "--pull-request", "3"],
        "gate_first.yaml: no stage runs for a pull request: each touches an environment or "
        "the registry, or needs one that does (give on.pull_request.stages)",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("args", "message"), CASES.values(), ids=CASES.keys())
def test_bad_arguments_are_refused_with_a_sentence(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output


def test_validate_judges_a_definition_as_the_workers_policy_would(tmp_path: Path) -> None:
    """The worker's start check, before any run: a policy whose people cannot meet the
    production gate (nobody is the DevOps lead) refuses HEAL7; the shipped one takes it."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "people:\n  carol: {roles: [cto]}\n  alice: {roles: [team_lead]}\n", encoding="utf-8"
    )
    result = CliRunner().invoke(app, ["validate", HEAL7, "--policy", str(policy)])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert f"{HEAL7}: under {policy}: gate 'production' needs 2 distinct approvers" in said
    ok = CliRunner().invoke(
        app, ["validate", HEAL7, "--policy", str(ROOT / "pipelines/policy.yaml")]
    )
    assert ok.exit_code == 0, ok.output
    assert "ok (" in ok.output


def test_commit_time_is_ignored_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    # CI scripts that pass it keep working; the run's commit time is git's (the checkout's),
    # so a time in the future cannot make a run newer than the ones started after it.
    started: list[RunContext] = []

    async def client() -> object:
        return object()

    async def start(
        _client: object, _spec: object, run: RunContext, *_: object, **__: object
    ) -> StartedRun:
        started.append(run)
        return StartedRun(workflow_id="pipeline-x", run_id="r", existing=False, url="u")

    monkeypatch.setattr(cli, "_client", client)
    monkeypatch.setattr(cli, "start_pipeline", start)
    args = [*START, "--commit", SHA, "--commit-time", "2031-01-01T00:00:00+00:00"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "--commit-time 2031-01-01T00:00:00+00:00 is ignored" in " ".join(result.output.split())
    assert [run.commit_time for run in started] == [None]
