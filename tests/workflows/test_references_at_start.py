"""A run whose releases refer to a secret that does not resolve fails at its start, before
anything is checked out, built or deployed, in one sentence per reference naming the
environment and the definition's field; a branch that never deploys to that environment is
not held up by it."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.helpers.secrets import SecretResolver
from contracts.definition.model import EnvironmentSpec, PipelineSpec, SecretRefSpec
from contracts.messages import PipelineState, StageState
from contracts.references import reference_check, refers_to_nothing
from plumbing.secret_store import LocalSecretStore
from starters.runs import pipeline_outcome
from tests.support.memory import MemoryBackends
from tests.support.pipelines import Handle, heal7, run_context, start
from tests.workflows.test_pipeline import approve_all
from worker import build_worker

pytestmark = pytest.mark.timeout(90)


def with_production_secret(service: str) -> PipelineSpec:
    spec = heal7()
    envs = dict(spec.environments)
    ref = SecretRefSpec.model_validate({"from": "local", "name": f"{service}/production/db"})
    envs["production"] = envs["production"].model_copy(update={"secrets": {"DB_PASSWORD": ref}})
    service_spec = spec.service.model_copy(update={"name": service})
    return spec.model_copy(update={"environments": envs, "service": service_spec})


async def test_a_missing_secret_fails_the_run_before_any_stage(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str, tmp_path: Path
) -> None:
    service = f"svc{uuid.uuid4().hex[:8]}"
    store = LocalSecretStore(tmp_path / "secrets")
    backends = dataclasses.replace(memory.backends(), secrets=SecretResolver({"local": store}))
    async with build_worker(time_env.client, backends, task_queue):
        handle = await start(
            time_env.client, task_queue, with_production_secret(service), run_context()
        )
        result = await pipeline_outcome(handle)
    assert result.state == PipelineState.FAILED
    assert "production" in result.failure
    assert "environments.production.secrets.DB_PASSWORD" in result.failure
    assert all(s.state == StageState.PENDING for s in result.stages), result.stages


async def test_the_same_secret_once_stored_lets_the_run_through(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str, tmp_path: Path
) -> None:
    service = f"svc{uuid.uuid4().hex[:8]}"
    store = LocalSecretStore(tmp_path / "secrets")
    store.set(f"{service}/production/db", "s3cret")
    backends = dataclasses.replace(memory.backends(), secrets=SecretResolver({"local": store}))
    async with build_worker(time_env.client, backends, task_queue):
        handle = await start(
            time_env.client, task_queue, with_production_secret(service), run_context()
        )
        await approve_all(handle)
        result = await pipeline_outcome(handle)
    assert result.state == PipelineState.SUCCEEDED, result.failure


async def test_a_branch_that_never_reaches_production_is_not_held_up(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str, tmp_path: Path
) -> None:
    service = f"svc{uuid.uuid4().hex[:8]}"
    spec = with_production_secret(service)
    production: EnvironmentSpec = spec.environments["production"]
    assert production.branches == ["main"]
    store = LocalSecretStore(tmp_path / "secrets")
    backends = dataclasses.replace(memory.backends(), secrets=SecretResolver({"local": store}))
    async with build_worker(time_env.client, backends, task_queue):
        handle = await start(time_env.client, task_queue, spec, run_context(branch="feature/x"))
        result = await pipeline_outcome(handle)
    assert result.state == PipelineState.SUCCEEDED, result.failure
    stages = {s.name: s.state for s in result.stages}
    assert stages["deploy_dev"] == StageState.SUCCEEDED
    assert stages["deploy_production"] == StageState.SKIPPED


async def test_a_pull_request_run_deploys_nowhere_so_no_reference_holds_it_up(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str, tmp_path: Path
) -> None:
    service = f"svc{uuid.uuid4().hex[:8]}"
    store = LocalSecretStore(tmp_path / "secrets")
    backends = dataclasses.replace(memory.backends(), secrets=SecretResolver({"local": store}))
    async with build_worker(time_env.client, backends, task_queue):
        handle = await start(
            time_env.client,
            task_queue,
            with_production_secret(service),
            run_context(branch="feature/x", pull_request=9, base="b" * 40),
        )
        result = await pipeline_outcome(handle)
    assert result.state == PipelineState.SUCCEEDED, result.failure
    stages = {s.name: s.state for s in result.stages}
    assert stages["unit_tests"] == StageState.SUCCEEDED


async def scheduled_activities(handle: Handle) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        async for e in handle.fetch_history_events()
        if e.HasField("activity_task_scheduled_event_attributes")
    ]


async def test_releases_that_name_no_secret_or_resource_ask_the_deployer_nothing(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str, tmp_path: Path
) -> None:
    """The check costs a round trip to the deployer: a run asks only when there is something
    to look up (a secret, a resource, a resource placeholder)."""
    service = f"svc{uuid.uuid4().hex[:8]}"
    spec = heal7()
    bare = {
        n: e.model_copy(update={"secrets": {}, "resources": []})
        for n, e in spec.environments.items()
    }
    plain = spec.model_copy(
        update={
            "service": spec.service.model_copy(update={"name": service, "env": {}}),
            "environments": bare,
        }
    )
    assert refers_to_nothing(reference_check(plain))
    assert not refers_to_nothing(reference_check(with_production_secret(service)))
    store = LocalSecretStore(tmp_path / "secrets")
    backends = dataclasses.replace(memory.backends(), secrets=SecretResolver({"local": store}))
    async with build_worker(time_env.client, backends, task_queue):
        asked = await start(
            time_env.client, task_queue, with_production_secret(service), run_context()
        )
        await pipeline_outcome(asked)
        not_asked = await start(time_env.client, task_queue, plain, run_context())
        await approve_all(not_asked)
        result = await pipeline_outcome(not_asked)
    assert result.state == PipelineState.SUCCEEDED, result.failure
    assert "check_references" in await scheduled_activities(asked)
    assert "check_references" not in await scheduled_activities(not_asked)
