"""The worker's Helm chart, the Dockerfile and the CI example.

The chart is linted and rendered by the real `helm` (tests/deploy/helm.py takes it from a PyPI
package). Rendered objects are read back through the kubernetes client's own models; a field
the model does not know (a typo, a wrong level) is dropped by the model, so every object must
survive the round trip unchanged.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from kubernetes.client import (
    ApiClient,
    V1ConfigMap,
    V1Container,
    V1Deployment,
    V1NetworkPolicy,
    V1PodDisruptionBudget,
    V1PodSpec,
    V1Role,
    V1RoleBinding,
    V1Service,
    V1ServiceAccount,
    V2HorizontalPodAutoscaler,
)
from temporalio.exceptions import ApplicationError

from activities.platforms.kubernetes import KubernetesPlatform
from activities.platforms.kubernetes._objects import image_reference
from contracts.activity import (
    Artifact,
    DeployRequest,
    ReleaseConfig,
    RollbackRequest,
    SecretRef,
    WeightRequest,
)
from plumbing.settings import Settings
from tests.deploy.helm import HelmError, helm
from tests.fakes.kube_api import (
    FakeKubeApi,
    JobBehaviour,
    RolloutBehaviour,
    blue_green_environment,
    canary_environment,
)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "slipway-worker"
API = ApiClient()
# sanitize_for_serialization is unannotated; a typed name keeps strict mypy on.
_serialize: Callable[[object], object] = API.sanitize_for_serialization

MODELS: dict[str, str] = {
    "Deployment": "V1Deployment",
    "Service": "V1Service",
    "ServiceAccount": "V1ServiceAccount",
    "ConfigMap": "V1ConfigMap",
    "Role": "V1Role",
    "RoleBinding": "V1RoleBinding",
    "HorizontalPodAutoscaler": "V2HorizontalPodAutoscaler",
    "PodDisruptionBudget": "V1PodDisruptionBudget",
    "NetworkPolicy": "V1NetworkPolicy",
}

Json = dict[str, Any]

DOCKER_HOST = "tcp://docker-engine.build.svc.cluster.local:2375"
# The one value the defaults lack: the Docker Engine the default (docker) builder uses.
ENGINE: Json = {"docker": {"host": DOCKER_HOST}}


def _values_args(tmp: Path, *layers: Json) -> list[str]:
    args: list[str] = []
    for i, layer in enumerate(layers):
        path = tmp / f"values-{i}.json"
        path.write_text(json.dumps(layer))  # JSON is YAML
        args += ["--values", str(path)]
    return args


def render(
    values: Json | None = None,
    *,
    release: str = "slipway-worker",
    engine: bool = True,
    tmp: Path,
) -> str:
    """`helm template` of the chart (with the Docker Engine value unless `engine=False`)."""
    layers = ([ENGINE] if engine else []) + ([values] if values else [])
    return helm(
        "template", release, str(CHART), "--namespace", "slipway", *_values_args(tmp, *layers)
    )


@pytest.fixture
def chart(tmp_path: Path) -> Callable[..., list[Json]]:
    """documents(values, **render options): the rendered objects, parsed."""

    def documents(values: Json | None = None, **options: Any) -> list[Json]:
        text = render(values, tmp=tmp_path, **options)
        return [d for d in yaml.safe_load_all(text) if d]

    return documents


def one(docs: list[Json], kind: str) -> Json:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
    return found[0]


def model(doc: Json) -> Any:
    """The document as the client's model; it must round-trip without losing a field."""
    parsed = API.deserialize(json.dumps(doc), MODELS[doc["kind"]], "application/json")
    assert _serialize(parsed) == doc, f"{doc['kind']} has unknown fields"
    return parsed


def settings_map(docs: list[Json]) -> Json:
    """The ConfigMap of worker settings (the other one holds the policy file)."""
    found = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and not d["metadata"]["name"].endswith("-policy")
    ]
    assert len(found) == 1, f"expected one settings ConfigMap, rendered {len(found)}"
    return found[0]


def _deployments(docs: list[Json], runner: bool) -> list[Json]:
    return [
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-runner") == runner
    ]


def deployment(docs: list[Json]) -> V1Deployment:
    """The deployer's Deployment (or the one serving both, without a runner)."""
    (found,) = _deployments(docs, runner=False)
    parsed: V1Deployment = model(found)
    return parsed


def runner_deployment(docs: list[Json]) -> V1Deployment:
    (found,) = _deployments(docs, runner=True)
    parsed: V1Deployment = model(found)
    return parsed


def pod_spec(d: V1Deployment) -> V1PodSpec:
    spec = d.spec.template.spec
    assert spec is not None
    return spec


def worker_container(d: V1Deployment) -> V1Container:
    (container,) = pod_spec(d).containers
    return container


Documents = Callable[..., list[Json]]


# --- helm lint --------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", [True, False], ids=["docker builder", "wheel builder"])
def test_helm_lint_passes_strictly(tmp_path: Path, engine: bool) -> None:
    wheel = {
        "settings": {"SLIPWAY_BUILDER": "wheel", "SLIPWAY_REGISTRY": "local"},
        "state": {"existingClaim": "slipway-state"},  # the wheel store both workers read
    }
    out = helm("lint", "--strict", str(CHART), *_values_args(tmp_path, ENGINE if engine else wheel))
    assert "1 chart(s) linted, 0 chart(s) failed" in out


# --- the chart ------------------------------------------------------------------------------


def test_every_rendered_object_is_a_valid_kubernetes_object(chart: Documents) -> None:
    values = {
        "autoscaling": {"enabled": True},
        "temporal": {"tls": {"enabled": True, "existingSecret": "temporal-client"}},
        "rbac": {"namespaces": ["heal7-dev", "heal7-prod"]},
    }
    docs = chart(values)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "Deployment",
            "HorizontalPodAutoscaler",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ServiceAccount",
            "ServiceMonitor",
        ]
    )
    parsed = [model(d) for d in docs if d["kind"] != "ServiceMonitor"]
    expected_types = (
        V1ConfigMap,
        V1Deployment,
        V2HorizontalPodAutoscaler,
        V1NetworkPolicy,
        V1PodDisruptionBudget,
        V1Role,
        V1RoleBinding,
        V1Service,
        V1ServiceAccount,
    )
    assert all(isinstance(p, expected_types) for p in parsed)


def test_the_worker_runs_as_non_root_on_a_read_only_root_filesystem(chart: Documents) -> None:
    spec = deployment(chart()).spec.template.spec
    assert spec is not None
    assert spec.security_context is not None
    assert spec.security_context.run_as_non_root is True
    assert (spec.security_context.run_as_user or 0) > 0
    (container,) = spec.containers
    sc = container.security_context
    assert sc is not None
    assert sc.read_only_root_filesystem is True
    assert sc.allow_privilege_escalation is False
    assert sc.capabilities is not None
    assert sc.capabilities.drop == ["ALL"]
    # The only writable mounts: scratch space at /tmp and the worker's state, both emptyDirs.
    writable = [m.mount_path for m in container.volume_mounts or [] if not m.read_only]
    assert writable == ["/tmp", "/var/lib/slipway"]
    for name in ("tmp", "state"):
        volume = next(v for v in spec.volumes or [] if v.name == name)
        assert volume.empty_dir is not None


def test_probes_watch_the_metrics_port(chart: Documents) -> None:
    container = worker_container(deployment(chart()))
    ports = {p.name: p.container_port for p in container.ports or []}
    assert ports == {"metrics": 9464}
    for probe in (container.liveness_probe, container.readiness_probe):
        assert probe is not None
        assert probe.http_get is not None
        assert probe.http_get.port == "metrics"
        assert probe.http_get.path == "/metrics"


def test_replicas_and_resources_come_from_values(chart: Documents) -> None:
    d = deployment(chart({"replicaCount": 3, "resources": {"limits": {"memory": "1Gi"}}}))
    assert d.spec.replicas == 3
    container = worker_container(d)
    assert container.resources is not None
    assert container.resources.limits == {"memory": "1Gi", "cpu": "2"}
    assert container.image == "ghcr.io/example/slipway-worker:0.1.0"

    pinned = deployment(chart({"image": {"digest": "sha256:" + "a" * 64}}))
    container = worker_container(pinned)
    assert container.image == "ghcr.io/example/slipway-worker@sha256:" + "a" * 64


def test_with_autoscaling_the_hpa_owns_replicas(chart: Documents) -> None:
    docs = chart({"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 7}})
    d = deployment(docs)
    assert d.spec.replicas is None
    hpa: V2HorizontalPodAutoscaler = model(one(docs, "HorizontalPodAutoscaler"))
    assert hpa.spec is not None
    assert hpa.spec.scale_target_ref.kind == "Deployment"
    assert d.metadata is not None
    assert hpa.spec.scale_target_ref.name == d.metadata.name
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (3, 7)


def test_secrets_come_from_existing_secrets_never_from_values(chart: Documents) -> None:
    d = deployment(
        chart(
            {
                "temporal": {
                    "apiKey": {"existingSecret": "temporal-cloud"},
                    "tls": {
                        "enabled": True,
                        "existingSecret": "temporal-client",
                        "caKey": "ca.crt",
                    },
                },
                "codec": {"existingSecret": "slipway-codec"},
            }
        )
    )
    spec = d.spec.template.spec
    assert spec is not None
    env = {e.name: e for e in spec.containers[0].env or []}
    refs = {
        name: (e.value_from.secret_key_ref.name, e.value_from.secret_key_ref.key)
        for name, e in env.items()
        if e.value_from is not None and e.value_from.secret_key_ref is not None
    }
    assert refs == {
        "TEMPORAL_API_KEY": ("temporal-cloud", "api-key"),
        "SLIPWAY_CODEC_KEY": ("slipway-codec", "aes-key"),
    }
    assert env["TEMPORAL_TLS_CLIENT_CERT_PATH"].value == "/etc/temporal/tls/tls.crt"
    assert env["TEMPORAL_TLS_CLIENT_KEY_PATH"].value == "/etc/temporal/tls/tls.key"
    assert env["TEMPORAL_TLS_SERVER_CA_CERT_PATH"].value == "/etc/temporal/tls/ca.crt"
    tls = next(v for v in spec.volumes or [] if v.name == "temporal-tls")
    assert tls.secret is not None
    assert tls.secret.secret_name == "temporal-client"

    with pytest.raises(HelmError, match=r"temporal\.tls\.existingSecret is required"):
        chart({"temporal": {"tls": {"enabled": True}}})


def test_settings_reach_the_worker_through_the_config_map(chart: Documents) -> None:
    docs = chart({"settings": {"SLIPWAY_PLATFORM": "kubernetes"}})
    config: V1ConfigMap = model(settings_map(docs))
    assert config.data is not None
    assert config.data["TEMPORAL_ADDRESS"] == "temporal-frontend.temporal.svc.cluster.local:7233"
    assert config.data["SLIPWAY_PLATFORM"] == "kubernetes"
    assert config.data["SLIPWAY_METRICS_PORT"] == "9464"
    d = deployment(docs)
    sources = worker_container(d).env_from or []
    assert [s.config_map_ref.name for s in sources if s.config_map_ref] == [
        config.metadata.name if config.metadata else None
    ]


def test_service_and_service_monitor_select_the_worker_pods(chart: Documents) -> None:
    docs = chart()
    d = deployment(docs)
    service: V1Service = model(one(docs, "Service"))
    pod_labels = d.spec.template.metadata.labels if d.spec.template.metadata else None
    assert service.spec is not None
    assert service.spec.selector is not None
    assert pod_labels is not None
    assert service.spec.selector.items() <= pod_labels.items()
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert service.metadata is not None
    assert (
        monitor["spec"]["selector"]["matchLabels"].items()
        <= (service.metadata.labels or {}).items()
    )
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [
        p.name for p in service.spec.ports or []
    ]

    assert all(d["kind"] != "ServiceMonitor" for d in chart(_no_monitor()))


def _no_monitor() -> Json:
    return {"metrics": {"serviceMonitor": {"enabled": False}}}


def test_the_service_account_is_bound_in_every_target_namespace(chart: Documents) -> None:
    docs = chart({"rbac": {"namespaces": ["heal7-staging", "heal7-prod"]}})
    d = deployment(docs)
    (account,) = [
        model(x)
        for x in docs
        if x["kind"] == "ServiceAccount" and not x["metadata"]["name"].endswith("-runner")
    ]
    assert account.metadata is not None
    assert d.spec.template.spec is not None
    assert d.spec.template.spec.service_account_name == account.metadata.name
    bindings: list[V1RoleBinding] = [model(x) for x in docs if x["kind"] == "RoleBinding"]
    assert sorted(b.metadata.namespace or "" for b in bindings if b.metadata) == [
        "heal7-prod",
        "heal7-staging",
    ]
    for binding in bindings:
        (subject,) = binding.subjects or []
        assert (subject.name, subject.namespace) == (account.metadata.name, "slipway")

    default_roles = [x for x in chart() if x["kind"] == "Role"]
    assert [r["metadata"]["namespace"] for r in default_roles] == ["slipway"]


# --- RBAC is exactly what the kubernetes platform calls -------------------------------------

_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/namespaces/[^/]+/(?P<resource>[^/]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$"
)


def _permissions_used() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every request the platform makes in the journey's
    operations: canary deploy/weights/promote/rollback, a stuck rollout, blue/green, a
    release with a resource, a secret and a release phase that fails, and the start check."""
    digest = "sha256:" + "2" * 64
    artifact = Artifact(digest=digest, uri=f"registry.example/heal7@{digest}", kind="image")
    with FakeKubeApi() as fake:
        fake.add(*canary_environment("prod", "heal7", "registry.example/heal7@sha256:" + "1" * 64))
        fake.add(*blue_green_environment("staging", "heal7", "registry.example/heal7:old"))
        platform = KubernetesPlatform(
            fake.api_client(),
            {"production": "prod", "staging": "staging"},
            poll_interval_s=0.01,
            progress_deadline_s=2,
        )

        def note(_: str) -> None:
            pass

        canary = DeployRequest(
            service="heal7", environment="production", slot="canary", artifact=artifact
        )
        platform.deploy(canary, note)
        platform.set_weight(
            WeightRequest(service="heal7", environment="production", canary_weight=10)
        )
        platform.promote(canary, note)
        platform.rollback(RollbackRequest(service="heal7", environment="production"), note)
        green = canary.model_copy(update={"environment": "staging", "slot": "green"})
        platform.deploy(green, note)
        platform.promote(green, note)
        fake.set_rollout("prod", "heal7-stable", RolloutBehaviour(mode="stuck"))
        with pytest.raises(ApplicationError):
            platform.deploy(canary.model_copy(update={"slot": "stable"}), note)
        fake.add(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "heal7-postgres", "namespace": "prod"},
                "data": {"url": "cG9zdGdyZXNxbDovL2RiL2hlYWw3"},
            }
        )
        migrating = canary.model_copy(
            update={
                "artifact": artifact.model_copy(
                    update={
                        "digest": "sha256:" + "3" * 64,
                        "uri": "registry.example/heal7@sha256:" + "3" * 64,
                    }
                ),
                "env": {"DATABASE_URL": "{services.postgres.url}"},
                "resources": ["postgres:16"],
                "release": ["alembic", "upgrade", "head"],
                "config": ReleaseConfig(
                    secrets={
                        "KEY": SecretRef(source="kubernetes", name="heal7-postgres", key="url")
                    }
                ),
            }
        )
        fake.set_job(image_reference(migrating.artifact), JobBehaviour(outcome="fail", log="x"))
        platform.secrets().fetch(migrating.config.secrets["KEY"], "production")
        with pytest.raises(ApplicationError):
            platform.deploy(migrating, note)
        assert fake.unserved == []
        requests = list(fake.requests)
    used: set[tuple[str, str, str]] = set()
    for method, path in requests:
        match = _PATH.match(path)
        assert match is not None, path
        verb = {"PATCH": "patch", "POST": "create"}.get(method, "get" if match["name"] else "list")
        resource = f"{match['resource']}/{match['sub']}" if match["sub"] else match["resource"]
        used.add((match["group"] or "", resource, verb))
    return used


def test_the_role_grants_exactly_what_the_platform_uses(chart: Documents) -> None:
    role: V1Role = model(one(chart(), "Role"))
    granted = {
        (group, resource, verb)
        for rule in role.rules or []
        for group in rule.api_groups or []
        for resource in rule.resources or []
        for verb in rule.verbs
    }
    assert _permissions_used() == granted


# --- NOTES, Dockerfile, CI ------------------------------------------------------------------


def test_notes_render_with_the_commands_to_check_the_install(tmp_path: Path) -> None:
    # `helm template` leaves NOTES.txt out; a client-side dry-run install renders it.
    values = {"temporal": {"apiKey": {"existingSecret": "temporal-cloud"}}}
    out = helm(
        "install",
        "slipway-worker",
        str(CHART),
        "--namespace",
        "slipway",
        "--dry-run=client",
        *_values_args(tmp_path, ENGINE, values),
    )
    text = out[out.index("NOTES:") :]
    assert "kubectl -n slipway rollout status deployment/slipway-worker" in text
    assert "API key from Secret temporal-cloud" in text
    assert "State (SLIPWAY_STATE_DIR): /var/lib/slipway on an emptyDir" in text
    assert f"through the Docker Engine at {DOCKER_HOST}" in text


def test_the_release_name_is_not_repeated_in_object_names(chart: Documents) -> None:
    meta = deployment(chart()).metadata
    assert meta is not None
    assert meta.name == "slipway-worker"
    renamed = deployment(chart(release="ci")).metadata
    assert renamed is not None
    assert renamed.name == "ci-slipway-worker"


def test_the_dockerfile_builds_a_non_root_image_running_the_worker(chart: Documents) -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert [ln for ln in lines if ln.startswith("FROM")] == [
        "FROM python:3.11-slim AS build",
        "FROM python:3.11-slim",
    ]
    # Installs the versions the suite ran against, from files that exist in the repository.
    assert "RUN /opt/slipway/bin/pip install -c constraints.txt ." in lines
    for copy in (ln for ln in lines if ln.startswith("COPY") and "--from" not in ln):
        for source in copy.split()[1:-1]:
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    (user,) = [ln for ln in lines if ln.startswith("USER")]
    uid = user.split()[1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) > 0
    assert lines[-1] == 'CMD ["python", "worker.py"]'
    # The chart's pod securityContext runs as the image's user.
    spec = deployment(chart()).spec.template.spec
    assert spec is not None
    assert spec.security_context is not None
    assert spec.security_context.run_as_user == int(uid)


def test_the_ci_example_starts_a_pipeline_and_waits_for_it(chart: Documents) -> None:
    workflow = yaml.safe_load((ROOT / "deploy" / "ci" / "github-actions.yml").read_text())
    steps = workflow["jobs"]["deliver"]["steps"]
    (command,) = [s["run"] for s in steps if "slipway start" in s.get("run", "")]
    for flag in ("--definition pipelines/heal7.yaml", "--service", "--repo", "--author"):
        assert flag in command
    assert '--commit "${{ github.sha }}"' in command
    assert "--branch" in command
    # The job follows the pipeline; a run superseded by a newer commit (exit 3) is not red.
    assert command.rstrip().endswith("--wait || test $? -eq 3")
    assert (
        workflow["jobs"]["deliver"]["env"]["TEMPORAL_API_KEY"] == "${{ secrets.TEMPORAL_API_KEY }}"
    )
    # paths_ignore compares a push with its previous head, which the checkout must hold.
    assert '--base "${{ github.event.before }}"' in command
    assert steps[0]["with"]["fetch-depth"] == 0


def test_the_ci_example_checks_pull_requests() -> None:
    workflow = yaml.safe_load((ROOT / "deploy" / "ci" / "github-actions.yml").read_text())
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the bare `on` key as true
    assert workflow["jobs"]["deliver"]["if"] == "github.event_name != 'pull_request'"
    check = workflow["jobs"]["check"]
    assert check["if"] == "github.event_name == 'pull_request'"
    (command,) = [s["run"] for s in check["steps"] if "slipway start" in s.get("run", "")]
    for flag in (
        '--commit "${{ github.event.pull_request.head.sha }}"',
        '--base "${{ github.event.pull_request.base.sha }}"',
        '--pull-request "${{ github.event.pull_request.number }}"',
        '--branch "${{ github.head_ref }}"',
    ):
        assert flag in command
    # The job's exit code is the PR stages' verdict (a PR run is never superseded).
    assert command.rstrip().endswith("--wait")
    checkout = check["steps"][0]["with"]
    assert checkout == {"ref": "${{ github.event.pull_request.head.sha }}", "fetch-depth": 0}


# --- the worker starts with what the chart renders ------------------------------------------


def _workdir() -> PurePosixPath:
    """The image's working directory, against which relative paths resolve."""
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    return PurePosixPath(
        [ln.split()[1] for ln in text.splitlines() if ln.startswith("WORKDIR")][-1]
    )


def _pod_environment(docs: list[Json], *, runner: bool = False) -> dict[str, str]:
    """The worker container's environment (the deployer's, or the runner's) as the kubelet
    builds it: the ConfigMap (envFrom), then `env` on top; a secretKeyRef becomes a
    placeholder naming the Secret and key."""
    config: V1ConfigMap = model(settings_map(docs))
    container = worker_container(runner_deployment(docs) if runner else deployment(docs))
    assert config.metadata is not None
    assert [s.config_map_ref.name for s in container.env_from or [] if s.config_map_ref] == [
        config.metadata.name
    ]
    env: dict[str, str] = dict(config.data or {})
    for var in container.env or []:
        ref = var.value_from.secret_key_ref if var.value_from else None
        if ref is not None:
            env[var.name] = f"secret:{ref.name}/{ref.key}"
        else:
            assert var.value is not None, f"{var.name} has neither a value nor a Secret"
            env[var.name] = var.value
    return env


def _load_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.startswith("SLIPWAY_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.load()


def _written_paths(settings: Settings, env: dict[str, str]) -> dict[str, PurePosixPath]:
    """Every path the worker writes: each Path setting (state_dir: git, artifacts, the local
    platform) and the scratch directories it is pointed at."""
    paths = {
        name: PurePosixPath(str(getattr(settings, name)))
        for name, field in Settings.model_fields.items()
        if field.annotation is Path and name != "policy_file"  # read, never written
    }
    assert "state_dir" in paths
    paths |= {name: PurePosixPath(env[name]) for name in ("TMPDIR", "HOME")}
    return {name: _workdir() / path for name, path in paths.items()}  # absolute paths stay


VARIANTS: dict[str, Json] = {
    "defaults": {},
    "state on a claim": {"state": {"existingClaim": "slipway-state"}},
    "slack and sonarqube": {
        "settings": {
            "SLIPWAY_NOTIFIER": "slack",
            "SLIPWAY_SONARQUBE_URL": "https://sonar.example",
            "SLIPWAY_SONARQUBE_PROJECT": "heal7",
        },
        "slack": {"existingSecret": "slack"},
        "sonarqube": {"existingSecret": "sonarqube"},
    },
}


@pytest.mark.parametrize("values", VARIANTS.values(), ids=VARIANTS.keys())
def test_the_worker_accepts_the_rendered_settings_and_writes_only_to_mounted_volumes(
    chart: Documents, values: Json, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = chart(values)
    env = _pod_environment(docs)
    settings = _load_settings(env, monkeypatch)  # the worker's start-up check
    assert settings.platform == "kubernetes"
    assert settings.kube_namespaces["production"] == "prod"
    assert settings.docker_host == DOCKER_HOST

    spec = pod_spec(deployment(docs))
    (container,) = spec.containers
    assert container.security_context is not None
    assert container.security_context.read_only_root_filesystem is True
    volumes = {v.name: v for v in spec.volumes or []}
    writable = [
        PurePosixPath(m.mount_path)
        for m in container.volume_mounts or []
        if not m.read_only
        and (volumes[m.name].empty_dir is not None or volumes[m.name].persistent_volume_claim)
    ]
    for name, path in _written_paths(settings, env).items():
        assert any(path.is_relative_to(mount) for mount in writable), (
            f"{name}={path} is on the read-only root filesystem (writable: {writable})"
        )


def test_state_lives_on_an_existing_claim_when_one_is_given(chart: Documents) -> None:
    spec = pod_spec(deployment(chart({"state": {"existingClaim": "slipway-state"}})))
    state = next(v for v in spec.volumes or [] if v.name == "state")
    assert state.empty_dir is None
    assert state.persistent_volume_claim is not None
    assert state.persistent_volume_claim.claim_name == "slipway-state"


def test_building_images_needs_a_docker_engine_outside_the_pod(chart: Documents) -> None:
    with pytest.raises(HelmError, match=r"docker\.host is required with SLIPWAY_BUILDER=docker"):
        chart(engine=False)
    # The wheel builder needs no engine (it suits the local platform).
    wheel = {
        "settings": {
            "SLIPWAY_PLATFORM": "local",
            "SLIPWAY_METRICS": "traefik",
            "SLIPWAY_BUILDER": "wheel",
            "SLIPWAY_REGISTRY": "local",
        },
        "runner": {"enabled": False},
    }
    config: V1ConfigMap = model(settings_map(chart(wheel, engine=False)))
    assert config.data is not None
    assert config.data["SLIPWAY_BUILDER"] == "wheel"
    assert "SLIPWAY_DOCKER_HOST" not in config.data


def test_slack_and_sonarqube_secrets_come_from_existing_secrets(chart: Documents) -> None:
    docs = chart(VARIANTS["slack and sonarqube"])
    env = _pod_environment(docs)
    assert env["SLIPWAY_SLACK_WEBHOOK_URL"] == "secret:slack/webhook-url"
    # The scanner runs on the runner: the token goes there (to the one worker without it).
    runner_env = _pod_environment(docs, runner=True)
    assert runner_env["SLIPWAY_SONARQUBE_TOKEN"] == "secret:sonarqube/token"
    alone = _pod_environment(
        chart({**VARIANTS["slack and sonarqube"], "runner": {"enabled": False}})
    )
    assert alone["SLIPWAY_SONARQUBE_TOKEN"] == "secret:sonarqube/token"

    with pytest.raises(HelmError, match=r"slack\.existingSecret is required"):
        chart({"settings": {"SLIPWAY_NOTIFIER": "slack"}})
    with pytest.raises(HelmError, match=r"sonarqube\.existingSecret is required"):
        chart({"settings": {"SLIPWAY_SONARQUBE_URL": "https://sonar.example"}})
    for where in ("settings", "env"):
        for name in ("SLIPWAY_SLACK_WEBHOOK_URL", "SLIPWAY_SONARQUBE_TOKEN"):
            with pytest.raises(HelmError, match=f"{where}.{name} is a secret"):
                chart({where: {name: "https://hooks.example/T000/B000/webhook-secret"}})


def test_the_chart_owns_the_state_dir_and_the_docker_host(chart: Documents) -> None:
    for name, owner in (
        ("SLIPWAY_STATE_DIR", "state.mountPath"),
        ("SLIPWAY_DOCKER_HOST", "docker.host"),
    ):
        with pytest.raises(HelmError, match=f"settings.{name} is set by the chart: use {owner}"):
            chart({"settings": {name: "/somewhere"}})


def test_the_worker_reads_its_policy_from_a_config_map(
    chart: Documents, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from plumbing.worker_policy import load_policy

    docs = chart()
    policy_map: V1ConfigMap = model(
        next(
            d
            for d in docs
            if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-policy")
        )
    )
    assert policy_map.data is not None
    env = _pod_environment(docs)
    settings = _load_settings(env, monkeypatch)
    assert str(settings.policy_file) == "/etc/slipway/policy/policy.yaml"
    spec = pod_spec(deployment(docs))
    (container,) = spec.containers
    mount = next(m for m in container.volume_mounts or [] if m.name == "policy")
    assert (mount.mount_path, mount.read_only, mount.sub_path) == (
        "/etc/slipway/policy",
        True,
        None,
    )
    volume = next(v for v in spec.volumes or [] if v.name == "policy")
    assert volume.config_map is not None
    assert volume.config_map.name == (policy_map.metadata.name if policy_map.metadata else "")
    # The default policy is a valid one: production needs signed decisions.
    written = tmp_path / "policy.yaml"
    written.write_text(policy_map.data["policy.yaml"], encoding="utf-8")
    rule = load_policy(written).policy.gate_rule("production", "production")
    assert rule.signatures == "required"
    # A policy ConfigMap of one's own replaces the rendered one.
    own = chart({"policy": {"existingConfigMap": "heal7-policy"}})
    assert not [d for d in own if d["metadata"]["name"].endswith("-policy")]
    volume = next(v for v in pod_spec(deployment(own)).volumes or [] if v.name == "policy")
    assert volume.config_map is not None
    assert volume.config_map.name == "heal7-policy"
    with pytest.raises(HelmError, match=r"settings\.SLIPWAY_POLICY_FILE is set by the chart"):
        chart({"settings": {"SLIPWAY_POLICY_FILE": "/somewhere"}})


# --- two trust domains: the runner ------------------------------------------------------------

SECRETS: Json = {
    "temporal": {"apiKey": {"existingSecret": "temporal-cloud"}},
    "codec": {"existingSecret": "slipway-codec"},
    "settings": {
        "SLIPWAY_NOTIFIER": "slack",
        "SLIPWAY_SONARQUBE_URL": "https://sonar.example",
        "SLIPWAY_SONARQUBE_PROJECT": "heal7",
    },
    "slack": {"existingSecret": "slack"},
    "sonarqube": {"existingSecret": "sonarqube"},
    "rbac": {"namespaces": ["heal7-staging", "heal7-prod"]},
}


def _pod_labels(d: V1Deployment) -> dict[str, str]:
    meta = d.spec.template.metadata
    assert meta is not None
    return dict(meta.labels or {})


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_the_runner_has_no_token_no_role_and_none_of_the_deployers_secrets(
    chart: Documents,
) -> None:
    docs = chart(SECRETS)
    deployer, runner = deployment(docs), runner_deployment(docs)
    runner_spec, deployer_spec = pod_spec(runner), pod_spec(deployer)
    # Its own service account, no token mounted, and no Role bound to it.
    accounts = {x["metadata"]["name"]: model(x) for x in docs if x["kind"] == "ServiceAccount"}
    assert runner_spec.service_account_name != deployer_spec.service_account_name
    assert runner_spec.automount_service_account_token is False
    assert accounts[runner_spec.service_account_name].automount_service_account_token is False
    subjects = {s.name for x in docs if x["kind"] == "RoleBinding" for s in model(x).subjects or []}
    assert subjects == {deployer_spec.service_account_name}
    # Secrets: the Temporal connection, the codec key (payloads), SonarQube (its scanner).
    runner_env = _pod_environment(docs, runner=True)
    deployer_env = _pod_environment(docs)
    secrets = {k: v for k, v in runner_env.items() if v.startswith("secret:")}
    assert secrets == {
        "TEMPORAL_API_KEY": "secret:temporal-cloud/api-key",
        "SLIPWAY_CODEC_KEY": "secret:slipway-codec/aes-key",
        "SLIPWAY_SONARQUBE_TOKEN": "secret:sonarqube/token",
    }
    assert deployer_env["SLIPWAY_SLACK_WEBHOOK_URL"] == "secret:slack/webhook-url"
    assert "SLIPWAY_SONARQUBE_TOKEN" not in deployer_env
    # No policy: nothing of the deployer's is mounted.
    mounts = {m.name for m in worker_container(runner).volume_mounts or []}
    assert mounts == {"tmp", "state"}
    assert "policy" in {v.name for v in deployer_spec.volumes or []}
    # The deployer key, from its Secret, is the deployer's alone.
    key_volume = next(v for v in deployer_spec.volumes or [] if v.name == "deployer-key")
    assert key_volume.secret is not None
    assert key_volume.secret.secret_name == "slipway-deployer-key"
    assert deployer_env["SLIPWAY_DEPLOYER_KEY_FILE"] == "/etc/slipway/deployer-key/key"
    assert "SLIPWAY_DEPLOYER_KEY_FILE" not in runner_env
    assert "deployer-key" not in {v.name for v in runner_spec.volumes or []}
    # Roles and queues.
    assert (runner_env["SLIPWAY_ROLE"], deployer_env["SLIPWAY_ROLE"]) == ("runner", "deployer")
    assert runner_env["SLIPWAY_RUNNER_TASK_QUEUE"] == "slipway-runner"
    # The deployer's selector (and its Service's) never picks the runner's pods, nor the reverse.
    assert deployer.spec.selector.match_labels is not None
    assert runner.spec.selector.match_labels is not None
    assert not _matches(deployer.spec.selector.match_labels, _pod_labels(runner))
    assert not _matches(runner.spec.selector.match_labels, _pod_labels(deployer))


@pytest.mark.parametrize("values", VARIANTS.values(), ids=VARIANTS.keys())
def test_the_runner_accepts_the_rendered_settings_and_writes_only_to_mounted_volumes(
    chart: Documents, values: Json, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = chart(values)
    env = _pod_environment(docs, runner=True)
    settings = _load_settings(env, monkeypatch)
    assert settings.role == "runner"
    spec = pod_spec(runner_deployment(docs))
    (container,) = spec.containers
    assert container.security_context is not None
    assert container.security_context.read_only_root_filesystem is True
    writable = [
        PurePosixPath(m.mount_path) for m in container.volume_mounts or [] if not m.read_only
    ]
    for name, path in _written_paths(settings, env).items():
        assert any(path.is_relative_to(mount) for mount in writable), (name, path)


def test_the_runner_reaches_only_temporal_dns_and_the_entry_points(chart: Documents) -> None:
    docs = chart()
    policy: V1NetworkPolicy = model(one(docs, "NetworkPolicy"))
    assert policy.spec is not None
    assert policy.spec.pod_selector is not None
    selector = policy.spec.pod_selector.match_labels or {}
    assert _matches(selector, _pod_labels(runner_deployment(docs)))
    assert not _matches(selector, _pod_labels(deployment(docs)))
    assert sorted(policy.spec.policy_types or []) == ["Egress", "Ingress"]
    (ingress,) = policy.spec.ingress or []
    assert [(p.port, p.protocol) for p in ingress.ports or []] == [("metrics", "TCP")]
    temporal, dns, entrypoints = policy.spec.egress or []
    assert [(p.port, p.protocol) for p in temporal.ports or []] == [(7233, "TCP")]
    # Live tests reach environments through the ingress controller, as users do.
    (controller,) = entrypoints.to or []
    assert controller.namespace_selector is not None
    assert controller.namespace_selector.match_labels == {
        "kubernetes.io/metadata.name": "ingress-nginx"
    }
    assert [(p.port, p.protocol) for p in entrypoints.ports or []] == [(80, "TCP"), (443, "TCP")]
    (peer,) = temporal.to or []
    assert peer.namespace_selector is not None
    assert peer.namespace_selector.match_labels == {"kubernetes.io/metadata.name": "temporal"}
    assert sorted((p.port, p.protocol) for p in dns.ports or []) == [(53, "TCP"), (53, "UDP")]

    # What else it must reach is listed, rule by rule; pods of backing services add theirs.
    engine = {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "build"}}}],
        "ports": [{"port": 2375, "protocol": "TCP"}],
    }
    values = {
        "runner": {"networkPolicy": {"egress": [engine]}},
        "settings": {
            "SLIPWAY_BACKING_SERVICES": "kubernetes",
            "SLIPWAY_BACKING_SERVICES_NAMESPACE": "heal7-ci",
        },
    }
    rules = one(chart(values), "NetworkPolicy")["spec"]["egress"]
    assert len(rules) == 5
    assert rules[3] == {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "heal7-ci"}}}]
    }
    assert rules[4] == engine
    # Without entry points (live tests not run on this cluster), no such rule.
    values["runner"]["networkPolicy"]["entrypoints"] = {"to": []}  # type: ignore[index]
    assert len(one(chart(values), "NetworkPolicy")["spec"]["egress"]) == 4


def test_pods_of_backing_services_give_the_runner_their_role_alone(chart: Documents) -> None:
    docs = chart(
        {
            "settings": {
                "SLIPWAY_BACKING_SERVICES": "kubernetes",
                "SLIPWAY_BACKING_SERVICES_NAMESPACE": "heal7-ci",
            }
        }
    )
    runner_spec, deployer_spec = pod_spec(runner_deployment(docs)), pod_spec(deployment(docs))
    assert runner_spec.automount_service_account_token is True
    bound = {
        x["metadata"]["namespace"]: {s["name"] for s in x["subjects"]}
        for x in docs
        if x["kind"] == "RoleBinding"
    }
    assert bound == {
        "heal7-ci": {runner_spec.service_account_name},
        "slipway": {deployer_spec.service_account_name},
    }


def test_without_the_runner_one_deployment_serves_both(chart: Documents) -> None:
    docs = chart({"runner": {"enabled": False}})
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"] == ["slipway-worker"]
    assert not [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert _pod_environment(docs)["SLIPWAY_ROLE"] == "all"


def test_wheels_reach_the_deployer_only_through_a_shared_claim(chart: Documents) -> None:
    wheel = {
        "settings": {
            "SLIPWAY_PLATFORM": "local",
            "SLIPWAY_METRICS": "traefik",
            "SLIPWAY_BUILDER": "wheel",
            "SLIPWAY_REGISTRY": "local",
        }
    }
    with pytest.raises(HelmError, match=r"set state\.existingClaim to a ReadWriteMany claim"):
        chart(wheel, engine=False)
    docs = chart({**wheel, "state": {"existingClaim": "slipway-state"}}, engine=False)
    for d in (deployment(docs), runner_deployment(docs)):
        state = next(v for v in pod_spec(d).volumes or [] if v.name == "state")
        assert state.persistent_volume_claim is not None
        assert state.persistent_volume_claim.claim_name == "slipway-state"
