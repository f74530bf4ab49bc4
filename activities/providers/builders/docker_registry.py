"""Publishing a pushed image under more tags through the Docker Engine API, and scanning it
with `trivy image`."""

from __future__ import annotations

from collections.abc import Callable

import docker.errors

from activities.providers.builders.engine_stream import (
    DockerClientFactory,
    error_of,
    events,
    push,
    transfer_error,
)
from activities.providers.builders.image_names import (
    DIGEST,
    ImageReference,
    is_loopback,
    sanitize_tag,
)
from activities.providers.builders.registry_api import RegistryAuth, RegistryTarget
from activities.providers.scanners.trivy_image import scan_image
from contracts.activity import Artifact, PublishRequest, ScannerReport
from contracts.errors import ErrorType, verdict

__all__ = ["DockerRegistry"]


class DockerRegistry:
    """Registry backend for any OCI registry, through the Docker Engine API.

    `publish` tags the artifact's digest with more tags and pushes them to
    `{registry}/{repository_for(service)}`; the registry must then report the same digest for
    every tag (checked). The source is the artifact's own URI, pulled by digest, so promoting
    from a build repository to a release one works when the same credentials reach both.
    `scan` runs `trivy image` when the worker has trivy, and otherwise reports the scanner
    unavailable (never an empty pass)."""

    def __init__(
        self,
        client_factory: DockerClientFactory,
        registry: str,
        repository_for: Callable[[str], str] | None = None,
        auth: RegistryAuth | None = None,
        trivy_timeout_s: float = 600.0,
    ) -> None:
        self._client_factory = client_factory
        self._target = RegistryTarget(registry, repository_for, auth)
        self._trivy_timeout_s = trivy_timeout_s

    def publish(self, request: PublishRequest) -> Artifact:
        artifact = request.artifact
        if artifact.kind != "image" or not DIGEST.fullmatch(artifact.digest):
            raise verdict(
                ErrorType.ARTIFACT_MISSING,
                f"{artifact.uri} is not a container image with a sha256 digest",
            )
        repository = self._target.repository(request.service)
        name = f"{self._target.host}/{repository}"
        tags = list(dict.fromkeys(sanitize_tag(t) for t in request.tags))
        missing = [t for t in tags if self._digest_of(repository, t) != artifact.digest]
        if missing:
            self._push_tags(artifact, name, missing)
        for tag in tags:
            stored = self._digest_of(repository, tag)
            if stored != artifact.digest:
                raise verdict(
                    ErrorType.CONFIGURATION,
                    f"after publishing, {name}:{tag} is {stored or 'missing'}, not "
                    f"{artifact.digest}: the engine changed the image on push",
                )
        return artifact.model_copy(update={"uri": f"{name}@{artifact.digest}", "tags": tags})

    def _digest_of(self, repository: str, tag: str) -> str | None:
        found = self._target.api.manifest(repository, tag)
        return found.digest if found else None

    def _push_tags(self, artifact: Artifact, name: str, tags: list[str]) -> None:
        source = ImageReference.parse(artifact.uri)
        source_ref = f"{source.name}@{artifact.digest}"
        auth = self._target.credentials()
        client = self._client_factory()
        try:
            # Pull by digest: the engine may not hold the image (another worker built it), and
            # podman does not index pushed images by their registry digest.
            for event in events(
                client.api.pull(source_ref, stream=True, decode=True, auth_config=auth)
            ):
                error = error_of(event)
                if error:
                    raise transfer_error("pull", source_ref, error)
            for tag in tags:
                client.api.tag(source_ref, name, tag)
                pushed = push(client, name, tag, auth, lambda _note: None)
                if pushed is not None and pushed != artifact.digest:
                    raise verdict(
                        ErrorType.CONFIGURATION,
                        f"pushing {name}:{tag} produced {pushed}, not {artifact.digest}: "
                        "the engine re-encoded the image",
                    )
        except docker.errors.NotFound as error:
            raise verdict(
                ErrorType.ARTIFACT_MISSING, f"{source_ref} is not in the registry: {error}"
            ) from error
        finally:
            client.close()

    def scan(self, artifact: Artifact) -> ScannerReport:
        credentials = self._target.credentials()
        insecure = is_loopback(ImageReference.parse(artifact.uri).host)
        return scan_image(artifact.uri, credentials, insecure, self._trivy_timeout_s)
