"""`slipway start --pull-request` and `paths_ignore` as CI runs them (docs/cli.md, the GitHub
Actions example in deploy/ci): a subprocess against the dev server, with a worker on
in-memory backends in this process, and a real git repository the starter reads."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from contracts.activity import SuiteReport
from demo.localstack import git, make_service_repo
from tests.integration.test_devserver import cli_env, run_cmd
from tests.support.memory import MemoryBackends
from worker import build_runner_worker, build_worker

pytestmark = pytest.mark.devserver


def definition(service: str) -> dict[str, Any]:
    return {
        "name": "pr",
        "service": {"name": service},
        "environments": {"development": {}},
        "on": {"pull_request": {"until": "build"}},
        "paths_ignore": ["docs/**", "**.md"],
        "stages": [
            {"name": "checkout", "kind": "checkout"},
            {"name": "unit", "kind": "test", "needs": ["checkout"],
             "command": ["pytest", "tests/unit"]},
            {"name": "build", "kind": "build", "needs": ["unit"]},
            {"name": "deploy_dev", "kind": "deploy", "needs": ["build"],
             "environment": "development"},
            {"name": "smoke_dev", "kind": "smoke", "needs": ["deploy_dev"],
             "environment": "development"},
        ],
    }  # fmt: skip


def commit_file(repo: Path, path: str, text: str) -> str:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text, encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"change {path}")
    return git(repo, "rev-parse", "HEAD")


async def test_pull_request_runs_and_docs_only_changes_from_the_cli(
    dev_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str, tmp_path: Path
) -> None:
    service = f"svc{uuid.uuid4().hex[:8]}"
    spec_file = tmp_path / "hello.yaml"
    spec_file.write_text(json.dumps(definition(service)), encoding="utf-8")  # JSON is YAML
    repo = tmp_path / "repo"
    base = make_service_repo(repo)
    git(repo, "checkout", "-q", "-b", "feature/login")
    head = commit_file(repo, "hello_service/login.py", "LOGIN = True\n")
    summary = tmp_path / "step-summary.md"
    env = {**cli_env(dev_env, task_queue), "GITHUB_STEP_SUMMARY": str(summary)}

    def start(commit: str, *more: str, branch: str = "feature/login") -> list[str]:
        # docs/cli.md's pull-request line, with this test's definition and repository.
        return [
            sys.executable, "-m", "starters", "start", "--definition", str(spec_file),
            "--repo", str(repo), "--commit", commit, "--author", "erin",
            "--branch", branch, *more,
        ]  # fmt: skip

    backends = memory.backends()
    runner = build_runner_worker(dev_env.client, backends.runner(), f"{task_queue}-runner")
    async with build_worker(dev_env.client, backends, task_queue), runner:
        # The PR's stages pass: exit 0, and nothing touched an environment.
        code, out, err = await run_cmd(
            *start(head, "--pull-request", "42", "--base", base, "--wait"), env=env
        )
        assert code == 0, out + err
        assert "pull request #42 runs: checkout, unit, build" in err
        run_id = f"pipeline-{service}-{head[:12]}-pr-42"
        assert f"{run_id} started" in out
        assert f"{service} {head[:12]} (pull request #42): succeeded" in out
        assert "not a stage of pull-request runs (#42)" in out
        assert not any(e.startswith("deploy") for e in memory.platform.events)
        code, out, _ = await run_cmd(sys.executable, "-m", "starters", "status", run_id, env=env)
        assert code == 0
        assert f"{head[:12]} (pull request #42): succeeded" in out
        described = await dev_env.client.get_workflow_handle(run_id).describe()
        assert await described.static_summary() == (
            f"{service} {head[:12]} by erin (PR #42, feature/login)"
        )

        # The PR's next commit breaks a test: its own run, exit 1 on its verdict.
        memory.tests.reports["unit"] = SuiteReport(
            exit_code=1, tests=2, failures=1, errors=0, skipped=0, failed_tests=["test_login"]
        )
        broken = commit_file(repo, "hello_service/login.py", "LOGIN = False\n")
        code, out, err = await run_cmd(
            *start(broken, "--pull-request", "42", "--base", base, "--wait"), env=env
        )
        assert code == 1, out + err
        assert f"{service} {broken[:12]} (pull request #42): failed" in out
        assert "1 test(s) failed: test_login" in out

        # Docs only since the base (the PR's merge base): nothing starts, exit 0, said once
        # in the log and in GitHub's job summary.
        git(repo, "checkout", "-q", "main")
        docs = commit_file(repo, "docs/guide.md", "# guide\n")
        code, out, err = await run_cmd(
            *start(docs, "--base", base, "--wait", branch="main"), env=env
        )
        assert code == 0, out + err
        skipped_id = f"pipeline-{service}-main-{docs[:12]}"
        line = (
            f"skipped: only ignored paths changed (1 file since {base[:12]}: docs/guide.md; "
            f"paths_ignore **.md, docs/**): no run started for {skipped_id}"
        )
        assert out.strip() == line
        assert summary.read_text(encoding="utf-8") == f"**slipway** {line}\n"
        with pytest.raises(RPCError) as missing:
            await dev_env.client.get_workflow_handle(skipped_id).describe()
        assert missing.value.status == RPCStatusCode.NOT_FOUND
        code, out, _ = await run_cmd(*start(docs, "--json", branch="main"), env=env)
        assert code == 0
        assert json.loads(out)["skipped"].startswith("only ignored paths changed (1 file since")


async def test_a_new_push_to_a_pull_request_cancels_its_earlier_run(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    """Two pushes to PR #42 and one to PR #43, no worker yet (the runs stay open): the second
    push of #42 cancels the run of its first, says so, and leaves #43 alone."""
    service = f"svc{uuid.uuid4().hex[:8]}"
    spec_file = tmp_path / "hello.yaml"
    spec_file.write_text(json.dumps(definition(service)), encoding="utf-8")
    repo = tmp_path / "repo"
    base = make_service_repo(repo)
    git(repo, "checkout", "-q", "-b", "feature/login")
    env = cli_env(dev_env, task_queue)

    async def push(path: str, pull_request: str) -> tuple[str, str]:
        commit = commit_file(repo, path, f"# {uuid.uuid4().hex}\n")
        code, out, err = await run_cmd(
            sys.executable, "-m", "starters", "start", "--definition", str(spec_file),
            "--repo", str(repo), "--commit", commit, "--author", "erin",
            "--branch", "feature/login", "--pull-request", pull_request, "--base", base,
            env=env,
        )  # fmt: skip
        assert code == 0, out + err
        return f"pipeline-{service}-{commit[:12]}-pr-{pull_request}", out

    first, _ = await push("hello_service/a.py", "42")
    other, _ = await push("hello_service/b.py", "43")
    for workflow_id in (first, other):  # visible to the next start's query
        for _ in range(100):
            query = f"WorkflowId = '{workflow_id}' AND Service = '{service}'"
            if [w async for w in dev_env.client.list_workflows(query)]:
                break
            await asyncio.sleep(0.05)
    second, out = await push("hello_service/c.py", "42")
    assert f"cancelled {first}: a newer push of pull request #42" in out
    assert other not in out

    async def cancel_requested(workflow_id: str) -> bool:
        handle = dev_env.client.get_workflow_handle(workflow_id)
        history = await handle.fetch_history()
        return any(
            e.HasField("workflow_execution_cancel_requested_event_attributes")
            for e in history.events
        )

    assert await cancel_requested(first)
    assert not await cancel_requested(other)
    assert not await cancel_requested(second)
    for workflow_id in (first, other, second):
        await dev_env.client.get_workflow_handle(workflow_id).terminate("test over")
