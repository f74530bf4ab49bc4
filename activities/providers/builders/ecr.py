"""Amazon ECR: repositories, docker credentials, publishing by manifest, scan findings.

Images are built and pushed by `DockerBuilder` (ECR speaks the registry API, with the basic
credentials `docker_auth` returns); this module does what only the ECR API can:

- `ensure_repository` creates a repository with immutable tags and scan-on-push, and brings an
  existing one to that configuration, so that a tag, once pushed, always means one digest.
- `publish` adds tags the way ECR does it: `batch_get_image` reads the manifest stored under
  the artifact's digest and `put_image` stores the *same bytes* under each new tag. No image
  goes through a docker engine, so the digest cannot change (an engine re-push could
  re-encode the manifest), nothing is pulled, and it works on workers without docker.
- `scan` reads `describe_image_scan_findings` (basic and enhanced scanning) into a
  `ScannerReport`; a scan that is still running raises a retryable error so Temporal's retry
  policy polls it, and a scan that cannot produce findings is reported unavailable.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from activities.providers.builders.image_names import (
    ImageReference,
    default_repository,
    sanitize_tag,
)
from activities.providers.builders.registry_api import MANIFEST_MEDIA_TYPES
from contracts.activity import Artifact, Finding, PublishRequest, ScannerReport, Severity
from contracts.errors import ErrorType, verdict

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient
    from mypy_boto3_ecr.type_defs import DescribeImageScanFindingsResponseTypeDef, ImageTypeDef

__all__ = ["EcrRegistry", "EcrScanPendingError", "ecr_client"]

SCANNER = "ecr"
MAX_FINDING_PAGES = 100  # 100 x 1000 findings: a bound, not a limit anyone meets

_SEVERITY = {
    "INFORMATIONAL": Severity.INFO,
    "LOW": Severity.LOW,
    "MEDIUM": Severity.MEDIUM,
    "HIGH": Severity.HIGH,
    "CRITICAL": Severity.CRITICAL,
    # ECR has no severity for these yet; that is not evidence of harmlessness, so they are
    # counted at MEDIUM: visible in every report, below the default HIGH/CRITICAL gate.
    "UNDEFINED": Severity.MEDIUM,
    "UNTRIAGED": Severity.MEDIUM,
}

_AUTH_ERRORS = {
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "InvalidClientTokenId",
}
_MISSING_ERRORS = {"RepositoryNotFoundException", "ImageNotFoundException"}


class EcrScanPendingError(RuntimeError):
    """ECR has not finished scanning the image yet; retrying later will find the results."""


def ecr_client(endpoint_url: str | None, region: str) -> ECRClient:
    """A boto3 ECR client that makes each call once: retries belong to Temporal's policy, which
    knows the activity's deadline. `endpoint_url` points at a stand-in (moto) in tests."""
    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.client("ecr", region_name=region, endpoint_url=endpoint_url, config=config)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _translate(error: ClientError, action: str) -> Exception:
    """A verdict for errors a retry cannot fix; the original error (retryable) otherwise."""
    code = _code(error)
    if code in _AUTH_ERRORS:
        return verdict(
            ErrorType.NOT_AUTHORIZED,
            f"ECR refused to {action} ({code}): give the worker's AWS role the ECR permission",
        )
    if code in _MISSING_ERRORS:
        return verdict(ErrorType.ARTIFACT_MISSING, f"ECR could not {action}: {error}")
    return error


class EcrRegistry:
    """Registry backend for Amazon ECR, through a boto3 ECR client (see `ecr_client`).

    Pair it with `DockerBuilder(..., registry=<ECR host>, repository_for=ecr.repository_for,
    auth=ecr.docker_auth)`: repositories are created on first use and every push gets a fresh
    authorization token."""

    def __init__(self, client: ECRClient) -> None:
        self._client = client

    # --- repositories and credentials -------------------------------------------------------

    def ensure_repository(self, name: str) -> str:
        """Create `name` with immutable tags and scan-on-push, or bring an existing repository
        to that configuration; return its URI. Calling it again changes nothing."""
        try:
            created = self._client.create_repository(
                repositoryName=name,
                imageTagMutability="IMMUTABLE",
                imageScanningConfiguration={"scanOnPush": True},
            )
            return created["repository"]["repositoryUri"]
        except ClientError as error:
            if _code(error) != "RepositoryAlreadyExistsException":
                raise _translate(error, f"create repository {name!r}") from error
        try:
            found = self._client.describe_repositories(repositoryNames=[name])["repositories"][0]
            if found.get("imageTagMutability") != "IMMUTABLE":
                self._client.put_image_tag_mutability(
                    repositoryName=name, imageTagMutability="IMMUTABLE"
                )
            if not found.get("imageScanningConfiguration", {}).get("scanOnPush"):
                self._client.put_image_scanning_configuration(
                    repositoryName=name, imageScanningConfiguration={"scanOnPush": True}
                )
        except ClientError as error:
            raise _translate(error, f"configure repository {name!r}") from error
        return found["repositoryUri"]

    def repository_for(self, service: str) -> str:
        """The repository name of `service`, created if missing (for `DockerBuilder`)."""
        name = default_repository(service)
        self.ensure_repository(name)
        return name

    def docker_auth(self) -> dict[str, str]:
        """Docker credentials from `get_authorization_token`: the token is base64 of
        `user:password` (the user is `AWS`), valid for 12 hours, so fetch it per push."""
        try:
            data = self._client.get_authorization_token()["authorizationData"]
        except ClientError as error:
            raise _translate(error, "issue a registry authorization token") from error
        if not data or "authorizationToken" not in data[0]:
            raise RuntimeError("ECR returned no authorization token")
        decoded = base64.b64decode(data[0]["authorizationToken"]).decode()
        username, separator, password = decoded.partition(":")
        if not separator:
            raise RuntimeError("ECR's authorization token is not 'user:password'")
        endpoint = data[0].get("proxyEndpoint", "")
        registry = endpoint.removeprefix("https://").removeprefix("http://").rstrip("/")
        return {
            "username": username,
            "password": password,
            "registry": registry,
            # The Docker Engine API's name for it (X-Registry-Auth).
            "serveraddress": endpoint,
        }

    # --- Registry protocol ------------------------------------------------------------------

    def publish(self, request: PublishRequest) -> Artifact:
        artifact = request.artifact
        repository = ImageReference.parse(artifact.uri).repository
        tags = list(dict.fromkeys(sanitize_tag(t) for t in request.tags))
        image = self._image_by_digest(repository, artifact.digest)
        current = self._tag_digests(repository, tags)
        for tag in tags:
            if current.get(tag) == artifact.digest:
                continue  # published before: nothing to do
            self._put_tag(repository, tag, image, artifact.digest)
        return artifact.model_copy(update={"tags": tags})

    def _image_by_digest(self, repository: str, digest: str) -> ImageTypeDef:
        try:
            found = self._client.batch_get_image(
                repositoryName=repository,
                imageIds=[{"imageDigest": digest}],
                acceptedMediaTypes=list(MANIFEST_MEDIA_TYPES),
            )
        except ClientError as error:
            raise _translate(error, f"read {repository}@{digest}") from error
        images = found.get("images", [])
        if not images or "imageManifest" not in images[0]:
            reasons = "; ".join(
                f"{f.get('failureCode', '')}: {f.get('failureReason', '')}"
                for f in found.get("failures", [])
            )
            raise verdict(
                ErrorType.ARTIFACT_MISSING,
                f"ECR repository {repository!r} has no image {digest}"
                + (f" ({reasons})" if reasons else ""),
            )
        return images[0]

    def _tag_digests(self, repository: str, tags: list[str]) -> dict[str, str]:
        """The digest each existing tag points to (missing tags are absent).

        One `describe_images` per tag: `batch_get_image` does not reliably say which of an
        image's tags an answer is for, and `describe_images` fails whole if one tag is missing.
        """
        out: dict[str, str] = {}
        for tag in tags:
            try:
                found = self._client.describe_images(
                    repositoryName=repository, imageIds=[{"imageTag": tag}]
                )
            except ClientError as error:
                if _code(error) == "ImageNotFoundException":
                    continue
                raise _translate(error, f"read tag {tag!r} of {repository!r}") from error
            details = found.get("imageDetails", [])
            if details and "imageDigest" in details[0]:
                out[tag] = details[0]["imageDigest"]
        return out

    def _put_tag(self, repository: str, tag: str, image: ImageTypeDef, digest: str) -> None:
        extra: dict[str, Any] = {}
        if image.get("imageManifestMediaType"):
            extra["imageManifestMediaType"] = image["imageManifestMediaType"]
        try:
            stored = self._client.put_image(
                repositoryName=repository,
                imageManifest=image["imageManifest"],
                imageTag=tag,
                imageDigest=digest,
                **extra,
            )
        except ClientError as error:
            if _code(error) not in (
                "ImageTagAlreadyExistsException",
                "ImageAlreadyExistsException",
            ):
                raise _translate(error, f"tag {repository}@{digest} as {tag!r}") from error
            holder = self._tag_digests(repository, [tag]).get(tag)
            if holder == digest:
                return  # a concurrent publish of the same tag: done
            raise verdict(
                ErrorType.CONFIGURATION,
                f"tag {tag!r} of ECR repository {repository!r} already points to {holder}; "
                "the repository's tags are immutable, so publish under a new tag",
            ) from error
        got = stored["image"].get("imageId", {}).get("imageDigest")
        if got != digest:
            raise RuntimeError(f"ECR stored {repository}:{tag} as {got}, expected {digest}")

    def scan(self, artifact: Artifact) -> ScannerReport:
        repository = ImageReference.parse(artifact.uri).repository
        findings: list[Finding] = []
        next_token: str | None = None
        for _page in range(MAX_FINDING_PAGES):
            page = self._findings_page(repository, artifact.digest, next_token)
            if isinstance(page, ScannerReport):
                return page
            findings.extend(_findings(page))
            next_token = page.get("nextToken")
            if not next_token:
                break
        return ScannerReport(scanner=SCANNER, findings=findings)

    def _findings_page(
        self, repository: str, digest: str, next_token: str | None
    ) -> DescribeImageScanFindingsResponseTypeDef | ScannerReport:
        """One page of findings, or the report to return when there are none to read."""
        paging: dict[str, Any] = {"nextToken": next_token} if next_token else {}
        try:
            page = self._client.describe_image_scan_findings(
                repositoryName=repository,
                imageId={"imageDigest": digest},
                maxResults=1000,
                **paging,
            )
        except ClientError as error:
            if _code(error) == "ScanNotFoundException":
                return ScannerReport(
                    scanner=SCANNER,
                    available=False,
                    reason=f"ECR has no scan of {repository}@{digest}: enable scan on push "
                    "(ensure_repository does) or start a scan",
                )
            raise _translate(error, f"read scan findings of {repository}@{digest}") from error
        status = page.get("imageScanStatus", {})
        state = status.get("status", "")
        if state in ("IN_PROGRESS", "PENDING"):
            raise EcrScanPendingError(
                f"ECR is still scanning {repository}@{digest} ({state}); retry later"
            )
        if state not in ("COMPLETE", "ACTIVE"):
            return ScannerReport(
                scanner=SCANNER,
                available=False,
                reason=f"ECR scan of {repository}@{digest} is {state or 'unknown'}: "
                f"{status.get('description', 'no description')}",
            )
        return page


def _findings(page: DescribeImageScanFindingsResponseTypeDef) -> list[Finding]:
    """Basic-scanning `findings` and enhanced-scanning (Inspector) `enhancedFindings`."""
    results = page.get("imageScanFindings", {})
    findings: list[Finding] = []
    for basic in results.get("findings", []):
        attributes = {a["key"]: a.get("value", "") for a in basic.get("attributes", [])}
        package = attributes.get("package_name", "")
        version = attributes.get("package_version", "")
        name = basic.get("name", "unknown")
        findings.append(
            Finding(
                scanner=SCANNER,
                rule=name,
                severity=_SEVERITY.get(basic.get("severity", ""), Severity.MEDIUM),
                message=basic.get("description") or name,
                location=f"{package}@{version}" if package else "",
            )
        )
    for enhanced in results.get("enhancedFindings", []):
        details = enhanced.get("packageVulnerabilityDetails", {})
        packages = details.get("vulnerablePackages", [])
        location = ""
        if packages:
            location = f"{packages[0].get('name', '')}@{packages[0].get('version', '')}"
        title = enhanced.get("title", "")
        findings.append(
            Finding(
                scanner=SCANNER,
                rule=details.get("vulnerabilityId") or title or "unknown",
                severity=_SEVERITY.get(enhanced.get("severity", ""), Severity.MEDIUM),
                message=title or enhanced.get("description", ""),
                location=location,
            )
        )
    return findings
