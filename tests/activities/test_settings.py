"""Worker settings: a bad configuration stops the worker at start, naming the setting."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from activities.wiring.factory import EnvironmentDispatch
from contracts.activity import WeightRequest
from plumbing.settings import ConfigurationError, Settings
from tests.support.memory_platform import MemoryPlatform, ScriptedMetrics

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"metrics": "prometheus"}, "SLIPWAY_PROMETHEUS_URL"),
        ({"notifier": "slack"}, "SLIPWAY_SLACK_WEBHOOK_URL"),
        ({"builder": "docker", "registry": "docker"}, "SLIPWAY_DOCKER_REGISTRY"),
        ({"registry": "ecr"}, "SLIPWAY_BUILDER=docker"),
        (
            {"platform": "kubernetes", "metrics": "prometheus", "prometheus_url": "http://p"},
            "SLIPWAY_KUBE_NAMESPACES has no namespace for development, staging, production",
        ),
        ({"environment_platforms": {"production": "kubernetes"}}, "SLIPWAY_METRICS=traefik"),
        ({"sonarqube_url": "http://sonar"}, "SLIPWAY_SONARQUBE_TOKEN"),
    ],
)
def test_bad_combinations_name_the_setting(settings: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid worker settings") as info:
        Settings.load(**settings)
    assert named in str(info.value)


def test_environment_platforms_route_each_call() -> None:
    settings = Settings.model_validate(
        {
            "environment_platforms": {"production": "kubernetes"},
            "kube_namespaces": {"production": "heal7-prod"},
            "metrics": "prometheus",
            "prometheus_url": "http://prometheus:9090",
        }
    )
    assert settings.platform_for("production") == "kubernetes"
    assert settings.platform_for("staging") == "local"
    local, prod = MemoryPlatform(), MemoryPlatform()
    dispatch = EnvironmentDispatch(
        {"*": local, "production": prod},
        {"*": local, "production": prod},
        {"*": ScriptedMetrics()},
        {"*": None},
        default="*",
    )
    dispatch.set_weight(WeightRequest(service="s", environment="production", canary_weight=30))
    dispatch.set_weight(WeightRequest(service="s", environment="staging", canary_weight=10))
    assert prod.envs["production"].weight == 30
    assert local.envs["staging"].weight == 10
    assert "production" not in local.envs


async def test_a_misconfigured_worker_exits_at_start_naming_the_setting() -> None:
    env = {**os.environ, "SLIPWAY_METRICS": "prometheus", "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    env.pop("SLIPWAY_PROMETHEUS_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "worker.py"),
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0
    assert "SLIPWAY_METRICS=prometheus needs SLIPWAY_PROMETHEUS_URL" in out.decode()


def test_a_malformed_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIPWAY_BASE_PORT", "eighty")
    with pytest.raises(ConfigurationError, match="SLIPWAY_BASE_PORT: Input should be a valid"):
        Settings.load()


def test_the_in_memory_test_platform_is_not_a_worker_setting() -> None:
    """The in-memory platform is a test double: a worker cannot be configured to deploy to it."""
    with pytest.raises(ConfigurationError, match="SLIPWAY_PLATFORM"):
        Settings.load(platform="memory")
