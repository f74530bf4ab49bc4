"""The kubernetes platform passes a release's configuration to its pods: settings as values,
secrets as `valueFrom.secretKeyRef` (the kubelet reads the Secret; no value passes through
Slipway), through the fake API server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from activities.platforms.kubernetes import KubernetesPlatform
from contracts.activity import (
    Artifact,
    DeployRequest,
    FenceRequest,
    ReleaseConfig,
    ReleaseSpec,
    RestoreRequest,
    SecretRef,
)
from tests.fakes.kube_api import FakeKubeApi, canary_environment

NS, SERVICE = "heal7-prod", "heal7"
IMAGE = Artifact(
    digest="sha256:" + "1" * 64, uri=f"registry.example/heal7@sha256:{'1' * 64}", kind="image"
)
DB = SecretRef(source="kubernetes", name="heal7-db", key="password", version="41")


def _request(config: ReleaseConfig, fence: int = 1) -> DeployRequest:
    return DeployRequest(
        service=SERVICE,
        environment="production",
        slot="stable",
        artifact=IMAGE,
        fence=fence,
        config=config,
    )


def _env(fake: FakeKubeApi) -> list[dict[str, Any]]:
    template = fake.deployment(NS, f"{SERVICE}-stable").spec.template
    assert template.spec is not None
    env = template.spec.containers[0].env or []
    return [e.to_dict() for e in env]


@pytest.fixture
def fake() -> Iterator[FakeKubeApi]:
    with FakeKubeApi() as api:
        api.add(*canary_environment(NS, SERVICE, IMAGE.uri, replicas=2))
        yield api


def test_settings_and_secret_key_refs_render_and_a_settings_change_redeploys(
    fake: FakeKubeApi,
) -> None:
    platform = KubernetesPlatform(fake.api_client(), {"production": NS}, poll_interval_s=0.01)
    first = ReleaseConfig(settings={"LOG_LEVEL": "info", "OLD": "x"}, secrets={"DB_PASSWORD": DB})
    result = platform.deploy(_request(first), lambda _note: None)
    assert result.changed
    env = {e["name"]: e for e in _env(fake)}
    assert env["LOG_LEVEL"]["value"] == "info"
    assert env["DB_PASSWORD"]["value"] is None
    assert env["DB_PASSWORD"]["value_from"]["secret_key_ref"] == {
        "name": "heal7-db",
        "key": "password",
        "optional": None,
    }
    # Same image, same config: nothing written. Same image, new settings: a new release.
    assert not platform.deploy(_request(first), lambda _note: None).changed
    second = ReleaseConfig(settings={"LOG_LEVEL": "debug"}, secrets={"DB_PASSWORD": DB})
    assert platform.deploy(_request(second), lambda _note: None).changed
    env = {e["name"]: e for e in _env(fake)}
    assert env["LOG_LEVEL"]["value"] == "debug"
    assert "OLD" not in env  # a variable the release no longer has is removed

    # What serves, read back for the environment's record, includes the configuration.
    serving = platform.fence(FenceRequest(service=SERVICE, environment="production", token=2))
    assert serving is not None
    assert serving.config == second
    assert serving.digest == ReleaseSpec(artifact=IMAGE, config=second).digest

    # A restore puts the previous settings back.
    target = ReleaseSpec(artifact=IMAGE, config=first)
    restored = platform.restore(
        RestoreRequest(service=SERVICE, environment="production", target=target, fence=3),
        lambda _note: None,
    )
    assert restored.changed
    assert {e["name"]: e for e in _env(fake)}["LOG_LEVEL"]["value"] == "info"


def test_a_secret_from_another_source_is_refused_before_any_change(fake: FakeKubeApi) -> None:
    platform = KubernetesPlatform(fake.api_client(), {"production": NS}, poll_interval_s=0.01)
    writes = fake.patch_count()
    config = ReleaseConfig(
        secrets={"DB_PASSWORD": SecretRef(source="secretsmanager", name="heal7/production/db")}
    )
    with pytest.raises(ApplicationError) as caught:
        platform.deploy(_request(config), lambda _note: None)
    assert caught.value.message.startswith(
        "environment 'production', field 'secrets.DB_PASSWORD': the kubernetes platform"
    )
    assert fake.patch_count() == writes
