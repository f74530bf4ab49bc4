"""A release on the local platform runs in its own venv: the wheel and its dependencies,
never the worker's packages or secrets. The wheel is built by the real builder (PEP 517 with
build isolation) from a generated third-party-shaped service using flit_core."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.platforms.local import SlotManager
from activities.providers.builders.wheel_builder import WheelBuilder
from contracts.activity import BuildRequest, DeployRequest
from contracts.errors import ErrorType
from tests.activities.platforms.local.helpers import get_json, no_heartbeat
from tests.support.thirdparty import RUNTIME_DEPENDENCY, write_service

COMMIT = "5e7b8a6f4c2d1e0f9a8b7c6d5e4f3a2b3f2a9c1d"


def test_a_release_imports_its_dependency_from_its_own_venv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ImportError):
        __import__(RUNTIME_DEPENDENCY)  # the premise: the worker lacks it
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    monkeypatch.setenv("TEMPORAL_API_KEY", "temporal-api-key-value")
    source = write_service(tmp_path / "src")
    artifact = WheelBuilder(tmp_path / "artifacts").build(
        BuildRequest(path=str(source), service="greeter", commit=COMMIT), no_heartbeat
    )
    slots = SlotManager(tmp_path / "state", ready_timeout_s=20.0)
    request = DeployRequest(
        service="greeter",
        environment="production",
        slot="stable",
        artifact=artifact,
        strategy="rolling",
        run_command=["python", "-m", "greeter_app", "--port", "{port}"],
        health_path="/health",
        ready_path="/ready",
    )
    try:
        result = slots.deploy(request, no_heartbeat)
        answer = get_json(result.endpoint + "/")
        venvs = str(slots.state_dir / "venvs")
        assert answer["message"] == "Hello, Ada Lovelace!"
        assert answer["prefix"].startswith(venvs)
        assert answer["prefix"] != sys.prefix
        assert answer["dependency_file"].startswith(answer["prefix"])
        assert answer["secrets_seen"] == []

        # The same digest in another slot reuses the venv built for it.
        again = slots.deploy(request.model_copy(update={"slot": "canary"}), no_heartbeat)
        assert get_json(again.endpoint + "/")["prefix"] == answer["prefix"]
    finally:
        slots.stop_all()


def test_a_release_whose_dependency_the_index_lacks_fails_to_deploy(tmp_path: Path) -> None:
    source = write_service(tmp_path / "src")
    pyproject = source / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            'dependencies = ["inflection>=0.5"]',
            'dependencies = ["inflection>=0.5", "no-such-package-slipway-xyz"]',
        )
    )
    artifact = WheelBuilder(tmp_path / "artifacts").build(
        BuildRequest(path=str(source), service="greeter", commit=COMMIT), no_heartbeat
    )
    slots = SlotManager(tmp_path / "state")

    with pytest.raises(ApplicationError) as caught:
        slots.release_venv(artifact, no_heartbeat)

    assert caught.value.type == ErrorType.DEPLOY_FAILED
    assert "no-such-package-slipway-xyz" in caught.value.message
    assert "pip's" in caught.value.message
