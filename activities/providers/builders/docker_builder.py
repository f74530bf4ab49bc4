"""Container images: built through the Docker Engine API, pushed to an OCI registry.

`DockerBuilder` builds the service's Dockerfile with the docker SDK (any engine that speaks the
Docker API: dockerd, or podman's `system service`), tags it `{registry}/{repo}:{branch}-{sha12}`
and pushes it. The artifact is identified by the manifest digest the *registry* stores, which is
what a deploy pulls by, not by the engine's local image id.

An image build is not reproducible byte for byte (layer timestamps, the config's `created`), so
"the same commit yields the same digest" is kept by asking the registry for the commit's tag
before building: a commit that was already pushed is reused, never rebuilt. That also makes a
retried build activity harmless, and is what an ECR repository with immutable tags requires.

Publishing and scanning pushed images is `docker_registry.DockerRegistry`; names, the
registry's HTTP API and the engine's streams have modules of their own (`image_names`,
`registry_api`, `engine_stream`), whose public names are re-exported here for older imports.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from activities.providers.builders.docker_registry import DockerRegistry
from activities.providers.builders.engine_stream import DockerClientFactory, error_of, events, push
from activities.providers.builders.image_names import (
    ImageReference,
    default_repository,
    image_tag,
    sanitize_tag,
)
from activities.providers.builders.registry_api import (
    MANIFEST_MEDIA_TYPES,
    ManifestInfo,
    RegistryApi,
    RegistryAuth,
    RegistryTarget,
)
from activities.wiring.backends import Heartbeat
from contracts.activity import Artifact, BuildRequest
from contracts.errors import ErrorType, verdict

__all__ = [
    "MANIFEST_MEDIA_TYPES",
    "DockerBuilder",
    "DockerRegistry",
    "ImageReference",
    "RegistryApi",
    "default_repository",
    "image_tag",
    "sanitize_tag",
]


class DockerBuilder:
    """Builder of container images with the Docker Engine API, pushed to `registry`.

    `registry` is `host[:port]` optionally followed by a namespace (`ghcr.io/acme`).
    `repository_for(service)` names the repository (default: the service name, lowercased);
    pass `EcrRegistry.repository_for` to create ECR repositories on first use.
    `auth()` supplies the registry credentials for every push (see `EcrRegistry.docker_auth`).
    """

    def __init__(
        self,
        client_factory: DockerClientFactory,
        registry: str,
        repository_for: Callable[[str], str] | None = None,
        auth: RegistryAuth | None = None,
    ) -> None:
        self._client_factory = client_factory
        self._target = RegistryTarget(registry, repository_for, auth)

    def build(self, request: BuildRequest, heartbeat: Heartbeat) -> Artifact:
        repository = self._target.repository(request.service)
        tag = image_tag(request.branch, request.commit)
        name = f"{self._target.host}/{repository}"
        heartbeat(f"looking up {name}:{tag} in the registry")
        existing = self._target.api.manifest(repository, tag)
        if existing is not None:
            # Already built and pushed for this commit: reuse it, the digest stays the same.
            heartbeat(f"reusing {name}:{tag} ({existing.digest})")
            return self._artifact(name, tag, request.commit, existing)

        context = Path(request.path)
        if not (context / "Dockerfile").is_file():
            raise verdict(
                ErrorType.BUILD_FAILED,
                f"no Dockerfile in {context} for service {request.service!r}: "
                "add one or use the wheel builder",
            )
        client = self._client_factory()
        try:
            self._build(client, context, f"{name}:{tag}", request, heartbeat)
            auth = self._target.credentials()
            heartbeat(f"pushing {name}:{tag}")
            pushed = push(client, name, tag, auth, heartbeat)
        finally:
            client.close()

        stored = self._target.api.manifest(repository, tag)
        if stored is None:
            raise RuntimeError(
                f"registry {self._target.host} has no {repository}:{tag} after the push"
            )
        if pushed is not None and pushed != stored.digest:
            # Someone pushed the same tag concurrently; a retry will reuse what is there.
            raise RuntimeError(
                f"push of {name}:{tag} reported {pushed} but the registry now has {stored.digest}"
            )
        return self._artifact(name, tag, request.commit, stored)

    def _build(
        self,
        client: Any,
        context: Path,
        reference: str,
        request: BuildRequest,
        heartbeat: Heartbeat,
    ) -> None:
        heartbeat(f"building {reference}")
        last_lines: list[str] = []
        stream = client.api.build(
            path=str(context),
            tag=reference,
            rm=True,
            forcerm=True,
            decode=True,
            labels={
                "org.opencontainers.image.revision": request.commit,
                "org.opencontainers.image.title": request.service,
            },
        )
        for event in events(stream):
            error = error_of(event)
            if error:
                # The engine says the Dockerfile or its context is wrong: rebuilding the same
                # commit fails the same way, so this is a verdict, not a retry.
                tail = "".join(last_lines[-5:]).strip()
                raise verdict(
                    ErrorType.BUILD_FAILED,
                    f"docker build of {request.service} at {request.commit[:12]} failed: "
                    f"{error}" + (f" (last output: {tail})" if tail else ""),
                )
            line = event.get("stream")
            if isinstance(line, str) and line.strip():
                last_lines = [*last_lines[-9:], line]
                heartbeat(f"build: {line.strip()[:160]}")

    @staticmethod
    def _artifact(name: str, tag: str, commit: str, manifest: ManifestInfo) -> Artifact:
        return Artifact(
            kind="image",
            digest=manifest.digest,
            uri=f"{name}@{manifest.digest}",
            size_bytes=manifest.size_bytes,
            version=commit[:12],
            tags=[tag],
        )
