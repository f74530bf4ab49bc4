"""The production backends, wired by `backends_from_settings`, run whole pipelines on the
Temporal dev server: kubernetes (the fake API server), docker (podman's Docker API), ECR (a real
docker-registry as its registry endpoint, moto as its API) and Prometheus (the real one,
scraping Traefik-named metrics of traffic routed by what the platform set in the cluster).

Run 1 ships commit A: checkout → build → image_scan (ECR has no scan: a warning) → publish →
canary deploy → 50 % → 100 % → promote → monitor → succeeded. Run 2 ships commit B, whose
version answers 500: the canary's analyses fail, the canary is rolled back, and the cluster
still serves A's digest, which is what the registry holds under A's tags.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.platforms.kubernetes._objects import DIGEST
from activities.providers.builders.ecr import ecr_client
from activities.wiring.factory import backends_from_settings
from contracts.definition.loading import validate_definition
from contracts.definition.model import PipelineSpec
from contracts.messages import CanaryResult, PipelineResult, PipelineState, RunContext, StageState
from contracts.naming import canary_id
from plumbing.settings import Settings
from starters.runs import pipeline_outcome, start_pipeline
from tests.fakes.kube_api import FakeKubeApi, canary_environment
from tests.support.binaries import require_binary
from tests.support.ecr_endpoint import EcrEndpoint, running_ecr_endpoint, running_moto
from tests.support.podman import PodmanService, running_podman, running_registry
from tests.support.policy import write_policy
from tests.support.prometheus import running_prometheus
from tests.support.traffic import TraefikTraffic
from worker import build_worker

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient

pytestmark = [pytest.mark.realserver, pytest.mark.devserver]

SERVICE = "shop"
ENVIRONMENT = "production"
NAMESPACE = "shop-prod"
REGION = "us-east-1"
RUN_TIMEOUT_S = 90.0
WINDOW = "5s"  # the metric windows: a few 1 s scrapes, short enough to see a new version

DEFINITION: dict[str, Any] = {
    "name": "production-stack",
    "service": {"name": SERVICE},
    "environments": {ENVIRONMENT: {"strategy": "canary"}},
    "stages": [
        {"name": "checkout", "kind": "checkout"},
        {"name": "build", "kind": "build", "needs": ["checkout"]},
        {
            "name": "image_scan",
            "kind": "image_scan",
            "needs": ["build"],
            "scanner": "ecr",
            "unavailable": "warn",
        },
        # Tags unique per commit: the ECR repository's tags are immutable.
        {"name": "publish", "kind": "publish", "needs": ["image_scan"], "tags": ["rel-{sha12}"]},
        {
            "name": "deploy_production",
            "kind": "deploy",
            "needs": ["publish"],
            "environment": ENVIRONMENT,
            "strategy": "canary",
        },
        {
            "name": "canary",
            "kind": "canary",
            "needs": ["deploy_production"],
            "environment": ENVIRONMENT,
            "interval": "2s",
            "stepWeight": 50,
            "maxWeight": 100,
            "threshold": 2,
            "progress_deadline": "30s",
            "on_failure": "rollback",
            "metrics": [
                {"metric": "success_rate", "min": 95, "window": WINDOW},
                {"metric": "error_rate", "max": 5, "window": WINDOW},
                {"metric": "p95_latency_ms", "max": 500, "window": WINDOW},
            ],
        },
        {
            "name": "monitor",
            "kind": "monitor",
            "needs": ["canary"],
            "environment": ENVIRONMENT,
            "duration": "3s",
            "interval": "1s",
            "recheck": "1s",
            "no_data": "fail",
            "criteria": [
                {"metric": "error_rate", "max": 5, "window": WINDOW},
                {"metric": "p95_latency_ms", "max": 500, "window": WINDOW},
            ],
        },
    ],
}


# --- the service's repository ---------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Alice",
        "GIT_AUTHOR_EMAIL": "alice@example.invalid",
        "GIT_COMMITTER_NAME": "Alice",
        "GIT_COMMITTER_EMAIL": "alice@example.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(repo.parent),
    }
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout.strip()


def _service_repository(path: Path) -> tuple[str, str]:
    """A throwaway repository with two commits of a FROM-scratch image; (sha A, sha B)."""
    path.mkdir(parents=True)
    _git(path, "init", "--quiet", "--initial-branch=main")
    (path / "Dockerfile").write_text("FROM scratch\nCOPY version.txt /version.txt\n")
    (path / "version.txt").write_text("A: healthy\n")
    _git(path, "add", "Dockerfile", "version.txt")
    _git(path, "commit", "--quiet", "-m", "A")
    first = _git(path, "rev-parse", "HEAD")
    (path / "version.txt").write_text("B: answers 500\n")
    _git(path, "commit", "--quiet", "-am", "B")
    return first, _git(path, "rev-parse", "HEAD")


# --- the stack ------------------------------------------------------------------------------


@dataclass
class Stack:
    repo: Path
    commits: tuple[str, str]
    endpoint: EcrEndpoint
    ecr: ECRClient
    fake: FakeKubeApi
    traffic: TraefikTraffic
    settings: Settings


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: fake\n  cluster: {{server: '{server}'}}\n"
        "users:\n- name: worker\n  user: {}\n"
        "contexts:\n- name: fake\n"
        f"  context: {{cluster: fake, user: worker, namespace: {NAMESPACE}}}\n"
        "current-context: fake\n"
    )
    return path


@pytest.fixture
def stack(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stack]:
    for binary, hint in [
        ("podman", "apt-get install -y podman"),
        ("docker-registry", "apt-get install -y docker-registry"),
        ("prometheus", "apt-get install -y prometheus"),
        ("moto_server", "pip install 'moto[server]'"),
    ]:
        require_binary(binary, hint + " (see .ci/real-servers.sh)")
    # moto takes any credentials; these keep the real credential chain out of it.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "KUBECONFIG"):
        monkeypatch.delenv(name, raising=False)
    for name in [n for n in os.environ if n.startswith("SLIPWAY_")]:
        monkeypatch.delenv(name)  # only the keyword arguments below configure the worker

    commits = _service_repository(tmp_path / "repo")
    with ExitStack() as stack:
        registry = stack.enter_context(running_registry(tmp_path / "registry"))
        moto_url = stack.enter_context(running_moto(tmp_path / "moto"))
        ecr = ecr_client(moto_url, REGION)
        endpoint = stack.enter_context(running_ecr_endpoint(registry, ecr))
        podman: PodmanService = stack.enter_context(
            # podman refuses a --runroot longer than 50 characters: a short directory.
            running_podman(tmp_path_factory.mktemp("podman"), [endpoint.host])
        )
        fake = stack.enter_context(FakeKubeApi())
        # What production ran before: a release this test never built.
        fake.add(
            *canary_environment(
                NAMESPACE, SERVICE, f"{endpoint.host}/{SERVICE}@sha256:{'0' * 64}", replicas=2
            )
        )
        traffic = stack.enter_context(
            TraefikTraffic(
                fake, NAMESPACE, SERVICE, ENVIRONMENT, failing_versions=[commits[1][:12]]
            )
        )
        prometheus_url = stack.enter_context(
            running_prometheus(tmp_path / "prometheus", [f"127.0.0.1:{traffic.port}"])
        )
        settings = Settings(
            platform="kubernetes",
            builder="docker",
            registry="ecr",
            metrics="prometheus",
            environments=[ENVIRONMENT],
            state_dir=tmp_path / "state",
            docker_host=podman.base_url,
            docker_registry=endpoint.host,
            aws_region=REGION,
            ecr_endpoint_url=moto_url,
            prometheus_url=prometheus_url,
            kubeconfig=str(_kubeconfig(tmp_path / "kubeconfig", fake.url)),
            kube_namespaces={ENVIRONMENT: NAMESPACE},
        )
        yield Stack(tmp_path / "repo", commits, endpoint, ecr, fake, traffic, settings)
        assert fake.unserved == [], "the platform called endpoints the fake does not serve"


# --- reading the world from outside -----------------------------------------------------------


def _container_image(fake: FakeKubeApi, slot: str) -> str:
    template = fake.deployment(NAMESPACE, f"{SERVICE}-{slot}").spec.template
    assert template.spec is not None
    return str(template.spec.containers[0].image)


def _replicas(fake: FakeKubeApi, slot: str) -> int:
    return int(fake.deployment(NAMESPACE, f"{SERVICE}-{slot}").spec.replicas or 0)


def _annotations(fake: FakeKubeApi, slot: str) -> dict[str, str]:
    meta = fake.deployment(NAMESPACE, f"{SERVICE}-{slot}").metadata
    return dict((meta.annotations if meta is not None else None) or {})


def _canary_weight(fake: FakeKubeApi) -> int:
    default_route = fake.virtual_service(NAMESPACE, SERVICE)["spec"]["http"][-1]["route"]
    weights = {d["destination"]["subset"]: d["weight"] for d in default_route}
    assert weights["stable"] + weights["canary"] == 100
    return int(weights["canary"])


def _ecr_digest(ecr: ECRClient, tag: str) -> str:
    images = ecr.describe_images(repositoryName=SERVICE, imageIds=[{"imageTag": tag}])
    return images["imageDetails"][0]["imageDigest"]


def _stages(result: PipelineResult) -> dict[str, StageState]:
    return {s.name: s.state for s in result.stages}


def _summary(result: PipelineResult, stage: str) -> str:
    return next(s.summary for s in result.stages if s.name == stage)


async def _run(
    env: WorkflowEnvironment, spec: PipelineSpec, stack: Stack, commit: str, task_queue: str
) -> tuple[PipelineResult, CanaryResult]:
    client = env.client
    run = RunContext(
        service=SERVICE, repo=str(stack.repo), commit=commit, author="alice", branch="main"
    )
    started = await start_pipeline(client, spec, run, {}, task_queue)
    assert not started.existing
    result = await asyncio.wait_for(
        pipeline_outcome(client.get_workflow_handle(started.workflow_id)), RUN_TIMEOUT_S
    )
    canary = client.get_workflow_handle(
        canary_id(started.workflow_id, "canary"), result_type=CanaryResult
    )
    return result, await asyncio.wait_for(canary.result(), RUN_TIMEOUT_S)


# --- the test -----------------------------------------------------------------------------------


async def test_production_backends_promote_a_good_canary_and_roll_back_a_bad_one(
    dev_env: WorkflowEnvironment, stack: Stack, task_queue: str, tmp_path: Path
) -> None:
    spec = validate_definition(DEFINITION, "production-stack.yaml")
    # This definition deploys to production without a gate: its team's policy asks none.
    policy = write_policy(tmp_path / "policy.yaml", {})
    first, second = stack.commits
    registry = stack.endpoint.registry
    backends = backends_from_settings(stack.settings)
    async with build_worker(dev_env.client, backends, task_queue, policy_file=policy):
        good, good_canary = await _run(dev_env, spec, stack, first, task_queue)
        served_after_good = stack.traffic.snapshot()
        bad, bad_canary = await _run(dev_env, spec, stack, second, task_queue)
    served = stack.traffic.snapshot()

    # --- run 1: promoted, as the workflow tells it ---
    assert good.state == PipelineState.SUCCEEDED, good.failure
    assert set(_stages(good).values()) == {StageState.SUCCEEDED}, _stages(good)
    assert "ecr unavailable: ECR has no scan" in _summary(good, "image_scan")
    assert good.artifact is not None
    digest_a = good.artifact.digest
    image_a = f"{stack.endpoint.host}/{SERVICE}@{digest_a}"
    assert good.artifact.uri == image_a
    assert set(good.artifact.tags) == {f"rel-{first[:12]}"}
    assert good.deployed == {ENVIRONMENT: digest_a}
    assert good_canary.outcome == "promoted"
    assert [(s.weight, s.passed) for s in good_canary.steps] == [(50, True), (100, True)]
    for step in good_canary.steps:
        assert step.sample is not None
        assert step.sample.source == f"prometheus {stack.settings.prometheus_url}"
        assert step.sample.values["success_rate"] == pytest.approx(100.0)
        assert step.sample.values["error_rate"] == pytest.approx(0.0)
        p95 = step.sample.values["p95_latency_ms"]
        assert p95 is not None
        assert 0 < p95 <= 100  # 50 ms answers: inside Traefik's first bucket
        assert step.sample.requests > 0
    assert "healthy: 3 checks" in _summary(good, "monitor")
    # The good version got canary traffic and never answered 500.
    assert served_after_good[("canary", "200")] > 0
    assert ("canary", "500") not in served_after_good

    # --- run 2: the canary failed and was rolled back ---
    assert bad.state == PipelineState.ROLLED_BACK, bad.failure
    stages = _stages(bad)
    for name in ("checkout", "build", "image_scan", "publish", "deploy_production"):
        assert stages[name] == StageState.SUCCEEDED, (name, stages)
    assert stages["canary"] == StageState.FAILED
    assert stages["monitor"] == StageState.PENDING
    assert "canary aborted: 2 failed analyses reached threshold 2 at weight 50%" in (
        _summary(bad, "canary")
    )
    # Before its first step, the pre-flight asked Prometheus about the stable version (run
    # 1's release), with the PromQL of the default traefik preset, and every query answered.
    assert bad_canary.preflight is not None
    assert bad_canary.preflight.passed, bad_canary.preflight.summary
    assert bad_canary.preflight.sample is not None
    assert bad_canary.preflight.sample.values["success_rate"] == pytest.approx(100.0)
    stable_query = bad_canary.preflight.sample.queries["success_rate"]
    assert f"{SERVICE}-{ENVIRONMENT}-stable" in stable_query
    assert bad.rolled_back == [ENVIRONMENT]
    assert bad.artifact is not None
    digest_b = bad.artifact.digest
    assert digest_b != digest_a
    assert bad.deployed.get(ENVIRONMENT) != digest_b
    assert bad_canary.outcome == "aborted"
    assert [(s.weight, s.passed) for s in bad_canary.steps] == [(50, False), (50, False)]
    for step in bad_canary.steps:
        assert step.sample is not None
        error_rate = step.sample.values["error_rate"]
        assert error_rate is not None
        assert error_rate > 50  # the canary answered only 500s once routed to
    assert served[("canary", "500")] > 0

    # --- from outside: the cluster serves A, which is what the registry calls A ---
    fake = stack.fake
    assert _container_image(fake, "stable") == image_a
    assert _annotations(fake, "stable")[DIGEST] == digest_a
    # Stable never took B: its ReplicaSets are the initial ones and A's.
    stable_images = [
        rs.spec.template.spec.containers[0].image
        for rs in fake.replica_sets(NAMESPACE, f"{SERVICE}-stable")
        if rs.spec is not None and rs.spec.template is not None and rs.spec.template.spec
    ]
    assert stable_images == [f"{stack.endpoint.host}/{SERVICE}@sha256:{'0' * 64}", image_a]
    assert _canary_weight(fake) == 0
    assert _replicas(fake, "canary") == 0
    assert _replicas(fake, "stable") == 2
    assert _container_image(fake, "canary") == f"{stack.endpoint.host}/{SERVICE}@{digest_b}"
    for tag in (f"main-{first[:12]}", f"rel-{first[:12]}"):
        assert registry.manifest_digest(SERVICE, tag) == digest_a
        assert _ecr_digest(stack.ecr, tag) == digest_a
    for tag in (f"main-{second[:12]}", f"rel-{second[:12]}"):
        assert registry.manifest_digest(SERVICE, tag) == digest_b
        assert _ecr_digest(stack.ecr, tag) == digest_b
    assert stack.endpoint.refused == []
