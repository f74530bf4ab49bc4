"""Deployments, traffic weights, promotion, rollback and HTTP checks of an environment."""

from __future__ import annotations

from temporalio import activity

from activities.helpers.blocking import run_blocking
from activities.helpers.bundles import BundledTarget
from activities.helpers.secrets import SecretResolver
from activities.wiring.backends import (
    DeployTarget,
    Heartbeat,
    ReferenceChecker,
    ReferenceCheckers,
    TrafficRouter,
)
from activities.wiring.observability import activity_log
from contracts.activity import (
    ActivityName,
    DeployRequest,
    DeployResult,
    Endpoint,
    EndpointRequest,
    FenceRequest,
    HttpCheckReport,
    HttpCheckRequest,
    ReferenceCheckRequest,
    ReferenceCheckResult,
    ReferenceProblem,
    ReleaseReferences,
    ReleaseSpec,
    RestoreRequest,
    RestoreResult,
    RollbackRequest,
    RollbackResult,
    WeightRequest,
)
from contracts.definition.service_templates import parse_service, template_references


class WeightNotAppliedError(RuntimeError):
    """The router did not report the weight we set; retryable (the router may be reloading)."""


class DeployActivities:
    def __init__(
        self,
        target: DeployTarget,
        router: TrafficRouter,
        secrets: SecretResolver | None = None,
    ) -> None:
        # Bundles (several deployables per run) fan out here, above every platform.
        bundled = BundledTarget(target, router)
        self._platform = target
        self._target: DeployTarget = bundled
        self._router: TrafficRouter = bundled
        self._secrets = secrets or SecretResolver({})

    def _pinned(self, request: DeployRequest) -> DeployRequest:
        """Every secret reference resolved (its version pinned) before anything changes: a
        reference that does not resolve fails here, naming the environment and field."""
        if not request.config.secrets and not any(
            c.secrets for c in request.config.components.values()
        ):
            return request
        config = self._secrets.pin(request.config, request.environment)
        return request.model_copy(update={"config": config})

    @activity.defn(name=ActivityName.CHECK_REFERENCES)
    async def check_references(self, request: ReferenceCheckRequest) -> ReferenceCheckResult:
        """At a run's start: every secret reference and resource of the releases it will
        deploy, looked up on the platform in use (the local store, AWS Secrets Manager,
        Kubernetes Secrets; resources as the platform takes them). Reports each that does not
        resolve, naming the environment and the definition's field; never a value."""
        activity_log(releases=len(request.releases)).info("check_references")

        def run(progress: Heartbeat) -> ReferenceCheckResult:
            checked = 0
            problems: list[ReferenceProblem] = []
            for release in request.releases:
                progress(f"references of {release.service} in {release.environment}")
                found, count = self._release_problems(release)
                checked += count
                problems += found
            return ReferenceCheckResult(checked=checked, problems=problems)

        return await run_blocking(run)

    def _release_problems(self, release: ReleaseReferences) -> tuple[list[ReferenceProblem], int]:
        env = release.environment
        platform = self._reference_checker(env)
        problems: list[ReferenceProblem] = []
        for field, ref in sorted(release.secrets.items()):
            why = platform.secret_problem(ref) if platform is not None else None
            why = why or self._secrets.problem(ref, env)
            if why:
                problems.append(
                    ReferenceProblem(
                        environment=env, field=field, reference=f"secret {ref.label()}", problem=why
                    )
                )
        checked = len(release.secrets)
        if platform is None:
            return problems, checked
        for field, reference, why in platform.reference_problems(
            release.service, env, list(release.resources), dict(release.env)
        ):
            where = (
                f"{release.env_field}.{field.removeprefix('env.')}"
                if field.startswith("env.")
                else release.resources_field or field
            )
            problems.append(
                ReferenceProblem(environment=env, field=where, reference=reference, problem=why)
            )
        kinds = {k for v in release.env.values() for k, _ in template_references(v)}
        return problems, checked + len(kinds | {parse_service(r).kind for r in release.resources})

    def _reference_checker(self, environment: str) -> ReferenceChecker | None:
        """The platform of `environment`, when it takes references to what exists."""
        if isinstance(self._platform, ReferenceChecker):
            return self._platform
        if isinstance(self._platform, ReferenceCheckers):
            return self._platform.reference_checker(environment)
        return None

    @activity.defn(name=ActivityName.DEPLOY)
    async def deploy(self, request: DeployRequest) -> DeployResult:
        activity_log(
            environment=request.environment, slot=request.slot, digest=request.artifact.digest
        ).info("deploy")

        def run(progress: Heartbeat) -> DeployResult:
            pinned = self._pinned(request)
            result = self._target.deploy(pinned, progress)
            return result.model_copy(update={"config": pinned.config})

        return await run_blocking(run)

    @activity.defn(name=ActivityName.PROMOTE)
    async def promote(self, request: DeployRequest) -> DeployResult:
        activity_log(environment=request.environment, digest=request.artifact.digest).info(
            "promote"
        )

        def run(progress: Heartbeat) -> DeployResult:
            pinned = self._pinned(request)
            result = self._target.promote(pinned, progress)
            return result.model_copy(update={"config": pinned.config})

        return await run_blocking(run)

    @activity.defn(name=ActivityName.SET_WEIGHT)
    async def set_weight(self, request: WeightRequest) -> None:
        activity_log(environment=request.environment, weight=request.canary_weight).info(
            "set_weight"
        )

        def apply(_progress: object) -> None:
            self._router.set_weight(request)
            if not self._router.verify_weight(request):
                raise WeightNotAppliedError(
                    f"router for {request.environment!r} does not show canary weight "
                    f"{request.canary_weight}% after setting it"
                )

        await run_blocking(apply)

    @activity.defn(name=ActivityName.FENCE)
    async def fence(self, request: FenceRequest) -> ReleaseSpec | None:
        activity_log(environment=request.environment, token=request.token).info("fence")
        return await run_blocking(lambda _progress: self._target.fence(request))

    @activity.defn(name=ActivityName.RESTORE)
    async def restore(self, request: RestoreRequest) -> RestoreResult:
        target = request.target.digest if request.target else None
        activity_log(environment=request.environment, digest=target, reason=request.reason).warning(
            "restore"
        )

        def run(progress: Heartbeat) -> RestoreResult:
            if request.target is not None:
                # The recorded versions must still resolve before anything is taken away.
                self._secrets.pin(request.target.config, request.environment)
            return self._target.restore(request, progress)

        return await run_blocking(run)

    @activity.defn(name=ActivityName.ROLLBACK)
    async def rollback(self, request: RollbackRequest) -> RollbackResult:
        """Legacy: the rollback of runs started before environment leases."""
        activity_log(environment=request.environment, reason=request.reason).warning("rollback")

        def undo(progress: object) -> RollbackResult:
            # Traffic first: users stop seeing the bad version before anything restarts.
            self._router.set_weight(
                WeightRequest(
                    service=request.service, environment=request.environment, canary_weight=0
                )
            )
            return self._target.rollback(request, lambda note: None)

        return await run_blocking(undo)

    @activity.defn(name=ActivityName.HTTP_CHECK)
    async def http_check(self, request: HttpCheckRequest) -> HttpCheckReport:
        activity_log(environment=request.environment, checks=len(request.checks)).info("http_check")
        return await run_blocking(lambda _progress: self._target.check(request))

    @activity.defn(name=ActivityName.RESOLVE_ENDPOINT)
    async def resolve_endpoint(self, request: EndpointRequest) -> Endpoint:
        """Where the service answers in the environment, for the runner's live tests: the
        platform's knowledge (Traefik's entrypoint, the ingress URL), never a credential."""
        return await run_blocking(lambda _progress: self._target.endpoint(request))
