"""EcrRegistry against moto's ECR server on loopback."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError

from activities.providers.builders.ecr import EcrRegistry, EcrScanPendingError, ecr_client
from activities.wiring.backends import Registry
from contracts.activity import Artifact, PublishRequest, Severity
from contracts.errors import ErrorType
from tests.support.ecr_endpoint import running_moto

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient

pytestmark = pytest.mark.realserver

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_moto(tmp_path_factory.mktemp("moto")) as url:
        yield url


@pytest.fixture
def client(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> ECRClient:
    # moto accepts any credentials; set them so the real credential chain is never consulted.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return ecr_client(moto_url, REGION)


@pytest.fixture
def ecr(client: ECRClient) -> EcrRegistry:
    return EcrRegistry(client)


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _manifest(content: str) -> str:
    """A Docker v2 image manifest (moto does not check that the blobs exist)."""

    def digest(text: str) -> str:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 100,
                "digest": digest("config " + content),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": 200,
                    "digest": digest("layer " + content),
                }
            ],
        }
    )


def _pushed_image(ecr: EcrRegistry, client: ECRClient, repository: str, tag: str) -> Artifact:
    """What `DockerBuilder` would return after pushing `repository:tag`."""
    uri = ecr.ensure_repository(repository)
    stored = client.put_image(
        repositoryName=repository, imageManifest=_manifest(repository + tag), imageTag=tag
    )
    digest = stored["image"]["imageId"]["imageDigest"]
    return Artifact(kind="image", digest=digest, uri=f"{uri}@{digest}", tags=[tag])


def _tag_digest(client: ECRClient, repository: str, tag: str) -> str:
    images = client.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
    return images["imageDetails"][0]["imageDigest"]


def _set_scan_results(moto_url: str, result: dict[str, Any]) -> None:
    response = httpx.post(
        f"{moto_url}/moto-api/static/ecr/scan-finding-results",
        json={"results": [result], "region": REGION},
        timeout=10,
    )
    response.raise_for_status()


def test_ecr_registry_satisfies_the_protocol(ecr: EcrRegistry) -> None:
    assert isinstance(ecr, Registry)


def test_ensure_repository_is_immutable_scans_on_push_and_is_idempotent(
    ecr: EcrRegistry, client: ECRClient
) -> None:
    name = _name("shop")

    first = ecr.ensure_repository(name)
    second = ecr.ensure_repository(name)

    assert first == second
    assert first.endswith(f"/{name}")
    repository = client.describe_repositories(repositoryNames=[name])["repositories"][0]
    assert repository["imageTagMutability"] == "IMMUTABLE"
    assert repository["imageScanningConfiguration"]["scanOnPush"] is True


def test_ensure_repository_fixes_an_existing_mutable_repository(
    ecr: EcrRegistry, client: ECRClient
) -> None:
    name = _name("legacy")
    client.create_repository(repositoryName=name, imageTagMutability="MUTABLE")

    ecr.ensure_repository(name)

    repository = client.describe_repositories(repositoryNames=[name])["repositories"][0]
    assert repository["imageTagMutability"] == "IMMUTABLE"
    assert repository["imageScanningConfiguration"]["scanOnPush"] is True


def test_repository_for_creates_the_service_repository(ecr: EcrRegistry, client: ECRClient) -> None:
    name = _name("Billing")

    assert ecr.repository_for(name) == name.lower()
    assert client.describe_repositories(repositoryNames=[name.lower()])["repositories"]


def test_docker_auth_decodes_the_authorization_token(ecr: EcrRegistry) -> None:
    auth = ecr.docker_auth()

    assert auth["username"] == "AWS"
    assert auth["password"] == f"{ACCOUNT}-auth-token"
    assert auth["registry"] == f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
    assert auth["serveraddress"] == f"https://{auth['registry']}"
    # What docker login would send: the token is base64("user:password").
    token = base64.b64encode(f"{auth['username']}:{auth['password']}".encode()).decode()
    assert base64.b64decode(token).decode() == f"AWS:{ACCOUNT}-auth-token"


def test_publish_adds_tags_to_the_same_digest(ecr: EcrRegistry, client: ECRClient) -> None:
    repository = _name("pub")
    built = _pushed_image(ecr, client, repository, "main-0123456789ab")

    published = ecr.publish(
        PublishRequest(artifact=built, service=repository, tags=["v1.0.0", "release/1"])
    )

    assert published.digest == built.digest
    assert published.uri == built.uri
    assert published.tags == ["v1.0.0", "release-1"]
    for tag in ["main-0123456789ab", "v1.0.0", "release-1"]:
        assert _tag_digest(client, repository, tag) == built.digest
    # Again: the tags are there already, so nothing is written (immutable tags would refuse).
    assert ecr.publish(PublishRequest(artifact=built, service=repository, tags=["v1.0.0"]))


def test_publishing_a_tag_held_by_another_digest_is_a_verdict(
    ecr: EcrRegistry, client: ECRClient
) -> None:
    repository = _name("clash")
    older = _pushed_image(ecr, client, repository, "v2")
    newer_digest = client.put_image(
        repositoryName=repository, imageManifest=_manifest("newer"), imageTag="main-newer"
    )["image"]["imageId"]["imageDigest"]
    newer = older.model_copy(update={"digest": newer_digest})

    with pytest.raises(ApplicationError) as raised:
        ecr.publish(PublishRequest(artifact=newer, service=repository, tags=["v2"]))

    assert raised.value.type == ErrorType.CONFIGURATION
    assert "immutable" in str(raised.value)
    assert _tag_digest(client, repository, "v2") == older.digest


def test_publishing_an_unknown_digest_is_artifact_missing(
    ecr: EcrRegistry, client: ECRClient
) -> None:
    repository = _name("missing")
    uri = ecr.ensure_repository(repository)
    digest = "sha256:" + "0" * 64
    ghost = Artifact(kind="image", digest=digest, uri=f"{uri}@{digest}")

    with pytest.raises(ApplicationError) as raised:
        ecr.publish(PublishRequest(artifact=ghost, service=repository, tags=["v1"]))
    assert raised.value.type == ErrorType.ARTIFACT_MISSING

    elsewhere = ghost.model_copy(update={"uri": f"{uri}-nope@{digest}"})
    with pytest.raises(ApplicationError) as raised:
        ecr.publish(PublishRequest(artifact=elsewhere, service=repository, tags=["v1"]))
    assert raised.value.type == ErrorType.ARTIFACT_MISSING


def test_an_image_without_scan_is_unavailable(ecr: EcrRegistry, client: ECRClient) -> None:
    image = _pushed_image(ecr, client, _name("noscan"), "v1")

    report = ecr.scan(image)

    assert report.scanner == "ecr"
    assert not report.available
    assert "no scan" in report.reason


def test_scan_findings_are_mapped(ecr: EcrRegistry, client: ECRClient) -> None:
    repository = _name("scanned")
    image = _pushed_image(ecr, client, repository, "v1")
    client.start_image_scan(repositoryName=repository, imageId={"imageDigest": image.digest})

    report = ecr.scan(image)

    # moto's canned basic-scanning result: one HIGH finding on package moto_fake 9.9.9.
    assert report.available
    assert [(f.rule, f.severity, f.location) for f in report.findings] == [
        ("CVE-9999-9999", Severity.HIGH, "moto_fake@9.9.9")
    ]


def test_every_ecr_severity_is_mapped(ecr: EcrRegistry, client: ECRClient, moto_url: str) -> None:
    repository = _name("severities")
    image = _pushed_image(ecr, client, repository, "v1")
    client.start_image_scan(repositoryName=repository, imageId={"imageDigest": image.digest})
    basic = [
        {"name": f"CVE-{level}", "severity": level, "description": f"{level} issue"}
        for level in ["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED"]
    ]
    enhanced = {
        "severity": "UNTRIAGED",
        "title": "CVE-2025-1 - libfoo",
        "packageVulnerabilityDetails": {
            "vulnerabilityId": "CVE-2025-1",
            "vulnerablePackages": [{"name": "libfoo", "version": "1.0"}],
        },
    }
    _set_scan_results(
        moto_url,
        {
            "repositoryName": repository,
            "imageId": {"imageDigest": image.digest},
            "imageScanStatus": {"status": "COMPLETE", "description": "done"},
            "imageScanFindings": {"findings": basic, "enhancedFindings": [enhanced]},
        },
    )

    report = ecr.scan(image)

    assert [(f.rule, f.severity) for f in report.findings] == [
        ("CVE-CRITICAL", Severity.CRITICAL),
        ("CVE-HIGH", Severity.HIGH),
        ("CVE-MEDIUM", Severity.MEDIUM),
        ("CVE-LOW", Severity.LOW),
        ("CVE-INFORMATIONAL", Severity.INFO),
        ("CVE-UNDEFINED", Severity.MEDIUM),
        ("CVE-2025-1", Severity.MEDIUM),
    ]
    assert report.findings[-1].location == "libfoo@1.0"
    assert report.findings[0].message == "CRITICAL issue"


def test_a_running_scan_is_retryable_and_a_failed_one_unavailable(
    ecr: EcrRegistry, client: ECRClient, moto_url: str
) -> None:
    running_repo, failed_repo = _name("running"), _name("failed")
    running = _pushed_image(ecr, client, running_repo, "v1")
    failed = _pushed_image(ecr, client, failed_repo, "v1")
    for repository, image, status in [
        (running_repo, running, "IN_PROGRESS"),
        (failed_repo, failed, "FAILED"),
    ]:
        client.start_image_scan(repositoryName=repository, imageId={"imageDigest": image.digest})
        _set_scan_results(
            moto_url,
            {
                "repositoryName": repository,
                "imageId": {"imageDigest": image.digest},
                "imageScanStatus": {"status": status, "description": "unsupported OS"},
            },
        )

    with pytest.raises(EcrScanPendingError):
        ecr.scan(running)
    report = ecr.scan(failed)
    assert not report.available
    assert "FAILED" in report.reason
    assert "unsupported OS" in report.reason
