"""A test stage with `services: [postgres:16, redis:7]` end to end: its command is a real
pytest suite that reads and writes PostgreSQL and Redis through the URLs the stage's
templated `env:` hands it; the stage's summary names the servers; nothing outlives the run.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.providers.backing_services import LocalBackingServices
from activities.providers.backing_services.redis import RedisKind
from activities.providers.testing.runner import SubprocessSuiteRunner
from activities.testing import SuiteActivities
from contracts.activity import CheckoutRequest, SuiteRequest, Workspace
from contracts.definition.loading import validate_definition
from contracts.messages import StageState
from tests.support.binaries import missing, require_module
from tests.support.memory import MemoryBackends
from tests.support.pipelines import run_context, start
from tests.support.ports import port_refuses
from tests.support.sandbox import unsandboxed  # noqa: F401  (a fixture)
from worker import build_worker

ENV = {
    "DATABASE_URL": "postgresql://{services.postgres.user}:{services.postgres.password}"
    "@{services.postgres.host}:{services.postgres.port}/{services.postgres.database}",
    "REDIS_URL": "{services.redis.url}",
    "PG_VERSION": "{services.postgres.version}",
}

SUITE = """
import json, os

import psycopg
import redis


def test_postgres_keeps_what_it_is_given():
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        conn.execute("CREATE TABLE visits (patient text, at date)")
        conn.execute("INSERT INTO visits VALUES ('p1', '2026-11-28'), ('p2', '2026-11-29')")
        (count,) = conn.execute("SELECT count(*) FROM visits").fetchone()
        (version,) = conn.execute("SHOW server_version").fetchone()
    assert count == 2
    assert version.split()[0] == os.environ["PG_VERSION"]  # "15.18 (Debian 15.18-0+deb12u1)"


def test_redis_keeps_what_it_is_given():
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    client.hset("patient:p1", mapping={"ward": "3"})
    assert client.hget("patient:p1", "ward") == b"3"


def test_report_where_the_servers_were():
    with open("endpoints.json", "w") as out:
        json.dump({"db": os.environ["DATABASE_URL"], "redis": os.environ["REDIS_URL"]}, out)
"""

PYPROJECT = """
[project]
name = "clinic-storage"
version = "0.1.0"
dependencies = []

[project.optional-dependencies]
test = ["pytest>=8", "psycopg[binary]>=3.2", "redis>=5"]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    require_module("pgserver", "pip install pgserver (PostgreSQL 16 binaries)")
    if not any(i.version.startswith("7.") for i in RedisKind().installations()):
        missing("no Redis 7 server installed: apt-get install redis-server")
    require_module("psycopg", "pip install 'psycopg[binary]'")
    root = tmp_path / "svc"
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_storage.py").write_text(textwrap.dedent(SUITE))
    # The suite runs in the service's own venv: its clients are its declared test extra.
    (root / "pyproject.toml").write_text(PYPROJECT)
    return root


def request(project: Path) -> SuiteRequest:
    return SuiteRequest(
        path=str(project),
        command=["python", "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider",
                 "--junitxml=junit.xml"],
        junit="junit.xml",
        env=ENV,
        services=["postgres:16", "redis:7"],
    )  # fmt: skip


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


# The suite leaves its servers' addresses in endpoints.json, in the checkout: a sandboxed
# stage writes only its own copy (tests/e2e run the same suites sandboxed).
@pytest.mark.usefixtures("unsandboxed")
async def test_the_suite_reads_and_writes_both_servers_through_the_stage_env(
    project: Path, tmp_path: Path
) -> None:
    activities = SuiteActivities(SubprocessSuiteRunner(), LocalBackingServices(tmp_path / "svcs"))
    report = await ActivityEnvironment().run(activities.run_tests, request(project))
    assert (report.tests, report.failures, report.errors) == (3, 0, 0), report
    assert [note.split(" ")[0] for note in report.services] == ["postgres", "redis"]
    assert report.services[0].startswith("postgres 16")  # 16.x, or 16 asked and a whole 15
    endpoints = json.loads((project / "endpoints.json").read_text())
    assert endpoints["db"].startswith("postgresql://postgres:")
    assert port_refuses(port_of(endpoints["db"]))
    assert port_refuses(port_of(endpoints["redis"]))


class ProjectSource:
    """A checkout that is the test's project directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def ensure(self, request: CheckoutRequest) -> Workspace:
        return Workspace(path=str(self.path), commit=request.commit)


async def test_a_pipeline_stage_starts_the_services_and_its_summary_names_them(
    time_env: WorkflowEnvironment, project: Path, tmp_path: Path, task_queue: str
) -> None:
    spec = validate_definition(
        {
            "name": "heal7-it",
            "service": {"name": "heal7-backend"},
            "stages": [
                {"name": "checkout", "kind": "checkout"},
                {"name": "integration_tests", "kind": "test", "needs": ["checkout"],
                 **request(project).model_dump(include={"command", "junit", "env", "services"})},
            ],
        },
        "heal7-it.yaml",
    )  # fmt: skip
    backends = MemoryBackends().backends()
    backends.source = ProjectSource(project)
    backends.tests = SubprocessSuiteRunner()
    backends.services = LocalBackingServices(tmp_path / "svcs")
    async with build_worker(time_env.client, backends, task_queue):
        handle = await start(time_env.client, task_queue, spec=spec, run=run_context())
        result = await handle.result()
    (stage,) = [s for s in result.stages if s.name == "integration_tests"]
    assert stage.state == StageState.SUCCEEDED, stage
    assert stage.summary.startswith("3 tests, 0 failed; services: postgres 16")
    assert ", redis 7." in stage.summary
