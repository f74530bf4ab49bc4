"""The check at a run's start (`check_references`): every secret and resource reference of the
releases a run will deploy, looked up on the platform in use, reported by environment and
field, never with a value.

Kubernetes through the in-process fake API server (no API server can be installed here);
the local store on disk and AWS Secrets Manager through moto's server are the real thing.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities.deploy import DeployActivities
from activities.helpers.secrets import SecretResolver, SecretsManagerSecrets, secretsmanager_client
from activities.platforms.kubernetes import KubernetesPlatform
from activities.platforms.local import LocalPlatform
from activities.wiring.factory import EnvironmentDispatch
from contracts.activity import ReferenceCheckRequest, ReferenceCheckResult
from contracts.definition.loading import validate_definition
from contracts.definition.model import PipelineSpec
from contracts.references import deployed_environments, reference_check
from plumbing.secret_store import LocalSecretStore
from tests.fakes.kube_api import FakeKubeApi
from tests.support.ecr_endpoint import running_moto

K8S_APP = {"from": "kubernetes", "name": "shop-app", "key": "secret-key"}


def definition(environments: dict[str, Any], **service: Any) -> PipelineSpec:
    data: dict[str, Any] = {
        "name": "shop",
        "service": {"name": "shop", **service},
        "environments": copy.deepcopy(environments),
        "stages": [
            {"name": "checkout", "kind": "checkout"},
            {"name": "build", "kind": "build", "needs": ["checkout"]},
            *(
                {"name": f"deploy_{env}", "kind": "deploy", "environment": env, "needs": ["build"]}
                for env in environments
            ),
        ],
    }
    return validate_definition(data, "shop.yaml")


def secret(namespace: str, name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {
            k.replace("_", "-"): base64.b64encode(v.encode()).decode() for k, v in data.items()
        },
    }


def check(activities: DeployActivities, request: ReferenceCheckRequest) -> ReferenceCheckResult:
    import asyncio

    return asyncio.run(ActivityEnvironment().run(activities.check_references, request))


# --- Kubernetes ---------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeKubeApi]:
    with FakeKubeApi() as api:
        yield api
        assert api.unserved == []


def test_on_kubernetes_it_names_each_environment_and_field_that_does_not_resolve(
    fake: FakeKubeApi,
) -> None:
    fake.add(
        secret("shop-staging", "shop-app", secret_key="staging-key-value"),
        secret("shop-staging", "shop-postgres", url="postgresql://staging-db/shop"),
        secret("shop-prod", "shop-app", secret_key="prod-key-value"),
        # The production database's Secret lacks the key `env:` uses; no Redis Secret at all.
        secret("shop-prod", "shop-postgres", host="prod-db.internal"),
    )
    platform = KubernetesPlatform(
        fake.api_client(), {"staging": "shop-staging", "production": "shop-prod"}
    )
    activities = DeployActivities(
        platform, platform, SecretResolver({"kubernetes": platform.secrets()})
    )
    spec = definition(
        {
            "staging": {"secrets": {"SECRET_KEY": K8S_APP}, "resources": ["postgres:16"]},
            "production": {
                "secrets": {
                    "SECRET_KEY": K8S_APP,
                    "API_TOKEN": {"from": "secretsmanager", "name": "shop/production/api"},
                },
                "resources": ["postgres:16", "redis:7"],
            },
        },
        env={"DATABASE_URL": "{services.postgres.url}"},
        release=["alembic", "upgrade", "head"],
    )

    result = check(activities, reference_check(spec))

    assert result.sentences() == [
        "environment 'production', field 'environments.production.secrets.API_TOKEN': secret "
        "secretsmanager:shop/production/api cannot reach a pod on Kubernetes: the kubernetes "
        "platform takes secrets only as Kubernetes Secrets (`from: kubernetes`, with `key`), "
        "not `from: secretsmanager`",
        "environment 'production', field 'service.env.DATABASE_URL': Secret shop-postgres has "
        "no key 'url' in namespace shop-prod",
        "environment 'production', field 'environments.production.resources': Secret "
        "shop-redis does not exist in namespace shop-prod: on Kubernetes the redis resource "
        "is a reference to a database that exists, and whoever runs it creates this Secret "
        "(keys: host, port, user, password, database, url, version)",
    ]
    assert result.checked == 6  # 3 secrets, 3 (environment, resource) pairs
    text = result.model_dump_json()
    for value in ("staging-key-value", "prod-key-value", "prod-db.internal", "staging-db"):
        assert value not in text
    # A read-only check: nothing was created or changed.
    assert {method for method, _ in fake.requests} == {"GET"}


def test_on_kubernetes_a_run_whose_references_resolve_has_no_problem(fake: FakeKubeApi) -> None:
    fake.add(
        secret("shop-prod", "shop-app", secret_key="v"),
        secret("shop-prod", "shop-postgres", url="postgresql://db/shop"),
    )
    platform = KubernetesPlatform(fake.api_client(), {"production": "shop-prod"})
    activities = DeployActivities(
        platform, platform, SecretResolver({"kubernetes": platform.secrets()})
    )
    spec = definition(
        {"production": {"secrets": {"SECRET_KEY": K8S_APP}, "resources": ["postgres:16"]}},
        env={"DATABASE_URL": "{services.postgres.url}"},
    )

    result = check(activities, reference_check(spec))

    assert result.ok
    assert result.checked == 2


def test_through_the_workers_dispatch_each_environment_is_checked_on_its_platform(
    fake: FakeKubeApi, tmp_path: Path
) -> None:
    platform = KubernetesPlatform(fake.api_client(), {"production": "shop-prod"})
    local = LocalPlatform(tmp_path / "platform")  # nothing starts until start()
    dispatch = EnvironmentDispatch(
        {"production": platform, "*": local.target},
        {"production": platform, "*": local.target},
        {},
        {},
        default="*",
    )
    store = LocalSecretStore(tmp_path / "secrets")
    store.set("shop/staging/key", "v")
    activities = DeployActivities(
        dispatch,
        dispatch,
        SecretResolver({"kubernetes": platform.secrets(), "local": store}),
    )
    spec = definition(
        {
            "staging": {
                "secrets": {"SECRET_KEY": {"from": "local", "name": "shop/staging/key"}},
                "resources": ["postgres:16"],
            },
            "production": {"secrets": {"SECRET_KEY": K8S_APP}, "resources": ["postgres:16"]},
        },
        env={"DATABASE_URL": "{services.postgres.url}"},
    )

    result = check(activities, reference_check(spec))

    # Staging is local (its database is made on first deploy); production is on Kubernetes,
    # where neither Secret exists.
    assert [(p.environment, p.field) for p in result.problems] == [
        ("production", "environments.production.secrets.SECRET_KEY"),
        ("production", "service.env.DATABASE_URL"),
    ]
    assert "Secret shop-postgres does not exist in namespace shop-prod" in result.sentences()[1]


# --- the local platform: the local store and AWS Secrets Manager (moto) -------------------


@pytest.fixture
def moto_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with running_moto(tmp_path / "moto") as url:
        yield url


def test_on_the_local_platform_the_store_and_secrets_manager_are_looked_up(
    tmp_path: Path, moto_url: str
) -> None:
    store = LocalSecretStore(tmp_path / "secrets")
    store.set("shop/staging/db", "local-db-password")
    client = secretsmanager_client(moto_url, "ap-northeast-2")
    client.create_secret(
        Name="shop/production/db", SecretString=json.dumps({"password": "sm-db-password"})
    )
    local = LocalPlatform(tmp_path / "platform")  # nothing starts until start()
    activities = DeployActivities(
        local.target,
        local.router,
        SecretResolver({"local": store, "secretsmanager": SecretsManagerSecrets(client)}),
    )
    spec = definition(
        {
            "staging": {
                "secrets": {
                    "DB_PASSWORD": {"from": "local", "name": "shop/staging/db"},
                    "MAIL_TOKEN": {"from": "local", "name": "shop/staging/mail"},
                },
                "resources": ["postgres:16"],
            },
            "production": {
                "secrets": {
                    "DB_PASSWORD": {
                        "from": "secretsmanager",
                        "name": "shop/production/db",
                        "key": "password",
                    },
                    "DB_USER": {
                        "from": "secretsmanager",
                        "name": "shop/production/db",
                        "key": "user",
                    },
                    "SECRET_KEY": K8S_APP,
                },
                "resources": ["postgres:16"],
            },
        },
        env={"DATABASE_URL": "{services.postgres.url}"},
    )

    result = check(activities, reference_check(spec))

    assert [(p.environment, p.field) for p in result.problems] == [
        ("staging", "environments.staging.secrets.MAIL_TOKEN"),
        ("production", "environments.production.secrets.DB_USER"),
        ("production", "environments.production.secrets.SECRET_KEY"),
    ]
    sentences = result.sentences()
    assert sentences[0].startswith(
        "environment 'staging', field 'environments.staging.secrets.MAIL_TOKEN': secret "
        "local:shop/staging/mail is not in the deployer's local store"
    )
    assert sentences[1] == (
        "environment 'production', field 'environments.production.secrets.DB_USER': secret "
        "secretsmanager:shop/production/db#user has no key 'user'"
    )
    assert "this deployer has no Kubernetes Secrets" in sentences[2]
    # The local platform makes its resources on first deploy: nothing to refer to yet.
    assert result.checked == 5
    assert "local-db-password" not in result.model_dump_json()
    assert "sm-db-password" not in result.model_dump_json()


# --- the question, from the definition (pure) ----------------------------------------------


def test_the_question_names_each_artifacts_fields() -> None:
    data: dict[str, Any] = {
        "name": "shop",
        "service": {"name": "shop"},
        "artifacts": {
            "backend": {
                "path": "backend",
                "env": {"DATABASE_URL": "{services.postgres.url}"},
                "secrets": {"API_KEY": {"from": "local", "name": "shop/api"}},
                "environments": {
                    "production": {
                        "secrets": {
                            "API_KEY": {"from": "kubernetes", "name": "shop-api", "key": "k"}
                        }
                    }
                },
            },
            "frontend": {"path": "fe", "settings": {"SECRET_KEY": "public"}},
        },
        "environments": {
            "production": {"secrets": {"SECRET_KEY": K8S_APP}, "resources": ["postgres:16"]}
        },
        "stages": [
            {"name": "checkout", "kind": "checkout"},
            {"name": "build", "kind": "build", "needs": ["checkout"]},
            {"name": "ship", "kind": "deploy", "environment": "production", "needs": ["build"]},
        ],
    }
    spec = validate_definition(data, "shop.yaml")
    assert deployed_environments(spec) == ["production"]

    backend, frontend = reference_check(spec).releases

    assert backend.service == "shop-backend"
    assert sorted(backend.secrets) == [
        "artifacts.backend.environments.production.secrets.API_KEY",
        "environments.production.secrets.SECRET_KEY",
    ]
    assert (backend.env_field, backend.resources) == ("artifacts.backend.env", ["postgres:16"])
    # The frontend's own setting wins over the environment's secret; it uses no database.
    assert (frontend.service, frontend.secrets, frontend.resources) == ("shop-frontend", {}, [])
