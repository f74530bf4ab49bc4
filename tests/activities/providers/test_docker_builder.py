"""DockerBuilder and DockerRegistry against podman's Docker API and a real registry."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from temporalio.exceptions import ApplicationError

from activities.providers.builders.docker_builder import DockerBuilder
from activities.providers.builders.docker_registry import DockerRegistry
from activities.providers.builders.image_names import image_tag, sanitize_tag
from activities.providers.scanners.tools import TrivyScanner
from activities.wiring.backends import Builder, Registry
from contracts.activity import Artifact, BuildRequest, PublishRequest, Severity
from contracts.errors import ErrorType
from tests.support.podman import LocalRegistry, PodmanService, running_podman, running_registry
from tests.support.ports import free_port
from tests.support.sandbox import unsandboxed  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.realserver]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture(scope="module")
def podman(
    tmp_path_factory: pytest.TempPathFactory, registry: LocalRegistry
) -> Iterator[PodmanService]:
    with running_podman(tmp_path_factory.mktemp("podman"), [registry.host]) as service:
        yield service


@pytest.fixture
def builder(podman: PodmanService, registry: LocalRegistry) -> DockerBuilder:
    return DockerBuilder(podman.client, registry.host)


@pytest.fixture
def docker_registry(podman: PodmanService, registry: LocalRegistry) -> DockerRegistry:
    return DockerRegistry(podman.client, registry.host)


def _service_dir(tmp_path: Path, content: str, dockerfile: str | None = None) -> Path:
    (tmp_path / "hello.txt").write_text(content)
    (tmp_path / "Dockerfile").write_text(dockerfile or "FROM scratch\nCOPY hello.txt /hello.txt\n")
    return tmp_path


def _commit() -> str:
    return secrets.token_hex(20)


class _Notes:
    def __init__(self) -> None:
        self.notes: list[str] = []

    def __call__(self, note: str) -> None:
        self.notes.append(note)


def test_providers_satisfy_the_protocols(
    builder: DockerBuilder, docker_registry: DockerRegistry
) -> None:
    assert isinstance(builder, Builder)
    assert isinstance(docker_registry, Registry)


def test_build_pushes_and_returns_the_digest_the_registry_reports(
    builder: DockerBuilder, registry: LocalRegistry, tmp_path: Path
) -> None:
    commit = _commit()
    notes = _Notes()
    request = BuildRequest(
        path=str(_service_dir(tmp_path, "v1")), service="Shop-API", commit=commit, branch="main"
    )

    artifact = builder.build(request, notes)

    tag = f"main-{commit[:12]}"
    assert artifact.kind == "image"
    assert artifact.tags == [tag]
    assert artifact.version == commit[:12]
    assert artifact.digest == registry.manifest_digest("shop-api", tag)
    assert artifact.uri == f"{registry.host}/shop-api@{artifact.digest}"
    assert artifact.size_bytes > 0
    # The build output was streamed to the heartbeat.
    assert any("COPY hello.txt" in note for note in notes.notes)
    assert any(note.startswith("push ") for note in notes.notes)


def test_building_the_same_commit_again_reuses_the_pushed_digest(
    builder: DockerBuilder, tmp_path: Path
) -> None:
    request = BuildRequest(
        path=str(_service_dir(tmp_path, "same")), service="reuse", commit=_commit(), branch="main"
    )
    first = builder.build(request, _Notes())
    # Even with a changed tree, the commit's tag already exists: nothing is rebuilt.
    (tmp_path / "hello.txt").write_text("changed after the first build")
    notes = _Notes()

    second = builder.build(request, notes)

    assert second == first
    assert not any(note.startswith("build:") for note in notes.notes)
    assert any("reusing" in note for note in notes.notes)


def test_branch_names_are_sanitised_into_the_tag(
    builder: DockerBuilder, registry: LocalRegistry, tmp_path: Path
) -> None:
    commit = _commit()
    request = BuildRequest(
        path=str(_service_dir(tmp_path, "branch")),
        service="branchy",
        commit=commit,
        branch="feature/Login page",
    )

    artifact = builder.build(request, _Notes())

    assert artifact.tags == [f"feature-Login-page-{commit[:12]}"]
    assert registry.tags("branchy") == [f"feature-Login-page-{commit[:12]}"]


def test_tag_helpers() -> None:
    assert image_tag("", "ABCDEF0123456789") == "commit-abcdef012345"
    assert image_tag("-release/1.2", "a" * 40) == f"release-1.2-{'a' * 12}"
    assert len(image_tag("x" * 300, "b" * 40)) == 128
    assert sanitize_tag("v1.2.3") == "v1.2.3"
    with pytest.raises(ApplicationError) as raised:
        sanitize_tag("///")
    assert raised.value.type == ErrorType.INVALID_DEFINITION


def test_a_broken_dockerfile_is_a_build_failed_verdict(
    builder: DockerBuilder, tmp_path: Path
) -> None:
    service = _service_dir(tmp_path, "x", "FROM scratch\nCOPY missing.txt /missing.txt\n")
    request = BuildRequest(path=str(service), service="broken", commit=_commit())

    with pytest.raises(ApplicationError) as raised:
        builder.build(request, _Notes())

    assert raised.value.type == ErrorType.BUILD_FAILED
    assert raised.value.non_retryable
    assert "missing.txt" in str(raised.value)


def test_a_service_without_dockerfile_is_a_build_failed_verdict(
    builder: DockerBuilder, tmp_path: Path
) -> None:
    request = BuildRequest(path=str(tmp_path), service="nodockerfile", commit=_commit())

    with pytest.raises(ApplicationError) as raised:
        builder.build(request, _Notes())

    assert raised.value.type == ErrorType.BUILD_FAILED
    assert "no Dockerfile" in str(raised.value)


def test_an_unreachable_registry_is_a_retryable_error(
    podman: PodmanService, tmp_path: Path
) -> None:
    builder = DockerBuilder(podman.client, f"127.0.0.1:{free_port()}")
    request = BuildRequest(path=str(_service_dir(tmp_path, "x")), service="down", commit=_commit())

    with pytest.raises(httpx.ConnectError):
        builder.build(request, _Notes())


def test_publish_adds_tags_and_keeps_the_digest(
    builder: DockerBuilder,
    docker_registry: DockerRegistry,
    podman: PodmanService,
    registry: LocalRegistry,
    tmp_path: Path,
) -> None:
    request = BuildRequest(
        path=str(_service_dir(tmp_path, "publish me")), service="pub", commit=_commit()
    )
    built = builder.build(request, _Notes())
    # Another worker publishes: its engine does not hold the image, so it pulls by digest.
    client = podman.client()
    try:
        for image in client.images.list():
            client.images.remove(image.id, force=True)
    finally:
        client.close()

    published = docker_registry.publish(
        PublishRequest(artifact=built, service="pub", tags=["v1.0.0", "release/candidate"])
    )

    assert published.digest == built.digest
    assert published.tags == ["v1.0.0", "release-candidate"]
    for tag in ["v1.0.0", "release-candidate", *built.tags]:
        assert registry.manifest_digest("pub", tag) == built.digest
    # Publishing again changes nothing.
    again = docker_registry.publish(PublishRequest(artifact=built, service="pub", tags=["v1.0.0"]))
    assert again.digest == built.digest


def test_publishing_a_digest_the_registry_lacks_is_artifact_missing(
    docker_registry: DockerRegistry, registry: LocalRegistry
) -> None:
    digest = "sha256:" + "0" * 64
    missing = Artifact(kind="image", digest=digest, uri=f"{registry.host}/ghost@{digest}")

    with pytest.raises(ApplicationError) as raised:
        docker_registry.publish(PublishRequest(artifact=missing, service="ghost", tags=["v1"]))

    assert raised.value.type == ErrorType.ARTIFACT_MISSING


def test_scan_without_trivy_is_unavailable_not_a_pass(
    docker_registry: DockerRegistry, registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    digest = "sha256:" + "1" * 64
    report = docker_registry.scan(
        Artifact(kind="image", digest=digest, uri=f"{registry.host}/x@{digest}")
    )

    assert not report.available
    assert "trivy" in report.reason
    assert report.findings == []


# The stand-in trivy reads its canned report from the test's directory.
@pytest.mark.usefixtures("unsandboxed")
def test_an_image_is_gated_like_a_source_tree_by_the_one_trivy_parser(
    docker_registry: DockerRegistry,
    registry: LocalRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report = {
        "Results": [
            {
                "Target": "app (debian 12)",
                "Vulnerabilities": [
                    {"VulnerabilityID": "CVE-2024-1", "Severity": "CRITICAL", "Title": "bad"},
                    {"VulnerabilityID": "CVE-2024-2", "Severity": "UNKNOWN"},
                ],
                "Misconfigurations": [{"ID": "DS002", "Severity": "HIGH", "Title": "root"}],
            },
            {
                "Target": "/app/settings.py",
                "Secrets": [
                    {"RuleID": "aws-access-key-id", "Severity": "CRITICAL", "Title": "AWS"}
                ],
            },
        ]
    }
    report_file = tmp_path / "report.json"
    report_file.write_text(json.dumps(report))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    trivy = bin_dir / "trivy"
    # A stand-in trivy CLI: copies the report to `--output FILE` (image) or stdout (fs).
    trivy.write_text(
        "#!/bin/sh\n"
        'out=""; while [ $# -gt 0 ]; do [ "$1" = --output ] && out="$2"; shift; done\n'
        f'if [ -n "$out" ]; then cp {report_file} "$out"; else cat {report_file}; fi\n'
    )
    trivy.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    digest = "sha256:" + "2" * 64

    image = docker_registry.scan(
        Artifact(kind="image", digest=digest, uri=f"{registry.host}/x@{digest}")
    )
    source = TrivyScanner(binary=trivy).scan(str(tmp_path))

    assert image.available, image.reason
    assert image.findings == source.findings
    assert [(f.rule, f.severity) for f in image.findings] == [
        ("CVE-2024-1", Severity.CRITICAL),
        ("CVE-2024-2", Severity.MEDIUM),  # unrated is not harmless
        ("DS002", Severity.HIGH),
        ("aws-access-key-id", Severity.CRITICAL),  # a secret baked into the image counts
    ]
