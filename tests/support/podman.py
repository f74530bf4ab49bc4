"""Podman's Docker API and a Distribution registry, started on loopback for tests.

What works here (root, in a sandbox, no systemd): `podman system service` with a private
`--root`/`--runroot`/`--tmpdir`, the `vfs` storage driver (no overlay mounts needed), the
`cgroupfs` cgroup manager and the `file` events backend. It builds `FROM scratch` + `COPY`
images (no container is ever run) and pushes them to Debian's `docker-registry` over plain HTTP
because a registries.conf (`CONTAINERS_REGISTRIES_CONF`) marks that registry insecure.

`server_process` is the generic part (start, wait until ready, always stop with bounded waits);
the ECR and Prometheus tests use it too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx

from activities.providers.builders.registry_api import MANIFEST_MEDIA_TYPES
from tests.support.binaries import require_binary
from tests.support.ports import free_port

__all__ = [
    "LocalRegistry",
    "PodmanService",
    "running_podman",
    "running_registry",
    "server_process",
]

STOP_WAIT_S = 10.0


def _log_tail(log: Path, chars: int = 2000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited in time; both waits are bounded."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_WAIT_S)


@contextmanager
def server_process(
    argv: Sequence[str],
    *,
    name: str,
    log: Path,
    ready: Callable[[], bool],
    timeout_s: float = 30.0,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server until the block ends: wait (bounded) until `ready()` is true, and always
    stop it. A server that exits or never gets ready fails with the tail of its log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode} before it was ready:\n"
                    + _log_tail(log)
                )
            if _safely(ready):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} was not ready within {timeout_s:.0f}s:\n" + _log_tail(log)
                )
            time.sleep(0.1)
        yield process
    finally:
        _stop(process)


def _safely(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except (OSError, httpx.HTTPError):
        return False


# --- registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalRegistry:
    """A `docker-registry serve` on 127.0.0.1, storing under `storage`."""

    host: str
    storage: Path

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """What the registry answers for `repository:reference` (Docker-Content-Digest)."""
        response = httpx.get(
            f"http://{self.host}/v2/{repository}/manifests/{reference}",
            headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)},
            timeout=10,
        )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.headers["Docker-Content-Digest"]

    def tags(self, repository: str) -> list[str]:
        response = httpx.get(f"http://{self.host}/v2/{repository}/tags/list", timeout=10)
        response.raise_for_status()
        return sorted(response.json().get("tags") or [])


@contextmanager
def running_registry(workdir: Path) -> Iterator[LocalRegistry]:
    """Debian's `docker-registry` (distribution) on a free loopback port, plain HTTP."""
    binary = require_binary(
        "docker-registry", "apt-get install -y docker-registry (see .ci/real-servers.sh)"
    )
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    storage = workdir / "storage"
    storage.mkdir(exist_ok=True)
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {storage}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        # A fixed secret keeps the registry from warning on every start.
        "  secret: slipway-tests-only\n"
    )
    host = f"127.0.0.1:{port}"
    with server_process(
        [str(binary), "serve", str(config)],
        name="docker-registry",
        log=workdir / "registry.log",
        ready=lambda: httpx.get(f"http://{host}/v2/", timeout=1).status_code == 200,
    ):
        yield LocalRegistry(host=host, storage=storage)


# --- podman -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodmanService:
    """Podman's Docker-compatible API on a unix socket."""

    base_url: str

    def client(self) -> Any:
        """A docker SDK client for this engine (the caller closes it)."""
        return docker.DockerClient(base_url=self.base_url, timeout=60)


def _ping(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    transport = httpx.HTTPTransport(uds=str(socket_path))
    with httpx.Client(transport=transport, timeout=1) as http:
        return http.get("http://podman/_ping").text.strip() == "OK"


@contextmanager
def running_podman(workdir: Path, insecure_registries: Sequence[str]) -> Iterator[PodmanService]:
    """`podman system service` on `workdir/podman.sock`, with its own storage, trusting the
    given `host:port` registries over plain HTTP."""
    binary = require_binary("podman", "apt-get install -y podman (see .ci/real-servers.sh)")
    workdir.mkdir(parents=True, exist_ok=True)
    for sub in ("root", "runroot", "tmp", "libpod"):
        (workdir / sub).mkdir(exist_ok=True)
    registries_conf = workdir / "registries.conf"
    registries_conf.write_text(
        "unqualified-search-registries = []\n"
        + "".join(
            f'\n[[registry]]\nlocation = "{location}"\ninsecure = true\n'
            for location in insecure_registries
        )
    )
    socket_path = workdir / "podman.sock"
    # podman refuses a runroot longer than 50 characters, which pytest-xdist's temporary
    # directories (…/popen-gw0/…) exceed: a short one of its own, removed afterwards.
    runroot = Path(tempfile.mkdtemp(prefix="podrun-"))
    argv = [
        str(binary),
        f"--root={workdir / 'root'}",
        f"--runroot={runroot}",
        f"--tmpdir={workdir / 'libpod'}",
        "--storage-driver=vfs",
        "--cgroup-manager=cgroupfs",
        "--events-backend=file",
        "system",
        "service",
        "--time=0",
        f"unix://{socket_path}",
    ]
    env = {
        "CONTAINERS_REGISTRIES_CONF": str(registries_conf),
        # Uploaded build contexts go here instead of /var/tmp.
        "TMPDIR": str(workdir / "tmp"),
    }
    try:
        with server_process(
            argv,
            name="podman system service",
            log=workdir / "podman.log",
            ready=lambda: _ping(socket_path),
            env=env,
        ):
            yield PodmanService(base_url=f"unix://{socket_path}")
    finally:
        shutil.rmtree(runroot, ignore_errors=True)
