"""An abort while the canary waits out an interval, on the kubernetes platform (the in-process
fake API server; no real one can run here): exactly one restore, traffic back to stable, the
canary scaled down, stable still on the digest that served before. Before environment leases
the canary rolled back and then the pipeline rolled back again, one revision too far."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.platforms.kubernetes import KubernetesPlatform
from activities.platforms.kubernetes._objects import image_reference
from activities.wiring.backends import Heartbeat
from contracts.activity import Artifact, BuildRequest
from contracts.definition.loading import validate_definition
from contracts.messages import AbortRequest, ActionRecord, PipelineState, StageState
from plumbing.updates import execute_update
from starters.runs import pipeline_outcome
from tests.fakes.kube_api import FakeKubeApi, canary_environment
from tests.support.memory import MemoryBackends
from tests.support.pipelines import run_context, start, wait_for_gate
from tests.workflows.test_pipeline import approve, wait_for_canary_interval
from worker import build_worker

pytestmark = pytest.mark.timeout(60)
NS = "hello-prod"
OLD = Artifact(digest="sha256:" + "a" * 64, uri="registry.example/hello@sha256:" + "a" * 64,
               kind="image", version="old")  # fmt: skip

SPEC = {
    "name": "k8s",
    "service": {"name": "hello"},
    "environments": {"production": {"strategy": "canary", "requires_approval": True}},
    "stages": [
        {"name": "checkout", "kind": "checkout"},
        {"name": "build", "kind": "build", "needs": ["checkout"]},
        {"name": "approve", "kind": "approval", "needs": ["build"],
         "environment": "production", "roles": ["cto"]},
        {"name": "deploy_production", "kind": "deploy", "needs": ["approve"],
         "environment": "production", "on_failure": "rollback"},
        {"name": "canary", "kind": "canary", "needs": ["deploy_production"],
         "environment": "production", "interval": "1m", "stepWeight": 10, "maxWeight": 50,
         "threshold": 2, "on_failure": "rollback",
         "metrics": [{"metric": "error_rate", "max": 1, "window": "1m"}]},
        {"name": "rollback_production", "kind": "rollback", "environment": "production"},
    ],
}  # fmt: skip


class ImageBuilder:
    """An image per commit, as the docker builder would push it."""

    def build(self, request: BuildRequest, heartbeat: Heartbeat) -> Artifact:
        digest = "sha256:" + hashlib.sha256(request.commit.encode()).hexdigest()
        return Artifact(digest=digest, uri=f"registry.example/hello@{digest}", kind="image")


@pytest.fixture
def fake() -> Iterator[FakeKubeApi]:
    with FakeKubeApi() as api:
        api.add(*canary_environment(NS, "hello", image_reference(OLD), replicas=2))
        yield api
        assert api.unserved == [], "the platform called endpoints the fake does not serve"


async def test_abort_during_a_canary_interval_restores_once(
    time_env: WorkflowEnvironment, memory: MemoryBackends, task_queue: str, fake: FakeKubeApi
) -> None:
    kube = KubernetesPlatform(
        fake.api_client(), {"production": NS}, progress_deadline_s=5.0, poll_interval_s=0.01
    )
    backends = memory.backends()
    backends.builder = ImageBuilder()
    backends.target = backends.router = kube
    spec = validate_definition(SPEC, "k8s.yaml")
    async with build_worker(time_env.client, backends, task_queue):
        handle = await start(time_env.client, task_queue, spec, run_context())
        await wait_for_gate(handle, "production")
        await approve(handle, "carol", "production")
        await wait_for_canary_interval(time_env, handle)
        before = len(fake.requests)
        stable_sets = len(fake.replica_sets(NS, "hello-stable"))
        # The abort update returns once the worker's policy accepted it: with time skipping,
        # awaiting the result while a signal's check runs would let the canary's timers fire.
        await execute_update(
            handle, "abort", AbortRequest(by="dave", reason="bad smell"), result_type=ActionRecord
        )
        result = await pipeline_outcome(handle)
    assert result.state == PipelineState.ABORTED
    assert next(s for s in result.stages if s.name == "canary").state == StageState.CANCELLED
    assert "production" in result.rolled_back
    stable = fake.deployment(NS, "hello-stable").spec.template.spec
    assert stable is not None
    assert stable.containers[0].image == image_reference(OLD)
    assert fake.deployment(NS, "hello-canary").spec.replicas == 0
    route = fake.virtual_service(NS, "hello")["spec"]["http"][-1]["route"]
    assert sum(d.get("weight", 0) for d in route if d["destination"].get("subset") == "canary") == 0
    # One restore: traffic back and the canary scaled down once; stable kept its pods (no
    # rollout: no second rollback going one revision further back).
    patched = [path for method, path in fake.requests[before:] if method == "PATCH"]
    assert sum("virtualservices" in p for p in patched) == 1
    assert sum(p.endswith("deployments/hello-canary") for p in patched) == 1
    assert len(fake.replica_sets(NS, "hello-stable")) == stable_sets
