"""Pure readings of Kubernetes objects: names, digests, rollout state, pod problems.

Nothing here talks to the API server, so each rule is testable on models built in memory.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import (
    ApiClient,
    V1Container,
    V1Deployment,
    V1EnvVar,
    V1EnvVarSource,
    V1Job,
    V1JobSpec,
    V1LabelSelector,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
    V1PodTemplateSpec,
    V1ReplicaSet,
    V1SecretKeySelector,
)

from contracts.activity import Artifact, DeployRequest, ReleaseConfig, Slot
from contracts.definition.service_templates import render, template_references

__all__ = [
    "CANARY_PENDING",
    "CANARY_ROLLED_BACK",
    "CONFIG",
    "DIGEST",
    "ENV",
    "FENCE_TOKEN",
    "PREVIOUS_SLOT",
    "RELEASE_COMMAND",
    "RELEASE_DIGEST",
    "RELEASE_OF",
    "REVISION",
    "ROLLBACK_REQUEST",
    "ROLLED_BACK_FROM",
    "ROLLED_BACK_TO",
    "TEMPLATE_HASH_LABEL",
    "VERSION",
    "JobState",
    "ResourceEnv",
    "RolloutState",
    "annotations_of",
    "config_annotations",
    "config_of",
    "container_env",
    "deployment_name",
    "digest_of_deployment",
    "digest_of_template",
    "env_annotations",
    "env_of",
    "image_reference",
    "job_state",
    "label_selector",
    "main_container",
    "owned_by",
    "pod_problems",
    "release_job",
    "release_job_name",
    "replicas_of",
    "resource_env",
    "resource_secret_name",
    "revision",
    "rollout_state",
    "same_template",
    "template_json",
]

# Annotations this platform writes. A prefix of our own keeps them apart from the controller's.
DIGEST = "slipway.dev/digest"
"""On a Deployment and its pod template: the artifact digest it runs (so ReplicaSets carry it)."""
VERSION = "slipway.dev/version"
CONFIG = "slipway.dev/config"
"""On a Deployment and its pod template: the release's settings and secret references (with
versions; never a value) as JSON, absent when it has none."""
ENV = "slipway.dev/env"
"""On a Deployment and its pod template: the release's `env:` as declared (literal values and
resource placeholders, never a value read from a Secret) as JSON, absent when it has none."""
RELEASE_DIGEST = "slipway.dev/release-digest"
"""On a release-phase Job: the release (artifact and configuration) it runs the command of."""
RELEASE_COMMAND = "slipway.dev/release-command"
"""On a release-phase Job: the command, as JSON."""
CANARY_PENDING = "slipway.dev/canary-pending"
"""On the stable Deployment: a canary with this digest is deployed and not promoted yet, so
a rollback must leave the stable Deployment alone. That rollback removes it."""
CANARY_ROLLED_BACK = "slipway.dev/canary-rolled-back"
"""On the stable Deployment: the digest of the last unpromoted canary a rollback retired (what
`CANARY_PENDING` said before that rollback removed it)."""
ROLLBACK_REQUEST = "slipway.dev/rollback-request"
"""On the stable Deployment: the rollback request that last changed it, until a new version
replaces stable's pod template. Another attempt of that request finds its work done; any other
request rolls back on its own."""
ROLLED_BACK_FROM = "slipway.dev/rolled-back-from"
"""The revision (Deployment) or slot (Service) a rollback moved away from."""
ROLLED_BACK_TO = "slipway.dev/rolled-back-to"
"""The pod-template-hash a rollback restored: while it is still current, rolling back again
is a no-op (otherwise a second undo would swap back to the bad revision, as kubectl does)."""
PREVIOUS_SLOT = "slipway.dev/previous-slot"
"""On a blue/green Service: the slot it pointed at before the last promote."""
FENCE_TOKEN = "slipway.dev/fence-token"
"""On the Service `{service}`: the highest lease fencing token seen for the environment. Written
by compare-and-swap (resourceVersion), checked before every write: a lower token is refused."""

REVISION = "deployment.kubernetes.io/revision"
TEMPLATE_HASH_LABEL = "pod-template-hash"

_DIGEST_IN_IMAGE = re.compile(r"@(sha256:[0-9a-f]{64})$")


def deployment_name(service: str, slot: Slot) -> str:
    """Every slot is its own Deployment: `{service}-stable`, `-canary`, `-blue`, `-green`."""
    return f"{service}-{slot}"


def image_reference(artifact: Artifact) -> str:
    """The image reference pinned by digest, so every node pulls exactly the tested bytes.

    `Artifact.uri` is normally already `registry/repo@sha256:...`; a tag is replaced by the
    digest (a tag can move between build and deploy, a digest cannot).
    """
    uri = artifact.uri
    if "@" in uri:
        return uri
    name_start = uri.rfind("/") + 1
    tag = uri.find(":", name_start)
    repository = uri if tag == -1 else uri[:tag]
    return f"{repository}@{artifact.digest}"


def config_of(meta: V1ObjectMeta | None) -> ReleaseConfig:
    """The configuration a Deployment (or pod template) was given; empty when none."""
    text = annotations_of(meta).get(CONFIG)
    return ReleaseConfig.model_validate_json(text) if text else ReleaseConfig()


def config_annotations(old: ReleaseConfig, new: ReleaseConfig) -> dict[str, str | None]:
    """The CONFIG annotation's patch: set, removed, or untouched (no config before or after)."""
    if old.is_empty and new.is_empty:
        return {}
    return {CONFIG: None if new.is_empty else new.model_dump_json(exclude_defaults=True)}


def container_env(
    old: ReleaseConfig,
    new: ReleaseConfig,
    old_env: Mapping[str, str] | None = None,
    new_env: Mapping[str, str] | None = None,
    service: str = "",
) -> dict[str, Any]:
    """The main container's `env` in a strategic-merge patch: settings as values, secrets as
    `valueFrom.secretKeyRef` (the kubelet reads the Secret; no value passes through
    Slipway), the release's `env:` with each resource placeholder a `secretKeyRef` into the
    resource's Secret (`resource_env`), names the old release had and the new one lacks
    deleted. The definition's settings and secrets win over `env:`, as on the local platform."""
    old_env, new_env = dict(old_env or {}), dict(new_env or {})
    if old.is_empty and new.is_empty and not old_env and not new_env:
        return {}
    env: list[dict[str, Any]] = [
        {"name": name, "value": value, "valueFrom": None}
        for name, value in sorted(new.settings.items())
    ]
    env += [
        {
            "name": name,
            "value": None,
            "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
        }
        for name, ref in sorted(new.secrets.items())
    ]
    configured = {*new.settings, *new.secrets}
    env += [
        entry
        for entry in resource_env(service, new_env).entries()
        if entry["name"] not in configured
    ]
    gone = sorted({*old.settings, *old.secrets, *old_env} - {*new.settings, *new.secrets, *new_env})
    env += [{"name": name, "$patch": "delete"} for name in gone]
    return {"env": env}


def env_of(meta: V1ObjectMeta | None) -> dict[str, str]:
    """The `env:` a Deployment (or pod template) was given; empty when none."""
    text = annotations_of(meta).get(ENV)
    if not text:
        return {}
    data = json.loads(text)
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def env_annotations(old: Mapping[str, str], new: Mapping[str, str]) -> dict[str, str | None]:
    """The ENV annotation's patch: set, removed, or untouched (no `env:` before or after)."""
    if not old and not new:
        return {}
    return {ENV: json.dumps(dict(sorted(new.items()))) if new else None}


# --- resources: references to Secrets that exist --------------------------------------------


def resource_secret_name(service: str, kind: str) -> str:
    """The Secret holding the connection details of `service`'s resource `kind` in an
    environment's namespace: `{service}-{kind}` (`heal7-backend-postgres`), with one data key
    per placeholder field (`host`, `port`, `user`, `password`, `database`, `url`, `version`).
    Whoever runs the environment's databases creates it; Slipway only refers to it."""
    return f"{service}-{kind}"


@dataclass(frozen=True)
class ResourceEnv:
    """A release's `env:` as a pod takes it on Kubernetes."""

    literals: dict[str, str] = field(default_factory=dict)
    references: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    """name → (Secret, data key, resource kind)."""
    composite: dict[str, str] = field(default_factory=dict)
    """name → template: placeholders inside a longer value, which a pod cannot take from a
    Secret (refused: put the whole value in the Secret, or one placeholder per variable)."""

    def entries(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [
            {"name": name, "value": value, "valueFrom": None}
            for name, value in sorted(self.literals.items())
        ]
        out += [
            {
                "name": name,
                "value": None,
                "valueFrom": {"secretKeyRef": {"name": secret, "key": key}},
            }
            for name, (secret, key, _) in sorted(self.references.items())
        ]
        return out


def resource_env(service: str, env: Mapping[str, str]) -> ResourceEnv:
    """Split `env:` into literal values and whole-value placeholders
    (`{services.postgres.url}` → the `url` key of Secret `{service}-postgres`)."""
    literals: dict[str, str] = {}
    references: dict[str, tuple[str, str, str]] = {}
    composite: dict[str, str] = {}
    for name, text in env.items():
        found = template_references(text)
        if not found:
            literals[name] = render(text, {})  # '{{' and '}}' are literal braces
            continue
        parts = list(string.Formatter().parse(text))
        if len(found) == 1 and len(parts) == 1 and parts[0][0] == "":
            kind, key = found[0]
            references[name] = (resource_secret_name(service, kind), key, kind)
        else:
            composite[name] = text
    return ResourceEnv(literals, references, composite)


# --- the release phase: a Job -------------------------------------------------------------


def release_job_name(service: str, environment: str, release: str, command: list[str]) -> str:
    """The release phase's Job for one (service, environment, release, command): the same
    name on every attempt, so a retried deploy finds the Job its first attempt created.
    At most 63 characters (the `job-name` label its pods get)."""
    key = json.dumps([service, environment, release, command])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"{service[:40].rstrip('-.')}-release-{digest}"


RELEASE_OF = "slipway.dev/release-of"
"""Label of a release-phase Job and its pod: the service. Never the Deployment's labels, so
no Service selects a migration's pod for traffic."""


def release_job(
    name: str,
    namespace: str,
    request: DeployRequest,
    template: V1PodTemplateSpec,
    image: str,
    deadline_s: int,
) -> V1Job:
    """The release phase's Job: the release's image (by digest) running its `release`
    command once (backoffLimit 0, bounded by activeDeadlineSeconds), with the environment's
    settings as values, its secrets and resources as `secretKeyRef`s (as the Deployment's pods
    get them) and the slot's pod identity (service account, image pull secrets, security
    context, placement, `envFrom`), but not its labels, and no mesh sidecar (one would keep
    the pod running after the command exits)."""
    spec = template.spec
    main = main_container(template, request.service)
    entries = container_env(ReleaseConfig(), request.config, {}, request.env, request.service)
    env = [_env_var(entry) for entry in entries.get("env", [])]
    env += [
        V1EnvVar(name="SLIPWAY_SERVICE", value=request.service),
        V1EnvVar(name="SLIPWAY_ENVIRONMENT", value=request.environment),
        V1EnvVar(name="SLIPWAY_DIGEST", value=request.artifact.digest),
        V1EnvVar(name="SLIPWAY_VERSION", value=request.artifact.version),
    ]
    labels = {RELEASE_OF: request.service}
    return V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=V1ObjectMeta(
            name=name,
            namespace=namespace,
            labels=labels,
            annotations={
                RELEASE_DIGEST: request.release_digest,
                RELEASE_COMMAND: json.dumps(request.release),
                VERSION: request.artifact.version,
            },
        ),
        spec=V1JobSpec(
            backoff_limit=0,
            active_deadline_seconds=deadline_s,
            template=V1PodTemplateSpec(
                metadata=V1ObjectMeta(
                    labels=labels,
                    annotations={
                        DIGEST: request.artifact.digest,
                        "sidecar.istio.io/inject": "false",
                    },
                ),
                spec=V1PodSpec(
                    restart_policy="Never",
                    containers=[
                        V1Container(
                            name=main.name,
                            image=image,
                            command=list(request.release),
                            env=env,
                            env_from=main.env_from,
                            security_context=main.security_context,
                        )
                    ],
                    service_account_name=spec.service_account_name if spec else None,
                    image_pull_secrets=spec.image_pull_secrets if spec else None,
                    security_context=spec.security_context if spec else None,
                    node_selector=spec.node_selector if spec else None,
                    tolerations=spec.tolerations if spec else None,
                ),
            ),
        ),
    )


def _env_var(entry: dict[str, Any]) -> V1EnvVar:
    ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
    if ref is None:
        return V1EnvVar(name=entry["name"], value=entry.get("value"))
    return V1EnvVar(
        name=entry["name"],
        value_from=V1EnvVarSource(
            secret_key_ref=V1SecretKeySelector(name=ref["name"], key=ref["key"])
        ),
    )


@dataclass(frozen=True)
class JobState:
    """Where a Job stands: running, succeeded, or failed with the controller's reason."""

    state: str
    reason: str = ""


def job_state(job: V1Job) -> JobState:
    status = job.status
    if status is None:
        return JobState("running")
    for condition in status.conditions or []:
        if condition.status != "True":
            continue
        if condition.type == "Complete":
            return JobState("succeeded")
        if condition.type == "Failed":
            reason = condition.reason or "Failed"
            detail = f": {condition.message}" if condition.message else ""
            return JobState("failed", f"{reason}{detail}")
    if (status.succeeded or 0) > 0:
        return JobState("succeeded")
    if (status.failed or 0) > 0:
        return JobState("failed", "its pod failed")
    return JobState("running")


def annotations_of(meta: V1ObjectMeta | None) -> dict[str, str]:
    if meta is None or meta.annotations is None:
        return {}
    return dict(meta.annotations)


def revision(meta: V1ObjectMeta | None) -> int:
    """The controller's revision number; 0 when absent or unreadable."""
    value = annotations_of(meta).get(REVISION, "0")
    return int(value) if value.isdigit() else 0


def replicas_of(deployment: V1Deployment) -> int:
    # The API server defaults spec.replicas to 1 when it is omitted.
    replicas = deployment.spec.replicas
    return 1 if replicas is None else replicas


def label_selector(selector: V1LabelSelector | None) -> str:
    """`matchLabels` as the `labelSelector` query string (we only write equality selectors)."""
    if selector is None or not selector.match_labels:
        return ""
    return ",".join(f"{k}={v}" for k, v in sorted(selector.match_labels.items()))


def main_container(template: V1PodTemplateSpec, service: str) -> V1Container:
    """The container named like the service, or the first one (sidecars come after it)."""
    containers = template.spec.containers if template.spec is not None else []
    for container in containers:
        if container.name == service:
            return container
    if not containers:
        raise ValueError("the pod template has no containers")
    return containers[0]


def digest_of_template(template: V1PodTemplateSpec, service: str) -> str | None:
    found = annotations_of(template.metadata).get(DIGEST)
    if found:
        return found
    image = main_container(template, service).image or ""
    match = _DIGEST_IN_IMAGE.search(image)
    return str(match.group(1)) if match else None


def digest_of_deployment(deployment: V1Deployment, service: str) -> str | None:
    return digest_of_template(deployment.spec.template, service)


def template_json(api: ApiClient, template: V1PodTemplateSpec) -> dict[str, Any]:
    """The pod template as JSON without the controller's pod-template-hash label, the form
    in which a ReplicaSet's template is put back into its Deployment (as kubectl does)."""
    # sanitize_for_serialization is unannotated: bind it to a typed name, check what it gave.
    serialize: Callable[[object], object] = api.sanitize_for_serialization
    data = copy.deepcopy(serialize(template))
    if not isinstance(data, dict):
        raise TypeError(f"a pod template serialised to {type(data).__name__}, not an object")
    labels = data.get("metadata", {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(TEMPLATE_HASH_LABEL, None)
    return data


def same_template(api: ApiClient, a: V1PodTemplateSpec, b: V1PodTemplateSpec) -> bool:
    return template_json(api, a) == template_json(api, b)


def owned_by(replica_set: V1ReplicaSet, deployment: V1Deployment) -> bool:
    uid = deployment.metadata.uid if deployment.metadata else None
    refs = replica_set.metadata.owner_references if replica_set.metadata else None
    return uid is not None and any(ref.uid == uid and ref.controller for ref in refs or [])


@dataclass(frozen=True)
class RolloutState:
    """Where a Deployment's rollout stands, as `kubectl rollout status` reads it."""

    done: bool
    summary: str
    stalled: str | None = None
    """The controller's own verdict (ProgressDeadlineExceeded), when it gave one."""


def rollout_state(deployment: V1Deployment) -> RolloutState:
    meta = deployment.metadata
    generation = meta.generation if meta is not None and meta.generation is not None else 0
    status = deployment.status
    observed = status.observed_generation if status is not None else None
    # Until the controller has seen the newest spec, its status describes an older one: an old
    # ProgressDeadlineExceeded must not fail the new rollout, and "all updated" means nothing.
    if status is None or observed is None or observed < generation:
        return RolloutState(False, f"waiting for the controller to observe generation {generation}")
    for condition in status.conditions or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            return RolloutState(
                False,
                "progress deadline exceeded",
                stalled=condition.message or condition.reason,
            )
    want = replicas_of(deployment)
    updated = status.updated_replicas or 0
    total = status.replicas or 0
    available = status.available_replicas or 0
    if updated < want:
        return RolloutState(False, f"{updated} of {want} replicas updated")
    if total > updated:
        return RolloutState(False, f"{total - updated} old replicas pending termination")
    if available < want:
        return RolloutState(False, f"{available} of {want} updated replicas available")
    return RolloutState(True, f"{want} of {want} replicas updated and available")


def pod_problems(pods: list[V1Pod], limit: int = 5) -> list[str]:
    """Why pods are not running, in the kubelet's words (ImagePullBackOff, CrashLoopBackOff,
    Unschedulable, ...): the part of a failed rollout a person needs to read first."""
    problems: list[str] = []
    for pod in pods:
        name = pod.metadata.name if pod.metadata is not None else "?"
        status = pod.status
        if status is None:
            continue
        for condition in status.conditions or []:
            if condition.type == "PodScheduled" and condition.status == "False":
                problems.append(f"pod {name}: {condition.reason}: {condition.message or ''}")
        statuses = [*(status.init_container_statuses or []), *(status.container_statuses or [])]
        for cs in statuses:
            state = cs.state
            if state is None:
                continue
            if state.waiting is not None and state.waiting.reason:
                detail = f": {state.waiting.message}" if state.waiting.message else ""
                problems.append(f"pod {name} container {cs.name}: {state.waiting.reason}{detail}")
            elif state.terminated is not None and state.terminated.exit_code != 0:
                problems.append(
                    f"pod {name} container {cs.name}: {state.terminated.reason or 'terminated'}"
                    f" (exit code {state.terminated.exit_code})"
                )
    unique = list(dict.fromkeys(p.rstrip(": ") for p in problems))
    return unique[:limit]
