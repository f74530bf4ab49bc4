"""Pure readings of Kubernetes objects: names, digests, rollout state, pod problems.

Nothing here talks to the API server, so each rule is testable on models built in memory.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client import (
    ApiClient,
    V1Container,
    V1Deployment,
    V1LabelSelector,
    V1ObjectMeta,
    V1Pod,
    V1PodTemplateSpec,
    V1ReplicaSet,
)

from contracts.activity import Artifact, ReleaseConfig, Slot

__all__ = [
    "CANARY_PENDING",
    "CANARY_ROLLED_BACK",
    "CONFIG",
    "DIGEST",
    "FENCE_TOKEN",
    "PREVIOUS_SLOT",
    "REVISION",
    "ROLLBACK_REQUEST",
    "ROLLED_BACK_FROM",
    "ROLLED_BACK_TO",
    "TEMPLATE_HASH_LABEL",
    "VERSION",
    "RolloutState",
    "annotations_of",
    "config_annotations",
    "config_of",
    "container_env",
    "deployment_name",
    "digest_of_deployment",
    "digest_of_template",
    "image_reference",
    "label_selector",
    "main_container",
    "owned_by",
    "pod_problems",
    "replicas_of",
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


def container_env(old: ReleaseConfig, new: ReleaseConfig) -> dict[str, Any]:
    """The main container's `env` in a strategic-merge patch: settings as values, secrets as
    `valueFrom.secretKeyRef` (the kubelet reads the Secret; no value passes through
    Slipway), names the old configuration had and the new one lacks deleted."""
    if old.is_empty and new.is_empty:
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
    gone = sorted({*old.settings, *old.secrets} - {*new.settings, *new.secrets})
    env += [{"name": name, "$patch": "delete"} for name in gone]
    return {"env": env}


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
