"""KubernetesPlatform against the in-process fake API server (tests/fakes/kube_api.py).

No Kubernetes API server can be installed here; the fake speaks only the endpoints the
platform calls, and every test asserts the platform called nothing else.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal

import pytest
from kubernetes.client import AppsV1Api
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.deploy import DeployActivities
from activities.platforms.kubernetes import KubernetesPlatform, load_api_client
from activities.platforms.kubernetes._api import KubernetesApiError
from activities.platforms.kubernetes._objects import (
    CANARY_PENDING,
    CANARY_ROLLED_BACK,
    DIGEST,
    PREVIOUS_SLOT,
    REVISION,
    ROLLBACK_REQUEST,
    ROLLED_BACK_FROM,
    image_reference,
)
from activities.wiring.backends import DeployTarget, TrafficRouter
from contracts.activity import (
    Artifact,
    DeployRequest,
    FenceRequest,
    HttpCheck,
    HttpCheckRequest,
    RestoreRequest,
    RollbackRequest,
    RollbackResult,
    Slot,
    WeightRequest,
)
from contracts.errors import ErrorType
from tests.fakes.kube_api import (
    FakeKubeApi,
    RolloutBehaviour,
    blue_green_environment,
    canary_environment,
    make_deployment,
    make_service,
)
from tests.support.stub_http import serving

SERVICE = "heal7"
PROD, STAGING, DEV = "production", "staging", "development"
PROD_NS, STAGING_NS, DEV_NS = "heal7-prod", "heal7-staging", "heal7-dev"


Strategy = Literal["rolling", "blue_green", "canary"]


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def artifact(n: int) -> Artifact:
    return Artifact(
        digest=digest(n),
        uri=f"registry.example/heal7@{digest(n)}",
        kind="image",
        version=f"v{n}",
    )


def deploy_request(n: int, slot: Slot, environment: str = PROD) -> DeployRequest:
    strategies: dict[Slot, Strategy] = {
        "stable": "rolling",
        "canary": "canary",
        "blue": "blue_green",
        "green": "blue_green",
    }
    return DeployRequest(
        service=SERVICE,
        environment=environment,
        slot=slot,
        artifact=artifact(n),
        strategy=strategies[slot],
    )


def weight(w: int, environment: str = PROD) -> WeightRequest:
    return WeightRequest(service=SERVICE, environment=environment, canary_weight=w)


def rollback_request(environment: str = PROD, reason: str = "test") -> RollbackRequest:
    return RollbackRequest(service=SERVICE, environment=environment, reason=reason)


def image(fake: FakeKubeApi, namespace: str, name: str) -> str | None:
    template = fake.deployment(namespace, name).spec.template
    assert template.spec is not None
    return template.spec.containers[0].image


def default_route(fake: FakeKubeApi) -> list[dict[str, Any]]:
    http = fake.virtual_service(PROD_NS, SERVICE)["spec"]["http"]
    route: list[dict[str, Any]] = http[-1]["route"]
    return route


def stable_annotations(fake: FakeKubeApi, namespace: str = PROD_NS) -> dict[str, str]:
    meta = fake.deployment(namespace, "heal7-stable").metadata
    assert meta is not None
    return dict(meta.annotations or {})


def selected_slot(fake: FakeKubeApi, namespace: str) -> str | None:
    spec = fake.service(namespace, SERVICE).spec
    return (spec.selector or {}).get("slot") if spec is not None else None


class Notes(list[str]):
    """The heartbeat: records every progress note."""

    def __call__(self, note: str) -> None:
        self.append(note)


@pytest.fixture
def fake() -> Iterator[FakeKubeApi]:
    with FakeKubeApi() as api:
        api.add(*canary_environment(PROD_NS, SERVICE, artifact(1).uri, replicas=3))
        api.add(*blue_green_environment(STAGING_NS, SERVICE, artifact(1).uri, active="blue"))
        api.add(make_deployment(DEV_NS, SERVICE, "stable", artifact(1).uri, replicas=1))
        yield api
        assert api.unserved == [], "the platform called endpoints the fake does not serve"


@pytest.fixture
def platform(fake: FakeKubeApi) -> KubernetesPlatform:
    return KubernetesPlatform(
        fake.api_client(),
        {PROD: PROD_NS, STAGING: STAGING_NS, DEV: DEV_NS},
        progress_deadline_s=2.0,
        poll_interval_s=0.01,
    )


def test_the_platform_is_a_deploy_target_and_a_traffic_router(
    platform: KubernetesPlatform,
) -> None:
    assert isinstance(platform, DeployTarget)
    assert isinstance(platform, TrafficRouter)


def test_a_tag_is_replaced_by_the_digest() -> None:
    tagged = Artifact(digest=digest(7), uri="127.0.0.1:5000/team/heal7:main", kind="image")
    assert image_reference(tagged) == f"127.0.0.1:5000/team/heal7@{digest(7)}"
    assert image_reference(artifact(7)) == artifact(7).uri


# --- deploy -------------------------------------------------------------------------------


def test_deploy_pins_the_digest_and_waits_for_the_rollout(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    fake.set_rollout(PROD_NS, "heal7-stable", RolloutBehaviour(mode="polls", polls=3))
    notes = Notes()

    result = platform.deploy(deploy_request(2, "stable"), notes)

    assert result.changed
    assert (result.digest, result.previous_digest) == (digest(2), digest(1))
    deployment = fake.deployment(PROD_NS, "heal7-stable")
    assert image(fake, PROD_NS, "heal7-stable") == artifact(2).uri
    assert deployment.metadata is not None
    assert deployment.metadata.annotations is not None
    assert deployment.metadata.annotations[DIGEST] == digest(2)
    assert deployment.metadata.annotations[REVISION] == "2"
    # It waited through the controller's progress, heartbeating as it went.
    assert any("observe generation" in n for n in notes)
    assert any(n.endswith("1 of 3 replicas updated") for n in notes)
    assert notes[-1] == "deployment heal7-stable: 3 of 3 replicas updated and available"


def test_redeploying_the_running_digest_changes_nothing(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    platform.deploy(deploy_request(2, "stable"), Notes())
    patches = fake.patch_count()

    again = platform.deploy(deploy_request(2, "stable"), Notes())

    assert not again.changed
    assert fake.patch_count() == patches
    assert len(fake.replica_sets(PROD_NS, "heal7-stable")) == 2


@pytest.mark.parametrize(
    ("reason", "message"),
    [("ImagePullBackOff", "manifest unknown"), ("CrashLoopBackOff", "back-off 40s restarting")],
)
def test_a_stuck_rollout_is_a_deploy_failure_naming_the_pods_reason(
    fake: FakeKubeApi, platform: KubernetesPlatform, reason: str, message: str
) -> None:
    fake.set_rollout(
        PROD_NS, "heal7-stable", RolloutBehaviour(mode="stuck", reason=reason, message=message)
    )

    with pytest.raises(ApplicationError) as raised:
        platform.deploy(deploy_request(2, "stable"), Notes())

    error = raised.value
    assert error.type == ErrorType.DEPLOY_FAILED
    assert error.non_retryable
    text = str(error)
    for part in ("heal7-stable", PROD_NS, "ProgressDeadlineExceeded", reason, message):
        assert part in text


def test_a_rollout_past_the_platforms_own_deadline_fails_too(fake: FakeKubeApi) -> None:
    fake.set_rollout(PROD_NS, "heal7-stable", RolloutBehaviour(mode="polls", polls=10_000))
    impatient = KubernetesPlatform(
        fake.api_client(), {PROD: PROD_NS}, progress_deadline_s=0.2, poll_interval_s=0.02
    )

    with pytest.raises(ApplicationError, match=r"not rolled out within 0\.2s") as raised:
        impatient.deploy(deploy_request(2, "stable"), Notes())
    assert raised.value.type == ErrorType.DEPLOY_FAILED


def test_canary_deploy_brings_the_idle_canary_up_at_stable_size(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    result = platform.deploy(deploy_request(2, "canary"), Notes())

    assert result.changed
    assert fake.deployment(PROD_NS, "heal7-canary").spec.replicas == 3
    assert image(fake, PROD_NS, "heal7-canary") == artifact(2).uri
    stable = fake.deployment(PROD_NS, "heal7-stable")
    assert image(fake, PROD_NS, "heal7-stable") == artifact(1).uri
    assert stable.metadata is not None
    assert (stable.metadata.annotations or {})[CANARY_PENDING] == digest(2)


def test_a_missing_deployment_is_a_configuration_error_naming_the_namespace(
    platform: KubernetesPlatform,
) -> None:
    request = deploy_request(2, "stable").model_copy(update={"service": "saju"})
    with pytest.raises(ApplicationError, match=f"saju-stable.*{PROD_NS}") as raised:
        platform.deploy(request, Notes())
    assert raised.value.type == ErrorType.CONFIGURATION


def test_api_errors_are_verdicts_or_retryable_by_status(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    fake.fail_next(403, "PATCH", "/deployments/heal7-stable")
    with pytest.raises(ApplicationError, match="patch Deployment heal7-stable") as refused:
        platform.deploy(deploy_request(2, "stable"), Notes())
    assert refused.value.non_retryable

    fake.fail_next(503, "GET", "/deployments/heal7-stable")
    with pytest.raises(KubernetesApiError, match=f"read Deployment heal7-stable in .*{PROD_NS}"):
        platform.deploy(deploy_request(2, "stable"), Notes())

    # Nothing half-done: the retry Temporal makes succeeds.
    assert platform.deploy(deploy_request(2, "stable"), Notes()).changed


# --- traffic --------------------------------------------------------------------------------


def test_set_weight_splits_the_default_route_and_keeps_the_header_route(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    before = fake.virtual_service(PROD_NS, SERVICE)["spec"]["http"][0]

    platform.set_weight(weight(10))

    http = fake.virtual_service(PROD_NS, SERVICE)["spec"]["http"]
    assert http[0] == before  # `canary: "true"` still always goes to the canary
    assert [(d["destination"]["subset"], d["weight"]) for d in default_route(fake)] == [
        ("stable", 90),
        ("canary", 10),
    ]
    assert http[1]["retries"] == {"attempts": 2}  # fields we do not model survive
    assert platform.verify_weight(weight(10))
    assert not platform.verify_weight(weight(20))

    patches = fake.patch_count("virtualservices")
    platform.set_weight(weight(10))
    assert fake.patch_count("virtualservices") == patches

    platform.set_weight(weight(50))
    assert platform.verify_weight(weight(50))
    assert [d["weight"] for d in default_route(fake)] == [50, 50]


def test_weights_work_with_heal7s_host_based_routes(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    fake.add(
        {
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "VirtualService",
            "metadata": {"name": "heal7-backend", "namespace": PROD_NS},
            "spec": {
                "hosts": ["api.heal7.com"],
                "http": [
                    {
                        "match": [{"headers": {"canary": {"exact": "true"}}}],
                        "route": [{"destination": {"host": "heal7-backend-canary"}}],
                    },
                    {"route": [{"destination": {"host": "heal7-backend-primary"}, "weight": 100}]},
                ],
            },
        }
    )
    request = WeightRequest(service="heal7-backend", environment=PROD, canary_weight=10)

    platform.set_weight(request)

    route = fake.virtual_service(PROD_NS, "heal7-backend")["spec"]["http"][1]["route"]
    assert [(d["destination"]["host"], d["weight"]) for d in route] == [
        ("heal7-backend-primary", 90),
        ("heal7-backend-canary", 10),
    ]
    assert platform.verify_weight(request)


def test_weight_zero_needs_no_virtual_service_but_a_canary_weight_does(
    platform: KubernetesPlatform,
) -> None:
    platform.set_weight(weight(0, STAGING))
    assert platform.verify_weight(weight(0, STAGING))
    assert not platform.verify_weight(weight(10, STAGING))

    with pytest.raises(ApplicationError, match=f"VirtualService heal7 in namespace {STAGING_NS}"):
        platform.set_weight(weight(10, STAGING))


# --- promote --------------------------------------------------------------------------------


def test_canary_promote_moves_stable_to_the_digest_then_retires_the_canary(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    platform.deploy(deploy_request(2, "canary"), Notes())
    platform.set_weight(weight(30))

    result = platform.promote(deploy_request(2, "canary"), Notes())

    assert result.changed
    assert (result.slot, result.previous_digest) == ("stable", digest(1))
    assert image(fake, PROD_NS, "heal7-stable") == artifact(2).uri
    assert platform.verify_weight(weight(0))
    assert fake.deployment(PROD_NS, "heal7-canary").spec.replicas == 0
    stable = fake.deployment(PROD_NS, "heal7-stable")
    assert stable.metadata is not None
    assert CANARY_PENDING not in (stable.metadata.annotations or {})

    patches = fake.patch_count()
    assert not platform.promote(deploy_request(2, "canary"), Notes()).changed
    assert fake.patch_count() == patches


def test_blue_green_promote_switches_the_service_once_the_preview_is_ready(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    fake.set_rollout(STAGING_NS, "heal7-green", RolloutBehaviour(mode="polls", polls=2))
    platform.deploy(deploy_request(2, "green", STAGING), Notes())
    assert selected_slot(fake, STAGING_NS) == "blue"

    result = platform.promote(deploy_request(2, "green", STAGING), Notes())

    assert result.changed
    assert result.previous_digest == digest(1)
    service = fake.service(STAGING_NS, SERVICE)
    assert service.spec is not None
    assert service.spec.selector == {"app": SERVICE, "slot": "green"}
    assert service.metadata is not None
    assert (service.metadata.annotations or {})[PREVIOUS_SLOT] == "blue"
    assert not platform.promote(deploy_request(2, "green", STAGING), Notes()).changed


def test_blue_green_promote_refuses_a_slot_not_running_the_digest(
    platform: KubernetesPlatform,
) -> None:
    with pytest.raises(ApplicationError, match=r"heal7-blue runs .*deploy it") as raised:
        platform.promote(deploy_request(3, "blue", STAGING), Notes())
    assert raised.value.type == ErrorType.DEPLOY_FAILED


# --- rollback -------------------------------------------------------------------------------


def test_rollback_restores_the_previous_revisions_template_once(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    platform.deploy(deploy_request(2, "stable", DEV), Notes())
    assert image(fake, DEV_NS, "heal7-stable") == artifact(2).uri

    result = platform.rollback(rollback_request(DEV), Notes())

    assert result.changed
    assert result.restored_digest == digest(1)
    assert image(fake, DEV_NS, "heal7-stable") == artifact(1).uri
    deployment = fake.deployment(DEV_NS, "heal7-stable")
    assert deployment.metadata is not None
    assert (deployment.metadata.annotations or {})[ROLLED_BACK_FROM] == "2"
    # As `kubectl rollout undo`: the first ReplicaSet is re-used as revision 3.
    revisions = [
        (rs.metadata.annotations or {})[REVISION]
        for rs in fake.replica_sets(DEV_NS, "heal7-stable")
        if rs.metadata is not None
    ]
    assert revisions == ["2", "3"]

    patches = fake.patch_count()
    again = platform.rollback(rollback_request(DEV), Notes())
    assert not again.changed
    assert again.restored_digest == digest(1)
    assert fake.patch_count() == patches
    assert image(fake, DEV_NS, "heal7-stable") == artifact(1).uri


def test_rollback_after_a_new_deploy_goes_to_the_version_before_it(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    platform.deploy(deploy_request(2, "stable", DEV), Notes())
    platform.rollback(rollback_request(DEV), Notes())
    platform.deploy(deploy_request(3, "stable", DEV), Notes())

    result = platform.rollback(rollback_request(DEV), Notes())

    assert result.changed
    assert result.restored_digest == digest(1)
    assert image(fake, DEV_NS, "heal7-stable") == artifact(1).uri


def test_rollback_of_an_unpromoted_canary_leaves_stable_alone(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    platform.deploy(deploy_request(2, "canary"), Notes())
    platform.set_weight(weight(20))

    result = platform.rollback(rollback_request(), Notes())

    assert result.changed
    assert result.restored_digest == digest(1)
    assert platform.verify_weight(weight(0))
    assert fake.deployment(PROD_NS, "heal7-canary").spec.replicas == 0
    assert image(fake, PROD_NS, "heal7-stable") == artifact(1).uri
    assert len(fake.replica_sets(PROD_NS, "heal7-stable")) == 1
    assert not platform.rollback(rollback_request(), Notes()).changed


def test_rollback_after_promote_restores_the_previous_stable(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    platform.deploy(deploy_request(2, "canary"), Notes())
    platform.promote(deploy_request(2, "canary"), Notes())

    result = platform.rollback(rollback_request(), Notes())

    assert result.changed
    assert result.restored_digest == digest(1)
    assert image(fake, PROD_NS, "heal7-stable") == artifact(1).uri
    assert not platform.rollback(rollback_request(), Notes()).changed


def promote_v2_then_abort_canary_v3(fake: FakeKubeApi, platform: KubernetesPlatform) -> None:
    """Stable v1 → v2 by canary promote, then a canary of v3 that gets traffic."""
    platform.deploy(deploy_request(2, "canary"), Notes())
    platform.promote(deploy_request(2, "canary"), Notes())
    platform.deploy(deploy_request(3, "canary"), Notes())
    platform.set_weight(weight(20))
    assert stable_annotations(fake)[CANARY_PENDING] == digest(3)


def test_a_new_rollback_after_an_aborted_canary_restores_the_previous_stable(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    promote_v2_then_abort_canary_v3(fake, platform)
    abort = rollback_request(reason="canary analysis: success_rate 91 < 99")

    aborted = platform.rollback(abort, Notes())

    assert aborted.changed
    assert aborted.restored_digest == digest(2)
    assert platform.verify_weight(weight(0))
    assert fake.deployment(PROD_NS, "heal7-canary").spec.replicas == 0
    assert image(fake, PROD_NS, "heal7-stable") == artifact(2).uri
    annotations = stable_annotations(fake)
    assert CANARY_PENDING not in annotations
    assert annotations[CANARY_ROLLED_BACK] == digest(3)

    # A retry of that rollback (the same request) is harmless: stable stays on v2.
    patches = fake.patch_count()
    retried = platform.rollback(abort, Notes())
    assert (retried.restored_digest, retried.changed) == (digest(2), False)
    assert fake.patch_count() == patches
    assert image(fake, PROD_NS, "heal7-stable") == artifact(2).uri

    # An operator's later rollback goes back to the version before v2.
    manual = rollback_request(reason="manual rollback by dave")
    result = platform.rollback(manual, Notes())

    assert (result.restored_digest, result.changed) == (digest(1), True)
    assert image(fake, PROD_NS, "heal7-stable") == artifact(1).uri
    assert stable_annotations(fake)[DIGEST] == digest(1)
    # ... once: neither its retry nor another request swaps back to v2.
    assert not platform.rollback(manual, Notes()).changed
    again = platform.rollback(rollback_request(reason="manual rollback by erin"), Notes())
    assert (again.restored_digest, again.changed) == (digest(1), False)
    assert image(fake, PROD_NS, "heal7-stable") == artifact(1).uri


def run_rollback_activity(
    platform: KubernetesPlatform,
    request: RollbackRequest,
    *,
    activity_id: str,
    attempt: int = 1,
) -> RollbackResult:
    """The rollback activity as a worker runs it (a thread under the activity's context)."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        activity_id=activity_id,
        activity_type="rollback",
        attempt=attempt,
        workflow_id="pipeline-heal7",
        workflow_run_id="run-1",
        scheduled_time=datetime(2026, 1, 1, tzinfo=UTC),
        current_attempt_scheduled_time=datetime(2026, 1, 1, 0, attempt, tzinfo=UTC),
    )
    activities = DeployActivities(platform, platform)
    return asyncio.run(env.run(activities.rollback, request))


def test_activity_attempts_share_a_rollback_and_other_activities_do_not(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    promote_v2_then_abort_canary_v3(fake, platform)
    same = rollback_request(reason="same words every time")

    # The first attempt stops after the canary is down, before stable is touched.
    fake.fail_next(503, "PATCH", "/deployments/heal7-stable")
    with pytest.raises(KubernetesApiError):
        run_rollback_activity(platform, same, activity_id="canary:abort")
    assert fake.deployment(PROD_NS, "heal7-canary").spec.replicas == 0
    assert stable_annotations(fake)[CANARY_PENDING] == digest(3)

    second = run_rollback_activity(platform, same, activity_id="canary:abort", attempt=2)
    assert second.restored_digest == digest(2)
    assert stable_annotations(fake)[ROLLBACK_REQUEST].startswith("pipeline-heal7/run-1/")
    third = run_rollback_activity(platform, same, activity_id="canary:abort", attempt=3)
    assert (third.restored_digest, third.changed) == (digest(2), False)
    assert image(fake, PROD_NS, "heal7-stable") == artifact(2).uri

    # Another activity with the very same request is a new rollback, not a retry.
    later = run_rollback_activity(platform, same, activity_id="rollback:production")
    assert (later.restored_digest, later.changed) == (digest(1), True)
    assert image(fake, PROD_NS, "heal7-stable") == artifact(1).uri


def test_a_late_attempt_of_a_finished_rollback_leaves_the_next_canary_alone(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    promote_v2_then_abort_canary_v3(fake, platform)
    abort = rollback_request(reason="canary analysis failed")
    platform.rollback(abort, Notes())
    platform.deploy(deploy_request(4, "canary"), Notes())

    late = platform.rollback(abort, Notes())

    assert not late.changed
    assert fake.deployment(PROD_NS, "heal7-canary").spec.replicas == 3
    assert stable_annotations(fake)[CANARY_PENDING] == digest(4)
    assert image(fake, PROD_NS, "heal7-stable") == artifact(2).uri

    # Once a new version replaced stable's template, the same request is a new rollback.
    platform.promote(deploy_request(4, "canary"), Notes())
    assert ROLLBACK_REQUEST not in stable_annotations(fake)
    result = platform.rollback(abort, Notes())
    assert (result.restored_digest, result.changed) == (digest(2), True)
    assert image(fake, PROD_NS, "heal7-stable") == artifact(2).uri


def test_blue_green_rollback_switches_back_once(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    platform.deploy(deploy_request(2, "green", STAGING), Notes())
    platform.promote(deploy_request(2, "green", STAGING), Notes())

    result = platform.rollback(rollback_request(STAGING), Notes())

    assert result.changed
    assert result.restored_digest == digest(1)
    service = fake.service(STAGING_NS, SERVICE)
    assert (service.spec.selector if service.spec else {}) == {"app": SERVICE, "slot": "blue"}
    assert service.metadata is not None
    assert (service.metadata.annotations or {})[ROLLED_BACK_FROM] == "green"
    assert not platform.rollback(rollback_request(STAGING), Notes()).changed


def test_blue_green_rollback_before_promote_keeps_the_live_slot(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    platform.deploy(deploy_request(2, "green", STAGING), Notes())
    platform.promote(deploy_request(2, "green", STAGING), Notes())
    platform.deploy(deploy_request(3, "blue", STAGING), Notes())  # the next preview

    result = platform.rollback(rollback_request(STAGING), Notes())

    assert not result.changed
    assert result.restored_digest == digest(2)
    assert selected_slot(fake, STAGING_NS) == "green"


# --- checks and client ----------------------------------------------------------------------


@pytest.fixture
def ingress() -> Iterator[str]:
    """A stand-in for the environment's ingress: /ready fails unless routed to the canary."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            canary = self.headers.get("canary") == "true"
            if self.path == "/health":
                status, body = 200, b"ok"
            elif self.path == "/ready":
                status, body = (200, b"ready canary") if canary else (503, b"warming up")
            else:
                status, body = 404, b"not found"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(Handler) as url:
        yield url


def test_check_probes_through_the_ingress_and_the_canary_by_header(
    fake: FakeKubeApi, ingress: str
) -> None:
    platform = KubernetesPlatform(
        fake.api_client(),
        {PROD: PROD_NS, STAGING: STAGING_NS},
        base_url_for={PROD: ingress, STAGING: ingress},
        poll_interval_s=0.01,
    )
    checks = [HttpCheck(path="/health", contains="ok"), HttpCheck(path="/ready")]

    env = platform.check(HttpCheckRequest(service=SERVICE, environment=PROD, checks=checks))
    assert (env.passed, env.failed) == (1, 1)
    assert env.failures == [f"GET {ingress}/ready: expected HTTP 200, got 503"]

    canary = platform.check(
        HttpCheckRequest(service=SERVICE, environment=PROD, checks=checks, slot="canary")
    )
    assert (canary.passed, canary.failed) == (2, 0)

    # Blue/green: the live slot is what the ingress serves; the preview needs its own URL.
    live = platform.check(
        HttpCheckRequest(service=SERVICE, environment=STAGING, checks=checks[:1], slot="blue")
    )
    assert (live.passed, live.failed) == (1, 0)
    with pytest.raises(ApplicationError, match="no URL configured for slot green"):
        platform.check(
            HttpCheckRequest(service=SERVICE, environment=STAGING, checks=checks, slot="green")
        )


def test_an_unreachable_ingress_is_a_failed_check_not_an_exception(fake: FakeKubeApi) -> None:
    from tests.support.ports import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    platform = KubernetesPlatform(
        fake.api_client(), {PROD: PROD_NS}, base_url_for={PROD: closed}, http_timeout_s=2.0
    )
    report = platform.check(
        HttpCheckRequest(service=SERVICE, environment=PROD, checks=[HttpCheck(path="/health")])
    )
    assert (report.passed, report.failed) == (0, 1)
    assert report.failures[0].startswith(f"GET {closed}/health: ConnectError")


def test_load_api_client_reads_a_kubeconfig(fake: FakeKubeApi, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        f"""
apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{server: "{fake.url}"}}
users:
- name: worker
  user: {{token: not-a-secret}}
contexts:
- name: fake
  context: {{cluster: fake, user: worker, namespace: {PROD_NS}}}
current-context: fake
"""
    )
    api = load_api_client(str(kubeconfig))

    deployment = AppsV1Api(api).read_namespaced_deployment("heal7-stable", PROD_NS)

    assert deployment.spec.replicas == 3
    assert api.configuration.retries == 0


def test_services_without_a_slot_selector_cannot_be_rolled_back(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    fake.add(make_service(PROD_NS, "saju"))
    with pytest.raises(ApplicationError, match=f"cannot roll back saju in namespace {PROD_NS}"):
        platform.rollback(RollbackRequest(service="saju", environment=PROD), Notes())


# --- fencing and restore -------------------------------------------------------------------


def fence_request(token: int, environment: str = PROD) -> FenceRequest:
    return FenceRequest(service=SERVICE, environment=environment, token=token)


def test_a_stale_token_is_refused_before_any_write(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    found = platform.fence(fence_request(2))
    assert found is not None
    assert found.digest == digest(1)
    writes = fake.patch_count()
    stale = deploy_request(2, "canary").model_copy(update={"fence": 1})
    for call in (
        lambda: platform.deploy(stale, lambda _n: None),
        lambda: platform.promote(stale, lambda _n: None),
        lambda: platform.set_weight(weight(50).model_copy(update={"fence": 1})),
        lambda: platform.restore(
            RestoreRequest(service=SERVICE, environment=PROD, target=None, fence=1),
            lambda _n: None,
        ),
    ):
        with pytest.raises(ApplicationError) as refused:
            call()
        assert refused.value.type == ErrorType.STALE_LEASE
    assert fake.patch_count() == writes  # nothing was written
    assert image(fake, PROD_NS, f"{SERVICE}-canary") == image_reference(artifact(1))


def test_restore_pins_the_recorded_digest_once(
    fake: FakeKubeApi, platform: KubernetesPlatform
) -> None:
    """An abort during a canary interval: weight back to 0, the canary down, stable on the
    digest that served before (the recorded one, not "one revision back"); again: no-op."""
    baseline = platform.fence(fence_request(1))
    platform.deploy(deploy_request(2, "canary").model_copy(update={"fence": 1}), lambda _n: None)
    platform.set_weight(weight(30).model_copy(update={"fence": 1}))
    restore = RestoreRequest(service=SERVICE, environment=PROD, target=baseline, fence=2)
    first = platform.restore(restore, lambda _n: None)
    assert first.changed
    assert first.restored_digest == digest(1)
    assert canary_weight_of(fake) == 0
    assert fake.deployment(PROD_NS, f"{SERVICE}-canary").spec.replicas == 0
    assert image(fake, PROD_NS, f"{SERVICE}-stable") == image_reference(artifact(1))
    writes = fake.patch_count("deployments")
    again = platform.restore(restore, lambda _n: None)
    assert not again.changed
    assert fake.patch_count("deployments") == writes


def canary_weight_of(fake: FakeKubeApi) -> int:
    route = default_route(fake)
    return sum(d.get("weight", 0) for d in route if d["destination"].get("subset") == "canary")


def test_a_bundle_is_one_deployment_set_per_artifact_moved_and_restored_together() -> None:
    """Several deployables (`artifacts:`) through the bundle layer: each component is its own
    Deployments and VirtualService (`heal7-backend`, `heal7-frontend`); the weight moves for
    both, and a restore puts both back on the recorded bundle."""
    from activities.helpers.bundles import BundledTarget
    from contracts.activity import Component, bundle_of

    def component_route(fake: FakeKubeApi, name: str) -> int:
        route = fake.virtual_service(PROD_NS, name)["spec"]["http"][-1]["route"]
        return sum(d.get("weight", 0) for d in route if d["destination"].get("subset") == "canary")

    def bundle(backend: int, frontend: int) -> Artifact:
        return bundle_of(
            [
                Component(name="backend", artifact=artifact(backend)),
                Component(name="frontend", artifact=artifact(frontend)),
            ]
        )

    names = ("heal7-backend", "heal7-frontend")
    with FakeKubeApi() as fake:
        fake.add(*canary_environment(PROD_NS, names[0], artifact(1).uri, replicas=2))
        fake.add(*canary_environment(PROD_NS, names[1], artifact(11).uri, replicas=2))
        platform = KubernetesPlatform(
            fake.api_client(), {PROD: PROD_NS}, progress_deadline_s=2.0, poll_interval_s=0.01
        )
        bundled = BundledTarget(platform, platform)
        components = ["backend", "frontend"]
        serving = bundled.fence(
            FenceRequest(service=SERVICE, environment=PROD, token=1, components=components)
        )
        assert serving is not None
        assert serving.digest == bundle(1, 11).digest  # what serves, read from the cluster

        canary = DeployRequest(
            service=SERVICE,
            environment=PROD,
            slot="canary",
            artifact=bundle(2, 12),
            strategy="canary",
            fence=1,
        )
        bundled.deploy(canary, Notes())
        assert image(fake, PROD_NS, "heal7-backend-canary") == artifact(2).uri
        assert image(fake, PROD_NS, "heal7-frontend-canary") == artifact(12).uri
        moved = WeightRequest(
            service=SERVICE, environment=PROD, canary_weight=30, fence=1, components=components
        )
        bundled.set_weight(moved)
        assert bundled.verify_weight(moved)
        assert [component_route(fake, n) for n in names] == [30, 30]

        restored = bundled.restore(
            RestoreRequest(
                service=SERVICE,
                environment=PROD,
                target=serving,
                strategy="canary",
                fence=2,
                components=components,
            ),
            Notes(),
        )
        assert restored.changed
        assert restored.restored_digest == bundle(1, 11).digest
        assert [component_route(fake, n) for n in names] == [0, 0]
        assert fake.deployment(PROD_NS, "heal7-frontend-canary").spec.replicas == 0
        assert image(fake, PROD_NS, "heal7-frontend-stable") == artifact(11).uri
        assert fake.unserved == []
