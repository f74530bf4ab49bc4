"""Settings and secrets in a definition: what validates, what each artifact runs with in
each environment, and one refusal per bad input naming the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from contracts.activity import ReleaseSpec, SecretRef
from contracts.definition.loading import validate_definition
from contracts.definition.model import DefinitionError


def base() -> dict[str, Any]:
    return {
        "name": "shop",
        "service": {"name": "shop"},
        "artifacts": {"backend": {"path": "backend", "run": ["app"]}, "frontend": {"path": "fe"}},
        "environments": {
            "staging": {"settings": {"LOG_LEVEL": "debug", "WORKERS": 2, "DEBUG": True}},
            "production": {
                "settings": {"LOG_LEVEL": "info"},
                "secrets": {
                    "DB_PASSWORD": {
                        "from": "secretsmanager",
                        "name": "shop/production/db",
                        "key": "password",
                    }
                },
            },
        },
        "stages": [{"name": "checkout", "kind": "checkout"}],
    }


def problems(change: dict[str, Any]) -> list[str]:
    data = copy.deepcopy(base())
    for env, config in change.get("environments", {}).items():
        data["environments"].setdefault(env, {}).update(config)
    for name, config in change.get("artifacts", {}).items():
        data["artifacts"][name].update(config)
    with pytest.raises(DefinitionError) as caught:
        validate_definition(data, "shop.yaml")
    return [str(p) for p in caught.value.problems]


def test_release_config_per_environment_and_artifact() -> None:
    data = base()
    data["artifacts"]["backend"]["settings"] = {"FEATURE_X": "on"}
    data["artifacts"]["backend"]["environments"] = {
        "production": {
            "settings": {"FEATURE_X": "off"},
            "secrets": {"API_KEY": {"from": "kubernetes", "name": "shop-api", "key": "token"}},
        }
    }
    spec = validate_definition(data, "shop.yaml")
    staging = spec.release_config("staging")
    assert staging.settings == {"LOG_LEVEL": "debug", "WORKERS": "2", "DEBUG": "true"}
    production = spec.release_config("production")
    backend = production.for_component("backend")
    assert backend.settings == {"LOG_LEVEL": "info", "FEATURE_X": "off"}
    assert backend.secrets == {
        "DB_PASSWORD": SecretRef(
            source="secretsmanager", name="shop/production/db", key="password"
        ),
        "API_KEY": SecretRef(source="kubernetes", name="shop-api", key="token"),
    }
    assert production.for_component("frontend").settings == {"LOG_LEVEL": "info"}
    assert "DB_PASSWORD (secretsmanager:shop/production/db#password)" in production.describe()
    # The definition round-trips through the run's input unchanged.
    assert type(spec).model_validate_json(spec.model_dump_json()) == spec


def test_a_settings_change_is_a_new_release() -> None:
    spec = validate_definition(base(), "shop.yaml")
    from contracts.activity import Artifact

    artifact = Artifact(digest="sha256:" + "a" * 64, uri="x")
    staging = ReleaseSpec(artifact=artifact, config=spec.release_config("staging"))
    bare = ReleaseSpec(artifact=artifact)
    assert bare.digest == artifact.digest  # no configuration: the digest it always was
    assert staging.digest.startswith(artifact.digest + "+config:")
    changed = staging.model_copy(
        update={"config": staging.config.model_copy(update={"settings": {"LOG_LEVEL": "x"}})}
    )
    assert changed.digest != staging.digest


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"environments": {"production": {"settings": {"9BAD": "x"}}}},
            "field 'environments.production.settings.9BAD.[key]': '9BAD' is not an "
            "environment variable name",
        ),
        (
            {"environments": {"production": {"settings": {"SLIPWAY_PORT": "1"}}}},
            "'SLIPWAY_PORT' is set by Slipway itself",
        ),
        (
            {"environments": {"production": {"settings": {"DB_PASSWORD": "x"}}}},
            "DB_PASSWORD: a name is a setting or a secret, not both",
        ),
        (
            {"environments": {"production": {"secrets": {"X": {"from": "vault", "name": "a"}}}}},
            "field 'environments.production.secrets.X.from'",
        ),
        (
            {"environments": {"production": {"secrets": {"X": {"name": "a"}}}}},
            "field 'environments.production.secrets.X.from': Field required",
        ),
        (
            {"environments": {"production": {"secrets": {"X": "plain-value"}}}},
            "field 'environments.production.secrets.X'",
        ),
        (
            {
                "environments": {
                    "production": {"secrets": {"X": {"from": "kubernetes", "name": "db"}}}
                }
            },
            "a Kubernetes Secret reference needs `key`",
        ),
        (
            {"environments": {"production": {"secrets": {"X": {"from": "local", "name": "../x"}}}}},
            "is not a secret name",
        ),
        (
            {"environments": {"production": {"settings": {"BIG": "x" * 5000}}}},
            "field 'environments.production.settings.BIG'",
        ),
        (
            {"environments": {"production": {"settings": {f"V{i}": "x" for i in range(101)}}}},
            "field 'environments.production.settings'",
        ),
        (
            {"artifacts": {"backend": {"environments": {"prod": {"settings": {"A": "b"}}}}}},
            "artifacts.backend.environments: unknown environment 'prod'",
        ),
    ],
)
def test_bad_configuration_is_one_problem_naming_the_field(
    change: dict[str, Any], expected: str
) -> None:
    found = problems(change)
    assert len(found) == 1, found
    assert expected in found[0]
    assert found[0].startswith("shop.yaml")
