"""Virtualenvs for a service's own work, built once per set of inputs and shared.

A venv is keyed by a hash of the interpreter's version, what is installed into it and the setup
commands run in it. It is built in a directory of its own (`v-<key>-<random>`) and published by
atomically replacing the symlink `<key>` with one pointing at it, so a reader sees a complete
venv or none: a crash mid-build leaves an unreferenced directory, removed by the next build.
The build is not done in a temporary path and renamed, because pip writes absolute paths into
the console scripts' shebangs. Two activities asking for the same venv take a file lock: one
builds, the other waits and reuses it.

Venvs are created from the worker's base interpreter without system site-packages, so nothing
the worker has installed is visible in them. Packages come from pip's configured index
(PIP_INDEX_URL, PIP_FIND_LINKS, pip.conf), through `child_env(install=True)`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from activities.backends import Heartbeat
from activities.providers.child_env import child_env
from activities.providers.processes import run_with_heartbeat
from contracts.errors import ErrorType, verdict

__all__ = ["VenvCache", "VenvSpec", "python_in"]


@dataclass(frozen=True)
class VenvSpec:
    """What goes into a venv. `install` are pip arguments (requirement strings, `-r file`,
    wheel paths) resolved in `cwd`; `setup` are shell commands run in `cwd` afterwards with the
    venv's bin first on PATH. `fingerprint` covers the content of files the arguments name
    (requirements files, the wheel), so an edited file makes a new venv."""

    label: str
    install: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    fingerprint: str = ""
    cwd: Path | None = None
    # How a failed build is reported: what failed and what to check.
    error_type: ErrorType = ErrorType.GATE_FAILED
    hint: str = (
        "Check the stage's `extras`, `requirements` and `setup`, and that pip's index has them."
    )

    def key(self) -> str:
        """The cache key: how the venv is made, not how its failure is worded."""
        inputs = {
            "python": sys.version,
            "implementation": sys.implementation.cache_tag,
            "install": list(self.install),
            "setup": list(self.setup),
            "fingerprint": self.fingerprint,
        }
        return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


def python_in(venv: Path) -> Path:
    """The interpreter of `venv`."""
    return venv / "bin" / "python"


class VenvCache:
    """Venvs under `root`, one per `VenvSpec.key()`; see the module docstring."""

    def __init__(self, root: Path, *, timeout_s: float = 900.0) -> None:
        self.root = Path(root).resolve()
        self._timeout_s = timeout_s

    @property
    def pip_cache(self) -> Path:
        return self.root / "pip-cache"

    def ensure(self, spec: VenvSpec, heartbeat: Heartbeat) -> Path:
        """The venv of `spec`, built now if no complete one exists."""
        key = spec.key()
        link = self.root / key
        if link.is_dir():
            return link
        self.root.mkdir(parents=True, exist_ok=True)
        with _locked(self.root / f"{key}.lock", heartbeat, f"the venv for {spec.label}"):
            if link.is_dir():
                return link  # built by the activity we waited for
            for stale in self.root.glob(f"v-{key}-*"):
                shutil.rmtree(stale, ignore_errors=True)  # left by a crashed build
            target = self.root / f"v-{key}-{uuid.uuid4().hex[:8]}"
            try:
                self._build(spec, target, heartbeat)
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
            tmp_link = self.root / f".{key}.{uuid.uuid4().hex[:8]}.link"
            tmp_link.symlink_to(target.name)
            os.replace(tmp_link, link)
        return link

    def _build(self, spec: VenvSpec, target: Path, heartbeat: Heartbeat) -> None:
        heartbeat(f"creating the venv for {spec.label}")
        # pip inside the venv only when setup commands may call it; installs use the worker's
        # pip pointed at the venv (`pip --python`), which saves seconds per venv.
        venv_args = [] if spec.setup else ["--without-pip"]
        self._step(
            [_base_python(), "-m", "venv", *venv_args, str(target)],
            spec,
            target,
            f"creating the venv for {spec.label}",
            heartbeat,
        )
        if spec.install:
            heartbeat(f"installing {len(spec.install)} requirement(s) for {spec.label}")
            self._step(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "--python",
                    str(python_in(target)),
                    "install",
                    "--disable-pip-version-check",
                    # No bytecode compiled ahead: that is a third of the CPU of installing
                    # HEAL7's backend; Python writes the bytecode of what is imported.
                    "--no-compile",
                    *spec.install,
                ],
                spec,
                target,
                f"installing {' '.join(spec.install)} for {spec.label}",
                heartbeat,
            )
        for command in spec.setup:
            heartbeat(f"setup for {spec.label}: {command}")
            self._step(
                ["/bin/sh", "-c", command],
                spec,
                target,
                f"the setup command {command!r} of {spec.label}",
                heartbeat,
            )

    def _step(
        self,
        command: Sequence[str],
        spec: VenvSpec,
        venv: Path,
        what: str,
        heartbeat: Heartbeat,
    ) -> None:
        cwd = spec.cwd or self.root
        home = self.root / "home"
        home.mkdir(parents=True, exist_ok=True)
        env = child_env(
            home=home,
            install=True,
            prepend_path=[venv / "bin"],
            extra={"VIRTUAL_ENV": str(venv), "PIP_CACHE_DIR": str(self.pip_cache)},
        )
        try:
            result = run_with_heartbeat(command, cwd, env, heartbeat, timeout_s=self._timeout_s)
        except OSError as exc:
            raise verdict(
                ErrorType.CONFIGURATION,
                f"{what} could not start ({exc.strerror}).",
            ) from exc
        if result.exit_code != 0 or result.timed_out:
            ended = "timed out" if result.timed_out else f"exited {result.exit_code}"
            raise verdict(
                spec.error_type,
                f"Preparing the environment failed: {what} {ended}. {spec.hint} "
                f"Last output:\n{result.output_tail.strip()[-1200:]}",
            )


def _base_python() -> str:
    """The interpreter the worker's own venv was made from (venvs are never nested)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(sys.base_prefix) / "bin" / f"python{version}"
    return str(base) if base.is_file() else sys.executable


@contextlib.contextmanager
def _locked(path: Path, heartbeat: Heartbeat, what: str) -> Iterator[None]:
    """An exclusive flock on `path`, heartbeating while another activity holds it."""
    started = time.monotonic()
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                heartbeat(f"waiting {time.monotonic() - started:.0f}s for {what}")
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def tree_fingerprint(root: Path, ignore: Sequence[str] = (".git", "__pycache__")) -> str:
    """A hash of every file's path and bytes under `root` (for installs of the tree itself)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if any(part in ignore or part.endswith(".egg-info") for part in relative.parts):
            continue
        digest.update(str(relative).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def file_fingerprint(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.name).encode() + b"\0")
        with contextlib.suppress(OSError):
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
