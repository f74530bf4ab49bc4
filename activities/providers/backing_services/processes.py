"""Server processes of backing services: started in their own process group, recorded on
disk while they run, and stopped (group and data directory) however the test run ends.

The record (`<records>/<id>.json`: worker pid, server pid, both start times, data directory)
is what lets the next worker start clean up after a worker that was killed: a record whose
worker is gone names a server to kill (only if that pid is still the same process) and a
directory to delete. Records of live workers sharing the state directory are left alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from activities.providers.backing_services.installation import Installation
from contracts.errors import ErrorType, verdict
from plumbing.proctools import pid_alive, process_start_ticks, start_group, stop_group

__all__ = [
    "RunAs",
    "ServerProcess",
    "clean_leftovers",
    "data_root",
    "reachable_installation",
    "run_as_for",
    "wait_until",
]

_log = structlog.get_logger("slipway.backing_services")
STOP_WAIT_S = 10.0


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account servers run under when the worker is root: PostgreSQL
    refuses to run as root, and a test database has no business running as root anyway."""

    user: str
    uid: int
    gid: int


def run_as_for(user: str = "nobody") -> RunAs | None:
    """None when the worker is not root (servers run as the worker's own user)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise verdict(
            ErrorType.CONFIGURATION,
            f"The worker runs as root and backing services need an unprivileged account to "
            f"run as (PostgreSQL refuses root), but there is no user {user!r}: create it or "
            "run the worker as a non-root user.",
        ) from None
    return RunAs(user, entry.pw_uid, entry.pw_gid)


def data_root(preferred: Path, run_as: RunAs | None) -> Path:
    """Where throwaway data directories go: under the worker's state directory, unless the
    servers run as another user who could not reach it (then the system temp directory)."""
    preferred.mkdir(parents=True, exist_ok=True)
    if run_as is None or _reachable_by_others(preferred.resolve()):
        return preferred
    fallback = private_root("slipway-services") / "data"
    fallback.mkdir(mode=0o755, exist_ok=True)
    return fallback


def _reachable_by_others(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


def private_root(name: str, base: Path | None = None) -> Path:
    """`<base or system temp>/<name>`, made by this user and writable by no one else (it is
    refused if someone else made it first: what runs from there must be what we put there)."""
    root = (base or Path(tempfile.gettempdir())) / name
    root.mkdir(mode=0o755, exist_ok=True)
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise verdict(
            ErrorType.CONFIGURATION,
            f"{root} belongs to another user or others may write to it: remove it, or run "
            "the worker as a non-root user.",
        )
    root.chmod(0o755)
    return root


def reachable_installation(installation: Installation, run_as: RunAs | None) -> Installation:
    """`installation` itself if the servers' user can reach it; else a copy it can (a root
    worker cloned into a private directory has pgserver's binaries inside a .venv that
    `nobody` may not enter). The copy is made once per source and version, root-owned and
    read-only to others, under the system temp directory."""
    location = installation.location.absolute()
    if run_as is None or _reachable_by_others(location.resolve()):
        return installation
    # A PostgreSQL bin directory brings its prefix (lib/, share/); Redis is one binary. The
    # layout around it is kept: a wheel's binaries find their libraries in the sibling
    # `<package>.libs` that auditwheel made (RPATH $ORIGIN/../../../pgserver.libs).
    source = location.parent if location.is_dir() else location
    package = source.parent
    libs = package.parent / f"{package.name}.libs"
    key = hashlib.sha256(f"{source.resolve()}|{installation.version}".encode()).hexdigest()[:16]
    target = private_root("slipway-services") / "installs" / f"{installation.kind}-{key}"
    if not target.exists():
        target.parent.mkdir(mode=0o755, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        copied = staging / package.name / source.name
        copied.parent.mkdir()
        if source.is_dir():
            shutil.copytree(source, copied, symlinks=True)
        else:
            shutil.copy2(source, copied)
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        _open_to_others(staging)
        try:
            staging.rename(target)
        except OSError:  # another worker finished the same copy first
            shutil.rmtree(staging, ignore_errors=True)
    moved = target / package.name / source.name
    new_location = moved / location.name if location.is_dir() else moved
    _log.info("server binaries copied where their user can reach them", to=str(new_location))
    return dataclasses.replace(installation, location=new_location)


def _open_to_others(root: Path) -> None:
    """Readable (and directories and executables enterable) by everyone, writable by us."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        extra = 0o055 if path.is_dir() or mode & stat.S_IXUSR else 0o044
        path.chmod((mode | extra) & ~0o022)


class ServerProcess:
    """One running server: `start()` records and spawns it, `stop()` ends its process group,
    deletes its data directory and its record. Safe to stop twice."""

    def __init__(
        self,
        records: Path,
        data_parent: Path,
        label: str,
        run_as: RunAs | None,
        *,
        data_dir: Path | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.records = records
        self.data_dir = data_dir or data_parent / f"{label}-{self.id}"
        # Durable: a resource's data outlives the process (no fsync=off, Redis keeps an AOF).
        self.durable = data_dir is not None
        self.run_as = run_as
        self.process: subprocess.Popen[bytes] | None = None
        self.started: int | None = None
        self.log_path = self.data_dir / "server.log"
        self._record = records / f"{self.id}.json"

    def prepare_dir(self) -> None:
        self.data_dir.mkdir(parents=True, mode=0o700)
        if self.run_as is not None:
            os.chown(self.data_dir, self.run_as.uid, self.run_as.gid)
        # Recorded before anything is spawned: a worker killed from here on leaves a record.
        self._write_record(server_pid=None)

    def run(self, argv: Sequence[str], timeout_s: float = 120.0) -> str:
        """A preparation command (initdb) as the server's user; its output, or RuntimeError."""
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            check=False,
            user=self.run_as.uid if self.run_as else None,
            group=self.run_as.gid if self.run_as else None,
            extra_groups=[] if self.run_as else None,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{Path(argv[0]).name} exited {done.returncode}: {done.stderr}")
        return str(done.stdout)

    def start(self, argv: Sequence[str]) -> None:
        with self.log_path.open("ab") as log:
            # Its own group: stop() ends the server with every child it forked.
            self.process = start_group(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                user=self.run_as.uid if self.run_as else None,
                group=self.run_as.gid if self.run_as else None,
                extra_groups=[] if self.run_as else None,
            )
        self.started = process_start_ticks(self.process.pid)
        self._write_record(server_pid=self.process.pid)

    def env(self) -> dict[str, str]:
        # Nothing of the worker's environment (credentials, codec keys) reaches the server.
        return {"PATH": os.defpath, "HOME": str(self.data_dir), "LC_ALL": "C"}

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, chars: int = 800) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, stop_signal: int = signal.SIGTERM) -> None:
        if self.process is not None:
            # Children a server forked (postgres backends) go with their group in any case.
            stop_group(self.process.pid, self.started, STOP_WAIT_S, first=stop_signal)
            self.process.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self._record.unlink(missing_ok=True)

    def _write_record(self, server_pid: int | None) -> None:
        self.records.mkdir(parents=True, exist_ok=True)
        record = {
            "worker_pid": os.getpid(),
            "worker_started": process_start_ticks(os.getpid()),
            "server_pid": server_pid,
            "server_started": self.started if server_pid else None,
            "data_dir": str(self.data_dir),
        }
        tmp = self._record.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(self._record)


def clean_leftovers(records: Path) -> list[str]:
    """Stop the servers and delete the data directories that dead workers left behind;
    the data directories cleaned. Called when a worker starts."""
    cleaned = []
    for path in sorted(records.glob("*.json")) if records.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            continue
        if pid_alive(record["worker_pid"], record.get("worker_started")):
            continue  # a live worker sharing this state directory owns it
        server = record.get("server_pid")
        if server:
            stop_group(server, record.get("server_started"), 0.0, first=signal.SIGKILL)
        shutil.rmtree(record["data_dir"], ignore_errors=True)
        path.unlink(missing_ok=True)
        cleaned.append(str(record["data_dir"]))
    if cleaned:
        _log.info("cleaned backing services a dead worker left", dirs=cleaned)
    return cleaned


def wait_until(
    check: Callable[[], str | None],
    server: ServerProcess,
    progress: Callable[[str], None],
    what: str,
    timeout_s: float,
) -> str:
    """Poll `check` (a value once healthy, None before) until it answers, the server exits
    or `timeout_s` passes; RuntimeError with the server's log for the last two."""
    deadline = time.monotonic() + timeout_s
    while True:
        # Before every check, the first included: a cancelled activity (its progress raises)
        # stops here even when the server would have answered at once.
        progress(f"waiting for {what}")
        answer = check()
        if answer is not None:
            return answer
        code = server.exited()
        if code is not None:
            raise RuntimeError(f"{what} exited {code} while starting: {server.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not healthy after {timeout_s:.0f} s: {server.log_tail()}")
        time.sleep(0.1)
