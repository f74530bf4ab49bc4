"""Worker configuration: one settings model choosing every backend, from SLIPWAY_* variables.

A bad configuration fails the worker at start with a message naming the setting, instead of
failing the first pipeline that reaches the missing piece.

    SLIPWAY_PLATFORM=local|kubernetes              where deploys go (default: local)
    SLIPWAY_ENVIRONMENT_PLATFORMS='{"production": "kubernetes"}'   per-environment override
    SLIPWAY_BUILDER=wheel|docker   SLIPWAY_REGISTRY=local|docker|ecr
    SLIPWAY_METRICS=traefik|prometheus   SLIPWAY_NOTIFIER=log|slack
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ConfigurationError", "Role", "Settings"]

PlatformName = Literal["local", "kubernetes"]
Role = Literal["all", "deployer", "runner"]
"""Which trust domain(s) a worker serves (`worker.py --role`)."""


class ConfigurationError(ValueError):
    """A setting is missing or contradicts another; the message names it."""


SecretSourceName = Literal["local", "secretsmanager", "kubernetes"]


class Settings(BaseSettings):
    """Everything a worker needs besides the Temporal connection (Temporal's env config)."""

    model_config = SettingsConfigDict(env_prefix="SLIPWAY_", extra="ignore")

    role: Role = Field(
        "all",
        description="The trust domains this worker serves; the checks below ask only for "
        "what they use (a runner needs no platform, Prometheus or Slack setting).",
    )
    platform: PlatformName = "local"
    environment_platforms: dict[str, PlatformName] = Field(
        default_factory=dict, description="Environment → platform, overriding `platform`."
    )
    builder: Literal["wheel", "docker"] = "wheel"
    registry: Literal["local", "docker", "ecr"] = "local"
    metrics: Literal["traefik", "prometheus"] = "traefik"
    notifier: Literal["log", "slack"] = "log"

    state_dir: Path = Field(Path(".demo/state"), description="Local platform, artifacts, git.")
    policy_file: Path = Field(
        Path(__file__).resolve().parents[1] / "pipelines" / "policy.yaml",
        description="The worker's policy: roles, gate rules, operator rights, signers.",
    )
    deployer_key_file: Path | None = Field(
        None,
        description="The key deployers sign their messages to environments and canaries with "
        "(every deployer replica reads the same file); default: STATE_DIR/deployer.key, "
        "created on first start.",
    )
    sandbox: Literal["required", "off"] = Field(
        "required",
        description="A runner-only worker's sandbox for untrusted steps (it reads no policy); "
        "deployer and all roles take the policy's `sandbox:`.",
    )
    base_port: int = Field(18080, ge=1024, le=65000)
    environments: list[str] = ["development", "staging", "production"]

    docker_host: str = Field("", description="Docker API, e.g. unix:///run/podman.sock.")
    docker_registry: str = Field("", description="Registry host[:port] images are pushed to.")
    aws_region: str = "us-east-1"
    ecr_endpoint_url: str = Field("", description="Override the ECR endpoint (moto, VPC).")
    secret_sources: list[SecretSourceName] = Field(
        default_factory=lambda: list[SecretSourceName](["local"]),
        description="Where the deployer resolves `secrets:` references (kubernetes is added "
        "for environments on the kubernetes platform).",
    )
    secretsmanager_endpoint_url: str = Field(
        "", description="Override the Secrets Manager endpoint (moto, VPC)."
    )
    prometheus_url: str = ""
    slack_webhook_url: SecretStr | None = None
    sonarqube_url: str = ""
    sonarqube_token: SecretStr | None = None
    sonarqube_project: str = ""

    kubeconfig: str = Field("", description="Path; empty: in-cluster or default kubeconfig.")
    kube_namespaces: dict[str, str] = Field(
        default_factory=dict, description="Environment → namespace."
    )
    kube_ingress_urls: dict[str, str] = Field(
        default_factory=dict, description="Environment → base URL for HTTP checks."
    )
    kube_release_deadline_s: int = Field(
        600,
        ge=10,
        le=86_400,
        description="How long a release phase's Job may run (its activeDeadlineSeconds); a "
        "longer one needs the deploy stage's `timeout:` (15 min by default) raised with it.",
    )

    backing_services: Literal["local", "docker", "kubernetes"] = Field(
        "local",
        description="Test stages' `services:`: processes on the worker, containers, or pods.",
    )
    backing_services_namespace: str = Field("", description="For backing_services=kubernetes.")

    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR"],
        BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v),
    ] = "INFO"
    max_activities: int = Field(20, ge=1, le=1000)
    max_cached_workflows: int = Field(300, ge=0, le=100000, description="Runs kept in memory.")
    metrics_port: int = Field(0, ge=0, le=65535, description="Worker Prometheus port; 0: off.")

    @classmethod
    def load(cls, **values: object) -> Settings:
        """Settings from the environment (or `values`); every problem in one
        ConfigurationError whose lines name the variables."""
        return cls._checked(lambda: cls.model_validate(values) if values else cls())

    @classmethod
    def for_role(cls, role: Role | None) -> Settings:
        """Settings from the environment for a worker of `role` (worker.py --role), which
        overrides SLIPWAY_ROLE; checked like `load`."""
        return cls._checked(lambda: cls(role=role) if role else cls())

    @staticmethod
    def _checked(build: Callable[[], Settings]) -> Settings:
        try:
            return build()
        except ValidationError as exc:
            lines = []
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"])
                where = f"SLIPWAY_{field.upper()}: " if field else ""
                lines.append(where + str(err["msg"]).removeprefix("Value error, "))
            raise ConfigurationError("; ".join(lines)) from None

    def platform_for(self, environment: str) -> PlatformName:
        return self.environment_platforms.get(environment, self.platform)

    @property
    def platforms(self) -> set[PlatformName]:
        return {self.platform, *self.environment_platforms.values()}

    @model_validator(mode="after")
    def _complete(self) -> Settings:
        problems: list[str] = []
        deployer, runner = self.role != "runner", self.role != "deployer"
        if deployer and "kubernetes" in self.platforms:
            k8s_envs = [e for e in self.environments if self.platform_for(e) == "kubernetes"]
            missing = [e for e in k8s_envs if e not in self.kube_namespaces]
            if missing:
                problems.append(
                    f"SLIPWAY_KUBE_NAMESPACES has no namespace for {', '.join(missing)} "
                    '(JSON, e.g. {"production": "heal7-prod"})'
                )
            if self.metrics == "traefik":
                problems.append(
                    "SLIPWAY_METRICS=traefik only measures the local platform; use "
                    "SLIPWAY_METRICS=prometheus with SLIPWAY_PROMETHEUS_URL for kubernetes"
                )
        if runner and self.backing_services == "kubernetes" and not self.backing_services_namespace:
            problems.append(
                "SLIPWAY_BACKING_SERVICES=kubernetes needs SLIPWAY_BACKING_SERVICES_NAMESPACE "
                "(where the test stages' pods run)"
            )
        if deployer and self.metrics == "prometheus" and not self.prometheus_url:
            problems.append("SLIPWAY_METRICS=prometheus needs SLIPWAY_PROMETHEUS_URL")
        if deployer and self.notifier == "slack" and self.slack_webhook_url is None:
            problems.append("SLIPWAY_NOTIFIER=slack needs SLIPWAY_SLACK_WEBHOOK_URL")
        if (self.builder == "docker" or self.registry == "docker") and not self.docker_registry:
            problems.append("SLIPWAY_BUILDER/REGISTRY=docker needs SLIPWAY_DOCKER_REGISTRY")
        if self.registry == "ecr" and self.builder != "docker":
            problems.append("SLIPWAY_REGISTRY=ecr stores images: set SLIPWAY_BUILDER=docker")
        if self.builder == "docker" and self.registry == "local":
            problems.append("SLIPWAY_BUILDER=docker pushes images: set SLIPWAY_REGISTRY=docker|ecr")
        if (
            runner
            and self.sonarqube_url
            and (self.sonarqube_token is None or not self.sonarqube_project)
        ):
            problems.append(
                "SLIPWAY_SONARQUBE_URL needs SLIPWAY_SONARQUBE_TOKEN and SLIPWAY_SONARQUBE_PROJECT"
            )
        if problems:
            raise ConfigurationError("invalid worker settings: " + "; ".join(problems))
        return self
