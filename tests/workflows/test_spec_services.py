"""Test stages' `services:` and `env:` in definitions: what loads, and every refusal naming
the file, the stage and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contracts.definition.loading import load_pipeline, validate_definition
from contracts.definition.model import DefinitionError, SuiteStage

HEAL7 = Path(__file__).resolve().parents[2] / "pipelines" / "heal7.yaml"


def definition(**test_fields: Any) -> dict[str, Any]:
    return {
        "name": "shop",
        "service": {"name": "shop"},
        "stages": [
            {"name": "checkout", "kind": "checkout"},
            {
                "name": "integration",
                "kind": "test",
                "needs": ["checkout"],
                "command": ["pytest"],
                **test_fields,
            },
        ],
    }


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(DefinitionError) as raised:
        validate_definition(data, "shop.yaml")
    return [str(p) for p in raised.value.problems]


def test_heal7_integration_tests_start_postgres_16_and_redis_7() -> None:
    stage = load_pipeline(HEAL7).stage("integration_tests")
    assert isinstance(stage, SuiteStage)
    assert stage.services == ["postgres:16", "redis:7"]
    assert stage.env["DATABASE_URL"].startswith("postgresql://{services.postgres.user}:")
    assert stage.env["REDIS_URL"] == "{services.redis.url}"


def test_env_templates_of_listed_services_load() -> None:
    spec = validate_definition(
        definition(
            services=["postgres:16", "redis"],
            env={"DB": "{services.postgres.url}", "CACHE": "{services.redis.port}", "X": "1"},
        ),
        "shop.yaml",
    )
    stage = spec.stage("integration")
    assert isinstance(stage, SuiteStage)
    assert stage.env["X"] == "1"


def test_unknown_kind_and_bad_version_name_the_entry() -> None:
    found = problems(definition(services=["postgres:16", "mysql:8", "redis:latest"]))
    assert found == [
        "shop.yaml: stage 'integration', field 'services.1': unknown backing "
        "service 'mysql:8'; one of: postgres, redis (optionally with a version, e.g. "
        "postgres:16)",
        "shop.yaml: stage 'integration', field 'services.2': version 'latest' "
        "of 'redis' must be numbers like 16 or 7.2",
    ]


def test_a_kind_listed_twice_is_refused() -> None:
    (found,) = problems(definition(services=["redis:7", "redis:6"]))
    assert "field 'services'" in found
    assert "redis listed more than once" in found


def test_unknown_placeholders_and_unlisted_services_name_the_variable() -> None:
    (found,) = problems(
        definition(
            services=["redis:7"],
            env={"DB": "postgresql://x:{services.postgres.port}/db", "T": "{sha}"},
        )
    )
    assert found.startswith("shop.yaml: stage 'integration', field 'env': ")
    assert "DB: {services.postgres.…} refers to postgres, which 'services' does not start" in (
        found
    )
    assert "T: unknown placeholder {sha}" in found
