"""Several deployables per run (`artifacts:`), through whole HEAL7 runs on the dev server
with in-memory backends and timings of seconds: each artifact is built once and reaches every
environment as its own platform service; the canary moves both together and judges the named
one; a failed canary puts every artifact back on what served before.

(The dev server, not the time-skipping one: these runs lean on the environment workflow's
updates, which the time-skipping server was seen to lose under load.)"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from contracts.activity import MetricsQuery
from contracts.definition.loading import validate_definition
from contracts.definition.model import PipelineSpec
from contracts.messages import PipelineState, StageState
from starters.runs import pipeline_outcome
from tests.support.memory import MemoryBackends
from tests.support.pipelines import HEAL7_BACKEND, run_context, start
from tests.workflows.test_pipeline import approve_all, stage
from worker import build_worker

pytestmark = [pytest.mark.timeout(120), pytest.mark.devserver]

HEAL7 = HEAL7_BACKEND  # the one-deployable journey, made a bundle here


def heal7_bundle(name: str = "heal7") -> PipelineSpec:
    """HEAL7 with its two deployables, the backend (judged by the canary) and the frontend,
    and canary and monitor timings of seconds."""
    data: dict[str, Any] = yaml.safe_load(HEAL7.read_text(encoding="utf-8"))
    data["service"] = {"name": name}
    data["artifacts"] = {
        "backend": {"path": "backend", "run": ["python", "-m", "app", "--port", "{port}"]},
        "frontend": {"path": "frontend", "run": ["python", "-m", "heal7_frontend"]},
    }
    for raw in data["stages"]:
        if raw["name"] == "uat":
            raw["artifact"] = "frontend"
        if raw["name"] in ("unit_tests", "integration_tests"):
            raw["artifact"] = "backend"
        if raw["name"] == "canary":
            raw.update(interval="1s", threshold=2, stepWeight=25)
            raw["metrics"] = [{**m, "window": "1s"} for m in raw["metrics"]]
        if raw["name"] == "monitor":
            raw.update(duration="2s", interval="1s", recheck="1s")
    return validate_definition(data, str(HEAL7))


def healthy(query: MetricsQuery, n: int) -> dict[str, float | None]:
    return {"success_rate": 100.0, "error_rate": 0.0, "p95_latency_ms": 50.0, "cpu_percent": 9.0}


def slow_canary(query: MetricsQuery, n: int) -> dict[str, float | None]:
    values = healthy(query, n)
    if query.slot == "canary":
        values["p95_latency_ms"] = 900.0
    return values


@pytest.fixture
def bundled(memory: MemoryBackends) -> MemoryBackends:
    memory.platform.per_service = True
    memory.metrics.script = healthy
    return memory


async def test_each_artifact_is_built_once_and_reaches_production_as_its_own_service(
    dev_env: WorkflowEnvironment, bundled: MemoryBackends, task_queue: str
) -> None:
    # A service of its own: environment workflows live as long as the dev server.
    name = f"heal7{uuid.uuid4().hex[:6]}"
    spec, run = heal7_bundle(name), run_context(service=name)
    async with build_worker(dev_env.client, bundled.backends(), task_queue):
        handle = await start(dev_env.client, task_queue, spec=spec, run=run)
        await approve_all(handle)
        result = await pipeline_outcome(handle)

    assert result.state == PipelineState.SUCCEEDED, result.failure
    # Built once each, from its own directory, under its own platform name.
    builds = sorted((b.service, b.path.rsplit("/", 1)[-1]) for b in bundled.builder.calls)
    assert builds == [(f"{name}-backend", "backend"), (f"{name}-frontend", "frontend")]
    # Each image was scanned and published once, under its own name.
    for done in (bundled.builder.scanned, bundled.builder.published):
        assert sorted(uri.split("/")[2] for uri in done) == [f"{name}-backend", f"{name}-frontend"]
    assert result.artifact is not None
    assert result.artifact.kind == "bundle"
    parts = {c.name: c.artifact.digest for c in result.artifact.components}
    assert sorted(parts) == ["backend", "frontend"]
    # Every environment serves both, each as its own service.
    for env in ("development", "staging", "production"):
        for part, digest in parts.items():
            assert bundled.platform.envs[f"{name}-{part}@{env}"].stable == digest, (part, env)
    # One joint canary: both services' weights moved at every step; the backend's metrics
    # judged it (the first artifact, none named).
    moved = [e.split()[1:] for e in bundled.platform.events if e.startswith(f"weight {name}")]
    backend = [w for who, w in moved if who == f"{name}-backend@production"]
    frontend = [w for who, w in moved if who == f"{name}-frontend@production"]
    assert backend == frontend, moved
    assert "50" in backend, moved
    canary = [q for q in bundled.metrics.queries if q.slot == "canary"]
    assert canary
    assert {q.service for q in canary} == {f"{name}-backend"}
    # The check stage naming the frontend probed the frontend's service.
    state, summary = stage(result, "uat")
    assert state == StageState.SUCCEEDED, summary
    uat = [c for c in bundled.platform.checks if c.environment == "staging"]
    assert {c.service for c in uat} == {f"{name}-frontend"}
    # Staging's live tests (load, dynamic scan) address the first artifact, the backend.
    [load] = bundled.load_tester.requests
    [scan] = bundled.live_scanner.requests
    assert load.endpoint.headers == scan.endpoint.headers == {"Host": f"{name}-backend"}


async def test_a_failed_joint_canary_puts_every_artifact_back(
    dev_env: WorkflowEnvironment, bundled: MemoryBackends, task_queue: str
) -> None:
    name = f"heal7{uuid.uuid4().hex[:6]}"
    spec = heal7_bundle(name)
    async with build_worker(dev_env.client, bundled.backends(), task_queue):
        first = await start(dev_env.client, task_queue, spec=spec, run=run_context(service=name))
        await approve_all(first)
        good = await pipeline_outcome(first)
        assert good.state == PipelineState.SUCCEEDED, good.failure
        assert good.artifact is not None
        before = {c.name: c.artifact.digest for c in good.artifact.components}

        bundled.metrics.script = slow_canary
        second = await start(dev_env.client, task_queue, spec=spec, run=run_context(service=name))
        await approve_all(second)
        bad = await pipeline_outcome(second)

    assert bad.state == PipelineState.ROLLED_BACK, bad.failure
    assert "p95_latency_ms" in bad.failure
    assert bad.artifact is not None
    new = {c.name: c.artifact.digest for c in bad.artifact.components}
    assert new != before
    for part, digest in before.items():
        env = bundled.platform.envs[f"{name}-{part}@production"]
        assert env.stable == digest, part  # the first commit's artifact serves again
        assert env.canary is None, part
        assert env.weight == 0, part


def _refusal(data: dict[str, Any]) -> str:
    from contracts.definition.model import DefinitionError

    with pytest.raises(DefinitionError) as info:
        validate_definition(data, "heal7.yaml")
    return str(info.value)


def test_a_stage_naming_an_undeclared_artifact_is_refused() -> None:
    data = heal7_bundle().model_dump(mode="json", by_alias=True, exclude={"source"})
    for raw in data["stages"]:
        if raw["name"] == "canary":
            raw["artifact"] = "mobile"
    text = _refusal(data)
    assert "stage 'canary'" in text
    assert "artifact" in text
    assert "unknown artifact 'mobile'; declared: backend, frontend" in text


def test_artifacts_and_a_service_run_command_are_refused_together() -> None:
    data: dict[str, Any] = yaml.safe_load(HEAL7.read_text(encoding="utf-8"))
    data["artifacts"] = {"web": {"path": "web"}}
    assert "service.run: with artifacts: each artifact says how it runs" in _refusal(data)


def test_an_artifact_whose_platform_name_is_too_long_is_refused() -> None:
    data: dict[str, Any] = yaml.safe_load(HEAL7.read_text(encoding="utf-8"))
    data["service"] = {"name": "h" * 60}
    data["artifacts"] = {"frontend": {"path": "frontend"}}
    assert f"its platform service '{'h' * 60}-frontend' is not a valid service name" in (
        _refusal(data)
    )
