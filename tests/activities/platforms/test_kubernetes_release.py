"""The release phase (a Job) and resources (references to existing Secrets) on Kubernetes.

Against the in-process fake API server (tests/fakes/kube_api.py): no Kubernetes API server can
be installed here, so the fake's job controller stands in for the real one. Every test asserts
the platform called nothing the fake does not serve.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import V1Container, V1EnvVar
from temporalio.exceptions import ApplicationError

from activities.platforms.kubernetes import KubernetesPlatform
from activities.platforms.kubernetes._objects import ENV
from activities.wiring.factory import deployer_backends_from_settings
from contracts.activity import (
    Artifact,
    DeployRequest,
    FenceRequest,
    ReleaseConfig,
    RestoreRequest,
    SecretRef,
    Slot,
)
from contracts.errors import ErrorType
from plumbing.settings import Settings
from tests.fakes.kube_api import (
    FakeKubeApi,
    JobBehaviour,
    canary_environment,
    make_deployment,
    make_service,
)

SERVICE = "heal7"
PROD, DEV = "production", "development"
PROD_NS, DEV_NS = "heal7-prod", "heal7-dev"
MIGRATE = ["alembic", "upgrade", "head"]


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def artifact(n: int) -> Artifact:
    return Artifact(
        digest=digest(n), uri=f"registry.example/heal7@{digest(n)}", kind="image", version=f"v{n}"
    )


CONFIG = ReleaseConfig(
    settings={"PROJECT_NAME": "heal7"},
    secrets={"SECRET_KEY": SecretRef(source="kubernetes", name="heal7-app", key="secret-key")},
)


def request(
    n: int,
    slot: Slot = "canary",
    *,
    environment: str = PROD,
    env: dict[str, str] | None = None,
    resources: list[str] | None = None,
    release: list[str] | None = None,
) -> DeployRequest:
    return DeployRequest(
        service=SERVICE,
        environment=environment,
        slot=slot,
        artifact=artifact(n),
        strategy="canary" if slot == "canary" else "rolling",
        config=CONFIG,
        env={"DATABASE_URL": "{services.postgres.url}"} if env is None else env,
        resources=["postgres:16"] if resources is None else resources,
        release=MIGRATE if release is None else release,
    )


def secret(namespace: str, name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {
            k.replace("_", "-"): base64.b64encode(v.encode()).decode() for k, v in data.items()
        },
    }


class Notes(list[str]):
    def __call__(self, note: str) -> None:
        self.append(note)


class WorkerDiedError(Exception):
    """The process dies on this line: raised from the heartbeat while the Job runs."""


@pytest.fixture
def fake() -> Iterator[FakeKubeApi]:
    with FakeKubeApi() as api:
        api.add(*canary_environment(PROD_NS, SERVICE, artifact(1).uri, replicas=3))
        api.add(make_deployment(DEV_NS, SERVICE, "stable", artifact(1).uri, replicas=1))
        api.add(make_service(DEV_NS, SERVICE))
        for namespace in (PROD_NS, DEV_NS):
            api.add(
                secret(namespace, "heal7-app", secret_key="s3cr3t-value"),
                secret(
                    namespace,
                    "heal7-postgres",
                    url="postgresql://heal7:pw@db.internal:5432/heal7",
                    host="db.internal",
                    password="pw",
                ),
            )
        yield api
        assert api.unserved == [], "the platform called endpoints the fake does not serve"


@pytest.fixture
def platform(fake: FakeKubeApi) -> KubernetesPlatform:
    return KubernetesPlatform(
        fake.api_client(),
        {PROD: PROD_NS, DEV: DEV_NS},
        progress_deadline_s=2.0,
        release_deadline_s=1.0,
        poll_interval_s=0.01,
    )


def job_posts(fake: FakeKubeApi) -> list[int]:
    return [
        i for i, (method, path) in enumerate(fake.requests) if method == "POST" and "/jobs" in path
    ]


def writes(fake: FakeKubeApi) -> list[tuple[int, str, str]]:
    """Every PATCH (what moves a Deployment, a Service or the traffic), with its index."""
    return [(i, m, p) for i, (m, p) in enumerate(fake.requests) if m == "PATCH"]


def main(fake: FakeKubeApi, namespace: str, name: str) -> V1Container:
    spec = fake.deployment(namespace, name).spec.template.spec
    assert spec is not None
    return spec.containers[0]


def secret_ref(var: V1EnvVar) -> tuple[str, str]:
    assert var.value_from is not None
    ref = var.value_from.secret_key_ref
    assert ref is not None
    return str(ref.name), ref.key


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}


def test_the_release_phase_runs_as_a_job_before_traffic_moves(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    result = platform.deploy(request(2), Notes())

    (job,) = fake.jobs(PROD_NS)
    assert result.release_phase == f"ran `alembic upgrade head` (Job {job['metadata']['name']})"
    # One Job, created before anything moved: the first write comes after it.
    (posted,) = job_posts(fake)
    assert writes(fake)
    assert posted < writes(fake)[0][0]
    spec = job["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (0, 1)
    (container,) = spec["template"]["spec"]["containers"]
    # The release's image by digest, the same reference the Deployment now runs.
    assert container["image"] == artifact(2).uri
    stable_canary = fake.deployment(PROD_NS, "heal7-canary").spec.template.spec
    assert stable_canary is not None
    assert stable_canary.containers[0].image == container["image"]
    assert container["command"] == MIGRATE
    env = env_of(container)
    assert env["PROJECT_NAME"] == "heal7"
    assert env["SECRET_KEY"] == {"secretKeyRef": {"name": "heal7-app", "key": "secret-key"}}
    assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "heal7-postgres", "key": "url"}}
    assert env["SLIPWAY_DIGEST"] == digest(2)
    # No value read from a Secret is in the Job.
    assert "s3cr3t-value" not in str(job)
    assert "db.internal" not in str(job)
    # No Service selects the migration's pod for traffic.
    assert "app" not in (spec["template"]["metadata"].get("labels") or {})


def test_the_deployment_takes_resources_as_secret_key_refs(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    platform.deploy(request(2, "stable"), Notes())

    deployment = fake.deployment(PROD_NS, "heal7-stable")
    template = deployment.spec.template
    assert template.spec is not None
    env = {e.name: e for e in template.spec.containers[0].env or []}
    assert secret_ref(env["DATABASE_URL"]) == ("heal7-postgres", "url")
    assert env["DATABASE_URL"].value is None
    assert deployment.metadata is not None
    assert deployment.metadata.annotations is not None
    assert deployment.metadata.annotations[ENV] == '{"DATABASE_URL": "{services.postgres.url}"}'
    # What a rollback puts back carries the env: too.
    spec = platform.fence(FenceRequest(service=SERVICE, environment=PROD, token=1))
    assert spec is not None
    assert spec.env == {"DATABASE_URL": "{services.postgres.url}"}


def test_a_failed_release_phase_leaves_the_old_release_serving(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    fake.set_job(
        artifact(2).uri,
        JobBehaviour(
            outcome="fail",
            log="INFO  [alembic] Running upgrade\n"
            'sqlalchemy.exc.ProgrammingError: relation "users" already exists',
        ),
    )
    before = fake.virtual_service(PROD_NS, SERVICE)

    with pytest.raises(ApplicationError) as raised:
        platform.deploy(request(2), Notes())

    error = raised.value
    assert error.type == ErrorType.DEPLOY_FAILED
    assert error.non_retryable
    message = error.message
    assert "\n" not in message
    assert message.startswith("The release phase `alembic upgrade head` of heal7 v2 in production")
    assert "BackoffLimitExceeded" in message
    assert "nothing was deployed" in message
    assert message.endswith('relation "users" already exists')
    # Nothing else changed: no Deployment, Service or route was written.
    assert writes(fake) == []
    assert main(fake, PROD_NS, "heal7-stable").image == artifact(1).uri
    assert fake.deployment(PROD_NS, "heal7-canary").spec.replicas == 0
    assert fake.virtual_service(PROD_NS, SERVICE) == before

    # Deploying the same release again is the same failure, never a second run.
    with pytest.raises(ApplicationError):
        platform.deploy(request(2), Notes())
    assert len(job_posts(fake)) == 1


def test_a_job_that_does_not_finish_fails_the_deploy_within_its_deadline(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    fake.set_job(artifact(2).uri, JobBehaviour(outcome="hang"))

    with pytest.raises(ApplicationError) as raised:
        platform.deploy(request(2, "stable", environment=DEV), Notes())

    assert "not finished within 2s" in raised.value.message
    assert writes(fake) == []


def test_a_retried_deploy_waits_on_the_same_job(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    fake.set_job(artifact(2).uri, JobBehaviour(polls=3))

    def dies_while_the_job_runs(note: str) -> None:
        if note.startswith("release phase running"):
            raise WorkerDiedError(note)

    with pytest.raises(WorkerDiedError):
        platform.deploy(request(2), dies_while_the_job_runs)
    assert writes(fake) == []

    notes = Notes()
    result = platform.deploy(request(2), notes)

    assert len(job_posts(fake)) == 1
    assert len(fake.jobs(PROD_NS)) == 1
    assert result.release_phase.startswith("ran `alembic upgrade head`")
    assert any(n.startswith("release phase done") for n in notes)
    # Once it succeeded, a deploy of the same release does not run it again.
    again = platform.deploy(request(2), Notes())
    assert again.release_phase.startswith("`alembic upgrade head` ran already for this release")
    assert len(job_posts(fake)) == 1


def test_another_release_runs_its_own_job(fake: FakeKubeApi, platform: KubernetesPlatform) -> None:
    platform.deploy(request(2, "stable"), Notes())
    settings_change = request(2, "stable").model_copy(
        update={"config": CONFIG.model_copy(update={"settings": {"PROJECT_NAME": "heal7-kr"}})}
    )
    platform.deploy(settings_change, Notes())
    platform.deploy(request(3, "stable"), Notes())

    assert len(job_posts(fake)) == 3
    names = {j["metadata"]["name"] for j in fake.jobs(PROD_NS)}
    assert len(names) == 3
    assert all(n.startswith("heal7-release-") for n in names)


def test_a_missing_resource_secret_is_refused_in_one_sentence(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    with pytest.raises(ApplicationError) as raised:
        platform.deploy(
            request(2, env={"REDIS_URL": "{services.redis.url}"}, resources=["redis:7"]),
            Notes(),
        )

    error = raised.value
    assert error.type == ErrorType.CONFIGURATION
    assert error.non_retryable
    assert error.message.startswith(
        "environment 'production', field 'env.REDIS_URL': Secret heal7-redis does not exist "
        "in namespace heal7-prod"
    )
    assert "\n" not in error.message
    assert job_posts(fake) == []
    assert writes(fake) == []


def test_a_missing_key_and_a_composed_value_are_refused(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    with pytest.raises(ApplicationError) as raised:
        platform.deploy(request(2, env={"DB_USER": "{services.postgres.user}"}), Notes())
    assert raised.value.message == (
        "environment 'production', field 'env.DB_USER': Secret heal7-postgres has no key "
        "'user' in namespace heal7-prod"
    )

    composed = "postgresql://{services.postgres.host}/heal7"
    with pytest.raises(ApplicationError) as raised:
        platform.deploy(request(2, env={"DATABASE_URL": composed}), Notes())
    assert raised.value.message.startswith(
        "environment 'production', field 'env.DATABASE_URL': postgresql://"
    )
    assert "whole value" in raised.value.message
    assert job_posts(fake) == []
    assert writes(fake) == []


def test_a_restore_puts_back_the_env_of_the_release_that_served(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    platform.deploy(request(2, "stable"), Notes())
    served = platform.fence(FenceRequest(service=SERVICE, environment=PROD, token=1))
    assert served is not None
    changed = request(3, "stable", env={"DATABASE_URL": "{services.postgres.host}"})
    platform.deploy(changed.model_copy(update={"fence": 1}), Notes())
    posts = len(job_posts(fake))

    platform.restore(
        RestoreRequest(service=SERVICE, environment=PROD, target=served, fence=2), Notes()
    )

    container = main(fake, PROD_NS, "heal7-stable")
    env = {e.name: e for e in container.env or []}
    assert secret_ref(env["DATABASE_URL"]) == ("heal7-postgres", "url")
    assert container.image == artifact(2).uri
    # A rollback never runs a release command (migrations are not run backwards).
    assert len(job_posts(fake)) == posts


def test_the_workers_setting_bounds_the_release_job(fake: FakeKubeApi, tmp_path: Path) -> None:
    """SLIPWAY_KUBE_RELEASE_DEADLINE_S, through the worker's own wiring, is the Job's
    activeDeadlineSeconds (600 by default)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: fake\n  cluster: {{server: '{fake.url}'}}\n"
        "users:\n- name: worker\n  user: {}\n"
        "contexts:\n- name: fake\n  context: {cluster: fake, user: worker}\n"
        "current-context: fake\n",
        encoding="utf-8",
    )
    settings = Settings(
        platform="kubernetes",
        metrics="prometheus",
        prometheus_url="http://127.0.0.1:9",
        environments=[PROD],
        state_dir=tmp_path / "state",
        kubeconfig=str(kubeconfig),
        kube_namespaces={PROD: PROD_NS},
        kube_release_deadline_s=45,
    )
    assert Settings.model_fields["kube_release_deadline_s"].default == 600
    deployer_backends_from_settings(settings).target.deploy(request(2), Notes())
    (job,) = fake.jobs(PROD_NS)
    assert job["spec"]["activeDeadlineSeconds"] == 45
