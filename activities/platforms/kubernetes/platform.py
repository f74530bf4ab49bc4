"""KubernetesPlatform: Deployments per slot, Istio weights, revision rollback, HTTP checks.

What lives in the cluster (created by the service's own manifests, not by us):
- one Deployment per slot, `{service}-stable` and `{service}-canary` for rolling and canary
  environments, `{service}-blue` and `{service}-green` for blue/green; pods carry a
  `slot` label;
- a Service `{service}`; for blue/green its selector has `slot: blue|green`;
- for canary environments an Istio VirtualService (default name `{service}`) whose header route
  sends `canary: "true"` to the canary and whose default route splits stable/canary.

Every method is idempotent and never retries by itself: transient API errors propagate for
Temporal to retry; outcomes a retry cannot change are `contracts.errors.verdict`s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client import ApiClient, V1Deployment, V1ObjectMeta, V1Service
from temporalio import activity

from activities.helpers.http_checks import run_http_checks
from activities.helpers.secrets import KubernetesSecrets
from activities.platforms.kubernetes._api import KubeApi, KubernetesApiError
from activities.platforms.kubernetes._objects import (
    CANARY_PENDING,
    CANARY_ROLLED_BACK,
    DIGEST,
    FENCE_TOKEN,
    PREVIOUS_SLOT,
    ROLLBACK_REQUEST,
    ROLLED_BACK_FROM,
    ROLLED_BACK_TO,
    TEMPLATE_HASH_LABEL,
    VERSION,
    annotations_of,
    config_annotations,
    config_of,
    container_env,
    deployment_name,
    digest_of_deployment,
    digest_of_template,
    env_annotations,
    env_of,
    image_reference,
    job_state,
    label_selector,
    main_container,
    owned_by,
    pod_problems,
    release_job,
    release_job_name,
    replicas_of,
    resource_env,
    resource_secret_name,
    revision,
    rollout_state,
    same_template,
    template_json,
)
from activities.platforms.kubernetes._routing import (
    RoutingError,
    canary_weight,
    parse_http_routes,
    with_canary_weight,
)
from activities.wiring.backends import Heartbeat
from contracts.activity import (
    Artifact,
    DeployRequest,
    DeployResult,
    Endpoint,
    EndpointRequest,
    FenceRequest,
    HttpCheckReport,
    HttpCheckRequest,
    ReleaseConfig,
    ReleaseSpec,
    RestoreRequest,
    RestoreResult,
    RollbackRequest,
    RollbackResult,
    SecretRef,
    Slot,
    WeightRequest,
)
from contracts.definition.service_templates import ENDPOINT_FIELDS, parse_service
from contracts.errors import ErrorType, check_fence, verdict

__all__ = ["KubernetesPlatform"]

Lookup = Callable[[str], str] | Mapping[str, str]
SlotLookup = Callable[[str, Slot], str | None] | Mapping[str, str]

_BLUE_GREEN: tuple[Slot, Slot] = ("blue", "green")


class KubernetesPlatform:
    """DeployTarget and TrafficRouter for Kubernetes with Istio.

    `namespace_for` maps an environment to its namespace; `virtual_service_for` a service to
    its VirtualService name (default: the service name); `base_url_for` an environment to the
    ingress URL HTTP checks go through; `slot_url_for` (`"{environment}/{slot}"` keys, or a
    callable) reaches one slot directly, e.g. a blue/green preview Service. Without a slot URL
    the canary slot is reached through the ingress with the header `canary: true`, and the
    live blue/green slot (or stable, while the canary gets no traffic) through the ingress.

    A rollout is watched every `poll_interval_s` for at most `progress_deadline_s`; a release
    phase (a Job) may run for `release_deadline_s` (its activeDeadlineSeconds).
    """

    def __init__(
        self,
        api_client: ApiClient,
        namespace_for: Lookup,
        *,
        virtual_service_for: Lookup | None = None,
        base_url_for: Lookup | None = None,
        slot_url_for: SlotLookup | None = None,
        progress_deadline_s: float = 300.0,
        release_deadline_s: float = 600.0,
        poll_interval_s: float = 2.0,
        request_timeout_s: float = 10.0,
        http_timeout_s: float = 10.0,
    ) -> None:
        if progress_deadline_s <= 0 or poll_interval_s <= 0 or release_deadline_s < 1:
            raise ValueError(
                "progress_deadline_s and poll_interval_s must be positive, "
                "release_deadline_s at least 1"
            )
        self._api_client = api_client
        self._kube = KubeApi(api_client, request_timeout_s)
        self._namespace_for = namespace_for
        self._virtual_service_for = virtual_service_for
        self._base_url_for = base_url_for
        self._slot_url_for = slot_url_for
        self._deadline_s = progress_deadline_s
        self._release_deadline_s = release_deadline_s
        self._poll_s = poll_interval_s
        self._http_timeout_s = http_timeout_s

    # --- DeployTarget --------------------------------------------------------------------

    def deploy(self, request: DeployRequest, heartbeat: Heartbeat) -> DeployResult:
        """Pin the slot's Deployment to the artifact's digest and wait for the rollout.

        Already running that digest, fully rolled out: nothing is written (`changed=False`).
        """
        if request.artifact.kind != "image":
            raise verdict(
                ErrorType.CONFIGURATION,
                f"the kubernetes platform deploys container images; artifact "
                f"{request.artifact.uri} of {request.service} is a {request.artifact.kind}",
            )
        _secrets_by_reference(request.environment, request.config)
        namespace = self._namespace(request.environment)
        # Never a release that starts without its database: refused before any change.
        problems = self.reference_problems(
            request.service, request.environment, request.resources, request.env
        )
        if problems:
            raise verdict(ErrorType.CONFIGURATION, _one_sentence(request.environment, problems))
        self._fence(namespace, request.service, request.environment, request.fence)
        name = deployment_name(request.service, request.slot)
        image = image_reference(request.artifact)
        digest = request.artifact.digest
        current = self._require_deployment(namespace, name)
        container = main_container(current.spec.template, request.service)
        previous = digest_of_deployment(current, request.service)
        # Before anything of the environment changes: its failure is the deploy's, and
        # leaves every Deployment, Service and route as it was.
        phase = self._release_phase(namespace, request, current, heartbeat)

        replicas = replicas_of(current)
        if request.slot == "canary":
            # The stable Deployment learns a canary is in flight, so that a rollback before
            # promote leaves stable alone. Written first: a crash after it is harmless.
            self._mark_canary_pending(namespace, request.service, digest)
            if replicas == 0:
                # A scaled-down canary comes back at the stable's size, so analysis judges
                # the same shape of pods that will serve everyone after promote.
                stable = self._kube.read_deployment(
                    namespace, deployment_name(request.service, "stable")
                )
                replicas = max(replicas_of(stable), 1) if stable is not None else 1
        if request.slot in _BLUE_GREEN:
            self._forget_previous_slot(namespace, request.service, request.slot)

        in_place = (
            container.image == image
            and annotations_of(current.metadata).get(DIGEST) == digest
            and _runs_config(current.metadata, request.config, request.env)
            and replicas == replicas_of(current)
        )
        settled = in_place and rollout_state(current).done
        # A direct deploy to stable supersedes a canary that was never promoted.
        supersedes_canary = request.slot == "stable" and CANARY_PENDING in annotations_of(
            current.metadata
        )
        if settled and not supersedes_canary:
            return self._deploy_result(request, previous, changed=False, phase=phase)
        if not in_place or supersedes_canary:
            # A new stable version: the last rollback's request id no longer describes it.
            stale = (ROLLBACK_REQUEST, CANARY_PENDING) if supersedes_canary else (ROLLBACK_REQUEST,)
            body = _release_patch(
                current.metadata,
                container.name,
                request.service,
                request.artifact,
                request.config,
                request.env,
                stale,
            )
            if replicas != replicas_of(current):
                body["spec"]["replicas"] = replicas
            heartbeat(f"deployment {name}: set image {image}")
            self._fence(namespace, request.service, request.environment, request.fence)
            self._kube.patch_deployment(namespace, name, body)
        self._wait_for_rollout(namespace, name, request.service, heartbeat)
        # Not settled when we came: this call (or its interrupted first attempt) changed it.
        return self._deploy_result(request, previous, changed=not settled, phase=phase)

    # --- the release phase: a Job from the release's image ------------------------------

    def _release_phase(
        self, namespace: str, request: DeployRequest, slot: V1Deployment, heartbeat: Heartbeat
    ) -> str:
        """Run the release's `release` command as a Job, once per (service, environment,
        release), and say what it did (the environment's record keeps it).

        The Job's name is derived from the release, so an attempt that comes after a crash
        finds the Job its predecessor created and waits on it; a Job that succeeded is not
        run again, and one that failed is that failure again (never a second run of a
        migration that failed half-way: delete the Job to run it again)."""
        if not request.release:
            return ""
        shown = " ".join(request.release)
        name = release_job_name(
            request.service, request.environment, request.release_digest, request.release
        )
        found = self._kube.read_job(namespace, name)
        if found is None:
            if _runs_release(slot, request):
                # The slot serves this release already (its Job was deleted since it ran).
                return f"`{shown}` ran already for this release"
            heartbeat(f"release phase of {request.service} in {request.environment}: {shown}")
            # A deposed lease holder must not run migrations either.
            self._fence(namespace, request.service, request.environment, request.fence)
            self._kube.create_job(
                namespace,
                release_job(
                    name,
                    namespace,
                    request,
                    slot.spec.template,
                    image_reference(request.artifact),
                    int(self._release_deadline_s),
                ),
            )
        elif job_state(found).state == "succeeded":
            return f"`{shown}` ran already for this release (Job {name})"
        self._wait_for_job(namespace, name, request, heartbeat)
        return f"ran `{shown}` (Job {name})"

    def _wait_for_job(
        self, namespace: str, name: str, request: DeployRequest, heartbeat: Heartbeat
    ) -> None:
        shown = " ".join(request.release)
        # The Job's own activeDeadlineSeconds ends it; the slack covers the controller's
        # reaction time (a Job a previous attempt started ends sooner than that).
        limit = self._release_deadline_s + min(60.0, self._release_deadline_s)
        deadline = time.monotonic() + limit
        while True:
            job = self._kube.read_job(namespace, name)
            if job is None:
                # Deleted while it ran (by a person): the next attempt creates it again.
                raise KubernetesApiError(
                    f"Job {name} in namespace {namespace} disappeared while the release "
                    f"phase `{shown}` ran"
                )
            state = job_state(job)
            if state.state == "succeeded":
                heartbeat(f"release phase done: {shown} (Job {name})")
                return
            if state.state == "failed":
                raise self._release_failed(namespace, name, request, state.reason)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._release_failed(
                    namespace, name, request, f"not finished within {limit:g}s"
                )
            heartbeat(f"release phase running: {shown} (Job {name})")
            time.sleep(min(self._poll_s, remaining))

    def _release_failed(
        self, namespace: str, name: str, request: DeployRequest, reason: str
    ) -> Exception:
        pods = self._kube.list_pods(namespace, f"job-name={name}")
        problems = pod_problems(pods)
        why = "; ".join([reason, *problems])
        log = ""
        if pods:
            newest = max(
                pods,
                key=lambda p: str(p.metadata.creation_timestamp or "") if p.metadata else "",
            )
            pod_name = newest.metadata.name if newest.metadata else None
            text = self._kube.read_pod_log(namespace, pod_name, 10) if pod_name else None
            if text and text.strip():
                log = ": " + " | ".join(line for line in text.strip().splitlines()[-10:])
        version = request.artifact.version or request.artifact.digest[:19]
        return verdict(
            ErrorType.DEPLOY_FAILED,
            f"The release phase `{' '.join(request.release)}` of {request.service} {version} "
            f"in {request.environment} failed ({why}; Job {name} in namespace {namespace}, "
            f"delete it to run the command again); nothing was deployed{log}",
        )

    # --- resources: references to Secrets that exist -----------------------------------

    def reference_problems(
        self, service: str, environment: str, resources: list[str], env: dict[str, str]
    ) -> list[tuple[str, str, str]]:
        """What of a release's resources does not resolve here, as (field, reference,
        problem): each resource the environment declares or `env:` names must be a Secret
        `{service}-{kind}` in the environment's namespace, with a key per field `env:` uses.
        Nothing of a value is read into the answer."""
        namespace = self._namespace(environment)
        split = resource_env(service, env)
        problems: list[tuple[str, str, str]] = [
            (
                f"env.{name}",
                text,
                "puts a resource placeholder inside a longer value, which a pod cannot take "
                "from a Secret; on Kubernetes use one placeholder as the whole value "
                "(e.g. '{services.postgres.url}')",
            )
            for name, text in sorted(split.composite.items())
        ]
        users: dict[str, list[str]] = {}
        for name, (_, _, kind) in sorted(split.references.items()):
            users.setdefault(kind, []).append(name)
        kinds = sorted({parse_service(r).kind for r in resources} | set(users))
        for kind in kinds:
            secret_name = resource_secret_name(service, kind)
            where = [f"env.{n}" for n in users.get(kind, [])] or ["resources"]
            secret = self._kube.read_secret(namespace, secret_name)
            if secret is None:
                problems.append(
                    (
                        where[0],
                        f"Secret {secret_name}",
                        f"does not exist in namespace {namespace}: on Kubernetes the {kind} "
                        f"resource is a reference to a database that exists, and whoever runs "
                        f"it creates this Secret (keys: {', '.join(ENDPOINT_FIELDS)})",
                    )
                )
                continue
            data = secret.data or {}
            for name, (_, key, ref_kind) in sorted(split.references.items()):
                if ref_kind == kind and key not in data:
                    problems.append(
                        (
                            f"env.{name}",
                            f"Secret {secret_name}",
                            f"has no key {key!r} in namespace {namespace}",
                        )
                    )
        return problems

    def secret_problem(self, ref: SecretRef) -> str | None:
        """Why a pod of this platform cannot take `ref` (it only takes Kubernetes Secrets,
        through `secretKeyRef`), or None."""
        if ref.source == "kubernetes":
            return None
        return (
            f"cannot reach a pod on Kubernetes: the kubernetes platform takes secrets only as "
            f"Kubernetes Secrets (`from: kubernetes`, with `key`), not `from: {ref.source}`"
        )

    def promote(self, request: DeployRequest, heartbeat: Heartbeat) -> DeployResult:
        """Make the slot's version the one everybody gets.

        canary: the stable Deployment takes the canary's digest, then weight 0 and the canary
        scaled to 0. blue/green: the Service selector switches to the slot once it is ready.
        stable (rolling): already serving, nothing to do.
        """
        _secrets_by_reference(request.environment, request.config)
        namespace = self._namespace(request.environment)
        self._fence(namespace, request.service, request.environment, request.fence)
        if request.slot in _BLUE_GREEN:
            return self._promote_blue_green(namespace, request, heartbeat)
        stable_name = deployment_name(request.service, "stable")
        stable = self._require_deployment(namespace, stable_name)
        previous = digest_of_deployment(stable, request.service)
        if request.slot == "stable":
            return self._deploy_result(request, previous, changed=False, slot="stable")

        image = image_reference(request.artifact)
        digest = request.artifact.digest
        container = main_container(stable.spec.template, request.service)
        stable_meta = annotations_of(stable.metadata)
        changed = False
        if (
            container.image != image
            or stable_meta.get(DIGEST) != digest
            or not _runs_config(stable.metadata, request.config, request.env)
        ):
            heartbeat(f"deployment {stable_name}: promote {image}")
            self._kube.patch_deployment(
                namespace,
                stable_name,
                _release_patch(
                    stable.metadata,
                    container.name,
                    request.service,
                    request.artifact,
                    request.config,
                    request.env,
                    (CANARY_PENDING, ROLLBACK_REQUEST),
                ),
            )
            changed = True
        elif CANARY_PENDING in stable_meta:
            self._kube.patch_deployment(
                namespace, stable_name, {"metadata": {"annotations": {CANARY_PENDING: None}}}
            )
        # Stable must serve the new version before the canary's share moves back to it.
        self._wait_for_rollout(namespace, stable_name, request.service, heartbeat)
        changed |= self._set_weight(namespace, request.service, 0)
        changed |= self._scale_to_zero(namespace, deployment_name(request.service, "canary"))
        return self._deploy_result(request, previous, changed=changed, slot="stable")

    def rollback(self, request: RollbackRequest, heartbeat: Heartbeat) -> RollbackResult:
        """Put the environment back on its previous version, like `kubectl rollout undo`.

        Canary weight 0 and the canary scaled to 0; if stable already took the new version
        (promoted, or a rolling deploy), its previous ReplicaSet's pod template is restored.
        Blue/green: the Service goes back to the slot it served before the last promote.

        Another attempt of the same request finds nothing to do; a new request after the
        rollback of an unpromoted canary rolls stable back a revision (see `_request_id`).
        Rolling back twice never swaps back to the version rolled back from.
        """
        namespace = self._namespace(request.environment)
        stable_name = deployment_name(request.service, "stable")
        stable = self._kube.read_deployment(namespace, stable_name)
        if stable is None:
            service = self._kube.read_service(namespace, request.service)
            if service is not None and _selected_slot(service) in _BLUE_GREEN:
                return self._rollback_blue_green(namespace, request, service, heartbeat)
            raise verdict(
                ErrorType.CONFIGURATION,
                f"cannot roll back {request.service} in namespace {namespace}: there is no "
                f"Deployment {stable_name} and no Service {request.service} selecting a "
                "blue/green slot",
            )

        meta = annotations_of(stable.metadata)
        request_id = _request_id(request)
        if meta.get(ROLLBACK_REQUEST) == request_id:
            # Another attempt of a rollback that already did its work (its result was lost).
            # The traffic and the canary were settled before it wrote its id; from here on the
            # environment may have moved on, and a stale attempt must not touch it.
            self._wait_for_rollout(namespace, stable_name, request.service, heartbeat)
            return RollbackResult(
                environment=request.environment,
                restored_digest=digest_of_deployment(stable, request.service),
                changed=False,
            )

        changed = self._set_weight(namespace, request.service, 0)
        changed |= self._scale_to_zero(namespace, deployment_name(request.service, "canary"))
        pending = meta.get(CANARY_PENDING)
        if pending is not None:
            # Stable never took the canary's version: it is the previous version already. The
            # marker has done its job once the canary is down; left in place it would turn
            # every later rollback of this environment into a no-op.
            heartbeat(f"deployment {stable_name}: canary {pending} rolled back")
            self._kube.patch_deployment(
                namespace,
                stable_name,
                {
                    "metadata": {
                        "annotations": {
                            CANARY_PENDING: None,
                            CANARY_ROLLED_BACK: pending,
                            ROLLBACK_REQUEST: request_id,
                        }
                    }
                },
            )
            return RollbackResult(
                environment=request.environment,
                restored_digest=digest_of_deployment(stable, request.service),
                changed=changed,
            )
        restored, undone = self._undo(namespace, stable, request.service, heartbeat, request_id)
        return RollbackResult(
            environment=request.environment, restored_digest=restored, changed=changed or undone
        )

    def check(self, request: HttpCheckRequest) -> HttpCheckReport:
        """GET each path through the environment's ingress (or one slot) and compare.

        An unreachable endpoint is a failed check, reported as data, not an exception.
        """
        base_url, headers = self._probe_target(request)
        return run_http_checks(base_url, request.checks, self._http_timeout_s, headers)

    def endpoint(self, request: EndpointRequest) -> Endpoint:
        """The environment's ingress URL (SLIPWAY_KUBE_INGRESS_URLS), with the canary header
        for the canary slot: where checks, live tests and generated load go."""
        base_url, headers = self._probe_target(
            HttpCheckRequest(
                service=request.service,
                environment=request.environment,
                checks=[],
                slot=request.slot,
            )
        )
        return Endpoint(base_url=base_url.rstrip("/"), headers=headers)

    # --- TrafficRouter -------------------------------------------------------------------

    def set_weight(self, request: WeightRequest) -> None:
        """Split the VirtualService's default route `100 - w` / `w` (stable / canary)."""
        namespace = self._namespace(request.environment)
        self._fence(namespace, request.service, request.environment, request.fence)
        self._set_weight(namespace, request.service, request.canary_weight)

    # --- fencing and restore -------------------------------------------------------------

    def fence(self, request: FenceRequest) -> ReleaseSpec | None:
        namespace = self._namespace(request.environment)
        self._fence(namespace, request.service, request.environment, request.token)
        name = deployment_name(request.service, "stable")
        service = self._kube.read_service(namespace, request.service)
        if service is not None and _selected_slot(service) in _BLUE_GREEN:
            name = deployment_name(request.service, _selected_slot(service) or "blue")
        serving = self._kube.read_deployment(namespace, name)
        if serving is None or replicas_of(serving) == 0:
            return None
        digest = digest_of_deployment(serving, request.service)
        if digest is None:
            return None
        image = main_container(serving.spec.template, request.service).image or ""
        version = annotations_of(serving.metadata).get(VERSION, "")
        return ReleaseSpec(
            artifact=Artifact(digest=digest, uri=image, kind="image", version=version),
            config=config_of(serving.metadata),
            env=env_of(serving.metadata),
        )

    def secrets(self) -> KubernetesSecrets:
        """The deployer's `from: kubernetes` references: Secrets in each environment's
        namespace (checked and versioned at deploy; pods read the values themselves)."""
        return KubernetesSecrets(self._kube.read_secret, self._namespace)

    def _fence(self, namespace: str, service: str, environment: str, token: int) -> None:
        """Check `token` against the Service's fencing annotation and raise it by
        compare-and-swap. Kubernetes has no transaction across objects, so writers call this
        right before each write: a deposed holder is refused within one API round trip."""
        found = self._kube.read_service(namespace, service)
        meta = annotations_of(found.metadata) if found is not None else {}
        try:
            current = int(meta.get(FENCE_TOKEN, "0"))
        except ValueError:
            current = 0
        highest = check_fence(current, token, service, environment)
        if highest == current:
            return
        if found is None or found.metadata is None:
            raise verdict(
                ErrorType.CONFIGURATION,
                f"Service {service} does not exist in namespace {namespace}; it holds the "
                "environment lease's fencing token, so every environment needs one",
            )
        # resourceVersion makes it a compare-and-swap: a concurrent writer's 409 is retried.
        self._kube.patch_service(
            namespace,
            service,
            {
                "metadata": {
                    "resourceVersion": found.metadata.resource_version,
                    "annotations": {FENCE_TOKEN: str(highest)},
                }
            },
        )

    def restore(self, request: RestoreRequest, heartbeat: Heartbeat) -> RestoreResult:
        """Weight 0 and the canary scaled to 0, then the serving Deployment (stable, or the
        blue/green colour the Service selects) on the target's image, by digest. Nothing is
        written where the target already serves: restoring twice is a no-op."""
        service, env = request.service, request.environment
        namespace = self._namespace(env)
        self._fence(namespace, service, env, request.fence)
        changed = self._set_weight(namespace, service, 0)
        changed |= self._scale_to_zero(namespace, deployment_name(service, "canary"))
        stable_name = deployment_name(service, "stable")
        stable = self._kube.read_deployment(namespace, stable_name)
        if stable is None:
            selected = self._kube.read_service(namespace, service)
            if selected is not None and _selected_slot(selected) in _BLUE_GREEN:
                return self._restore_blue_green(namespace, request, selected, heartbeat, changed)
            raise verdict(
                ErrorType.CONFIGURATION,
                f"cannot restore {service} in namespace {namespace}: there is no Deployment "
                f"{stable_name} and no Service {service} selecting a blue/green slot",
            )
        meta = annotations_of(stable.metadata)
        if CANARY_PENDING in meta:
            self._kube.patch_deployment(
                namespace, stable_name, {"metadata": {"annotations": {CANARY_PENDING: None}}}
            )
        if request.target is None:
            return RestoreResult(
                environment=env,
                restored_digest=digest_of_deployment(stable, service),
                changed=changed,
            )
        changed |= self._pin(namespace, stable_name, stable, request, heartbeat)
        return RestoreResult(
            environment=env, restored_digest=request.target.digest, changed=changed
        )

    def _pin(
        self,
        namespace: str,
        name: str,
        deployment: V1Deployment,
        request: RestoreRequest,
        heartbeat: Heartbeat,
    ) -> bool:
        """Run the restore target in Deployment `name` (scaled up if it was at 0)."""
        assert request.target is not None
        _secrets_by_reference(request.environment, request.target.config)
        image = image_reference(request.target.artifact)
        digest = request.target.artifact.digest
        config, env = request.target.config, request.target.env
        container = main_container(deployment.spec.template, request.service)
        body: dict[str, Any] = {}
        if container.image != image or not _runs_config(deployment.metadata, config, env):
            body = _release_patch(
                deployment.metadata,
                container.name,
                request.service,
                request.target.artifact,
                config,
                env,
                (ROLLBACK_REQUEST,),
            )
        elif annotations_of(deployment.metadata).get(DIGEST) != digest:
            # Already running the target: record the digest, without touching the template
            # (which would restart every pod).
            body = {"metadata": {"annotations": {DIGEST: digest}}}
        if replicas_of(deployment) == 0:
            body.setdefault("spec", {})["replicas"] = 1
        if body:
            heartbeat(f"deployment {name}: restore {image}")
            self._fence(namespace, request.service, request.environment, request.fence)
            self._kube.patch_deployment(namespace, name, body)
        self._wait_for_rollout(namespace, name, request.service, heartbeat)
        return bool(body)

    def _restore_blue_green(
        self,
        namespace: str,
        request: RestoreRequest,
        service: V1Service,
        heartbeat: Heartbeat,
        changed: bool,
    ) -> RestoreResult:
        active = _selected_slot(service)
        target = request.target
        if target is None:
            current = self._kube.read_deployment(
                namespace, deployment_name(request.service, active or "blue")
            )
            digest = digest_of_deployment(current, request.service) if current else None
            return RestoreResult(
                environment=request.environment, restored_digest=digest, changed=changed
            )
        image = image_reference(target.artifact)
        found: dict[Slot, V1Deployment] = {}
        for slot in _BLUE_GREEN:
            existing = self._kube.read_deployment(namespace, deployment_name(request.service, slot))
            if existing is not None:
                found[slot] = existing
        running = [
            c
            for c, d in found.items()
            if main_container(d.spec.template, request.service).image == image
            and _runs_config(d.metadata, target.config, target.env)
        ]
        colour: Slot = (
            active
            if active in running and active is not None
            else (running[0] if running else ("green" if active == "blue" else "blue"))
        )
        deployment = found.get(colour) or self._require_deployment(
            namespace, deployment_name(request.service, colour)
        )
        changed |= self._pin(
            namespace, deployment_name(request.service, colour), deployment, request, heartbeat
        )
        if active != colour:
            heartbeat(f"service {request.service}: switch back to {colour}")
            self._fence(namespace, request.service, request.environment, request.fence)
            self._kube.patch_service(
                namespace,
                request.service,
                {
                    "metadata": {"annotations": {PREVIOUS_SLOT: None, ROLLED_BACK_FROM: active}},
                    "spec": {"selector": {"slot": colour}},
                },
            )
            changed = True
        return RestoreResult(
            environment=request.environment, restored_digest=target.digest, changed=changed
        )

    def verify_weight(self, request: WeightRequest) -> bool:
        """Read the VirtualService back: does the canary get exactly the requested share?"""
        namespace = self._namespace(request.environment)
        name = self._virtual_service(request.service)
        found = self._kube.read_virtual_service(namespace, name)
        if found is None:
            return request.canary_weight == 0
        try:
            routes = parse_http_routes(_spec(found).get("http"))
            return canary_weight(routes, request.service) == request.canary_weight
        except RoutingError:
            return False

    # --- internals -----------------------------------------------------------------------

    def _set_weight(self, namespace: str, service: str, weight: int) -> bool:
        name = self._virtual_service(service)
        found = self._kube.read_virtual_service(namespace, name)
        if found is None:
            if weight == 0:
                # No VirtualService, no canary traffic: weight 0 already holds (rolling and
                # blue/green environments, rollback of any environment).
                return False
            raise verdict(
                ErrorType.CONFIGURATION,
                f"VirtualService {name} in namespace {namespace} does not exist; canary "
                f"weights for {service} need one (a header route and a stable/canary split)",
            )
        try:
            routes = parse_http_routes(_spec(found).get("http"))
            if canary_weight(routes, service) == weight:
                return False
            http = with_canary_weight(routes, service, weight)
        except RoutingError as e:
            raise verdict(
                ErrorType.CONFIGURATION, f"VirtualService {name} in namespace {namespace}: {e}"
            ) from e
        metadata = found.get("metadata")
        version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
        body: dict[str, Any] = {"spec": {"http": http}}
        if isinstance(version, str):
            # Optimistic concurrency: a concurrent edit makes this a 409, retried by Temporal
            # on a fresh read, instead of silently overwriting the other writer's routes.
            body["metadata"] = {"resourceVersion": version}
        self._kube.patch_virtual_service(namespace, name, body)
        return True

    def _wait_for_rollout(
        self, namespace: str, name: str, service: str, heartbeat: Heartbeat
    ) -> V1Deployment:
        deadline = time.monotonic() + self._deadline_s
        # Bounded twice over: by the clock and by the number of polls the deadline allows.
        for _ in range(int(self._deadline_s / self._poll_s) + 2):
            deployment = self._require_deployment(namespace, name)
            state = rollout_state(deployment)
            if state.done:
                heartbeat(f"deployment {name}: {state.summary}")
                return deployment
            if state.stalled is not None:
                raise self._rollout_failed(
                    namespace, deployment, service, f"ProgressDeadlineExceeded: {state.stalled}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            heartbeat(f"deployment {name}: {state.summary}")
            time.sleep(min(self._poll_s, remaining))
        deployment = self._require_deployment(namespace, name)
        raise self._rollout_failed(
            namespace,
            deployment,
            service,
            f"not rolled out within {self._deadline_s:g}s ({rollout_state(deployment).summary})",
        )

    def _rollout_failed(
        self, namespace: str, deployment: V1Deployment, service: str, reason: str
    ) -> Exception:
        name = deployment.metadata.name if deployment.metadata else "?"
        image = main_container(deployment.spec.template, service).image
        pods = self._kube.list_pods(namespace, label_selector(deployment.spec.selector))
        problems = pod_problems(pods)
        pod_part = "; ".join(problems) if problems else "no pod reports a waiting reason"
        return verdict(
            ErrorType.DEPLOY_FAILED,
            f"Deployment {name} in namespace {namespace} did not roll out {image}: {reason}. "
            f"Pods: {pod_part}",
        )

    def _undo(
        self,
        namespace: str,
        stable: V1Deployment,
        service: str,
        heartbeat: Heartbeat,
        request_id: str,
    ) -> tuple[str | None, bool]:
        """Restore the previous ReplicaSet's template into the Deployment; (digest, changed)."""
        name = stable.metadata.name if stable.metadata and stable.metadata.name else "?"
        owned = [
            rs
            for rs in self._kube.list_replica_sets(namespace, label_selector(stable.spec.selector))
            if owned_by(rs, stable) and rs.spec is not None and rs.spec.template is not None
        ]
        current = next(
            (
                rs
                for rs in owned
                if rs.spec is not None
                and rs.spec.template is not None
                and same_template(self._api_client, rs.spec.template, stable.spec.template)
            ),
            None,
        )
        meta = annotations_of(stable.metadata)
        current_hash = (
            _template_hash(current.metadata.labels) if current and current.metadata else None
        )
        if current_hash is not None and meta.get(ROLLED_BACK_TO) == current_hash:
            # Already rolled back, and nothing was deployed since: nothing to undo.
            self._wait_for_rollout(namespace, name, service, heartbeat)
            return digest_of_deployment(stable, service), False

        # Until the controller has made a ReplicaSet for the newest template, that template
        # is newer than every ReplicaSet.
        current_revision = (
            revision(current.metadata)
            if current
            else max((revision(rs.metadata) for rs in owned), default=0) + 1
        )
        older = [
            rs for rs in owned if rs is not current and revision(rs.metadata) < current_revision
        ]
        if not older:
            return digest_of_deployment(stable, service), False
        target = max(older, key=lambda rs: revision(rs.metadata))
        template = target.spec.template if target.spec is not None else None
        if template is None:  # filtered out above; this narrows the type
            return digest_of_deployment(stable, service), False
        target_hash = _template_hash(target.metadata.labels if target.metadata else None) or ""
        patch: list[dict[str, Any]] = []
        if stable.metadata is None or stable.metadata.annotations is None:
            patch.append({"op": "add", "path": "/metadata/annotations", "value": {}})
        patch.append(
            {
                "op": "replace",
                "path": "/spec/template",
                "value": template_json(self._api_client, template),
            }
        )
        restored = digest_of_template(template, service)
        for key, value in (
            (ROLLED_BACK_FROM, str(current_revision)),
            (ROLLED_BACK_TO, target_hash),
            (ROLLBACK_REQUEST, request_id),
            (DIGEST, restored),
        ):
            if value is not None:
                patch.append({"op": "add", "path": _annotation_path(key), "value": value})
        # The bad version's labels must not stay on the Deployment it no longer runs.
        stale = [VERSION] if restored is not None else [VERSION, DIGEST]
        patch += [{"op": "remove", "path": _annotation_path(k)} for k in stale if k in meta]
        heartbeat(f"deployment {name}: roll back to revision {revision(target.metadata)}")
        self._kube.patch_deployment(namespace, name, patch)
        self._wait_for_rollout(namespace, name, service, heartbeat)
        return restored, True

    def _promote_blue_green(
        self, namespace: str, request: DeployRequest, heartbeat: Heartbeat
    ) -> DeployResult:
        name = deployment_name(request.service, request.slot)
        preview = self._require_deployment(namespace, name)
        running = main_container(preview.spec.template, request.service).image
        image = image_reference(request.artifact)
        if running != image:
            raise verdict(
                ErrorType.DEPLOY_FAILED,
                f"cannot promote {request.slot} of {request.service} in namespace {namespace}: "
                f"Deployment {name} runs {running}, not {image}; deploy it to the slot first",
            )
        self._wait_for_rollout(namespace, name, request.service, heartbeat)
        service = self._require_service(namespace, request.service)
        active = _selected_slot(service)
        previous: str | None = None
        if active in _BLUE_GREEN and active != request.slot:
            old = self._kube.read_deployment(namespace, deployment_name(request.service, active))
            previous = digest_of_deployment(old, request.service) if old else None
        if active == request.slot:
            return self._deploy_result(request, request.artifact.digest, changed=False)
        heartbeat(f"service {request.service}: switch to {request.slot}")
        self._kube.patch_service(
            namespace,
            request.service,
            {
                "metadata": {"annotations": {PREVIOUS_SLOT: active, ROLLED_BACK_FROM: None}},
                "spec": {"selector": {"slot": request.slot}},
            },
        )
        return self._deploy_result(request, previous, changed=True)

    def _rollback_blue_green(
        self,
        namespace: str,
        request: RollbackRequest,
        service: V1Service,
        heartbeat: Heartbeat,
    ) -> RollbackResult:
        active = _selected_slot(service)
        back = annotations_of(service.metadata).get(PREVIOUS_SLOT)
        changed = self._set_weight(namespace, request.service, 0)
        if back not in _BLUE_GREEN or back == active or active is None:
            # No promote to undo (never promoted, or already rolled back).
            current = self._kube.read_deployment(
                namespace, deployment_name(request.service, active or "blue")
            )
            digest = digest_of_deployment(current, request.service) if current else None
            return RollbackResult(
                environment=request.environment, restored_digest=digest, changed=changed
            )
        slot: Slot = "blue" if back == "blue" else "green"
        name = deployment_name(request.service, slot)
        target = self._require_deployment(namespace, name)
        if replicas_of(target) == 0:
            live = self._kube.read_deployment(namespace, deployment_name(request.service, active))
            replicas = max(replicas_of(live), 1) if live else 1
            self._kube.patch_deployment(namespace, name, {"spec": {"replicas": replicas}})
        self._wait_for_rollout(namespace, name, request.service, heartbeat)
        heartbeat(f"service {request.service}: switch back to {slot}")
        self._kube.patch_service(
            namespace,
            request.service,
            {
                "metadata": {"annotations": {PREVIOUS_SLOT: None, ROLLED_BACK_FROM: active}},
                "spec": {"selector": {"slot": slot}},
            },
        )
        return RollbackResult(
            environment=request.environment,
            restored_digest=digest_of_deployment(target, request.service),
            changed=True,
        )

    def _mark_canary_pending(self, namespace: str, service: str, digest: str) -> None:
        name = deployment_name(service, "stable")
        stable = self._kube.read_deployment(namespace, name)
        if stable is not None and annotations_of(stable.metadata).get(CANARY_PENDING) != digest:
            self._kube.patch_deployment(
                namespace, name, {"metadata": {"annotations": {CANARY_PENDING: digest}}}
            )

    def _forget_previous_slot(self, namespace: str, service: str, slot: Slot) -> None:
        # Deploying a new preview commits the last promote: from now on a rollback must not
        # switch back to a slot that is being replaced.
        found = self._require_service(namespace, service)
        if _selected_slot(found) != slot and PREVIOUS_SLOT in annotations_of(found.metadata):
            self._kube.patch_service(
                namespace, service, {"metadata": {"annotations": {PREVIOUS_SLOT: None}}}
            )

    def _scale_to_zero(self, namespace: str, name: str) -> bool:
        found = self._kube.read_deployment(namespace, name)
        if found is None or replicas_of(found) == 0:
            return False
        self._kube.patch_deployment(namespace, name, {"spec": {"replicas": 0}})
        return True

    def _require_deployment(self, namespace: str, name: str) -> V1Deployment:
        found = self._kube.read_deployment(namespace, name)
        if found is None:
            raise verdict(
                ErrorType.CONFIGURATION,
                f"Deployment {name} does not exist in namespace {namespace}; the service's "
                "manifests must create one Deployment per slot",
            )
        return found

    def _require_service(self, namespace: str, name: str) -> V1Service:
        found = self._kube.read_service(namespace, name)
        if found is None:
            raise verdict(
                ErrorType.CONFIGURATION,
                f"Service {name} does not exist in namespace {namespace}; blue/green needs it",
            )
        return found

    def _deploy_result(
        self,
        request: DeployRequest,
        previous: str | None,
        *,
        changed: bool,
        slot: Slot | None = None,
        phase: str = "",
    ) -> DeployResult:
        return DeployResult(
            environment=request.environment,
            slot=slot or request.slot,
            digest=request.release_digest,
            previous_digest=previous,
            endpoint=_lookup(self._base_url_for, request.environment) or "",
            changed=changed,
            release_phase=phase,
        )

    def _probe_target(self, request: HttpCheckRequest) -> tuple[str, dict[str, str]]:
        if request.slot is not None:
            direct = self._slot_url(request.environment, request.slot)
            if direct:
                return direct, {}
        base = _lookup(self._base_url_for, request.environment)
        if not base:
            raise verdict(
                ErrorType.CONFIGURATION,
                f"no ingress URL configured for environment {request.environment!r} "
                "(KubernetesPlatform base_url_for)",
            )
        if request.slot is None or (request.slot == "stable" and not self._has_canary(request)):
            return base, {}
        if request.slot == "canary":
            # The VirtualService's header route always sends `canary: true` to the canary.
            return base, {"canary": "true"}
        if request.slot in _BLUE_GREEN and self._is_live(request):
            return base, {}
        raise verdict(
            ErrorType.CONFIGURATION,
            f"no URL configured for slot {request.slot} of environment "
            f"{request.environment!r} (KubernetesPlatform slot_url_for "
            f"'{request.environment}/{request.slot}')",
        )

    def _is_live(self, request: HttpCheckRequest) -> bool:
        # The blue/green slot the Service selects is what the ingress serves.
        namespace = self._namespace(request.environment)
        found = self._kube.read_service(namespace, request.service)
        return found is not None and _selected_slot(found) == request.slot

    def _has_canary(self, request: HttpCheckRequest) -> bool:
        # Through the ingress, the stable slot is reached alone only while the canary gets
        # no traffic; otherwise a slot URL is needed.
        namespace = self._namespace(request.environment)
        found = self._kube.read_virtual_service(namespace, self._virtual_service(request.service))
        if found is None:
            return False
        try:
            return canary_weight(parse_http_routes(_spec(found).get("http")), request.service) > 0
        except RoutingError:
            return True

    def _slot_url(self, environment: str, slot: Slot) -> str | None:
        source = self._slot_url_for
        if source is None:
            return None
        if isinstance(source, Mapping):
            return source.get(f"{environment}/{slot}")
        return source(environment, slot)

    def _namespace(self, environment: str) -> str:
        namespace = _lookup(self._namespace_for, environment)
        if not namespace:
            raise verdict(
                ErrorType.CONFIGURATION,
                f"no Kubernetes namespace configured for environment {environment!r}",
            )
        return namespace

    def _virtual_service(self, service: str) -> str:
        return _lookup(self._virtual_service_for, service) or service


def _secrets_by_reference(environment: str, config: ReleaseConfig) -> None:
    """Pods take secrets from Kubernetes Secrets (`valueFrom.secretKeyRef`); this platform
    never writes a value into a Deployment, so other sources are refused before any change."""
    for name, ref in sorted(config.secrets.items()):
        if ref.source != "kubernetes":
            raise verdict(
                ErrorType.CONFIGURATION,
                f"environment {environment!r}, field 'secrets.{name}': the kubernetes platform "
                f"takes secrets only as Kubernetes Secrets (`from: kubernetes`, with `key`), "
                f"not `from: {ref.source}`",
            )


def _one_sentence(environment: str, problems: list[tuple[str, str, str]]) -> str:
    field, reference, problem = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"environment {environment!r}, field {field!r}: {reference} {problem}{more}"


def _runs_release(deployment: V1Deployment, request: DeployRequest) -> bool:
    """Whether the Deployment already runs exactly `request`'s release."""
    return annotations_of(deployment.metadata).get(DIGEST) == request.artifact.digest and (
        _runs_config(deployment.metadata, request.config, request.env)
    )


def _runs_config(meta: V1ObjectMeta | None, config: ReleaseConfig, env: dict[str, str]) -> bool:
    """Whether a Deployment (or pod template) was given exactly this configuration and `env:`."""
    return config_of(meta) == config and env_of(meta) == env


def _configured(
    meta: V1ObjectMeta | None, config: ReleaseConfig, env: dict[str, str]
) -> dict[str, str | None]:
    """The CONFIG and ENV annotations' patch from what `meta` records to the new release's."""
    return {
        **config_annotations(config_of(meta), config),
        **env_annotations(env_of(meta), env),
    }


def _env_patch(
    meta: V1ObjectMeta | None, config: ReleaseConfig, env: dict[str, str], service: str
) -> dict[str, Any]:
    """The main container's `env` patch from what `meta` records to the new release's."""
    return container_env(config_of(meta), config, env_of(meta), env, service)


def _release_patch(
    meta: V1ObjectMeta | None,
    container: str,
    service: str,
    artifact: Artifact,
    config: ReleaseConfig,
    env: dict[str, str],
    stale: tuple[str, ...],
) -> dict[str, Any]:
    """The Deployment patch that makes it run `artifact` with `config` and `env` (`meta`: what
    it records now): the main container's image and env, and the annotations that record the
    release, with the `stale` ones removed (they described the release it replaces)."""
    configured = _configured(meta, config, env)
    annotations = {
        DIGEST: artifact.digest,
        VERSION: artifact.version,
        **dict.fromkeys(stale),
        **configured,
    }
    main = {"name": container, "image": image_reference(artifact)}
    return {
        "metadata": {"annotations": annotations},
        "spec": {
            "template": {
                "metadata": {"annotations": {DIGEST: artifact.digest, **configured}},
                "spec": {"containers": [{**main, **_env_patch(meta, config, env, service)}]},
            }
        },
    }


def _request_id(request: RollbackRequest) -> str:
    """What every attempt of one rollback request shares and no other request has.

    Temporal retries an activity with the same workflow run, activity id and first scheduled
    time, so that triple is the id; a later rollback (an operator's, another run's) is another
    activity execution. `RollbackRequest` carries no id of its own, so outside an activity
    (scripts, tests) the request itself stands in: the same reason again reads as a retry.
    """
    if activity.in_activity():
        info = activity.info()
        return (
            f"{info.workflow_id or '-'}/{info.workflow_run_id or '-'}/{info.activity_id}"
            f"@{info.scheduled_time.isoformat()}"
        )
    return f"reason:{request.reason}"


def _lookup(source: Lookup | None, key: str) -> str | None:
    if source is None:
        return None
    if isinstance(source, Mapping):
        return source.get(key)
    return source(key)


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _selected_slot(service: V1Service) -> Slot | None:
    selector = service.spec.selector if service.spec is not None else None
    value = (selector or {}).get("slot")
    slots: dict[str | None, Slot] = {
        "stable": "stable",
        "canary": "canary",
        "blue": "blue",
        "green": "green",
    }
    return slots.get(value)


def _template_hash(labels: dict[str, str] | None) -> str | None:
    return (labels or {}).get(TEMPLATE_HASH_LABEL)


def _annotation_path(key: str) -> str:
    # JSON Pointer escaping (RFC 6901): '~' → '~0', '/' → '~1'.
    return "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
