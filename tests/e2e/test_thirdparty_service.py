"""A third-party-shaped service (generated, not vendored: flit_core backend, pytest with
`filterwarnings = error`, a runtime dependency the worker lacks) reaches production on the
local platform with a definition written the way its README would suggest. Real dev server,
real worker subprocess holding secrets in its environment, real Traefik and processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from contracts.messages import PipelineState
from contracts.naming import pipeline_id
from demo.journey import slipway
from starters.runs import pipeline_outcome
from tests.support.binaries import require_binary
from tests.support.devstack import Stack, running_stack
from tests.support.thirdparty import RUNTIME_DEPENDENCY, commit_service

pytestmark = [pytest.mark.e2e, pytest.mark.realserver]

DEFINITION = """
name: greeter
service:
  name: greeter
  path: .
  run: [python, -m, greeter_app, --host, 127.0.0.1, --port, "{port}"]
  health_path: /health
  ready_path: /ready
environments:
  production: {requires_approval: false, strategy: rolling}
stages:
  - {name: checkout, kind: checkout}
  - name: unit_tests
    kind: test
    needs: [checkout]
    command: [python, -m, pytest, -q, -p, no:cacheprovider, --junitxml=junit.xml]
    env: {GREETER_MODE: test}
  - name: frontend
    kind: command
    needs: [checkout]
    command: [sh, -c, "cd frontend && npm ci --no-audit --no-fund && npm run build"]
  - {name: build, kind: build, needs: [unit_tests, frontend]}
  - {name: deploy_production, kind: deploy, needs: [build], environment: production}
  - name: smoke
    kind: smoke
    needs: [deploy_production]
    environment: production
    checks:
      - {path: /, status: 200, contains: "Hello, Ada Lovelace!"}
      - {path: /app, status: 200, contains: "greeter frontend"}
"""

POLICY = """
people:
  erin: {roles: [developer], emails: [erin@example.com]}
gates:
  "*": {signatures: optional}
"""


def test_the_premise_its_suite_cannot_run_in_the_workers_interpreter(tmp_path: Path) -> None:
    """Issue 11: in the worker's interpreter, with the worker's pytest plugins, this suite
    cannot even start (pytest-asyncio's deprecation warning is an error under its config)."""
    repo = tmp_path / "repo"
    commit_service(repo)

    in_worker = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert in_worker.returncode != 0, in_worker.stdout


@pytest_asyncio.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    require_binary("npm", "apt-get install npm (the service's frontend is built with it)")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    # Secrets a worker holds: none of them may reach the service's tests or release.
    secrets = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "aws-secret-value"}
    # This team ships straight to production: its policy asks no approval there.
    env = {**secrets, "SLIPWAY_POLICY_FILE": str(policy)}
    async with running_stack(tmp_path, "e2e", extra_env=env) as started:
        yield started


async def test_a_flit_service_with_its_own_dependencies_reaches_production(
    stack: Stack, tmp_path: Path
) -> None:
    server, worker = stack.server, stack.worker
    repo = tmp_path / "repo"
    sha = commit_service(repo, version="1.0.0")
    definition = tmp_path / "greeter.yaml"
    definition.write_text(textwrap.dedent(DEFINITION))

    slipway(
        server.address,
        worker.task_queue,
        "start",
        "--definition",
        str(definition),
        "--repo",
        str(repo),
        "--commit",
        sha,
        "--author",
        "erin",
        "--branch",
        "main",
    )
    handle = stack.client.get_workflow_handle(pipeline_id("greeter", "main", sha))
    result = await pipeline_outcome(handle)

    assert result.state == PipelineState.SUCCEEDED, result.failure
    tests = next(s for s in result.stages if s.name == "unit_tests")
    assert tests.summary.startswith("3 tests, 0 failed"), tests.summary
    async with httpx.AsyncClient(timeout=5) as http:
        production = (await http.get(f"http://127.0.0.1:{worker.base_port + 3}/")).json()
    venvs = str((worker.state_dir / "platform" / "venvs").resolve())
    assert production["message"] == "Hello, Ada Lovelace!"
    assert production["prefix"].startswith(venvs)
    assert production["dependency_file"].startswith(production["prefix"])
    assert RUNTIME_DEPENDENCY in production["dependency_file"]
    assert production["secrets_seen"] == []
