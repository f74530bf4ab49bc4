"""Backing services as pods, for workers that run in the cluster: one Pod and one ClusterIP
Service per backing service in a namespace of their own, from the official images at the
version asked (`postgres:16` → image `postgres:16`), deleted when the test run ends.

The tests reach them by the Service's cluster DNS name, so this suits a worker running in
the cluster (the Helm chart's); a worker outside it uses `LocalBackingServices`. The pods
carry the worker's name (its hostname, the pod name in a cluster): a restarted worker deletes
what it left behind when it starts.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import structlog
from kubernetes.client import (
    V1Container,
    V1ContainerPort,
    V1EnvVar,
    V1ExecAction,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
    V1Probe,
    V1Service,
    V1ServicePort,
    V1ServiceSpec,
    V1TCPSocketAction,
)

from contracts.definition.service_templates import (
    Endpoint,
    ServiceWanted,
    StartedServices,
    requested_services,
)
from contracts.errors import ErrorType, verdict

__all__ = ["KubernetesBackingServices", "PodApi"]

_log = structlog.get_logger("slipway.backing_services")

MANAGED = "app.kubernetes.io/managed-by"
WORKER = "slipway.dev/worker"
NAME = "slipway.dev/backing-service"
DEFAULT_VERSIONS = {"postgres": "16", "redis": "7"}
PORTS = {"postgres": 5432, "redis": 6379}
# A pod waiting for one of these will not start by waiting longer.
_HOPELESS = {
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
}


class PodApi(Protocol):
    """The calls of the kubernetes platform's `KubeApi` this needs."""

    def create_pod(self, namespace: str, pod: V1Pod) -> V1Pod: ...
    def read_pod(self, namespace: str, name: str) -> V1Pod | None: ...
    def delete_pod(self, namespace: str, name: str) -> None: ...
    def list_pods(self, namespace: str, selector: str) -> list[V1Pod]: ...
    def create_service(self, namespace: str, service: V1Service) -> V1Service: ...
    def delete_service(self, namespace: str, name: str) -> None: ...


class KubernetesBackingServices:
    """`BackingServices` as pods in `namespace`."""

    def __init__(
        self,
        api: PodApi,
        namespace: str,
        *,
        images: Mapping[str, str] | None = None,
        worker: str | None = None,
        ready_timeout_s: float = 180.0,
        poll_s: float = 1.0,
    ) -> None:
        self._api = api
        self._namespace = namespace
        self._images = {"postgres": "postgres", "redis": "redis", **(images or {})}
        self._worker = _label_value(worker or socket.gethostname())
        self._ready_timeout_s = ready_timeout_s
        self._poll_s = poll_s

    def clean_leftovers(self) -> list[str]:
        """At worker start: delete the pods and Services this worker left when it died."""
        pods = self._api.list_pods(self._namespace, f"{MANAGED}=slipway,{WORKER}={self._worker}")
        names = [p.metadata.name for p in pods if p.metadata and p.metadata.name]
        for name in names:
            self._delete(name)
        if names:
            _log.info("deleted backing-service pods a dead worker left", pods=names)
        return names

    @contextlib.contextmanager
    def started(
        self, services: Sequence[str], progress: Callable[[str], None]
    ) -> Iterator[StartedServices]:
        wanted = requested_services(services)
        run = uuid.uuid4().hex[:8]
        created: list[str] = []
        started = StartedServices()
        try:
            for service in wanted:
                name = f"slipway-{service.kind}-{run}"
                created.append(name)
                endpoint = self._start(service, name, progress)
                started.endpoints[service.kind] = endpoint
                started.notes.append(f"{service.kind} {endpoint.version} (pod {name})")
            yield started
        finally:
            for name in reversed(created):
                self._delete(name)

    def _start(
        self, service: ServiceWanted, name: str, progress: Callable[[str], None]
    ) -> Endpoint:
        version = service.version or DEFAULT_VERSIONS[service.kind]
        image = f"{self._images[service.kind]}:{version}"
        password = secrets.token_urlsafe(16)
        labels = {MANAGED: "slipway", WORKER: self._worker, NAME: name}
        port = PORTS[service.kind]
        self._api.create_pod(
            self._namespace,
            V1Pod(
                api_version="v1",
                kind="Pod",
                metadata=V1ObjectMeta(name=name, labels=labels),
                spec=V1PodSpec(
                    restart_policy="Never",
                    containers=[_container(service.kind, image, port, password)],
                ),
            ),
        )
        self._api.create_service(
            self._namespace,
            V1Service(
                api_version="v1",
                kind="Service",
                metadata=V1ObjectMeta(name=name, labels=labels),
                spec=V1ServiceSpec(
                    selector={NAME: name}, ports=[V1ServicePort(port=port, target_port=port)]
                ),
            ),
        )
        self._wait_ready(name, image, progress)
        host = f"{name}.{self._namespace}.svc"
        if service.kind == "postgres":
            user, database = "postgres", "postgres"
            url = f"postgresql://{user}:{password}@{host}:{port}/{database}"
        else:
            user, database = "default", "0"
            url = f"redis://{user}:{password}@{host}:{port}/{database}"
        return Endpoint(service.kind, host, port, user, password, database, url, version)

    def _wait_ready(self, name: str, image: str, progress: Callable[[str], None]) -> None:
        deadline = time.monotonic() + self._ready_timeout_s
        while True:
            pod = self._api.read_pod(self._namespace, name)
            status = pod.status if pod is not None else None
            if status is not None:
                if any(c.type == "Ready" and c.status == "True" for c in status.conditions or []):
                    return
                for container in status.container_statuses or []:
                    waiting = container.state.waiting if container.state else None
                    if waiting is not None and waiting.reason in _HOPELESS:
                        raise verdict(
                            ErrorType.CONFIGURATION,
                            f"The backing service pod {name} ({image}) cannot start: "
                            f"{waiting.reason}: {waiting.message or ''}".rstrip(": "),
                        )
                if status.phase in ("Failed", "Succeeded"):
                    raise RuntimeError(f"The backing service pod {name} ({image}) ended.")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"The backing service pod {name} ({image}) was not ready after "
                    f"{self._ready_timeout_s:.0f} s."
                )
            progress(f"waiting for pod {name} ({image})")
            time.sleep(self._poll_s)

    def _delete(self, name: str) -> None:
        # Both, whatever happened to the other: a failed delete is logged, not raised over
        # the test run's own outcome.
        for delete in (self._api.delete_service, self._api.delete_pod):
            try:
                delete(self._namespace, name)
            except Exception as exc:  # an API hiccup must not hide the run's result
                _log.warning("could not delete backing service", name=name, error=str(exc))


def _container(kind: str, image: str, port: int, password: str) -> V1Container:
    ports = [V1ContainerPort(container_port=port)]
    if kind == "postgres":
        return V1Container(
            name="postgres",
            image=image,
            ports=ports,
            env=[
                V1EnvVar(name="POSTGRES_PASSWORD", value=password),
                V1EnvVar(name="POSTGRES_USER", value="postgres"),
                V1EnvVar(name="POSTGRES_DB", value="postgres"),
            ],
            # Ready once the real server takes TCP connections, not the image's init server.
            readiness_probe=V1Probe.model_validate(
                {
                    "exec": V1ExecAction(
                        command=["pg_isready", "-h", "127.0.0.1", "-U", "postgres"]
                    ),
                    "periodSeconds": 1,
                }
            ),
        )
    args: list[Any] = ["--requirepass", password, "--save", "", "--appendonly", "no"]
    return V1Container(
        name="redis",
        image=image,
        ports=ports,
        args=args,
        readiness_probe=V1Probe(tcp_socket=V1TCPSocketAction(port=port), period_seconds=1),
    )


def _label_value(text: str) -> str:
    """A label value: at most 63 characters of [A-Za-z0-9._-], alphanumeric at both ends."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in text)[:63]
    return cleaned.strip("._-") or "worker"
