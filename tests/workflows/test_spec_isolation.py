"""The definition fields that say what a stage's own environment holds."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.definition.loading import validate_definition
from contracts.definition.model import CommandStage, DefinitionError, SuiteStage


def definition(*stages: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "p",
        "service": {"name": "svc"},
        "stages": [{"name": "checkout", "kind": "checkout"}, *stages],
    }


def test_test_and_command_stages_take_their_environment_fields() -> None:
    spec = validate_definition(
        definition(
            {
                "name": "unit",
                "kind": "test",
                "needs": ["checkout"],
                "command": ["python", "-m", "pytest"],
                "extras": ["test", "http"],
                "requirements": ["requirements-dev.txt"],
                "setup": ["pip install -e ./plugins"],
                "env": {"DATABASE_URL": "postgres://127.0.0.1/app"},
            },
            {
                "name": "frontend",
                "kind": "command",
                "needs": ["checkout"],
                "command": ["sh", "-c", "npm ci && npm run build"],
                "env": {"NODE_ENV": "production"},
            },
        ),
        "p.yaml",
    )

    unit, frontend = spec.stage("unit"), spec.stage("frontend")
    assert isinstance(unit, SuiteStage)
    assert unit.extras == ["test", "http"]
    assert unit.requirements == ["requirements-dev.txt"]
    assert unit.setup == ["pip install -e ./plugins"]
    assert unit.env == {"DATABASE_URL": "postgres://127.0.0.1/app"}
    assert isinstance(frontend, CommandStage)
    assert frontend.env == {"NODE_ENV": "production"}


def test_a_test_stage_naming_nothing_defaults_to_the_test_extra() -> None:
    spec = validate_definition(
        definition({"name": "unit", "kind": "test", "needs": ["checkout"], "command": ["x"]}),
        "p.yaml",
    )

    unit = spec.stage("unit")
    assert isinstance(unit, SuiteStage)
    assert (unit.extras, unit.requirements, unit.setup, unit.env) == (None, [], [], {})


def test_bad_environment_fields_are_named() -> None:
    with pytest.raises(DefinitionError) as caught:
        validate_definition(
            definition(
                {
                    "name": "unit",
                    "kind": "test",
                    "needs": ["checkout"],
                    "command": ["x"],
                    "setup": "pip install .",
                },
                {"name": "frontend", "kind": "command", "needs": ["checkout"], "command": []},
            ),
            "p.yaml",
        )

    text = str(caught.value)
    assert "p.yaml: stage 'unit', field 'setup'" in text
    assert "p.yaml: stage 'frontend', field 'command'" in text
