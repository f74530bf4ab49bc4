"""DockerBackingServices through the real `docker` SDK against a fake Engine API (no engine
can run containers here) whose containers are real PostgreSQL and Redis servers: the
containers it asks for, the URLs the stage's `env:` gets (a real query answers through
them), and that nothing outlives the run, not even a dead worker's containers."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import psycopg
import pytest
import redis
from temporalio.exceptions import ApplicationError

from activities.providers.backing_services.docker import DockerBackingServices
from activities.wiring.factory import _backing_services
from contracts.definition.service_templates import render
from contracts.errors import ErrorType
from plumbing.settings import Settings
from tests.support.docker_engine import (
    FakeDockerEngine,
    engine_with_real_servers,
    running_engine,
)
from tests.support.ports import port_refuses

ENV = {
    "DATABASE_URL": "postgresql://{services.postgres.user}:{services.postgres.password}"
    "@{services.postgres.host}:{services.postgres.port}/{services.postgres.database}",
    "REDIS_URL": "{services.redis.url}",
}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[FakeDockerEngine]:
    with engine_with_real_servers(tmp_path / "engine") as fake:
        yield fake


def services(
    engine: FakeDockerEngine, worker: str = "worker-0", process: int | None = None
) -> DockerBackingServices:
    return DockerBackingServices(
        lambda: docker.DockerClient(base_url=engine.base_url, timeout=30),
        worker=worker,
        process=process,
        poll_s=0.05,
        ready_timeout_s=60,
    )


def noted(_: str) -> None:
    """Progress notes go nowhere here (the activity turns them into heartbeats)."""


def test_each_service_is_a_container_of_the_asked_image_the_env_urls_reach(
    engine: FakeDockerEngine,
) -> None:
    with services(engine).started(["postgres:16", "redis:7"], noted) as started:
        env = {name: render(value, started.endpoints) for name, value in ENV.items()}
        with psycopg.connect(env["DATABASE_URL"]) as conn:
            conn.execute("CREATE TABLE visits (patient text)")
            conn.execute("INSERT INTO visits VALUES ('p1'), ('p2')")
            (count,) = conn.execute("SELECT count(*) FROM visits").fetchone() or (0,)
        client = redis.Redis.from_url(env["REDIS_URL"])
        client.set("ward", "3")
        assert client.get("ward") == b"3"
        client.close()
        containers = {c.name: c for c in engine.containers()}
    assert count == 2
    pg, rd = started.endpoints["postgres"], started.endpoints["redis"]
    assert engine.pulls == ["postgres:16", "redis:7"]
    pg_name, rd_name = (n for n in containers)
    assert sorted(c.image for c in containers.values()) == ["postgres:16", "redis:7"]
    assert containers[pg_name].env["POSTGRES_PASSWORD"] == pg.password
    assert containers[pg_name].labels["slipway.dev/worker"] == "worker-0"
    # Published on loopback only, at the port the engine chose and the endpoint reports.
    asked = containers[pg_name].bindings["5432/tcp"]
    assert asked == [{"HostIp": "127.0.0.1", "HostPort": ""}]
    published = containers[pg_name].ports["5432/tcp"][0]
    assert (pg.host, pg.port) == (published["HostIp"], int(published["HostPort"]))
    assert rd.url == f"redis://default:{rd.password}@127.0.0.1:{rd.port}/0"
    # The worker's own query read the server's version: the note says what really runs.
    pg_note, rd_note = started.notes
    assert pg_note.startswith("postgres 16.")
    assert pg_note.endswith(f"(container {pg_name})")
    assert rd_note.startswith("redis 7.")
    assert rd_note.endswith(f"(container {rd_name})")
    assert engine.containers() == []
    assert port_refuses(pg.port)
    assert port_refuses(rd.port)
    assert engine.unserved == []


def test_the_containers_are_removed_when_the_tests_raise(engine: FakeDockerEngine) -> None:
    with (
        pytest.raises(ZeroDivisionError),
        services(engine).started(["redis:7"], noted) as started,
    ):
        _ = 1 / 0  # the suite's runner itself failing
    assert engine.containers() == []
    assert port_refuses(started.endpoints["redis"].port)


def test_an_image_that_cannot_be_pulled_is_one_sentence_and_leaves_nothing(
    engine: FakeDockerEngine,
) -> None:
    with (
        pytest.raises(ApplicationError) as raised,
        services(engine).started(["redis:7", "postgres:99"], noted),
    ):
        pytest.fail("the block must not run")
    assert raised.value.type == ErrorType.CONFIGURATION
    assert raised.value.message == (
        "The backing service image postgres:99 could not be pulled: manifest for postgres:99 "
        "not found: manifest unknown: manifest unknown."
    )
    assert engine.containers() == []


def test_a_pull_error_inside_the_engine_stream_is_the_same_sentence(
    engine: FakeDockerEngine,
) -> None:
    engine.pull_errors_in_stream = True
    with (
        pytest.raises(ApplicationError) as raised,
        services(engine).started(["postgres:99"], noted),
    ):
        pytest.fail("the block must not run")
    assert raised.value.type == ErrorType.CONFIGURATION
    assert raised.value.message == (
        "The backing service image postgres:99 could not be pulled: "
        "postgres:99: reading manifest 99: manifest unknown."
    )


def test_an_unhealthy_container_quotes_its_healthcheck_and_is_removed(
    engine: FakeDockerEngine,
) -> None:
    engine.unhealthy["redis:7"] = "Could not connect to Redis at 127.0.0.1:6379"
    with (
        pytest.raises(RuntimeError, match=r"\(redis:7\) is unhealthy: Could not connect to Redis"),
        services(engine).started(["redis:7"], noted),
    ):
        pytest.fail("the block must not run")
    assert engine.containers() == []


def test_an_engine_that_does_not_answer_is_said_so(tmp_path: Path) -> None:
    with running_engine(tmp_path / "engine") as gone:
        url = gone.base_url
    unreachable = DockerBackingServices(lambda: docker.DockerClient(base_url=url), checks={})
    with pytest.raises(RuntimeError, match=r"^The Docker engine that runs backing services does"):
        unreachable.clean_leftovers()


def test_a_container_that_exits_names_its_image_code_and_output(
    engine: FakeDockerEngine,
) -> None:
    engine.exits["postgres:16"] = (1, "initdb: error: superuser password is not specified\n")
    with (
        pytest.raises(
            RuntimeError,
            match=r"container slipway-postgres-\w+ \(postgres:16\) "
            r"exited with code 1: initdb: error: superuser password",
        ) as raised,
        services(engine).started(["postgres:16"], noted),
    ):
        pytest.fail("the block must not run")
    assert "\n" not in str(raised.value)
    assert engine.containers() == []


def test_a_restarted_worker_removes_only_its_own_leftovers(engine: FakeDockerEngine) -> None:
    killed = subprocess.Popen(["sleep", "60"])  # stands for a worker process that gets killed
    dead = services(engine, "worker-0", process=killed.pid)
    leftover = dead.started(["redis:7"], noted)
    endpoints = leftover.__enter__().endpoints  # the worker dies in the block: nothing removes
    killed.kill()
    killed.wait()
    with (
        services(engine, "worker-0").started(["redis:7"], noted) as sibling,
        services(engine, "worker-1").started(["redis:7"], noted),
    ):
        assert len(services(engine, "worker-0").clean_leftovers()) == 1
        remaining = sorted(c.labels["slipway.dev/worker"] for c in engine.containers())
        # Another live worker process on this machine, with the same name, keeps its own.
        assert not port_refuses(sibling.endpoints["redis"].port)
    assert remaining == ["worker-0", "worker-1"]
    assert port_refuses(endpoints["redis"].port)
    assert services(engine, "worker-0").clean_leftovers() == []


def test_the_worker_setting_uses_the_configured_engine(engine: FakeDockerEngine) -> None:
    chosen: Any = _backing_services(
        Settings.load(backing_services="docker", docker_host=engine.base_url)
    )
    assert isinstance(chosen, DockerBackingServices)
    with chosen.started(["redis:7"], noted) as started:
        assert started.endpoints["redis"].port > 0
    assert engine.containers() == []
