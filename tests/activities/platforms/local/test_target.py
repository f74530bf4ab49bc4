"""The local deploy target end to end: rolling, canary and blue/green through real Traefik."""

from __future__ import annotations

import pytest

from activities.platforms.local import LocalDeployTarget, LocalPlatform
from contracts.activity import (
    HttpCheck,
    HttpCheckRequest,
    RollbackRequest,
    WeightRequest,
)
from tests.activities.platforms.local.helpers import (
    SERVICE,
    Wheel,
    deploy_request,
    no_heartbeat,
    versions_seen,
)

pytestmark = pytest.mark.realserver


def shift(platform: LocalPlatform, environment: str, percent: int) -> None:
    """What the set_weight activity does: set, then read back."""
    request = WeightRequest(service=SERVICE, environment=environment, canary_weight=percent)
    platform.router.set_weight(request)
    assert platform.router.verify_weight(request)


def rollback(environment: str) -> RollbackRequest:
    return RollbackRequest(service=SERVICE, environment=environment, reason="test")


def test_rolling_rollback_restores_the_previous_version_and_twice_is_harmless(
    platform: LocalPlatform, wheel: Wheel
) -> None:
    target = platform.target
    url = platform.entrypoint_url("development") + "/"
    v1, v2 = wheel("1.0.0"), wheel("2.0.0", error_rate=1.0)
    target.deploy(deploy_request(v1, "development"), no_heartbeat)
    assert versions_seen(url, 5) == {"1.0.0": 5}
    result = target.deploy(deploy_request(v2, "development"), no_heartbeat)
    assert result.previous_digest == v1.digest
    assert versions_seen(url, 5) == {"HTTP 500": 5}

    first = target.rollback(rollback("development"), no_heartbeat)
    assert first.changed
    assert first.restored_digest == v1.digest
    assert versions_seen(url, 5) == {"1.0.0": 5}

    second = target.rollback(rollback("development"), no_heartbeat)
    assert not second.changed
    assert second.restored_digest == v1.digest
    assert versions_seen(url, 5) == {"1.0.0": 5}


def test_redeploying_the_running_digest_changes_nothing(
    platform: LocalPlatform, wheel: Wheel
) -> None:
    v1 = wheel("1.0.0")
    platform.target.deploy(deploy_request(v1, "development"), no_heartbeat)
    again = platform.target.deploy(deploy_request(v1, "development"), no_heartbeat)
    assert not again.changed


def test_canary_promote_then_monitor_rollback(platform: LocalPlatform, wheel: Wheel) -> None:
    target, router = platform.target, platform.router
    url = platform.entrypoint_url("production") + "/"
    v1, v2 = wheel("1.0.0"), wheel("2.0.0")
    target.deploy(deploy_request(v1, "production", strategy="canary"), no_heartbeat)
    canary = deploy_request(v2, "production", slot="canary", strategy="canary")
    assert target.deploy(canary, no_heartbeat).slot == "canary"
    shift(platform, "production", 50)

    promoted = target.promote(canary, no_heartbeat)
    assert promoted.changed
    assert promoted.slot == "stable"
    assert versions_seen(url, 10) == {"2.0.0": 10}
    assert router.route("production").canary_weight == 0
    assert not platform.slots.state(SERVICE, "production", "canary").running()
    assert not target.promote(canary, no_heartbeat).changed

    # The post-deploy monitor finds a problem: stable goes back to 1.0.0.
    undone = target.rollback(rollback("production"), no_heartbeat)
    assert undone.changed
    assert undone.restored_digest == v1.digest
    assert versions_seen(url, 10) == {"1.0.0": 10}
    assert not target.rollback(rollback("production"), no_heartbeat).changed


def test_failed_canary_rollback_keeps_stable_and_stops_the_canary(
    platform: LocalPlatform, wheel: Wheel
) -> None:
    target = platform.target
    url = platform.entrypoint_url("production") + "/"
    v1, v2, v3 = wheel("1.0.0"), wheel("2.0.0"), wheel("3.0.0", error_rate=1.0)
    # v1 then v2 on stable: the record could undo v2, but the next release is a canary.
    target.deploy(deploy_request(v1, "production"), no_heartbeat)
    target.deploy(deploy_request(v2, "production"), no_heartbeat)
    target.deploy(deploy_request(v3, "production", slot="canary", strategy="canary"), no_heartbeat)
    shift(platform, "production", 50)
    assert versions_seen(url, 10)["HTTP 500"] == 5

    result = target.rollback(rollback("production"), no_heartbeat)
    assert result.changed
    assert result.restored_digest == v2.digest
    assert versions_seen(url, 10) == {"2.0.0": 10}
    assert not platform.slots.state(SERVICE, "production", "canary").running()
    assert not target.rollback(rollback("production"), no_heartbeat).changed


def test_blue_green_switch_and_switch_back(platform: LocalPlatform, wheel: Wheel) -> None:
    target = platform.target
    url = platform.entrypoint_url("staging") + "/"
    v1, v2 = wheel("1.0.0"), wheel("2.0.0")

    first = deploy_request(v1, "staging", strategy="blue_green")
    assert target.deploy(first, no_heartbeat).slot == "blue"
    assert target.promote(first, no_heartbeat).slot == "blue"
    assert versions_seen(url, 5) == {"1.0.0": 5}

    second = deploy_request(v2, "staging", strategy="blue_green")
    preview = target.deploy(second, no_heartbeat)
    assert preview.slot == "green"
    # The preview is healthy but takes no traffic until the switch.
    check = target.check(
        HttpCheckRequest(
            service=SERVICE,
            environment="staging",
            slot="green",
            checks=[HttpCheck(path="/", contains="2.0.0"), HttpCheck(path="/ready")],
        )
    )
    assert (check.passed, check.failed) == (2, 0)
    assert versions_seen(url, 5) == {"1.0.0": 5}

    switched = target.promote(second, no_heartbeat)
    assert (switched.slot, switched.previous_digest) == ("green", v1.digest)
    assert versions_seen(url, 5) == {"2.0.0": 5}
    assert not target.promote(second, no_heartbeat).changed

    back = target.rollback(rollback("staging"), no_heartbeat)
    assert back.changed
    assert back.restored_digest == v1.digest
    assert versions_seen(url, 5) == {"1.0.0": 5}
    assert not platform.slots.state(SERVICE, "staging", "green").running()
    assert not target.rollback(rollback("staging"), no_heartbeat).changed


def test_state_survives_a_new_target_on_the_same_state_dir(
    platform: LocalPlatform, wheel: Wheel
) -> None:
    v1, v2 = wheel("1.0.0"), wheel("2.0.0")
    platform.target.deploy(deploy_request(v1, "development"), no_heartbeat)
    platform.target.deploy(deploy_request(v2, "development"), no_heartbeat)

    # A restarted worker: new objects, same state dir, same running processes.
    restarted = LocalPlatform(
        platform.state_dir,
        ports=platform.router.entrypoints,
        api_port=platform.router.api_port,
    )
    restarted.start()
    target = LocalDeployTarget(restarted.slots, restarted.router, platform.state_dir)
    assert not target.deploy(deploy_request(v2, "development"), no_heartbeat).changed
    assert target.rollback(rollback("development"), no_heartbeat).restored_digest == v1.digest
    url = platform.entrypoint_url("development") + "/"
    assert versions_seen(url, 5) == {"1.0.0": 5}


def test_checks_through_the_entrypoint_report_failures(
    platform: LocalPlatform, wheel: Wheel
) -> None:
    platform.target.deploy(deploy_request(wheel("1.0.0"), "development"), no_heartbeat)
    report = platform.target.check(
        HttpCheckRequest(
            service=SERVICE,
            environment="development",
            checks=[
                HttpCheck(path="/health"),
                HttpCheck(path="/", contains="Hello from Slipway"),
                HttpCheck(path="/missing"),
                HttpCheck(path="/", contains="Goodbye"),
            ],
        )
    )
    assert (report.passed, report.failed) == (2, 2)
    assert "expected HTTP 200, got 404" in report.failures[0]
    assert "'Goodbye'" in report.failures[1]

    idle = platform.target.check(
        HttpCheckRequest(
            service=SERVICE, environment="development", slot="canary", checks=[HttpCheck()]
        )
    )
    assert idle.failed == 1
    assert "runs no process" in idle.failures[0]
