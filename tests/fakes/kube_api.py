"""A fake Kubernetes API server, in process, on 127.0.0.1, for the kubernetes platform's tests.

No Kubernetes API server can be installed here (no kube-apiserver, etcd, kind or k3s in this
environment), so this fake stands in for one. It speaks ONLY the endpoints KubernetesPlatform
calls, and only as much of their behaviour as the platform relies on:

- GET/PATCH   /apis/apps/v1/namespaces/{ns}/deployments/{name}
- GET         /apis/apps/v1/namespaces/{ns}/replicasets?labelSelector=...
- GET         /api/v1/namespaces/{ns}/pods?labelSelector=...
- GET/PATCH   /api/v1/namespaces/{ns}/services/{name}
- GET/PATCH   /apis/networking.istio.io/v1beta1/namespaces/{ns}/virtualservices/{name}
- POST        /api/v1/namespaces/{ns}/pods, /api/v1/namespaces/{ns}/services
- GET/DELETE  /api/v1/namespaces/{ns}/pods/{name};  DELETE /api/v1/namespaces/{ns}/services/{name}
  (backing-service pods: Pending on their first read, then Ready, or waiting for ever with
  the reason `set_pod_waiting` gave their image)
- GET         /api/v1/namespaces/{ns}/secrets/{name} (Secrets are seeded with `add`)
- POST        /apis/batch/v1/namespaces/{ns}/jobs;  GET /apis/batch/v1/namespaces/{ns}/jobs/{name}
- GET         /api/v1/namespaces/{ns}/pods/{name}/log?tailLines=N (text, as the real server)
  (release-phase Jobs: a "job controller" applied on reads of the Job starts one pod labelled
  `job-name`, then completes or fails it as `set_job` says for the Job's image; a second
  POST of the same name is a 409 AlreadyExists, as on the real server)

PATCH accepts strategic-merge (merge keys: `name` for containers, initContainers, env,
volumes), JSON merge patch (RFC 7386) and JSON patch (RFC 6902: add, replace, remove, test);
custom resources refuse strategic merge with 415, as the real server does. A `resourceVersion`
in a merge patch that is not the stored one is a 409 Conflict. Label selectors are equality
only (`a=b,c=d`).

Objects are stored as JSON dicts built from the client's own models
(`ApiClient().sanitize_for_serialization(V1Deployment(...))`). A change of a Deployment's spec
bumps `metadata.generation`; a change of its pod template creates a ReplicaSet with the next
`deployment.kubernetes.io/revision` (or re-uses the one with the same template and gives it
the next revision, as the deployment controller does).

The "controller" is a knob per Deployment (`set_rollout`), applied on reads of the Deployment:
`instant` (rolled out at the next read), `polls` (in progress for N reads, the first of which
has not observed the new generation yet, then rolled out) or `stuck` (Progressing=False with
reason ProgressDeadlineExceeded and a new pod whose container waits with, e.g.,
ImagePullBackOff). Paths it does not serve answer 404 and are listed in `unserved`, so a test
can assert that the platform called nothing else.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

from kubernetes.client import (
    ApiClient,
    Configuration,
    V1Container,
    V1ContainerState,
    V1ContainerStateRunning,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1Deployment,
    V1DeploymentSpec,
    V1LabelSelector,
    V1ObjectMeta,
    V1OwnerReference,
    V1Pod,
    V1PodSpec,
    V1PodStatus,
    V1PodTemplateSpec,
    V1ReplicaSet,
    V1Service,
    V1ServicePort,
    V1ServiceSpec,
)

__all__ = [
    "FakeKubeApi",
    "JobBehaviour",
    "RolloutBehaviour",
    "blue_green_environment",
    "canary_environment",
    "make_deployment",
    "make_service",
    "make_virtual_service",
]

Json = dict[str, Any]
Key = tuple[str, str, str]  # (resource, namespace, name)

REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"

_SERIALIZER = ApiClient()
_serialize: Callable[[object], object] = _SERIALIZER.sanitize_for_serialization

_ROUTES: list[tuple[str, re.Pattern[str]]] = [
    ("deployments", re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments/([^/]+)$")),
    ("replicasets", re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/replicasets$")),
    ("pods", re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")),
    ("services", re.compile(r"^/api/v1/namespaces/([^/]+)/services/([^/]+)$")),
    ("secrets", re.compile(r"^/api/v1/namespaces/([^/]+)/secrets/([^/]+)$")),
    ("jobs", re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs/([^/]+)$")),
    (
        "virtualservices",
        re.compile(
            r"^/apis/networking\.istio\.io/v1beta1/namespaces/([^/]+)/virtualservices/([^/]+)$"
        ),
    ),
]
_LIST_KINDS = {"replicasets": "ReplicaSetList", "pods": "PodList"}
_CREATE = re.compile(r"^/api/v1/namespaces/([^/]+)/(pods|services)$")
_CREATE_JOB = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs$")
_POD_LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")
_ONE = re.compile(r"^/api/v1/namespaces/([^/]+)/(pods|services)/([^/]+)$")
_STRATEGIC_MERGE_KEYS = {"containers", "initContainers", "env", "volumes"}

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


@dataclass(frozen=True)
class RolloutBehaviour:
    """How the fake controller rolls a Deployment out after its spec changes."""

    mode: Literal["instant", "polls", "stuck"] = "instant"
    polls: int = 0
    """For `polls`: how many reads of the Deployment still show the rollout in progress."""
    reason: str = "ImagePullBackOff"
    """For `stuck`: why the new pod's container waits."""
    message: str = "Back-off pulling image"


@dataclass(frozen=True)
class JobBehaviour:
    """How the fake job controller runs a release-phase Job of one image."""

    outcome: Literal["succeed", "fail", "hang"] = "succeed"
    polls: int = 1
    """Reads of the Job that still show it running (after the first, which starts its pod)."""
    log: str = ""
    """What its pod printed (served by the pod's /log)."""
    reason: str = "BackoffLimitExceeded"
    message: str = "Job has reached the specified backoff limit"


@dataclass
class _Progress:
    behaviour: RolloutBehaviour
    reads: int = 0


class ApiError(Exception):
    """An error answered as a Kubernetes `Status` object."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


@dataclass
class FakeKubeApi:
    """The fake API server; use as a context manager, or `start()` / `stop()`."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    """(method, path) of every request served, in order."""
    unserved: list[str] = field(default_factory=list)
    """Requests for endpoints this fake does not speak."""

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._objects: dict[Key, Json] = {}
        self._progress: dict[tuple[str, str], _Progress] = {}
        self._behaviour: dict[tuple[str, str], RolloutBehaviour] = {}
        self._resource_version = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._failures: list[tuple[int, str, str]] = []
        self._pod_waiting: dict[str, tuple[str, str]] = {}
        self._pod_reads: dict[tuple[str, str], int] = {}
        self._job_behaviour: dict[str, JobBehaviour] = {}
        self._job_reads: dict[tuple[str, str], int] = {}
        self._logs: dict[tuple[str, str], str] = {}

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as two writes; without TCP_NODELAY each response waits
            # for the client's delayed ACK (~40 ms), which adds up over a rollout.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_PATCH(self) -> None:
                fake._handle(self, "PATCH")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

            def log_message(self, format: str, *args: object) -> None:
                pass  # the test's output is the place for assertions, not access logs

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeKubeApi:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake API server is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def api_client(self) -> ApiClient:
        """An ApiClient of the official client, pointed at this server, without retries."""
        configuration = Configuration(host=self.url)
        configuration.retries = 0
        return ApiClient(configuration)

    # --- seeding and knobs ---------------------------------------------------------------

    def add(self, *objects: V1Deployment | V1Service | Json) -> None:
        """Store objects as the API server would after creating them; Deployments come up
        rolled out, with their first ReplicaSet (revision 1) and pods."""
        with self._lock:
            for obj in objects:
                data = _as_json(obj)
                kind = data.get("kind")
                meta = data.setdefault("metadata", {})
                namespace, name = meta["namespace"], meta["name"]
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", _now())
                meta["resourceVersion"] = self._next_version()
                if kind == "Deployment":
                    meta["generation"] = 1
                    self._objects[("deployments", namespace, name)] = data
                    self._new_revision(namespace, data)
                    self._complete(namespace, data)
                elif kind == "Service":
                    self._objects[("services", namespace, name)] = data
                elif kind == "Secret":
                    self._objects[("secrets", namespace, name)] = data
                elif kind == "VirtualService":
                    meta["generation"] = 1
                    self._objects[("virtualservices", namespace, name)] = data
                else:
                    raise ValueError(
                        f"the fake stores Deployments, Services, VirtualServices, Secrets: {kind}"
                    )

    def set_job(self, image: str, behaviour: JobBehaviour) -> None:
        """How Jobs whose container runs `image` go (default: succeed after one poll)."""
        with self._lock:
            self._job_behaviour[image] = behaviour

    def jobs(self, namespace: str) -> list[Json]:
        """The Jobs in a namespace, as stored (with the controller's status)."""
        return self.objects("jobs", namespace)

    def set_pod_waiting(self, image: str, reason: str, message: str = "") -> None:
        """Pods created with `image` never become ready: their container waits for `reason`."""
        with self._lock:
            self._pod_waiting[image] = (reason, message)

    def objects(self, resource: str, namespace: str) -> list[Json]:
        """Stored objects of a kind ('pods', 'services', 'jobs') in a namespace."""
        with self._lock:
            return [
                copy.deepcopy(o)
                for (kind, ns, _), o in sorted(self._objects.items())
                if kind == resource and ns == namespace
            ]

    def fail_next(self, code: int, method: str, path_contains: str) -> None:
        """Answer the next matching request with `code` (403 Forbidden, 503, ...)."""
        with self._lock:
            self._failures.append((code, method, path_contains))

    def set_rollout(self, namespace: str, name: str, behaviour: RolloutBehaviour) -> None:
        """How the next rollouts of Deployment `name` behave."""
        with self._lock:
            self._behaviour[(namespace, name)] = behaviour

    # --- reading back (as the client's models) -------------------------------------------

    def deployment(self, namespace: str, name: str) -> V1Deployment:
        with self._lock:
            data = copy.deepcopy(self._objects[("deployments", namespace, name)])
        return _load(V1Deployment, data)

    def service(self, namespace: str, name: str) -> V1Service:
        with self._lock:
            data = copy.deepcopy(self._objects[("services", namespace, name)])
        return _load(V1Service, data)

    def virtual_service(self, namespace: str, name: str) -> Json:
        with self._lock:
            return copy.deepcopy(self._objects[("virtualservices", namespace, name)])

    def replica_sets(self, namespace: str, deployment: str) -> list[V1ReplicaSet]:
        """The Deployment's ReplicaSets, oldest revision first."""
        with self._lock:
            owned = [copy.deepcopy(rs) for rs in self._owned_replica_sets(namespace, deployment)]
        owned.sort(key=_revision)
        return [_load(V1ReplicaSet, rs) for rs in owned]

    def patch_count(self, resource: str = "") -> int:
        """How many PATCH requests were served (for one resource path segment, if given)."""
        return sum(
            1 for method, path in self.requests if method == "PATCH" and f"/{resource}" in path
        )

    # --- HTTP ----------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            with self._lock:
                self.requests.append((method, parts.path))
                status, payload = self._dispatch(
                    method,
                    parts.path,
                    parse_qs(parts.query),
                    handler.headers.get("Content-Type", ""),
                    raw,
                )
        except ApiError as e:
            status, payload = e.code, _status(e.code, e.reason, e.message)
        text = isinstance(payload, str)
        body = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "text/plain" if text else "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _dispatch(
        self, method: str, path: str, query: dict[str, list[str]], content_type: str, raw: bytes
    ) -> tuple[int, Json | str]:
        for index, (code, wanted, fragment) in enumerate(self._failures):
            if wanted == method and fragment in path:
                del self._failures[index]
                raise ApiError(code, "Injected", f"injected failure {code} for {method} {path}")
        job = _CREATE_JOB.match(path)
        if method == "POST" and job:
            return 201, self._create("jobs", job.group(1), raw)
        log = _POD_LOG.match(path)
        if method == "GET" and log:
            namespace, pod = log.groups()
            self._get("pods", namespace, pod)
            lines = self._logs.get((namespace, pod), "").splitlines()
            tail = int((query.get("tailLines") or ["0"])[0] or 0)
            return 200, "\n".join(lines[-tail:] if tail else lines) + ("\n" if lines else "")
        created = _CREATE.match(path)
        if method == "POST" and created:
            return 201, self._create(created.group(2), created.group(1), raw)
        one = _ONE.match(path)
        if one and (method == "DELETE" or (method == "GET" and one.group(2) == "pods")):
            namespace, resource, name = one.groups()
            if method == "GET":
                return 200, self._read_pod(namespace, name)
            if (resource, namespace, name) not in self._objects:
                raise ApiError(404, "NotFound", f'{resource} "{name}" not found')
            # The real server answers a delete with the object (now terminating).
            return 200, self._objects.pop((resource, namespace, name))
        for resource, pattern in _ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            namespace = match.group(1)
            if resource in _LIST_KINDS:
                if method != "GET":
                    break
                selector = _parse_selector((query.get("labelSelector") or [""])[0])
                return 200, self._list(resource, namespace, selector)
            name = match.group(2)
            if method == "GET":
                return 200, self._get(resource, namespace, name)
            return 200, self._patch(resource, namespace, name, content_type, raw)
        self.unserved.append(f"{method} {path}")
        raise ApiError(404, "NotFound", f"the fake API server does not serve {method} {path}")

    def _get(self, resource: str, namespace: str, name: str) -> Json:
        key = (resource, namespace, name)
        if key not in self._objects:
            raise ApiError(404, "NotFound", f'{resource} "{name}" not found')
        if resource == "deployments":
            self._reconcile(namespace, name)
        if resource == "jobs":
            self._run_job(namespace, self._objects[key])
        return copy.deepcopy(self._objects[key])

    def _list(self, resource: str, namespace: str, selector: dict[str, str]) -> Json:
        items = [
            copy.deepcopy(obj)
            for (kind, ns, _), obj in sorted(self._objects.items())
            if kind == resource and ns == namespace and _matches(obj, selector)
        ]
        return {
            "apiVersion": "apps/v1" if resource == "replicasets" else "v1",
            "kind": _LIST_KINDS[resource],
            "metadata": {"resourceVersion": str(self._resource_version)},
            "items": items,
        }

    def _patch(
        self, resource: str, namespace: str, name: str, content_type: str, raw: bytes
    ) -> Json:
        key = (resource, namespace, name)
        if key not in self._objects:
            raise ApiError(404, "NotFound", f'{resource} "{name}" not found')
        old = self._objects[key]
        try:
            patch = json.loads(raw)
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"patch body is not JSON: {e}") from e
        media = content_type.split(";")[0].strip()
        new = copy.deepcopy(old)
        if media == JSON_PATCH and isinstance(patch, list):
            new = _json_patch(new, patch)
        elif media in (STRATEGIC, MERGE) and isinstance(patch, dict):
            if media == STRATEGIC and resource == "virtualservices":
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types "
                    "include: application/json-patch+json, application/merge-patch+json, "
                    "application/apply-patch+yaml",
                )
            wanted = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != old["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try "
                    "again",
                )
            _merge(new, patch, strategic=media == STRATEGIC)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"unsupported patch: {content_type}")
        new["metadata"]["resourceVersion"] = self._next_version()
        if resource == "deployments":
            self._write_deployment(namespace, old, new)
        self._objects[key] = new
        return copy.deepcopy(new)

    def _create(self, resource: str, namespace: str, raw: bytes) -> Json:
        data = json.loads(raw)
        meta = data.setdefault("metadata", {})
        name = meta["name"]
        if (resource, namespace, name) in self._objects:
            raise ApiError(409, "AlreadyExists", f'{resource} "{name}" already exists')
        meta.update(
            namespace=namespace,
            uid=str(uuid.uuid4()),
            creationTimestamp=_now(),
            resourceVersion=self._next_version(),
        )
        if resource == "pods":
            data["status"] = {"phase": "Pending"}
        if resource == "jobs":
            data["status"] = {}
        self._objects[(resource, namespace, name)] = data
        return copy.deepcopy(data)

    def _read_pod(self, namespace: str, name: str) -> Json:
        """A created pod: Pending on its first read, then Ready (or waiting, as set)."""
        pod = self._get("pods", namespace, name)
        reads = self._pod_reads.get((namespace, name), 0) + 1
        self._pod_reads[(namespace, name)] = reads
        if reads < 2 or "containers" not in pod.get("spec", {}):
            return pod
        container = pod["spec"]["containers"][0]
        waiting = self._pod_waiting.get(container["image"])
        if waiting is not None:
            state: Json = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
            ready = "False"
        else:
            state, ready = {"running": {"startedAt": _now()}}, "True"
        pod["status"] = {
            "phase": "Pending" if waiting else "Running",
            "podIP": "10.0.0.7",
            "conditions": [{"type": "Ready", "status": ready}],
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "",
                    "ready": ready == "True",
                    "restartCount": 0,
                    "state": state,
                }
            ],
        }
        self._objects[("pods", namespace, name)] = copy.deepcopy(pod)
        return pod

    # --- the job controller ------------------------------------------------------------

    def _run_job(self, namespace: str, job: Json) -> None:
        """One step of a Job, on each read: start its pod, then finish as set for its image."""
        name = job["metadata"]["name"]
        status = job.setdefault("status", {})
        if any(c.get("status") == "True" for c in status.get("conditions", [])):
            return
        container = job["spec"]["template"]["spec"]["containers"][0]
        behaviour = self._job_behaviour.get(container["image"], JobBehaviour())
        reads = self._job_reads.get((namespace, name), 0) + 1
        self._job_reads[(namespace, name)] = reads
        pod_name = f"{name}-{hashlib.sha256(name.encode()).hexdigest()[:5]}"
        if reads == 1:
            labels = {
                **(job["spec"]["template"].get("metadata", {}).get("labels") or {}),
                "job-name": name,
                "batch.kubernetes.io/job-name": name,
                "controller-uid": job["metadata"]["uid"],
            }
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod_name,
                    "namespace": namespace,
                    "uid": str(uuid.uuid4()),
                    "labels": labels,
                    "creationTimestamp": _now(),
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": name,
                            "uid": job["metadata"]["uid"],
                            "controller": True,
                        }
                    ],
                },
                "spec": copy.deepcopy(job["spec"]["template"]["spec"]),
                "status": {"phase": "Running"},
            }
            self._objects[("pods", namespace, pod_name)] = pod
            self._logs[(namespace, pod_name)] = behaviour.log
            status.update(active=1, startTime=_now())
        if behaviour.outcome == "hang" or reads <= behaviour.polls:
            return
        ran = self._objects.get(("pods", namespace, pod_name))
        succeeded = behaviour.outcome == "succeed"
        if ran is not None:
            ran["status"] = {
                "phase": "Succeeded" if succeeded else "Failed",
                "containerStatuses": [
                    {
                        "name": container["name"],
                        "image": container["image"],
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {
                            "terminated": {
                                "exitCode": 0 if succeeded else 1,
                                "reason": "Completed" if succeeded else "Error",
                            }
                        },
                    }
                ],
            }
        status.pop("active", None)
        if succeeded:
            status.update(
                succeeded=1,
                completionTime=_now(),
                conditions=[_job_condition("Complete", "", "")],
            )
        else:
            status.update(
                failed=1,
                conditions=[_condition("Failed", "True", behaviour.reason, behaviour.message)],
            )

    # --- the "controller" ----------------------------------------------------------------

    def _write_deployment(self, namespace: str, old: Json, new: Json) -> None:
        name = new["metadata"]["name"]
        if new.get("spec") == old.get("spec"):
            return
        new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if _strip_hash(new["spec"]["template"]) != _strip_hash(old["spec"]["template"]):
            self._new_revision(namespace, new)
        behaviour = self._behaviour.get((namespace, name), RolloutBehaviour())
        self._progress[(namespace, name)] = _Progress(behaviour)

    def _reconcile(self, namespace: str, name: str) -> None:
        progress = self._progress.get((namespace, name))
        if progress is None:
            return
        deployment = self._objects[("deployments", namespace, name)]
        behaviour = progress.behaviour
        if behaviour.mode == "stuck":
            self._stuck(namespace, deployment, behaviour)
            return
        if behaviour.mode == "polls" and progress.reads < behaviour.polls:
            progress.reads += 1
            self._in_progress(deployment, first_read=progress.reads == 1)
            return
        self._complete(namespace, deployment)
        del self._progress[(namespace, name)]

    def _in_progress(self, deployment: Json, *, first_read: bool) -> None:
        generation = deployment["metadata"]["generation"]
        replicas = _replicas(deployment)
        status = dict(deployment.get("status") or {})
        status.update(
            observedGeneration=generation - 1 if first_read else generation,
            replicas=replicas + 1,
            updatedReplicas=0 if first_read else min(1, replicas),
            conditions=[_condition("Progressing", "True", "ReplicaSetUpdated", "progressing")],
        )
        deployment["status"] = status

    def _complete(self, namespace: str, deployment: Json) -> None:
        name = deployment["metadata"]["name"]
        replicas = _replicas(deployment)
        current = self._current_replica_set(namespace, deployment)
        for rs in self._owned_replica_sets(namespace, name):
            count = replicas if rs is current else 0
            rs["spec"]["replicas"] = count
            rs["status"] = {"replicas": count, "readyReplicas": count, "availableReplicas": count}
        self._delete_pods(namespace, name)
        for index in range(replicas):
            self._add_pod(namespace, current, index, waiting=None)
        deployment["status"] = {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                _condition("Available", "True", "MinimumReplicasAvailable", "available"),
                _condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    f'ReplicaSet "{current["metadata"]["name"]}" has successfully progressed.',
                ),
            ],
        }

    def _stuck(self, namespace: str, deployment: Json, behaviour: RolloutBehaviour) -> None:
        current = self._current_replica_set(namespace, deployment)
        rs_name = current["metadata"]["name"]
        pods = [
            p
            for (kind, ns, _), p in self._objects.items()
            if kind == "pods"
            and ns == namespace
            and p["metadata"]["labels"].get(HASH_LABEL) == current["metadata"]["labels"][HASH_LABEL]
        ]
        if not pods:
            self._add_pod(namespace, current, 0, waiting=(behaviour.reason, behaviour.message))
        old = (deployment.get("status") or {}).get("availableReplicas", 0)
        deployment["status"] = {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": old + 1,
            "updatedReplicas": 1,
            "readyReplicas": old,
            "availableReplicas": old,
            "unavailableReplicas": 1,
            "conditions": [
                _condition("Available", "True", "MinimumReplicasAvailable", "available"),
                _condition(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    f'ReplicaSet "{rs_name}" has timed out progressing.',
                ),
            ],
        }

    def _new_revision(self, namespace: str, deployment: Json) -> None:
        name = deployment["metadata"]["name"]
        template = _strip_hash(deployment["spec"]["template"])
        template_hash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[
            :10
        ]
        owned = self._owned_replica_sets(namespace, name)
        top = max((_revision(rs) for rs in owned), default=0)
        rs_name = f"{name}-{template_hash}"
        existing = self._objects.get(("replicasets", namespace, rs_name))
        if existing is not None:
            # The controller re-uses a ReplicaSet with the same template and moves it to the
            # newest revision: this is why a second `rollout undo` swaps back.
            revision = _revision(existing) if _revision(existing) == top else top + 1
            existing["metadata"]["annotations"][REVISION] = str(revision)
        else:
            revision = top + 1
            self._objects[("replicasets", namespace, rs_name)] = _replica_set(
                namespace, deployment, rs_name, template_hash, revision
            )
        deployment["metadata"].setdefault("annotations", {})[REVISION] = str(revision)

    def _owned_replica_sets(self, namespace: str, deployment: str) -> list[Json]:
        uid = self._objects[("deployments", namespace, deployment)]["metadata"]["uid"]
        return [
            rs
            for (kind, ns, _), rs in self._objects.items()
            if kind == "replicasets"
            and ns == namespace
            and any(ref["uid"] == uid for ref in rs["metadata"].get("ownerReferences", []))
        ]

    def _current_replica_set(self, namespace: str, deployment: Json) -> Json:
        owned = self._owned_replica_sets(namespace, deployment["metadata"]["name"])
        return max(owned, key=_revision)

    def _delete_pods(self, namespace: str, deployment: str) -> None:
        names = {rs["metadata"]["name"] for rs in self._owned_replica_sets(namespace, deployment)}
        for key, pod in list(self._objects.items()):
            refs = pod["metadata"].get("ownerReferences", []) if key[0] == "pods" else []
            if key[1] == namespace and any(ref["name"] in names for ref in refs):
                del self._objects[key]

    def _add_pod(
        self, namespace: str, rs: Json, index: int, *, waiting: tuple[str, str] | None
    ) -> None:
        rs_meta = rs["metadata"]
        name = f"{rs_meta['name']}-{index:05d}"
        containers = rs["spec"]["template"]["spec"]["containers"]
        if waiting is None:
            state = V1ContainerState(running=V1ContainerStateRunning(started_at=datetime.now(UTC)))
        else:
            reason, message = waiting
            state = V1ContainerState(
                waiting=V1ContainerStateWaiting(reason=reason, message=message)
            )
        pod = V1Pod(
            api_version="v1",
            kind="Pod",
            metadata=V1ObjectMeta(
                name=name,
                namespace=namespace,
                uid=str(uuid.uuid4()),
                labels=dict(rs["spec"]["template"]["metadata"]["labels"]),
                owner_references=[
                    V1OwnerReference(
                        api_version="apps/v1",
                        kind="ReplicaSet",
                        name=rs_meta["name"],
                        uid=rs_meta["uid"],
                        controller=True,
                    )
                ],
            ),
            spec=V1PodSpec(
                containers=[V1Container(name=c["name"], image=c["image"]) for c in containers]
            ),
            status=V1PodStatus(
                phase="Running" if waiting is None else "Pending",
                container_statuses=[
                    V1ContainerStatus(
                        name=c["name"],
                        image=c["image"],
                        image_id="",
                        ready=waiting is None,
                        restart_count=0,
                        state=state,
                    )
                    for c in containers
                ],
            ),
        )
        self._objects[("pods", namespace, name)] = _as_json(pod)

    def _next_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)


# --- builders for tests -------------------------------------------------------------------


def make_deployment(
    namespace: str, service: str, slot: str, image: str, *, replicas: int = 2
) -> V1Deployment:
    """The Deployment of one slot, as a service's manifests would create it."""
    labels = {"app": service, "slot": slot}
    return V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=V1ObjectMeta(name=f"{service}-{slot}", namespace=namespace, labels=labels),
        spec=V1DeploymentSpec(
            replicas=replicas,
            selector=V1LabelSelector(match_labels=labels),
            template=V1PodTemplateSpec(
                metadata=V1ObjectMeta(labels=labels),
                spec=V1PodSpec(containers=[V1Container(name=service, image=image)]),
            ),
        ),
    )


def make_service(namespace: str, service: str, slot: str | None = None) -> V1Service:
    selector = {"app": service, **({"slot": slot} if slot else {})}
    return V1Service(
        api_version="v1",
        kind="Service",
        metadata=V1ObjectMeta(name=service, namespace=namespace),
        spec=V1ServiceSpec(selector=selector, ports=[V1ServicePort(port=80, target_port=8000)]),
    )


def make_virtual_service(namespace: str, service: str, canary_weight: int = 0) -> Json:
    """HEAL7's routing: header `canary: "true"` always to the canary subset; everything
    else split stable/canary."""
    host = f"{service}.{namespace}.svc.cluster.local"
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": service, "namespace": namespace},
        "spec": {
            "hosts": [host],
            "gateways": ["mesh"],
            "http": [
                {
                    "name": "canary-header",
                    "match": [{"headers": {"canary": {"exact": "true"}}}],
                    "route": [{"destination": {"host": host, "subset": "canary"}}],
                },
                {
                    "name": "primary",
                    "route": [
                        {
                            "destination": {"host": host, "subset": "stable"},
                            "weight": 100 - canary_weight,
                        },
                        {
                            "destination": {"host": host, "subset": "canary"},
                            "weight": canary_weight,
                        },
                    ],
                    "retries": {"attempts": 2},
                },
            ],
        },
    }


def canary_environment(
    namespace: str, service: str, image: str, *, replicas: int = 3
) -> list[V1Deployment | V1Service | Json]:
    """Stable serving `image`, an idle canary (0 replicas), the Service and VirtualService."""
    return [
        make_deployment(namespace, service, "stable", image, replicas=replicas),
        make_deployment(namespace, service, "canary", image, replicas=0),
        make_service(namespace, service),
        make_virtual_service(namespace, service),
    ]


def blue_green_environment(
    namespace: str, service: str, image: str, *, replicas: int = 2, active: str = "blue"
) -> list[V1Deployment | V1Service | Json]:
    """Both slots running `image`, the Service selecting `active`."""
    return [
        make_deployment(namespace, service, "blue", image, replicas=replicas),
        make_deployment(namespace, service, "green", image, replicas=replicas),
        make_service(namespace, service, active),
    ]


# --- JSON helpers -------------------------------------------------------------------------


M = TypeVar("M", V1Deployment, V1Service, V1ReplicaSet)


def _load(model: type[M], data: Json) -> M:
    """A stored object as the client's model (the same parsing the client does)."""
    loaded = model.from_dict(data)
    if loaded is None:
        raise ValueError(f"stored data is not a {model.__name__}")
    return loaded


def _as_json(obj: V1Deployment | V1Service | V1Pod | Json) -> Json:
    data = copy.deepcopy(obj) if isinstance(obj, dict) else _serialize(obj)
    if not isinstance(data, dict):
        raise TypeError(f"{type(obj).__name__} did not serialise to an object")
    return data


def _replica_set(
    namespace: str, deployment: Json, name: str, template_hash: str, revision: int
) -> Json:
    template = _strip_hash(deployment["spec"]["template"])
    template["metadata"].setdefault("labels", {})[HASH_LABEL] = template_hash
    selector = dict(deployment["spec"]["selector"].get("matchLabels", {}))
    selector[HASH_LABEL] = template_hash
    meta = deployment["metadata"]
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "labels": dict(template["metadata"]["labels"]),
            "annotations": {REVISION: str(revision)},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "creationTimestamp": _now(),
        },
        "spec": {"replicas": 0, "selector": {"matchLabels": selector}, "template": template},
        "status": {"replicas": 0},
    }


def _strip_hash(template: Json) -> Json:
    out = copy.deepcopy(template)
    out.setdefault("metadata", {}).setdefault("labels", {}).pop(HASH_LABEL, None)
    return out


def _revision(obj: Json) -> int:
    return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))


def _replicas(deployment: Json) -> int:
    value = deployment["spec"].get("replicas")
    return 1 if value is None else int(value)


def _condition(kind: str, status: str, reason: str, message: str) -> Json:
    now = _now()
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }


def _job_condition(kind: str, reason: str, message: str) -> Json:
    now = _now()
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }


def _status(code: int, reason: str, message: str) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_selector(text: str) -> dict[str, str]:
    selector: dict[str, str] = {}
    for term in filter(None, text.split(",")):
        key, sep, value = term.partition("=")
        value = value.removeprefix("=")
        if not sep or not key or any(c in key + value for c in "!()<> "):
            raise ApiError(
                400, "BadRequest", f"the fake only understands equality selectors: {text}"
            )
        selector[key] = value
    return selector


def _matches(obj: Json, selector: dict[str, str]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _merge(target: Json, patch: Json, *, strategic: bool) -> None:
    """RFC 7386 merge patch; with `strategic`, lists of named items merge by name."""
    for key, value in patch.items():
        if key.startswith("$"):
            raise ApiError(400, "BadRequest", f"the fake does not support patch directive {key}")
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            # RFC 7386: a patch object merges into an empty object when the target has none,
            # so its nulls delete nothing and are not stored.
            if not isinstance(target.get(key), dict):
                target[key] = {}
            _merge(target[key], value, strategic=strategic)
        elif (
            strategic
            and key in _STRATEGIC_MERGE_KEYS
            and isinstance(value, list)
            and isinstance(target.get(key), list)
        ):
            items: list[Json] = target[key]
            for item in value:
                found = next((t for t in items if t.get("name") == item.get("name")), None)
                if item.get("$patch") == "delete":
                    # The one list directive the platform sends (a variable removed).
                    if found is not None:
                        items.remove(found)
                    continue
                if found is None:
                    added: Json = {}
                    _merge(added, item, strategic=True)  # its nulls are not stored
                    items.append(added)
                else:
                    _merge(found, item, strategic=True)
        else:
            target[key] = copy.deepcopy(value)


def _json_patch(document: Json, operations: list[Any]) -> Json:
    """RFC 6902 add / replace / remove / test over objects and lists."""
    for op in operations:
        if not isinstance(op, dict) or "path" not in op:
            raise ApiError(422, "Invalid", f"not a JSON patch operation: {op!r}")
        kind, path = op.get("op"), op["path"]
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]]
        if not tokens:
            raise ApiError(422, "Invalid", "the fake does not patch the whole document")
        parent: Any = document
        for token in tokens[:-1]:
            parent = _step(parent, token, path)
        last = tokens[-1]
        if kind == "test":
            if _step(parent, last, path) != op.get("value"):
                raise ApiError(422, "Invalid", f"test failed at {path}")
        elif kind == "remove":
            _step(parent, last, path)
            if isinstance(parent, list):
                del parent[int(last)]
            else:
                del parent[last]
        elif kind in ("add", "replace"):
            value = copy.deepcopy(op.get("value"))
            if kind == "replace":
                _step(parent, last, path)
            if isinstance(parent, list):
                if last == "-":
                    parent.append(value)
                elif kind == "add":
                    parent.insert(int(last), value)
                else:
                    parent[int(last)] = value
            elif isinstance(parent, dict):
                parent[last] = value
            else:
                raise ApiError(422, "Invalid", f"cannot add below a scalar at {path}")
        else:
            raise ApiError(422, "Invalid", f"the fake does not support op {kind!r}")
    return document


def _step(node: Any, token: str, path: str) -> Any:
    try:
        if isinstance(node, list):
            return node[int(token)]
        if isinstance(node, dict):
            return node[token]
    except (KeyError, IndexError, ValueError):
        pass
    raise ApiError(422, "Invalid", f"path {path} does not exist")
