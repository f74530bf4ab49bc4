"""Wheels of a service in a content-addressed store, and the store as a local registry.

Layout under `store_dir`:

    sha256/<hex>.whl           the wheel whose bytes hash to <hex>
    index/<service>/<commit>.json  the Artifact built for a commit (build once, reuse on retries;
                               per service, since one commit of a monorepo holds several)
    tags/<service>/<tag>       the digest a tag points to (written by `LocalRegistry.publish`)

Blobs are named by digest, so pip cannot install one under that name: `wheel_filename()` reads
the proper `name-version-tag.whl` back from the wheel's own metadata.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path
from urllib.parse import quote

from temporalio.exceptions import ApplicationError

from activities.providers.execution import sandbox as sandboxes
from activities.providers.execution.child_env import child_env
from activities.providers.execution.processes import run_with_heartbeat
from activities.providers.execution.sandbox import Bind, Mounts, install_paths
from activities.providers.execution.venvs import VenvCache, VenvSpec, python_in
from activities.providers.scanners.tools import TrivyScanner
from activities.wiring.backends import Heartbeat
from contracts.activity import Artifact, BuildRequest, PublishRequest, ScannerReport
from contracts.errors import ErrorType, verdict
from plumbing.files import atomic_write_bytes, atomic_write_text, file_sha256

__all__ = ["LocalRegistry", "WheelBuilder", "wheel_filename"]

# 1980-01-01, the earliest time a zip entry can carry: used when the commit time is unknown.
_FALLBACK_EPOCH = 315532800
# Build by-products in the service dir that must not leak into (or vary) the wheel.
_IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".tox"
)
_HEX = re.compile(r"^[0-9a-f]{64}$")


class WheelBuilder:
    """`Builder` that builds the service dir into a wheel with `pip wheel` (PEP 517, with build
    isolation and the allow-listed environment of `child_env`) and stores it by its sha256.
    The same commit yields the same digest: a rebuild is skipped when the index has the
    commit, and the wheel itself is reproducible (SOURCE_DATE_EPOCH is the commit time).

    The build runs the service's build code: in the worker's sandbox
    (`activities.providers.execution.sandbox`) it sees its private copy of the sources and the
    output directory writable, the build environment read-only (verified by hash at each use,
    `VenvCache`), and nothing else of the worker's."""

    def __init__(
        self, store_dir: Path, timeout_s: float | None = 900.0, pip_cache: Path | None = None
    ) -> None:
        self._store = Path(store_dir)
        self._timeout_s = timeout_s
        # pip's download cache for build backends (the throwaway HOME would lose it).
        self._pip_cache = (pip_cache or self._store / "pip-cache").resolve()
        self._build_envs = VenvCache(self._store.parent / "build-envs")

    def build(self, request: BuildRequest, heartbeat: Heartbeat) -> Artifact:
        index = (
            self._store
            / "index"
            / _safe_name(request.service)
            / f"{_safe_name(request.commit)}.json"
        )
        cached = _read_index(index, self._store)
        if cached is not None:
            return cached
        source = Path(request.path)
        if not source.is_dir():
            raise verdict(
                ErrorType.BUILD_FAILED,
                f"Cannot build {request.service!r}: its directory {str(source)!r} does not "
                "exist. Check the checkout stage and the service path.",
            )
        if not any((source / name).is_file() for name in ("pyproject.toml", "setup.py")):
            raise verdict(
                ErrorType.BUILD_FAILED,
                f"Cannot build {request.service!r}: {str(source)!r} has no pyproject.toml or "
                "setup.py. Add a pyproject.toml describing the package.",
            )
        sandboxes.current().check()
        with tempfile.TemporaryDirectory(prefix="slipway-build-") as tmp:
            # A private copy: setuptools writes build/ and *.egg-info next to the sources, which
            # must neither dirty the cached checkout nor leak a previous build into this one.
            work = Path(tmp) / "src"
            shutil.copytree(source, work, ignore=_IGNORED, symlinks=True)
            out = Path(tmp) / "out"
            wheel = self._pip_wheel(
                request, work, out, _source_epoch(source, request.commit), heartbeat
            )
            heartbeat("storing wheel")
            artifact = self._store_blob(wheel, request.commit)
        atomic_write_text(index, artifact.model_dump_json(indent=2))
        return artifact

    def _pip_wheel(
        self, request: BuildRequest, work: Path, out: Path, epoch: int, heartbeat: Heartbeat
    ) -> Path:
        home = out.parent / "home"
        home.mkdir(parents=True, exist_ok=True)
        env = child_env(
            home=home,
            install=True,
            extra={
                "SOURCE_DATE_EPOCH": str(epoch),
                "PYTHONHASHSEED": "0",
                "PIP_CACHE_DIR": str(self._pip_cache),
            },
        )
        wheel = [sys.executable, "-m", "pip"]
        options = ["wheel", "--no-deps", "--disable-pip-version-check", "-w", str(out), "."]
        sandbox = sandboxes.current()
        out.mkdir(parents=True, exist_ok=True)
        sandbox.give(work)
        sandbox.give(out)
        writable = (Bind(work, writable=True), Bind(out, writable=True))
        installing = tuple(Bind(path) for path in install_paths())
        # The build runs in an environment of the service's own `[build-system] requires`
        # (flit_core, hatchling, setuptools, ...) from pip's configured index, never the
        # worker's packages. That environment is cached by its requirements (installing
        # setuptools afresh costs seconds per build); the worker's pip only drives it.
        backend = self._build_env(work, heartbeat)
        if backend is not None:
            fast = [*wheel, "--python", str(python_in(backend)), *options, "--no-build-isolation"]
            mounts = Mounts(
                binds=(*writable, Bind(backend), *installing),
                private=(self._pip_cache, home),
                worker_tools=True,
            )
            result = run_with_heartbeat(
                fast, work, env, heartbeat, mounts=mounts, timeout_s=self._timeout_s
            )
            built = sorted(out.glob("*.whl")) if out.is_dir() else []
            if result.exit_code == 0 and len(built) == 1:
                return built[0]
            for leftover in out.iterdir():  # the directory itself stays: it is bound
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover)
                else:
                    leftover.unlink()
        # pip's own PEP 517 build isolation: a fresh environment with the backend and what
        # it asks for at build time (`get_requires_for_build_wheel`).
        heartbeat("building with pip's build isolation")
        mounts = Mounts(
            binds=(*writable, *installing),
            private=(self._pip_cache, home),
            worker_tools=True,
        )
        result = run_with_heartbeat(
            [*wheel, *options], work, env, heartbeat, mounts=mounts, timeout_s=self._timeout_s
        )
        wheels = sorted(out.glob("*.whl")) if out.is_dir() else []
        if result.exit_code == 0 and len(wheels) == 1:
            return wheels[0]
        detail = result.output_tail.strip()[-1200:]
        hint = ""
        if "Cannot import build backend" in detail or "No matching distribution" in detail:
            hint = (
                " The build backend in the service's `[build-system] requires` could not be "
                "installed: check that pip's index (PIP_INDEX_URL, PIP_FIND_LINKS, pip.conf) "
                "has it and that `build-backend` names it."
            )
        elif result.timed_out:
            hint = f" The build did not finish within {self._timeout_s:.0f} s."
        raise verdict(
            ErrorType.BUILD_FAILED,
            f"pip wheel failed for {request.service!r} at commit {request.commit[:12]} (exit "
            f"{result.exit_code}).{hint} Output:\n{detail}",
        )

    def _build_env(self, work: Path, heartbeat: Heartbeat) -> Path | None:
        """The cached environment of the service's build requirements; None when it cannot
        be made (the isolated build then reports what is wrong in pip's words)."""
        requires = _build_requires(work)
        if requires is None:
            return None
        spec = VenvSpec(label="the build backend", install=tuple(requires))
        try:
            return self._build_envs.ensure(spec, heartbeat)
        except ApplicationError:
            return None

    def _store_blob(self, wheel: Path, commit: str) -> Artifact:
        hexdigest = file_sha256(wheel)
        blob = self._store / "sha256" / f"{hexdigest}.whl"
        if not blob.is_file():
            atomic_write_bytes(blob, wheel.read_bytes())
        return Artifact(
            digest=f"sha256:{hexdigest}",
            uri=str(blob),
            kind="wheel",
            size_bytes=wheel.stat().st_size,
            version=commit[:12],
        )


class LocalRegistry:
    """`Registry` over the builder's store: tags are files naming a digest, the artifact never
    moves or changes. Image scanning runs trivy on the unpacked wheel when trivy is installed."""

    def __init__(self, store_dir: Path, trivy: TrivyScanner | None = None) -> None:
        self._store = Path(store_dir)
        self._trivy = trivy or TrivyScanner()

    def blob(self, digest: str) -> Path:
        """The stored file of `digest`; an ArtifactMissing verdict if the store lacks it."""
        algorithm, _, hexdigest = digest.partition(":")
        blob = self._store / "sha256" / f"{hexdigest}.whl"
        if algorithm != "sha256" or not _HEX.match(hexdigest) or not blob.is_file():
            raise verdict(
                ErrorType.ARTIFACT_MISSING,
                f"Artifact {digest!r} is not in the artifact store {str(self._store)!r}: build "
                "it first (the build stage records it there).",
            )
        return blob

    def publish(self, request: PublishRequest) -> Artifact:
        digest = request.artifact.digest
        blob = self.blob(digest)
        actual = "sha256:" + file_sha256(blob)
        if actual != digest:
            raise verdict(
                ErrorType.ARTIFACT_MISSING,
                f"Artifact {digest!r} in {str(self._store)!r} is corrupt (its bytes hash to "
                f"{actual}): delete {str(blob)!r} and build again.",
            )
        tags = list(dict.fromkeys(request.tags))
        for tag in tags:
            atomic_write_text(self._tag_path(request.service, tag), digest + "\n")
        return request.artifact.model_copy(
            update={"tags": tags, "uri": str(blob), "size_bytes": blob.stat().st_size}
        )

    def resolve(self, service: str, tag: str) -> str | None:
        """The digest `tag` points to for `service`, or None if it was never published."""
        path = self._tag_path(service, tag)
        return path.read_text().strip() if path.is_file() else None

    def scan(self, artifact: Artifact) -> ScannerReport:
        blob = self.blob(artifact.digest)
        if not self._trivy.installed:
            return ScannerReport(
                scanner="trivy",
                available=False,
                reason="trivy is not installed on this worker: the artifact "
                f"{artifact.digest[:19]} was not scanned (install trivy on the worker's PATH)",
            )
        with tempfile.TemporaryDirectory(prefix="slipway-scan-") as tmp:
            with zipfile.ZipFile(blob) as archive:
                archive.extractall(tmp)
            return self._trivy.scan(tmp)

    def _tag_path(self, service: str, tag: str) -> Path:
        # Tags hold branch names ("feature/x"): quote them into a single file name.
        return self._store / "tags" / _safe_name(service) / _safe_name(tag)


def wheel_filename(blob: Path) -> str:
    """The `name-version-pytag-abitag-platform.whl` file name of a stored wheel, read from its
    .dist-info, so the wheel can be installed by pip under its proper name."""
    with zipfile.ZipFile(blob) as archive:
        names = archive.namelist()
        info = next((n.split("/", 1)[0] for n in names if n.endswith(".dist-info/WHEEL")), None)
        if info is None:
            raise verdict(
                ErrorType.ARTIFACT_MISSING, f"{str(blob)!r} is not a wheel (no .dist-info/WHEEL)"
            )
        tags = [
            line.split(":", 1)[1].strip()
            for line in archive.read(f"{info}/WHEEL").decode().splitlines()
            if line.startswith("Tag:")
        ]
    # The .dist-info directory is already named `{distribution}-{version}` in wheel form.
    pytags = ".".join(dict.fromkeys(t.split("-")[0] for t in tags)) or "py3"
    abis = ".".join(dict.fromkeys(t.split("-")[1] for t in tags)) or "none"
    platforms = ".".join(dict.fromkeys(t.split("-")[2] for t in tags)) or "any"
    return f"{info.removesuffix('.dist-info')}-{pytags}-{abis}-{platforms}.whl"


def _build_requires(work: Path) -> list[str] | None:
    """`[build-system] requires` of the project (PEP 518's default for a setup.py project
    without one); None when pyproject.toml cannot be read."""
    pyproject = work / "pyproject.toml"
    if not pyproject.is_file():
        return ["setuptools>=40.8.0"]
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    system = data.get("build-system")
    if not isinstance(system, dict) or "build-backend" not in system:
        return ["setuptools>=40.8.0"] if (work / "setup.py").is_file() else None
    requires = system.get("requires")
    return [str(r) for r in requires] if isinstance(requires, list) else None


def _source_epoch(source: Path, commit: str) -> int:
    """The commit's committer time, so the wheel's zip timestamps are the same on every build."""
    try:
        done = subprocess.run(
            ["git", "log", "-1", "--format=%ct", commit, "--"],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        epoch = int(done.stdout.strip()) if done.returncode == 0 else 0
    except (OSError, ValueError, subprocess.TimeoutExpired):
        epoch = 0
    return max(epoch, _FALLBACK_EPOCH)


def _read_index(index: Path, store: Path) -> Artifact | None:
    """The artifact already built for this commit, if its blob is still in the store."""
    if not index.is_file():
        return None
    try:
        artifact = Artifact.model_validate_json(index.read_text())
    except ValueError:
        return None  # a damaged index entry: rebuild and overwrite it
    hexdigest = artifact.digest.removeprefix("sha256:")
    return artifact if (store / "sha256" / f"{hexdigest}.whl").is_file() else None


def _safe_name(text: str) -> str:
    quoted = quote(text, safe="")
    return "%2E" + quoted[1:] if quoted.startswith(".") else quoted
