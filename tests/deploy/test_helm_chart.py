"""The worker's Helm chart, the Dockerfile and the CI example.

Helm cannot be installed here, so the chart is rendered by tests/deploy/gotemplate.py, which
covers exactly the template subset the chart uses and fails on anything else. Rendered objects
are read back through the kubernetes client's own models; a field the model does not know
(a typo, a wrong level) is dropped by the model, so every object must survive the round trip
unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import (
    ApiClient,
    V1ConfigMap,
    V1Container,
    V1Deployment,
    V1PodDisruptionBudget,
    V1Role,
    V1RoleBinding,
    V1Service,
    V1ServiceAccount,
    V2HorizontalPodAutoscaler,
)
from temporalio.exceptions import ApplicationError

from activities.contracts import Artifact, DeployRequest, RollbackRequest, WeightRequest
from activities.platforms.kubernetes import KubernetesPlatform
from tests.deploy.gotemplate import TemplateError, render_chart, render_text
from tests.fakes.kube_api import (
    FakeKubeApi,
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
}

Json = dict[str, Any]


def documents(values: Json | None = None) -> list[Json]:
    rendered = render_chart(CHART, values, release="slipway-worker", namespace="slipway")
    docs: list[Json] = []
    for name, text in rendered.items():
        if name.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def one(docs: list[Json], kind: str) -> Json:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
    return found[0]


def model(doc: Json) -> Any:
    """The document as the client's model; it must round-trip without losing a field."""
    parsed = API.deserialize(json.dumps(doc), MODELS[doc["kind"]], "application/json")
    assert _serialize(parsed) == doc, f"{doc['kind']} has unknown fields"
    return parsed


def deployment(values: Json | None = None) -> V1Deployment:
    parsed: V1Deployment = model(one(documents(values), "Deployment"))
    return parsed


def worker_container(d: V1Deployment) -> V1Container:
    spec = d.spec.template.spec
    assert spec is not None
    (container,) = spec.containers
    return container


# --- the renderer itself ------------------------------------------------------------------


def test_renderer_trims_branches_and_ranges_like_go_templates() -> None:
    source = (
        "a:{{- if .x }} x{{- else if .y }} y{{- else }} z{{- end }}\n"
        "{{- range $k, $v := .m }}\n{{ $k }}={{ $v | quote }}{{- end }}\n"
        "{{- with .w }}\nw: {{ .n }}{{- end }}"
    )
    text = render_text(source, {"x": "", "y": 1, "m": {"b": 2, "a": "1"}, "w": {"n": 3}})
    assert text == 'a: y\na="1"\nb="2"\nw: 3'


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("{{ .a.b }}", "nil pointer"),
        ("{{ upper .a }}", "outside the supported subset"),
        ("{{ if .a }}", "missing"),
        ('{{ required "a is required" .a }}', "a is required"),
    ],
)
def test_renderer_fails_loudly(source: str, error: str) -> None:
    with pytest.raises(TemplateError, match=error):
        render_text(source, {"a": None})


# --- the chart ------------------------------------------------------------------------------


def test_every_rendered_object_is_a_valid_kubernetes_object() -> None:
    values = {
        "autoscaling": {"enabled": True},
        "temporal": {"tls": {"enabled": True, "existingSecret": "temporal-client"}},
        "rbac": {"namespaces": ["heal7-dev", "heal7-prod"]},
    }
    docs = documents(values)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
        ]
    )
    parsed = [model(d) for d in docs if d["kind"] != "ServiceMonitor"]
    expected_types = (
        V1ConfigMap,
        V1Deployment,
        V2HorizontalPodAutoscaler,
        V1PodDisruptionBudget,
        V1Role,
        V1RoleBinding,
        V1Service,
        V1ServiceAccount,
    )
    assert all(isinstance(p, expected_types) for p in parsed)


def test_the_worker_runs_as_non_root_on_a_read_only_root_filesystem() -> None:
    spec = deployment().spec.template.spec
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
    # The only writable mount is the /tmp emptyDir.
    writable = [m.mount_path for m in container.volume_mounts or [] if not m.read_only]
    assert writable == ["/tmp"]
    tmp = next(v for v in spec.volumes or [] if v.name == "tmp")
    assert tmp.empty_dir is not None


def test_probes_watch_the_metrics_port() -> None:
    container = worker_container(deployment())
    ports = {p.name: p.container_port for p in container.ports or []}
    assert ports == {"metrics": 9464}
    for probe in (container.liveness_probe, container.readiness_probe):
        assert probe is not None
        assert probe.http_get is not None
        assert probe.http_get.port == "metrics"
        assert probe.http_get.path == "/metrics"


def test_replicas_and_resources_come_from_values() -> None:
    d = deployment({"replicaCount": 3, "resources": {"limits": {"memory": "1Gi"}}})
    assert d.spec.replicas == 3
    container = worker_container(d)
    assert container.resources is not None
    assert container.resources.limits == {"memory": "1Gi", "cpu": "2"}
    assert container.image == "ghcr.io/example/slipway-worker:0.1.0"

    pinned = deployment({"image": {"digest": "sha256:" + "a" * 64}})
    container = worker_container(pinned)
    assert container.image == "ghcr.io/example/slipway-worker@sha256:" + "a" * 64


def test_with_autoscaling_the_hpa_owns_replicas() -> None:
    docs = documents({"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 7}})
    d: V1Deployment = model(one(docs, "Deployment"))
    assert d.spec.replicas is None
    hpa: V2HorizontalPodAutoscaler = model(one(docs, "HorizontalPodAutoscaler"))
    assert hpa.spec is not None
    assert hpa.spec.scale_target_ref.kind == "Deployment"
    assert d.metadata is not None
    assert hpa.spec.scale_target_ref.name == d.metadata.name
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (3, 7)


def test_secrets_come_from_existing_secrets_never_from_values() -> None:
    d = deployment(
        {
            "temporal": {
                "apiKey": {"existingSecret": "temporal-cloud"},
                "tls": {"enabled": True, "existingSecret": "temporal-client", "caKey": "ca.crt"},
            },
            "codec": {"existingSecret": "slipway-codec"},
        }
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

    with pytest.raises(TemplateError, match=r"temporal\.tls\.existingSecret is required"):
        documents({"temporal": {"tls": {"enabled": True}}})


def test_settings_reach_the_worker_through_the_config_map() -> None:
    docs = documents({"settings": {"SLIPWAY_PLATFORM": "kubernetes"}})
    config: V1ConfigMap = model(one(docs, "ConfigMap"))
    assert config.data is not None
    assert config.data["TEMPORAL_ADDRESS"] == "temporal-frontend.temporal.svc.cluster.local:7233"
    assert config.data["SLIPWAY_PLATFORM"] == "kubernetes"
    assert config.data["SLIPWAY_METRICS_PORT"] == "9464"
    d: V1Deployment = model(one(docs, "Deployment"))
    sources = worker_container(d).env_from or []
    assert [s.config_map_ref.name for s in sources if s.config_map_ref] == [
        config.metadata.name if config.metadata else None
    ]


def test_service_and_service_monitor_select_the_worker_pods() -> None:
    docs = documents()
    d: V1Deployment = model(one(docs, "Deployment"))
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

    assert all(d["kind"] != "ServiceMonitor" for d in documents(_no_monitor()))


def _no_monitor() -> Json:
    return {"metrics": {"serviceMonitor": {"enabled": False}}}


def test_the_service_account_is_bound_in_every_target_namespace() -> None:
    docs = documents({"rbac": {"namespaces": ["heal7-staging", "heal7-prod"]}})
    account: V1ServiceAccount = model(one(docs, "ServiceAccount"))
    d: V1Deployment = model(one(docs, "Deployment"))
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

    default_roles = [x for x in documents() if x["kind"] == "Role"]
    assert [r["metadata"]["namespace"] for r in default_roles] == ["slipway"]


# --- RBAC is exactly what the kubernetes platform calls -------------------------------------

_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/namespaces/[^/]+/(?P<resource>[^/]+)"
    r"(?:/(?P<name>[^/]+))?$"
)


def _permissions_used() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every request the platform makes in the journey's
    operations: canary deploy/weights/promote/rollback, a stuck rollout, blue/green."""
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
        assert fake.unserved == []
        requests = list(fake.requests)
    used: set[tuple[str, str, str]] = set()
    for method, path in requests:
        match = _PATH.match(path)
        assert match is not None, path
        verb = {"PATCH": "patch"}.get(method, "get" if match["name"] else "list")
        used.add((match["group"] or "", match["resource"], verb))
    return used


def test_the_role_grants_exactly_what_the_platform_uses() -> None:
    role: V1Role = model(one(documents(), "Role"))
    granted = {
        (group, resource, verb)
        for rule in role.rules or []
        for group in rule.api_groups or []
        for resource in rule.resources or []
        for verb in rule.verbs
    }
    assert _permissions_used() == granted


# --- NOTES, Dockerfile, CI ------------------------------------------------------------------


def test_notes_render_with_the_commands_to_check_the_install() -> None:
    notes = render_chart(
        CHART,
        {"temporal": {"apiKey": {"existingSecret": "temporal-cloud"}}},
        release="slipway-worker",
        namespace="slipway",
    )
    text = notes["NOTES.txt"]
    assert "kubectl -n slipway rollout status deployment/slipway-worker" in text
    assert "API key from Secret temporal-cloud" in text


def test_the_release_name_is_not_repeated_in_object_names() -> None:
    meta = deployment().metadata
    assert meta is not None
    assert meta.name == "slipway-worker"
    renamed = render_chart(CHART, release="ci")["deployment.yaml"]
    assert "name: ci-slipway-worker" in renamed


def test_the_dockerfile_builds_a_non_root_image_running_the_worker() -> None:
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
    spec = deployment().spec.template.spec
    assert spec is not None
    assert spec.security_context is not None
    assert spec.security_context.run_as_user == int(uid)


def test_the_ci_example_starts_a_pipeline_and_waits_for_it() -> None:
    workflow = yaml.safe_load((ROOT / "deploy" / "ci" / "github-actions.yml").read_text())
    steps = workflow["jobs"]["deliver"]["steps"]
    (command,) = [s["run"] for s in steps if "slipway start" in s.get("run", "")]
    for flag in ("--definition pipelines/heal7.yaml", "--service", "--repo", "--author"):
        assert flag in command
    assert '--commit "${{ github.sha }}"' in command
    assert "--branch" in command
    assert command.rstrip().endswith("--wait")
    assert (
        workflow["jobs"]["deliver"]["env"]["TEMPORAL_API_KEY"] == "${{ secrets.TEMPORAL_API_KEY }}"
    )


def test_the_charts_default_settings_are_a_valid_worker_configuration() -> None:
    """The worker refuses a bad configuration at start: the chart's defaults must pass."""
    import yaml

    from activities.settings import Settings

    values = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "deploy/helm/slipway-worker/values.yaml").read_text()
    )
    env = {k.removeprefix("SLIPWAY_").lower(): v for k, v in values["settings"].items()}
    settings = Settings.load(**{k: _decode(v) for k, v in env.items()})
    assert settings.platform == "kubernetes"
    assert settings.kube_namespaces["production"] == "prod"


def _decode(value: object) -> object:
    import json

    if isinstance(value, str) and value.startswith("{"):
        return json.loads(value)
    return value
