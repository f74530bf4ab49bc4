"""The few Kubernetes API calls the platform makes, with errors that name the object.

Every call goes through `_translate`: a missing object reads as `None` where the caller can
cope with that, permission and validation errors become non-retryable verdicts (retrying
cannot fix RBAC or a rejected patch), and anything else (409 conflicts, 5xx, timeouts,
connection errors) is raised as a transient `KubernetesApiError` for Temporal to retry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from kubernetes.client import (
    ApiClient,
    ApiException,
    AppsV1Api,
    BatchV1Api,
    CoreV1Api,
    CustomObjectsApi,
    V1Deployment,
    V1Job,
    V1Pod,
    V1ReplicaSet,
    V1Secret,
    V1Service,
)

from contracts.errors import ErrorType, verdict

__all__ = ["ISTIO_GROUP", "ISTIO_VERSION", "KubeApi", "KubernetesApiError"]

T = TypeVar("T")

ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSION = "v1beta1"

# Patch content types are explicit: the generated client otherwise sends the first JSON type
# it knows (json-patch) whatever the body is.
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"

Patch = dict[str, Any] | list[dict[str, Any]]


class KubernetesApiError(RuntimeError):
    """A transient API failure (conflict, server error, timeout); Temporal retries it."""


class KubeApi:
    """Typed wrappers over the generated clients for exactly the calls the platform makes."""

    def __init__(self, api_client: ApiClient, request_timeout_s: float = 10.0) -> None:
        self._apps = AppsV1Api(api_client)
        self._core = CoreV1Api(api_client)
        self._batch = BatchV1Api(api_client)
        self._custom = CustomObjectsApi(api_client)
        self._timeout = request_timeout_s

    # --- deployments / replica sets / pods -----------------------------------------------

    def read_deployment(self, namespace: str, name: str) -> V1Deployment | None:
        return _maybe(
            lambda: self._apps.read_namespaced_deployment(
                name, namespace, _request_timeout=self._timeout
            ),
            "read",
            "Deployment",
            name,
            namespace,
        )

    def patch_deployment(self, namespace: str, name: str, body: Patch) -> V1Deployment:
        return _call(
            lambda: self._apps.patch_namespaced_deployment(
                name,
                namespace,
                body,
                _content_type=JSON_PATCH if isinstance(body, list) else STRATEGIC_MERGE,
                _request_timeout=self._timeout,
            ),
            "patch",
            "Deployment",
            name,
            namespace,
        )

    def list_replica_sets(self, namespace: str, selector: str) -> list[V1ReplicaSet]:
        result = _call(
            lambda: self._apps.list_namespaced_replica_set(
                namespace, label_selector=selector, _request_timeout=self._timeout
            ),
            "list",
            "ReplicaSets",
            selector,
            namespace,
        )
        return list(result.items)

    def list_pods(self, namespace: str, selector: str) -> list[V1Pod]:
        result = _call(
            lambda: self._core.list_namespaced_pod(
                namespace, label_selector=selector, _request_timeout=self._timeout
            ),
            "list",
            "Pods",
            selector,
            namespace,
        )
        return list(result.items)

    def read_pod(self, namespace: str, name: str) -> V1Pod | None:
        return _maybe(
            lambda: self._core.read_namespaced_pod(name, namespace, _request_timeout=self._timeout),
            "read",
            "Pod",
            name,
            namespace,
        )

    def create_pod(self, namespace: str, pod: V1Pod) -> V1Pod:
        name = str(pod.metadata.name) if pod.metadata else "?"
        return _call(
            lambda: self._core.create_namespaced_pod(
                namespace, pod, _request_timeout=self._timeout
            ),
            "create",
            "Pod",
            name,
            namespace,
        )

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete, and nothing to do if it is gone already."""
        _maybe(
            lambda: self._core.delete_namespaced_pod(
                name, namespace, grace_period_seconds=0, _request_timeout=self._timeout
            ),
            "delete",
            "Pod",
            name,
            namespace,
        )

    def read_pod_log(self, namespace: str, name: str, tail_lines: int) -> str | None:
        """The last lines of a pod's log; None when the pod is gone or the API does not
        give logs (no `pods/log` permission, the kubelet unreachable): a log is a help for the
        reader of a failure, never a reason for one."""
        try:
            text = self._core.read_namespaced_pod_log(
                name, namespace, tail_lines=tail_lines, _request_timeout=self._timeout
            )
        except ApiException:
            return None
        return text if isinstance(text, str) else None

    # --- jobs (the release phase) ----------------------------------------------------------

    def read_job(self, namespace: str, name: str) -> V1Job | None:
        return _maybe(
            lambda: self._batch.read_namespaced_job(
                name, namespace, _request_timeout=self._timeout
            ),
            "read",
            "Job",
            name,
            namespace,
        )

    def create_job(self, namespace: str, job: V1Job) -> V1Job | None:
        """Create the Job; None when one of that name exists already (another attempt
        created it: the caller reads and waits on that one)."""
        name = str(job.metadata.name) if job.metadata else "?"
        try:
            return self._batch.create_namespaced_job(namespace, job, _request_timeout=self._timeout)
        except ApiException as e:
            if _status(e) == 409:
                return None
            _translate(e, "create", "Job", name, namespace)

    # --- services ------------------------------------------------------------------------

    def create_service(self, namespace: str, service: V1Service) -> V1Service:
        name = str(service.metadata.name) if service.metadata else "?"
        return _call(
            lambda: self._core.create_namespaced_service(
                namespace, service, _request_timeout=self._timeout
            ),
            "create",
            "Service",
            name,
            namespace,
        )

    def delete_service(self, namespace: str, name: str) -> None:
        """Delete, and nothing to do if it is gone already."""
        _maybe(
            lambda: self._core.delete_namespaced_service(
                name, namespace, _request_timeout=self._timeout
            ),
            "delete",
            "Service",
            name,
            namespace,
        )

    def read_secret(self, namespace: str, name: str) -> V1Secret | None:
        return _maybe(
            lambda: self._core.read_namespaced_secret(
                name, namespace, _request_timeout=self._timeout
            ),
            "read",
            "Secret",
            name,
            namespace,
        )

    def read_service(self, namespace: str, name: str) -> V1Service | None:
        return _maybe(
            lambda: self._core.read_namespaced_service(
                name, namespace, _request_timeout=self._timeout
            ),
            "read",
            "Service",
            name,
            namespace,
        )

    def patch_service(self, namespace: str, name: str, body: dict[str, Any]) -> V1Service:
        return _call(
            lambda: self._core.patch_namespaced_service(
                name,
                namespace,
                body,
                _content_type=STRATEGIC_MERGE,
                _request_timeout=self._timeout,
            ),
            "patch",
            "Service",
            name,
            namespace,
        )

    # --- istio virtual services ----------------------------------------------------------

    def read_virtual_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = _maybe(
            lambda: self._custom.get_namespaced_custom_object(
                ISTIO_GROUP,
                ISTIO_VERSION,
                namespace,
                "virtualservices",
                name,
                _request_timeout=self._timeout,
            ),
            "read",
            "VirtualService",
            name,
            namespace,
        )
        if found is not None and not isinstance(found, dict):
            raise KubernetesApiError(
                f"read VirtualService {name} in namespace {namespace}: the API answered "
                f"{type(found).__name__}, not an object"
            )
        return found

    def patch_virtual_service(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        # Custom resources have no strategic-merge schema: JSON merge patch, where a list
        # (spec.http) is replaced as a whole — which is what we want.
        _call(
            lambda: self._custom.patch_namespaced_custom_object(
                ISTIO_GROUP,
                ISTIO_VERSION,
                namespace,
                "virtualservices",
                name,
                body,
                _content_type=MERGE_PATCH,
                _request_timeout=self._timeout,
            ),
            "patch",
            "VirtualService",
            name,
            namespace,
        )


def _call(call: Callable[[], T], verb: str, kind: str, name: str, namespace: str) -> T:
    try:
        return call()
    except ApiException as e:
        _translate(e, verb, kind, name, namespace)


def _maybe(call: Callable[[], T], verb: str, kind: str, name: str, namespace: str) -> T | None:
    try:
        return call()
    except ApiException as e:
        if _status(e) == 404:
            return None
        _translate(e, verb, kind, name, namespace)


def _status(e: ApiException) -> int:
    status = e.status
    return status if isinstance(status, int) else 0


def _translate(e: ApiException, verb: str, kind: str, name: str, namespace: str) -> NoReturn:
    status = _status(e)
    what = f"{verb} {kind} {name} in namespace {namespace}"
    reason = f"HTTP {status} {e.reason}: {_message(e)}"
    if status in (401, 403):
        raise verdict(
            ErrorType.CONFIGURATION,
            f"{what} was refused ({reason}); grant the worker's ServiceAccount this verb in "
            "its Role (deploy/helm/slipway-worker/templates/rbac.yaml)",
        ) from e
    if status == 404:
        raise verdict(
            ErrorType.CONFIGURATION,
            f"{what}: not found ({reason}); create it (the service's manifests) first",
        ) from e
    if status in (400, 415, 422):
        raise verdict(ErrorType.CONFIGURATION, f"{what} was rejected ({reason})") from e
    raise KubernetesApiError(f"{what} failed ({reason})") from e


def _message(e: ApiException) -> str:
    # The API server puts its explanation in a Status object's `message`; show that, not the
    # whole JSON body.
    body = e.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str):
        return ""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200]
    message = data.get("message") if isinstance(data, dict) else None
    return message if isinstance(message, str) else body[:200]
