"""WheelBuilder with real `pip wheel`, and LocalRegistry over its store."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.providers.builders.wheel_builder import LocalRegistry, WheelBuilder, wheel_filename
from activities.providers.scanners.tools import TrivyScanner
from contracts.activity import Artifact, BuildRequest, PublishRequest
from contracts.errors import ErrorType
from tests.support.binaries import missing

COMMIT = "3f2a9c1d5e7b8a6f4c2d1e0f9a8b7c6d5e4f3a2b"


@functools.cache
def can_build_wheels() -> bool:
    """setuptools builds wheels itself from 70.1 on; before that it needs the `wheel` package."""
    probe = "import setuptools.command.bdist_wheel" + " as _"
    older = "import wheel.bdist_wheel as _"
    for code in (probe, older):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
        if done.returncode == 0:
            return True
    return False


@pytest.fixture
def wheel_backend() -> None:
    if can_build_wheels():
        return
    missing(
        "this interpreter's setuptools cannot build wheels: install `wheel` or setuptools>=70.1"
    )


@pytest.fixture
def service(tmp_path: Path) -> Path:
    root = tmp_path / "checkout" / "hello"
    (root / "hello_svc").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "hello-svc"
            version = "1.2.0"

            [tool.setuptools]
            packages = ["hello_svc"]
            """
        )
    )
    (root / "hello_svc" / "__init__.py").write_text("GREETING = 'hello'\n")
    return root


def request_for(path: Path, commit: str = COMMIT) -> BuildRequest:
    return BuildRequest(path=str(path), service="hello", commit=commit, branch="main")


def test_build_stores_the_wheel_by_its_digest(
    wheel_backend: None, service: Path, tmp_path: Path
) -> None:
    notes: list[str] = []
    store = tmp_path / "store"

    artifact = WheelBuilder(store).build(request_for(service), notes.append)

    blob = Path(artifact.uri)
    hexdigest = hashlib.sha256(blob.read_bytes()).hexdigest()
    assert artifact.digest == f"sha256:{hexdigest}"
    assert blob == store / "sha256" / f"{hexdigest}.whl"
    assert artifact.kind == "wheel"
    assert artifact.version == COMMIT[:12]
    assert artifact.size_bytes == blob.stat().st_size
    assert wheel_filename(blob) == "hello_svc-1.2.0-py3-none-any.whl"
    # The checkout the pipeline caches by sha is left as it was.
    assert sorted(p.name for p in service.iterdir()) == ["hello_svc", "pyproject.toml"]
    assert notes  # progress was reported


def test_built_wheel_installs_and_imports(
    wheel_backend: None, service: Path, tmp_path: Path
) -> None:
    artifact = WheelBuilder(tmp_path / "store").build(request_for(service), lambda _n: None)
    named = tmp_path / wheel_filename(Path(artifact.uri))
    shutil.copy(artifact.uri, named)
    target = tmp_path / "site"

    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         "--target", str(target), str(named)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", "import hello_svc; print(hello_svc.GREETING)"],
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        check=True,
    )

    assert done.stdout.strip() == "hello"


def test_same_commit_gives_the_same_digest(
    wheel_backend: None, service: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    builder = WheelBuilder(store)
    first = builder.build(request_for(service), lambda _n: None)

    assert builder.build(request_for(service), lambda _n: None) == first  # from the index

    # A real rebuild (the index and blob gone, files checked out again later, so with new
    # mtimes) reproduces the same bytes.
    shutil.rmtree(store)
    for path in service.rglob("*"):
        os.utime(path, (1_900_000_000, 1_900_000_000))
    rebuilt = WheelBuilder(store).build(request_for(service), lambda _n: None)
    assert rebuilt.digest == first.digest


def test_changed_source_changes_the_digest(
    wheel_backend: None, service: Path, tmp_path: Path
) -> None:
    builder = WheelBuilder(tmp_path / "store")
    first = builder.build(request_for(service), lambda _n: None)
    (service / "hello_svc" / "__init__.py").write_text("GREETING = 'bonjour'\n")

    second = builder.build(request_for(service, commit="9" * 40), lambda _n: None)

    assert second.digest != first.digest
    assert second.version == "9" * 12


def test_broken_project_is_a_build_verdict(
    wheel_backend: None, service: Path, tmp_path: Path
) -> None:
    (service / "pyproject.toml").write_text("[project\nname = ")

    with pytest.raises(ApplicationError) as caught:
        WheelBuilder(tmp_path / "store").build(request_for(service), lambda _n: None)

    assert caught.value.type == ErrorType.BUILD_FAILED
    assert caught.value.non_retryable
    assert "hello" in caught.value.message


def test_directory_without_a_project_is_a_build_verdict(tmp_path: Path) -> None:
    with pytest.raises(ApplicationError) as caught:
        WheelBuilder(tmp_path / "store").build(request_for(tmp_path), lambda _n: None)

    assert caught.value.type == ErrorType.BUILD_FAILED
    assert "pyproject.toml" in caught.value.message


# --- registry -----------------------------------------------------------------------------


def stored_artifact(store: Path, content: bytes = b"not really a wheel") -> Artifact:
    """A blob put in the store the way the builder does (tests the registry alone)."""
    hexdigest = hashlib.sha256(content).hexdigest()
    blob = store / "sha256" / f"{hexdigest}.whl"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(content)
    return Artifact(digest=f"sha256:{hexdigest}", uri=str(blob), version="3f2a9c1d5e7b")


def test_publish_records_tags_to_the_digest(tmp_path: Path) -> None:
    artifact = stored_artifact(tmp_path)
    registry = LocalRegistry(tmp_path)
    tags = ["main", "main-3f2a9c1d5e7b", "feature/login", "main"]

    published = registry.publish(PublishRequest(artifact=artifact, service="hello", tags=tags))

    assert published.digest == artifact.digest
    assert published.tags == ["main", "main-3f2a9c1d5e7b", "feature/login"]
    for tag in published.tags:
        assert registry.resolve("hello", tag) == artifact.digest
    assert registry.resolve("hello", "never-published") is None
    assert registry.resolve("other-service", "main") is None


def test_publishing_again_moves_a_tag_and_is_idempotent(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path)
    old, new = stored_artifact(tmp_path, b"v1"), stored_artifact(tmp_path, b"v2")
    registry.publish(PublishRequest(artifact=old, service="hello", tags=["main"]))

    registry.publish(PublishRequest(artifact=new, service="hello", tags=["main"]))
    again = registry.publish(PublishRequest(artifact=new, service="hello", tags=["main"]))

    assert again.tags == ["main"]
    assert registry.resolve("hello", "main") == new.digest


def test_publishing_an_unknown_digest_is_artifact_missing(tmp_path: Path) -> None:
    ghost = Artifact(digest="sha256:" + "ab" * 32, uri="/nowhere.whl")

    with pytest.raises(ApplicationError) as caught:
        LocalRegistry(tmp_path).publish(PublishRequest(artifact=ghost, service="s", tags=["x"]))

    assert caught.value.type == ErrorType.ARTIFACT_MISSING
    assert "ab" * 32 in caught.value.message


def test_corrupt_blob_is_not_published(tmp_path: Path) -> None:
    artifact = stored_artifact(tmp_path)
    Path(artifact.uri).write_bytes(b"tampered")

    with pytest.raises(ApplicationError, match="corrupt"):
        LocalRegistry(tmp_path).publish(
            PublishRequest(artifact=artifact, service="s", tags=["main"])
        )


def test_scan_without_trivy_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    artifact = stored_artifact(tmp_path / "store")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # trivy is on no PATH

    report = LocalRegistry(tmp_path / "store").scan(artifact)

    assert report.scanner == "trivy"
    assert not report.available
    assert "trivy is not installed" in report.reason


def test_scan_of_an_unknown_digest_is_artifact_missing(tmp_path: Path) -> None:
    ghost = Artifact(digest="sha256:" + "cd" * 32, uri="/nowhere.whl")

    with pytest.raises(ApplicationError) as caught:
        LocalRegistry(tmp_path).scan(ghost)

    assert caught.value.type == ErrorType.ARTIFACT_MISSING


def test_scan_runs_trivy_on_the_unpacked_wheel(tmp_path: Path) -> None:
    wheel = tmp_path / "w.zip"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("hello_svc/__init__.py", "GREETING = 'hello'\n")
    artifact = stored_artifact(tmp_path / "store", wheel.read_bytes())
    # A stand-in trivy CLI (trivy cannot be installed here) that lists what it was given.
    fake = tmp_path / "trivy"
    fake.write_text(
        '#!/bin/sh\ntest -f hello_svc/__init__.py || exit 3\necho \'{"SchemaVersion": 2, '
        '"Results": [{"Target": "hello_svc", "Vulnerabilities": [{"VulnerabilityID": "CVE-1",'
        ' "PkgName": "x", "InstalledVersion": "1", "Severity": "HIGH"}]}]}\'\n'
    )
    fake.chmod(0o755)

    report = LocalRegistry(tmp_path / "store", trivy=TrivyScanner(binary=fake)).scan(artifact)

    assert report.available, report.reason
    assert [(f.rule, f.severity.value) for f in report.findings] == [("CVE-1", "high")]


def test_a_flit_core_service_builds_with_build_isolation(tmp_path: Path) -> None:
    """The worker has no flit_core: the build installs it from pip's index, in isolation."""
    from tests.support.thirdparty import write_service

    with pytest.raises(ImportError):
        __import__("flit_core")
    source = write_service(tmp_path / "src", version="2.3.4")

    artifact = WheelBuilder(tmp_path / "store").build(
        BuildRequest(path=str(source), service="greeter", commit=COMMIT), lambda _note: None
    )

    name = wheel_filename(Path(artifact.uri))
    assert name == "greeter_app-2.3.4-py3-none-any.whl"
    with zipfile.ZipFile(artifact.uri) as wheel:
        metadata = wheel.read("greeter_app-2.3.4.dist-info/METADATA").decode()
    assert "Requires-Dist: inflection>=0.5" in metadata


def test_a_build_backend_the_index_lacks_is_a_build_failure_saying_so(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "app").mkdir(parents=True)
    (source / "app" / "__init__.py").write_text("")
    (source / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["no-such-backend-slipway-xyz>=1"]
            build-backend = "no_such_backend.api"

            [project]
            name = "app"
            version = "1.0"
            """
        )
    )

    with pytest.raises(ApplicationError) as caught:
        WheelBuilder(tmp_path / "store").build(
            BuildRequest(path=str(source), service="app", commit=COMMIT), lambda _note: None
        )

    assert caught.value.type == ErrorType.BUILD_FAILED
    assert "pip's index" in caught.value.message
    assert "no-such-backend-slipway-xyz" in caught.value.message
