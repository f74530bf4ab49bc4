"""Container images: built through the Docker Engine API, pushed to an OCI registry.

`DockerBuilder` builds the service's Dockerfile with the docker SDK (any engine that speaks the
Docker API: dockerd, or podman's `system service`), tags it `{registry}/{repo}:{branch}-{sha12}`
and pushes it. The artifact is identified by the manifest digest the *registry* stores, which is
what a deploy pulls by, not by the engine's local image id.

An image build is not reproducible byte for byte (layer timestamps, the config's `created`), so
"the same commit yields the same digest" is kept by asking the registry for the commit's tag
before building: a commit that was already pushed is reused, never rebuilt. That also makes a
retried build activity harmless, and is what an ECR repository with immutable tags requires.

`DockerRegistry` publishes an existing digest under more tags (pull by digest if the engine lacks
it, tag, push) and checks that the registry still reports the same digest.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx

from activities.backends import Heartbeat
from activities.contracts import (
    Artifact,
    BuildRequest,
    Finding,
    PublishRequest,
    ScannerReport,
    Severity,
)
from activities.errors import ErrorType, verdict
from activities.providers.scanners import scanner_env

__all__ = [
    "MANIFEST_MEDIA_TYPES",
    "DockerBuilder",
    "DockerRegistry",
    "ImageReference",
    "RegistryApi",
    "default_repository",
    "image_tag",
    "sanitize_tag",
    "trivy_findings",
]

DockerClientFactory = Callable[[], Any]
"""Returns a connected `docker.DockerClient` (the SDK is untyped, hence `Any`)."""

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

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_TAG_OK = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_MAX_STREAM_EVENTS = 1_000_000  # a bound on any engine stream we read; real ones are far shorter


# --- names --------------------------------------------------------------------------------


def sanitize_tag(value: str) -> str:
    """Make `value` a valid image tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.

    Branches like `feature/Login` become `feature-Login`; an empty result is an error because a
    tag that silently became something else would publish under a name nobody asked for."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", value.strip())
    cleaned = cleaned.lstrip(".-")[:128].rstrip(".-")
    if not cleaned or not _TAG_OK.fullmatch(cleaned):
        raise verdict(
            ErrorType.INVALID_DEFINITION,
            f"{value!r} cannot be used as an image tag: use letters, digits, '_', '.' or '-'",
        )
    return cleaned


def image_tag(branch: str, commit: str) -> str:
    """The build tag `{branch}-{sha12}`; the branch part is sanitised and shortened so the whole
    tag stays within 128 characters. No branch gives `commit-{sha12}`."""
    sha12 = commit[:12]
    if not re.fullmatch(r"[0-9a-fA-F]{7,64}", commit):
        raise verdict(ErrorType.INVALID_DEFINITION, f"{commit!r} is not a git commit sha")
    prefix = "commit"
    if branch.strip():
        prefix = sanitize_tag(branch)[: 128 - len(sha12) - 1].rstrip(".-") or "commit"
    return f"{prefix}-{sha12.lower()}"


def default_repository(service: str) -> str:
    """A repository name for a service: lowercase, `[a-z0-9._/-]`, no leading separators."""
    name = re.sub(r"[^a-z0-9._/-]+", "-", service.strip().lower()).strip("._/-")
    if not name:
        raise verdict(ErrorType.INVALID_DEFINITION, f"{service!r} is not a usable service name")
    return name


@dataclass(frozen=True)
class ImageReference:
    """`host[:port]/repository[:tag][@sha256:...]`, split into parts."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, reference: str) -> ImageReference:
        rest, _, digest = reference.partition("@")
        host, slash, path = rest.partition("/")
        if not slash or not path:
            raise verdict(
                ErrorType.ARTIFACT_MISSING,
                f"image reference {reference!r} names no registry host and repository",
            )
        tag: str | None = None
        last = path.rsplit("/", 1)[-1]
        if ":" in last:
            path, _, tag = path.rpartition(":")
        return cls(host=host, repository=path, tag=tag, digest=digest or None)

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repository}"


def _is_loopback(host: str) -> bool:
    """Whether `host[:port]` (or `[v6]:port`) is a loopback address."""
    if host.startswith("["):
        hostname = host[1:].partition("]")[0]
    else:
        hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


# --- the registry's HTTP API --------------------------------------------------------------


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
        scheme = "http" if _is_loopback(host) else "https"
        self._base = f"{scheme}://{host}"

    def manifest(self, repository: str, reference: str) -> ManifestInfo | None:
        """The manifest of `repository:reference` (a tag or digest), or None if the registry
        has no such manifest. Connection failures and 5xx raise (a retry may help)."""
        url = f"{self._base}/v2/{repository}/manifests/{reference}"
        headers = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
        with httpx.Client(timeout=self._timeout, follow_redirects=True) as http:
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


# --- engine streams -----------------------------------------------------------------------


def _events(stream: Iterable[object]) -> Iterable[dict[str, Any]]:
    """The JSON objects of an engine stream (decoded by the SDK), bounded in count."""
    for count, event in enumerate(stream):
        if count >= _MAX_STREAM_EVENTS:
            raise RuntimeError("docker engine stream did not end")
        if isinstance(event, dict):
            yield event


def _error_of(event: Mapping[str, Any]) -> str | None:
    error = event.get("error")
    if error is None and isinstance(event.get("errorDetail"), dict):
        error = event["errorDetail"].get("message")
    return str(error).strip() if error else None


def _transfer_error(action: str, reference: str, message: str) -> Exception:
    """Classify a push/pull error: a verdict when a retry cannot help, else a plain error."""
    lowered = message.lower()
    text = f"{action} of {reference} failed: {message}"
    if any(word in lowered for word in ("unauthorized", "denied", "authentication required")):
        return verdict(ErrorType.NOT_AUTHORIZED, text + " (check the registry credentials)")
    if "immutable" in lowered or "already exists" in lowered:
        return verdict(
            ErrorType.CONFIGURATION,
            text + " (the repository's tags are immutable: publish under a new tag)",
        )
    if action == "pull" and ("manifest unknown" in lowered or "not found" in lowered):
        return verdict(ErrorType.ARTIFACT_MISSING, text)
    if action == "push" and ("name unknown" in lowered or "does not exist" in lowered):
        return verdict(ErrorType.CONFIGURATION, text + " (create the repository first)")
    return RuntimeError(text)


def _push(
    client: Any,
    name: str,
    tag: str,
    auth: dict[str, str] | None,
    heartbeat: Heartbeat,
) -> str | None:
    """Push `name:tag`; return the manifest digest the push reported (None if it said none)."""
    digest: str | None = None
    stream = client.api.push(name, tag=tag, stream=True, decode=True, auth_config=auth)
    for event in _events(stream):
        error = _error_of(event)
        if error:
            raise _transfer_error("push", f"{name}:{tag}", error)
        aux = event.get("aux")
        if isinstance(aux, dict) and isinstance(aux.get("Digest"), str):
            digest = aux["Digest"]  # dockerd reports it here
        status = str(event.get("status", ""))
        found = _DIGEST.search(status) if "digest:" in status else None
        if found:
            digest = found.group(0)  # "<tag>: digest: sha256:... size: N" (dockerd and podman)
        if status:
            heartbeat(f"push {tag}: {status[:120]}")
    return digest


# --- builder ------------------------------------------------------------------------------


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
        self._host, _, self._namespace = registry.strip().rstrip("/").partition("/")
        self._repository_for = repository_for or default_repository
        self._auth = auth
        self._api = RegistryApi(self._host, auth)

    def _repository(self, service: str) -> str:
        repository = self._repository_for(service)
        return f"{self._namespace}/{repository}" if self._namespace else repository

    def build(self, request: BuildRequest, heartbeat: Heartbeat) -> Artifact:
        repository = self._repository(request.service)
        tag = image_tag(request.branch, request.commit)
        name = f"{self._host}/{repository}"
        heartbeat(f"looking up {name}:{tag} in the registry")
        existing = self._api.manifest(repository, tag)
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
            auth = self._auth() if self._auth is not None else None
            heartbeat(f"pushing {name}:{tag}")
            pushed = _push(client, name, tag, auth, heartbeat)
        finally:
            client.close()

        stored = self._api.manifest(repository, tag)
        if stored is None:
            raise RuntimeError(f"registry {self._host} has no {repository}:{tag} after the push")
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
        for event in _events(stream):
            error = _error_of(event)
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


# --- registry -----------------------------------------------------------------------------


_TRIVY_SEVERITY = {
    "CRITICAL": Severity.CRITICAL,
    "HIGH": Severity.HIGH,
    "MEDIUM": Severity.MEDIUM,
    "LOW": Severity.LOW,
    "NEGLIGIBLE": Severity.INFO,
    # Unknown severity is not evidence of harmlessness: count it, below the default gate.
    "UNKNOWN": Severity.MEDIUM,
}


def trivy_findings(report: object) -> list[Finding]:
    """Findings of a `trivy image --format json` report (vulnerabilities and misconfigs)."""
    findings: list[Finding] = []
    results = report.get("Results") if isinstance(report, dict) else None
    for result in results if isinstance(results, list) else []:
        if not isinstance(result, dict):
            continue
        target = str(result.get("Target", ""))
        for vuln in result.get("Vulnerabilities") or []:
            if not isinstance(vuln, dict):
                continue
            package = f"{vuln.get('PkgName', '')}@{vuln.get('InstalledVersion', '')}"
            findings.append(
                Finding(
                    scanner="trivy",
                    rule=str(vuln.get("VulnerabilityID", "unknown")),
                    severity=_TRIVY_SEVERITY.get(str(vuln.get("Severity")), Severity.MEDIUM),
                    message=str(vuln.get("Title") or vuln.get("Description") or package),
                    location=f"{target} {package}".strip(),
                )
            )
        for misconfig in result.get("Misconfigurations") or []:
            if not isinstance(misconfig, dict):
                continue
            findings.append(
                Finding(
                    scanner="trivy",
                    rule=str(misconfig.get("ID", "unknown")),
                    severity=_TRIVY_SEVERITY.get(str(misconfig.get("Severity")), Severity.MEDIUM),
                    message=str(misconfig.get("Title") or misconfig.get("Message") or ""),
                    location=target,
                )
            )
    return findings


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
        self._host, _, self._namespace = registry.strip().rstrip("/").partition("/")
        self._repository_for = repository_for or default_repository
        self._auth = auth
        self._api = RegistryApi(self._host, auth)
        self._trivy_timeout_s = trivy_timeout_s

    def publish(self, request: PublishRequest) -> Artifact:
        artifact = request.artifact
        if artifact.kind != "image" or not _DIGEST.fullmatch(artifact.digest):
            raise verdict(
                ErrorType.ARTIFACT_MISSING,
                f"{artifact.uri} is not a container image with a sha256 digest",
            )
        repository = self._repository_for(request.service)
        if self._namespace:
            repository = f"{self._namespace}/{repository}"
        name = f"{self._host}/{repository}"
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
        found = self._api.manifest(repository, tag)
        return found.digest if found else None

    def _push_tags(self, artifact: Artifact, name: str, tags: list[str]) -> None:
        source = ImageReference.parse(artifact.uri)
        source_ref = f"{source.name}@{artifact.digest}"
        auth = self._auth() if self._auth is not None else None
        client = self._client_factory()
        try:
            # Pull by digest: the engine may not hold the image (another worker built it), and
            # podman does not index pushed images by their registry digest.
            for event in _events(
                client.api.pull(source_ref, stream=True, decode=True, auth_config=auth)
            ):
                error = _error_of(event)
                if error:
                    raise _transfer_error("pull", source_ref, error)
            for tag in tags:
                client.api.tag(source_ref, name, tag)
                pushed = _push(client, name, tag, auth, lambda _note: None)
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
        trivy = shutil.which("trivy")
        if trivy is None:
            return ScannerReport(
                scanner="trivy",
                available=False,
                reason="trivy is not installed on this worker, so the image was not scanned",
            )
        return self._trivy(trivy, artifact)

    def _trivy(self, trivy: str, artifact: Artifact) -> ScannerReport:
        env: dict[str, str] = {}
        credentials = self._auth() if self._auth is not None else None
        if credentials and "username" in credentials and "password" in credentials:
            env["TRIVY_USERNAME"] = credentials["username"]
            env["TRIVY_PASSWORD"] = credentials["password"]
        if _is_loopback(ImageReference.parse(artifact.uri).host):
            env["TRIVY_INSECURE"] = "true"
        with tempfile.TemporaryDirectory(prefix="slipway-trivy-") as out_dir:
            output = Path(out_dir) / "report.json"
            home = Path(out_dir) / "home"
            home.mkdir()
            try:
                completed = subprocess.run(
                    [
                        trivy,
                        "image",
                        "--quiet",
                        "--format",
                        "json",
                        "--output",
                        str(output),
                        artifact.uri,
                    ],
                    env=scanner_env(home, env),
                    capture_output=True,
                    text=True,
                    timeout=self._trivy_timeout_s,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return _unavailable(f"trivy did not finish within {self._trivy_timeout_s:.0f}s")
            if completed.returncode != 0 or not output.is_file():
                tail = (completed.stderr or completed.stdout).strip()[-400:]
                return _unavailable(f"trivy exited {completed.returncode}: {tail}")
            try:
                report = json.loads(output.read_text())
            except ValueError as error:
                return _unavailable(f"trivy wrote unreadable JSON: {error}")
        return ScannerReport(scanner="trivy", findings=trivy_findings(report))


def _unavailable(reason: str) -> ScannerReport:
    return ScannerReport(scanner="trivy", available=False, reason=reason)
