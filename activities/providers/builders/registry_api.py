"""A client of the Docker Registry HTTP API v2: what manifest (digest, size) a registry holds
under a tag, asked of the registry itself rather than of an engine."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from activities.providers.builders.image_names import default_repository, is_loopback
from activities.wiring.tls import verifying_context
from contracts.errors import ErrorType, verdict

__all__ = [
    "MANIFEST_MEDIA_TYPES",
    "ManifestInfo",
    "RegistryApi",
    "RegistryAuth",
    "RegistryTarget",
]

RegistryAuth = Callable[[], "dict[str, str] | None"]
"""Returns docker auth_config (`username`, `password`, optionally `registry`) or None.
Called for every build/publish so short-lived credentials (ECR tokens) stay fresh."""

MANIFEST_MEDIA_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
"""What we accept when asking a registry for a manifest. Without the Accept header a registry
may answer a converted (schema 1) manifest whose digest is not the one that was pushed."""


@dataclass(frozen=True)
class ManifestInfo:
    """What the registry reports for a manifest: its digest and the image's compressed size."""

    digest: str
    size_bytes: int
    media_type: str


class RegistryApi:
    """The few Docker Registry HTTP API v2 calls we need (`GET /v2/<repo>/manifests/<ref>`),
    with the registry's Basic or Bearer-token authentication.

    The engine cannot answer "does the registry have this tag, with which digest" portably
    (podman lacks `/distribution/<ref>/json`), so we ask the registry directly. Registries on
    loopback are spoken to over plain HTTP, like the Docker engine treats them as insecure by
    default; any other host over HTTPS."""

    def __init__(self, host: str, auth: RegistryAuth | None = None, timeout_s: float = 30.0):
        self._host = host
        self._auth = auth
        self._timeout = timeout_s
        scheme = "http" if is_loopback(host) else "https"
        self._base = f"{scheme}://{host}"

    def manifest(self, repository: str, reference: str) -> ManifestInfo | None:
        """The manifest of `repository:reference` (a tag or digest), or None if the registry
        has no such manifest. Connection failures and 5xx raise (a retry may help)."""
        url = f"{self._base}/v2/{repository}/manifests/{reference}"
        headers = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
        with httpx.Client(
            timeout=self._timeout, follow_redirects=True, verify=verifying_context()
        ) as http:
            response = http.get(url, headers=headers)
            if response.status_code == 401:
                headers["Authorization"] = self._authorization(http, response, repository)
                response = http.get(url, headers=headers)
        if response.status_code == 404:
            return None
        if response.status_code in (401, 403):
            raise verdict(
                ErrorType.NOT_AUTHORIZED,
                f"registry {self._host} refused to read {repository}:{reference} "
                f"(HTTP {response.status_code}): check the registry credentials",
            )
        response.raise_for_status()
        body = response.content
        digest = response.headers.get("Docker-Content-Digest") or (
            "sha256:" + hashlib.sha256(body).hexdigest()
        )
        return ManifestInfo(
            digest=digest,
            size_bytes=_manifest_size(body),
            media_type=response.headers.get("Content-Type", ""),
        )

    def _credentials(self) -> tuple[str, str] | None:
        config = self._auth() if self._auth is not None else None
        if not config or "username" not in config or "password" not in config:
            return None
        return config["username"], config["password"]

    def _authorization(self, http: httpx.Client, challenge: httpx.Response, repo: str) -> str:
        """Answer a 401's `WWW-Authenticate` challenge with an Authorization header value."""
        credentials = self._credentials()
        header = challenge.headers.get("WWW-Authenticate", "")
        scheme, _, params_text = header.partition(" ")
        if scheme.lower() == "basic":
            if credentials is None:
                raise verdict(
                    ErrorType.NOT_AUTHORIZED,
                    f"registry {self._host} needs credentials and none were configured",
                )
            token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            return f"Basic {token}"
        if scheme.lower() != "bearer":
            raise verdict(
                ErrorType.NOT_AUTHORIZED,
                f"registry {self._host} asks for unsupported authentication {header!r}",
            )
        params = dict(re.findall(r'(\w+)="([^"]*)"', params_text))
        realm = params.pop("realm", "")
        if not realm:
            raise verdict(
                ErrorType.NOT_AUTHORIZED,
                f"registry {self._host} sent a Bearer challenge without a realm",
            )
        params.setdefault("scope", f"repository:{repo}:pull")
        token_response = http.get(realm, params=params, auth=credentials)
        if token_response.status_code in (401, 403):
            raise verdict(
                ErrorType.NOT_AUTHORIZED,
                f"registry {self._host}'s token service refused the configured credentials",
            )
        token_response.raise_for_status()
        payload = token_response.json()
        bearer: object = None
        if isinstance(payload, dict):
            bearer = payload.get("token") or payload.get("access_token")
        if not isinstance(bearer, str):
            raise RuntimeError(f"registry {self._host}'s token service answered no token")
        return f"Bearer {bearer}"


def _manifest_size(body: bytes) -> int:
    """Compressed size of an image manifest's config and layers (0 for an index)."""
    try:
        document = json.loads(body)
    except ValueError:
        return 0
    if not isinstance(document, dict):
        return 0
    total = 0
    for part in [document.get("config"), *(document.get("layers") or [])]:
        if isinstance(part, dict) and isinstance(part.get("size"), int):
            total += part["size"]
    return total


class RegistryTarget:
    """Where a service's images live: `registry` is `host[:port]` optionally followed by a
    namespace (`ghcr.io/acme`); `repository_for(service)` names the repository inside it
    (default: the service name, lowercased); `auth()` gives fresh credentials per use."""

    def __init__(
        self,
        registry: str,
        repository_for: Callable[[str], str] | None = None,
        auth: RegistryAuth | None = None,
    ) -> None:
        self.host, _, self._namespace = registry.strip().rstrip("/").partition("/")
        self._repository_for = repository_for or default_repository
        self._auth = auth
        self.api = RegistryApi(self.host, auth)

    def repository(self, service: str) -> str:
        """The repository path of `service` in the registry, namespace included."""
        repository = self._repository_for(service)
        return f"{self._namespace}/{repository}" if self._namespace else repository

    def credentials(self) -> dict[str, str] | None:
        return self._auth() if self._auth is not None else None
