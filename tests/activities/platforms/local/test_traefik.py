"""The Traefik router: weighted canary traffic, read-back of weights, hot reload, reuse."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from temporalio.exceptions import ApplicationError

from activities.platforms.local import LocalPlatform, TraefikRouter
from contracts.activity import WeightRequest
from contracts.errors import ErrorType
from tests.activities.platforms.local.helpers import (
    SERVICE,
    Wheel,
    deploy_request,
    no_heartbeat,
    versions_seen,
)
from tests.support.ports import free_ports

pytestmark = pytest.mark.realserver


def weight(environment: str, percent: int) -> WeightRequest:
    return WeightRequest(service=SERVICE, environment=environment, canary_weight=percent)


def test_canary_at_30_percent_gets_about_30_percent(platform: LocalPlatform, wheel: Wheel) -> None:
    target, router = platform.target, platform.router
    target.deploy(deploy_request(wheel("1.0.0"), "production"), no_heartbeat)
    target.deploy(
        deploy_request(wheel("2.0.0"), "production", slot="canary", strategy="canary"),
        no_heartbeat,
    )
    url = platform.entrypoint_url("production") + "/"
    # A new canary starts at weight 0.
    assert versions_seen(url, 20) == {"1.0.0": 20}

    router.set_weight(weight("production", 30))
    assert router.verify_weight(weight("production", 30))
    # A weight Traefik does not show is reported after the (here shortened) reload wait;
    # the real wait comes back at once, so that a slow reload below is not judged in 0.5 s.
    reload_timeout_s, router.reload_timeout_s = router.reload_timeout_s, 0.5
    assert not router.verify_weight(weight("production", 40))
    router.reload_timeout_s = reload_timeout_s

    seen = versions_seen(url, 200)
    assert seen["1.0.0"] + seen["2.0.0"] == 200
    assert 45 <= seen["2.0.0"] <= 75, seen

    router.set_weight(weight("production", 0))
    assert router.verify_weight(weight("production", 0))
    assert versions_seen(url, 20) == {"1.0.0": 20}


def test_slot_header_reaches_the_canary_directly(platform: LocalPlatform, wheel: Wheel) -> None:
    platform.target.deploy(deploy_request(wheel("1.0.0"), "production"), no_heartbeat)
    platform.target.deploy(
        deploy_request(wheel("2.0.0"), "production", slot="canary", strategy="canary"),
        no_heartbeat,
    )
    url = platform.entrypoint_url("production") + "/"
    assert httpx.get(url, headers={"X-Slipway-Slot": "canary"}).json()["version"] == "2.0.0"
    assert httpx.get(url, headers={"canary": "true"}).json()["version"] == "2.0.0"
    assert httpx.get(url).json()["version"] == "1.0.0"


def test_weight_without_a_canary_is_refused(platform: LocalPlatform, wheel: Wheel) -> None:
    platform.target.deploy(deploy_request(wheel("1.0.0"), "production"), no_heartbeat)
    with pytest.raises(ApplicationError, match="no canary runs") as raised:
        platform.router.set_weight(weight("production", 10))
    assert raised.value.type == ErrorType.DEPLOY_FAILED
    assert not platform.router.verify_weight(weight("production", 10))
    assert platform.router.verify_weight(weight("production", 0))


def test_unknown_environment_is_a_configuration_verdict(platform: LocalPlatform) -> None:
    with pytest.raises(ApplicationError, match="no entrypoint") as raised:
        platform.router.set_weight(weight("qa", 0))
    assert raised.value.type == ErrorType.CONFIGURATION


def test_a_new_router_reuses_the_running_traefik(platform: LocalPlatform, wheel: Wheel) -> None:
    platform.target.deploy(deploy_request(wheel("1.0.0"), "staging"), no_heartbeat)
    pid = platform.router.pid
    again = TraefikRouter(platform.state_dir, platform.router.entrypoints, platform.router.api_port)
    again.start()
    assert pid is not None
    assert again.pid == pid
    assert again.running()
    url = platform.entrypoint_url("staging") + "/"
    assert versions_seen(url, 3) == {"1.0.0": 3}


def test_a_traefik_that_exits_at_start_is_said_to_have_exited(tmp_path: Path) -> None:
    # Not "did not come up within 15 s" after waiting them out: the process is gone, and its
    # own words say why (here a stand-in binary; the real one was seen losing a port race).
    binary = tmp_path / "traefik"
    binary.write_text("#!/bin/sh\necho 'listen tcp 127.0.0.1:1: bind: address already in use'\n")
    binary.chmod(0o755)
    api_port, port = free_ports(2)
    router = TraefikRouter(tmp_path / "state", {"staging": port}, api_port, binary=binary)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="Traefik exited while starting") as raised:
        router.start()
    assert "bind: address already in use" in str(raised.value)
    assert time.monotonic() - started < 10
