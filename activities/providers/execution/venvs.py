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

Installing runs the packages' build code and the stage's setup commands, so every step runs
in the worker's sandbox (`activities.providers.execution.sandbox`) with only the new venv writable
(and a per-build copy of the service directory, which an in-tree build writes into), a private
HOME and pip cache. Its users see it read-only, so bytecode is compiled at install then.

A venv is verified at every use: when it is published the worker records a hash of its
manifest (`<key>.manifest`: each file's path, type, mode, size and sha256, each symlink's
target), and a venv whose manifest no longer hashes to the record (changed behind the
worker's back, or built before records were kept) is rebuilt. That reads every byte of the
venv at each use, paid by the activity that uses it: measured here 0.13 s for a 17 MB venv
of pytest and pytest-cov (compiled bytecode included), 10 s for a 1.7 GB one (the worker's
own dev venv, on two busy cores): about 0.6-0.8 s per 100 MB.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from activities.providers.execution import sandbox as sandboxes
from activities.providers.execution.child_env import child_env
from activities.providers.execution.processes import run_with_heartbeat
from activities.providers.execution.sandbox import Bind, Mounts, RunCopy, Sandbox, install_paths
from activities.wiring.backends import Heartbeat
from contracts.errors import ErrorType, verdict

__all__ = ["VenvCache", "VenvSpec", "python_in", "venv_manifest"]

_log = structlog.get_logger("slipway.venvs")


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
    # Files or directories the install reads besides `cwd` (a release's wheel): read-only in
    # the sandbox, which shows nothing else of the worker's.
    readable: tuple[Path, ...] = ()
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
        """The venv of `spec`, built now if no complete and intact one exists."""
        key = spec.key()
        link = self.root / key
        if link.is_dir() and self._intact(key, link):
            return link
        self.root.mkdir(parents=True, exist_ok=True)
        with _locked(self.root / f"{key}.lock", heartbeat, f"the venv for {spec.label}"):
            if link.is_dir():
                if self._intact(key, link):
                    return link  # built by the activity we waited for
                # Changed behind the worker's back (or built before hashes were recorded):
                # never used, built again.
                what = f"the venv for {spec.label} ({link.resolve().name})"
                _log.warning("venv changed since it was built: rebuilding it", venv=str(link))
                heartbeat(f"{what} does not match the hash recorded when it was built: rebuilding")
                link.unlink()
            self._record(key).unlink(missing_ok=True)
            for stale in self.root.glob(f"v-{key}-*"):
                shutil.rmtree(stale, ignore_errors=True)  # left by a crashed build
            target = self.root / f"v-{key}-{uuid.uuid4().hex[:8]}"
            sandbox = sandboxes.current()
            try:
                self._build(spec, target, heartbeat, sandbox)
                sandbox.take_back(target)
                heartbeat(f"hashing the venv for {spec.label}")
                record = {"venv": target.name, "sha256": venv_manifest(target)}
                tmp_record = self.root / f".{key}.{uuid.uuid4().hex[:8]}.manifest"
                tmp_record.write_text(json.dumps(record), encoding="utf-8")
                os.replace(tmp_record, self._record(key))
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
            tmp_link = self.root / f".{key}.{uuid.uuid4().hex[:8]}.link"
            tmp_link.symlink_to(target.name)
            os.replace(tmp_link, link)
        return link

    def _record(self, key: str) -> Path:
        return self.root / f"{key}.manifest"

    def _intact(self, key: str, link: Path) -> bool:
        """Does the venv `link` points to still hash to what was recorded when it was built?"""
        try:
            record = json.loads(self._record(key).read_text(encoding="utf-8"))
            return bool(
                record["venv"] == os.readlink(link)
                and record["sha256"] == venv_manifest(link.resolve())
            )
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def _build(self, spec: VenvSpec, target: Path, heartbeat: Heartbeat, sandbox: Sandbox) -> None:
        sandbox.check()
        target.mkdir(parents=True)
        sandbox.give(target)
        with contextlib.ExitStack() as stack:
            copy = (
                stack.enter_context(sandbox.writable_copy(spec.cwd))
                if spec.cwd is not None
                else None
            )
            self._build_in(spec, target, heartbeat, sandbox, copy)

    def _build_in(
        self,
        spec: VenvSpec,
        target: Path,
        heartbeat: Heartbeat,
        sandbox: Sandbox,
        copy: RunCopy | None,
    ) -> None:
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
            copy,
        )
        if spec.install:
            heartbeat(f"installing {len(spec.install)} requirement(s) for {spec.label}")
            # Without the sandbox no bytecode is compiled ahead: that is a third of the CPU
            # of installing HEAL7's backend, and Python writes the bytecode of what is
            # imported. Sandboxed users see the venv read-only, so it is compiled once here.
            compile_args = [] if sandbox.active else ["--no-compile"]
            self._step(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "--python",
                    str(python_in(target)),
                    "install",
                    "--disable-pip-version-check",
                    *compile_args,
                    *spec.install,
                ],
                spec,
                target,
                f"installing {' '.join(spec.install)} for {spec.label}",
                heartbeat,
                copy,
            )
        for command in spec.setup:
            heartbeat(f"setup for {spec.label}: {command}")
            self._step(
                ["/bin/sh", "-c", command],
                spec,
                target,
                f"the setup command {command!r} of {spec.label}",
                heartbeat,
                copy,
            )

    def _step(
        self,
        command: Sequence[str],
        spec: VenvSpec,
        venv: Path,
        what: str,
        heartbeat: Heartbeat,
        copy: RunCopy | None,
    ) -> None:
        cwd = spec.cwd or venv
        home = self.root / "home"
        home.mkdir(parents=True, exist_ok=True)
        env = child_env(
            home=home,
            install=True,
            prepend_path=[venv / "bin"],
            extra={"VIRTUAL_ENV": str(venv), "PIP_CACHE_DIR": str(self.pip_cache)},
        )
        # Only the venv being built (and the copy of the service dir) is writable; pip's
        # cache is private to the step, so one build cannot plant a wheel for the next.
        mounts = Mounts(
            binds=(
                Bind(venv, writable=True),
                *(copy.binds if copy is not None else ()),
                *(Bind(path) for path in (*spec.readable, *install_paths())),
            ),
            private=(self.pip_cache,),
            worker_tools=True,
        )
        try:
            result = run_with_heartbeat(
                command, cwd, env, heartbeat, mounts=mounts, timeout_s=self._timeout_s
            )
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


def venv_manifest(root: Path) -> str:
    """sha256 of the manifest of the tree `root`: every entry's relative path, type and mode,
    a file's size and sha256, a symlink's target (never followed). Reads every byte."""
    digest = hashlib.sha256()
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            relative = os.path.relpath(path, root)
            if stat.S_ISLNK(info.st_mode):
                entry = f"L {relative} {os.readlink(path)}"
            elif stat.S_ISREG(info.st_mode):
                entry = f"F {relative} {info.st_mode:o} {info.st_size} {_file_sha256(path)}"
            else:
                entry = f"D {relative} {info.st_mode:o}"
            digest.update(entry.encode(errors="surrogateescape") + b"\n")
    return digest.hexdigest()


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
