"""The test activity with `SLIPWAY_BACKING_SERVICES=docker`: the same real pytest suite as
the local path's stage test reads and writes PostgreSQL and Redis through the templated
`env:`, here behind containers of the fake Engine API (real servers inside, since no engine
can run containers here); the summary names the containers and none outlives the run."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from temporalio.testing import ActivityEnvironment

from activities.providers.backing_services.docker import DockerBackingServices
from activities.providers.testing.runner import SubprocessSuiteRunner
from activities.testing import SuiteActivities
from tests.integration.test_backing_services_stage import (
    PYPROJECT,
    SUITE,
    port_of,
    request,
)
from tests.support.binaries import require_module
from tests.support.docker_engine import FakeDockerEngine, engine_with_real_servers
from tests.support.ports import port_refuses
from tests.support.sandbox import unsandboxed  # noqa: F401  (a fixture)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[FakeDockerEngine]:
    with engine_with_real_servers(tmp_path / "engine") as fake:
        yield fake


@pytest.fixture
def project(tmp_path: Path) -> Path:
    require_module("psycopg", "pip install 'psycopg[binary]'")
    root = tmp_path / "svc"
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_storage.py").write_text(textwrap.dedent(SUITE))
    (root / "pyproject.toml").write_text(PYPROJECT)
    return root


# The suite leaves its servers' addresses in endpoints.json, in the checkout: a sandboxed
# stage writes only its own copy (tests/e2e run the same suites sandboxed).
@pytest.mark.usefixtures("unsandboxed")
async def test_the_suite_reaches_the_containers_through_the_stage_env(
    engine: FakeDockerEngine, project: Path
) -> None:
    services = DockerBackingServices(
        lambda: docker.DockerClient(base_url=engine.base_url, timeout=30), poll_s=0.05
    )
    activities = SuiteActivities(SubprocessSuiteRunner(), services)
    report = await ActivityEnvironment().run(activities.run_tests, request(project))
    assert (report.tests, report.failures, report.errors) == (3, 0, 0), report
    pg_note, redis_note = report.services
    assert pg_note.startswith("postgres 16.")
    assert "(container slipway-postgres-" in pg_note
    assert redis_note.startswith("redis 7.")
    endpoints = json.loads((project / "endpoints.json").read_text())
    assert endpoints["db"].startswith("postgresql://postgres:")
    assert engine.containers() == []
    assert port_refuses(port_of(endpoints["db"]))
    assert port_refuses(port_of(endpoints["redis"]))
