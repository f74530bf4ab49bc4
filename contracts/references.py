"""What a run's releases refer to, for the check at its start (`ActivityName.CHECK_REFERENCES`).

Every secret reference and resource a release will use in each environment the run deploys to,
each with the definition field that declares it, so the deployer can say, before anything is
built or deployed, which of them does not resolve on the platform in use (the local store,
AWS Secrets Manager, a Kubernetes Secret), in one sentence naming the environment and field.
Pure: built from the validated definition only.
"""

from __future__ import annotations

from collections.abc import Iterable

from contracts.activity import ReferenceCheckRequest, ReleaseReferences, SecretRef
from contracts.definition.model import ArtifactSpec, EnvironmentSpec, PipelineSpec
from contracts.definition.service_templates import parse_service, template_references

__all__ = ["deployed_environments", "reference_check", "refers_to_nothing"]

DEPLOYING_KINDS = frozenset({"deploy", "canary"})
"""Stage kinds that put a release into an environment (a canary deploys its canary slot)."""


def deployed_environments(spec: PipelineSpec) -> list[str]:
    """The environments a run of `spec` may deploy to, in the order stages name them."""
    named = (s.environment_name for s in spec.stages if s.kind in DEPLOYING_KINDS)
    return list(dict.fromkeys(n for n in named if n is not None))


def reference_check(
    spec: PipelineSpec, environments: Iterable[str] | None = None
) -> ReferenceCheckRequest:
    """The question for `environments` (default: every one a deploy or canary stage names)."""
    wanted = deployed_environments(spec) if environments is None else list(environments)
    releases: list[ReleaseReferences] = []
    for environment in wanted:
        declared = spec.environments.get(environment) or EnvironmentSpec()
        top = {
            name: (f"environments.{environment}.secrets.{name}", ref.ref())
            for name, ref in declared.secrets.items()
        }
        resources = list(declared.resources)
        resources_field = f"environments.{environment}.resources"
        if not spec.artifacts:
            releases.append(
                ReleaseReferences(
                    environment=environment,
                    service=spec.service.name,
                    secrets=dict(top.values()),
                    env=dict(spec.service.env),
                    env_field="service.env",
                    resources=resources,
                    resources_field=resources_field,
                )
            )
            continue
        for name, artifact in spec.artifacts.items():
            releases.append(
                ReleaseReferences(
                    environment=environment,
                    service=f"{spec.service.name}-{name}",
                    secrets=dict(_component_secrets(top, name, artifact, environment).values()),
                    env=dict(artifact.env),
                    env_field=f"artifacts.{name}.env",
                    resources=_used(resources, artifact.env),
                    resources_field=resources_field,
                )
            )
    return ReferenceCheckRequest(service=spec.service.name, releases=releases)


def _component_secrets(
    top: dict[str, tuple[str, SecretRef]], name: str, artifact: ArtifactSpec, environment: str
) -> dict[str, tuple[str, SecretRef]]:
    """The secrets one artifact runs with (as `PipelineSpec.release_config` and
    `ReleaseConfig.for_component` combine them), each with the field that declares it."""
    here = artifact.environments.get(environment)
    own_settings = set(artifact.settings)
    own: dict[str, tuple[str, SecretRef]] = {
        k: (f"artifacts.{name}.secrets.{k}", ref.ref()) for k, ref in artifact.secrets.items()
    }
    if here is not None:
        own = {k: v for k, v in own.items() if k not in here.settings}
        own_settings = (own_settings - set(here.secrets)) | set(here.settings)
        own.update(
            {
                k: (f"artifacts.{name}.environments.{environment}.secrets.{k}", ref.ref())
                for k, ref in here.secrets.items()
            }
        )
    merged = {k: v for k, v in top.items() if k not in own_settings}
    merged.update(own)
    return merged


def _used(resources: list[str], env: dict[str, str]) -> list[str]:
    """The resources an artifact's `env:` refers to (as a bundle's deploy gives it)."""
    kinds = {kind for value in env.values() for kind, _ in template_references(value)}
    return [r for r in resources if parse_service(r).kind in kinds]


def refers_to_nothing(request: ReferenceCheckRequest) -> bool:
    """Whether no release of `request` names a secret, a resource or a resource placeholder:
    then there is nothing for the deployer to look up."""
    for release in request.releases:
        if release.secrets or release.resources:
            return False
        for value in release.env.values():
            try:
                if template_references(value):
                    return False
            except ValueError:
                return False  # not a template the loader let through: let the deployer say
    return True
