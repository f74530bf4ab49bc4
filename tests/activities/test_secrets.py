"""Secret references resolved by the deployer: the local store, AWS Secrets Manager (a real
moto_server), Kubernetes Secrets (the fake API server), and the one-sentence refusals."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.helpers.secrets import SecretResolver, SecretsManagerSecrets, secretsmanager_client
from activities.platforms.kubernetes import KubernetesPlatform
from activities.wiring.observability import _mask_text
from contracts.activity import ReleaseConfig, SecretRef
from plumbing.secret_store import LocalSecretStore
from tests.fakes.kube_api import FakeKubeApi
from tests.support.ecr_endpoint import running_moto


def _config(**secrets: SecretRef) -> ReleaseConfig:
    return ReleaseConfig(settings={"LOG_LEVEL": "info"}, secrets=secrets)


def _refusal(resolver: SecretResolver, config: ReleaseConfig) -> str:
    with pytest.raises(ApplicationError) as caught:
        resolver.pin(config, "production")
    assert caught.value.non_retryable
    return caught.value.message


def test_local_store_pins_versions_and_restores_the_old_value(tmp_path: Path) -> None:
    store = LocalSecretStore(tmp_path / "secrets")
    assert store.set("heal7/production/db", '{"password": "first-pass-1"}') == "1"
    resolver = SecretResolver({"local": store})
    ref = SecretRef(source="local", name="heal7/production/db", key="password")
    pinned = resolver.pin(_config(DB_PASSWORD=ref), "production")
    assert pinned.secrets["DB_PASSWORD"].version == "1"
    assert "first-pass-1" not in pinned.model_dump_json()  # references only

    store.set("heal7/production/db", '{"password": "second-pass-2"}')
    assert resolver.values(pinned, "production")["DB_PASSWORD"] == "first-pass-1"
    assert resolver.pin(_config(DB_PASSWORD=ref), "production").secrets["DB_PASSWORD"].version == (
        "2"
    )
    assert (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700
    # Every value read is on the redaction list.
    assert "first-pass-1" not in _mask_text("db password first-pass-1 and second-pass-2")
    assert "second-pass-2" not in _mask_text("second-pass-2")


def test_refusals_are_one_sentence_naming_environment_and_field(tmp_path: Path) -> None:
    store = LocalSecretStore(tmp_path / "secrets")
    store.set("app/plain", "not-json-value")
    resolver = SecretResolver({"local": store})
    missing = _refusal(resolver, _config(API_TOKEN=SecretRef(source="local", name="app/missing")))
    assert missing.startswith("environment 'production', field 'secrets.API_TOKEN': ")
    assert "slipway secret set app/missing" in missing
    no_key = _refusal(
        resolver, _config(API_TOKEN=SecretRef(source="local", name="app/plain", key="token"))
    )
    assert "field 'secrets.API_TOKEN'" in no_key
    assert "no key 'token'" in no_key
    nobody = _refusal(
        resolver, _config(DB=SecretRef(source="secretsmanager", name="heal7/production/db"))
    )
    assert nobody == (
        "environment 'production', field 'secrets.DB': this deployer has no AWS Secrets "
        "Manager (`from: secretsmanager`); it offers: local"
    )
    component = ReleaseConfig(
        components={"backend": ReleaseConfig(secrets={"X": SecretRef(source="local", name="n")})}
    )
    assert "field 'artifacts.backend.secrets.X'" in _refusal(resolver, component)
    for text in (missing, no_key, nobody):
        assert "\n" not in text


@pytest.fixture
def moto_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with running_moto(tmp_path / "moto") as url:
        yield url


def test_secrets_manager_through_moto_server(moto_url: str) -> None:
    client = secretsmanager_client(moto_url, "ap-northeast-2")
    created = client.create_secret(
        Name="heal7/production/db", SecretString=json.dumps({"password": "sm-pass-one"})
    )
    resolver = SecretResolver({"secretsmanager": SecretsManagerSecrets(client)})
    ref = SecretRef(source="secretsmanager", name="heal7/production/db", key="password")
    pinned = resolver.pin(_config(DB_PASSWORD=ref), "production")
    assert pinned.secrets["DB_PASSWORD"].version == created["VersionId"]

    client.put_secret_value(
        SecretId="heal7/production/db", SecretString=json.dumps({"password": "sm-pass-two"})
    )
    # The pinned version still reads the value that served; a new pin takes the new one.
    assert resolver.values(pinned, "production")["DB_PASSWORD"] == "sm-pass-one"
    again = resolver.pin(_config(DB_PASSWORD=ref), "production")
    assert again.secrets["DB_PASSWORD"].version != created["VersionId"]
    assert resolver.values(again, "production")["DB_PASSWORD"] == "sm-pass-two"

    missing = _refusal(
        resolver,
        _config(DB_PASSWORD=SecretRef(source="secretsmanager", name="heal7/production/nope")),
    )
    assert missing == (
        "environment 'production', field 'secrets.DB_PASSWORD': secret "
        "secretsmanager:heal7/production/nope does not exist in AWS Secrets Manager (or not "
        "that version)"
    )


def test_kubernetes_secrets_through_the_fake_api() -> None:
    with FakeKubeApi() as api:
        api.add(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "heal7-db", "namespace": "heal7-prod"},
                "data": {"password": base64.b64encode(b"kube-pass-1").decode()},
            }
        )
        platform = KubernetesPlatform(api.api_client(), {"production": "heal7-prod"})
        resolver = SecretResolver({"kubernetes": platform.secrets()})
        ref = SecretRef(source="kubernetes", name="heal7-db", key="password")
        pinned = resolver.pin(_config(DB_PASSWORD=ref), "production")
        assert pinned.secrets["DB_PASSWORD"].version  # the Secret's resourceVersion
        assert resolver.values(pinned, "production")["DB_PASSWORD"] == "kube-pass-1"
        wrong_key = SecretRef(source="kubernetes", name="heal7-db", key="user")
        assert "has no key 'user' in namespace 'heal7-prod'" in _refusal(
            resolver, _config(DB_USER=wrong_key)
        )
        gone = SecretRef(source="kubernetes", name="other", key="user")
        assert "does not exist in namespace 'heal7-prod'" in _refusal(
            resolver, _config(DB_USER=gone)
        )
