"""The local platform's resource records: the worker writes them when it makes a resource
(`activities/providers/backing_services/resources.py`), and `slipway resources` lists and
deletes by them, so the CLI needs no part of the worker.

Each resource lives in `<root>/<service>/<environment>/<kind>/`: `resource.json` (version,
installation, port, password, server pid and how to stop it), the server's data and its log.
A state dir the servers' user cannot enter is redirected (`resources_root` in the worker),
and `<state dir>/platform/resources/WHERE` then names the directory used instead."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel

from plumbing.files import file_lock
from plumbing.proctools import pid_alive, stop_group

__all__ = [
    "RECORD",
    "STOP_WAIT_S",
    "WHERE",
    "ResourceRecord",
    "ResourceRecords",
    "records_root",
]

RECORD = "resource.json"
WHERE = "WHERE"
STOP_WAIT_S = 15.0


class ResourceRecord(BaseModel):
    """`resource.json`: what runs, where, and how to reach it (the password stays here)."""

    kind: str
    service: str
    environment: str
    asked: str = ""
    note: str = ""
    version: str
    location: str
    origin: str = ""
    lacking: str = ""
    host: str
    port: int
    user: str
    password: str
    database: str
    url: str
    pid: int
    pid_start: int | None = None
    # The signal that shuts the server down cleanly (PostgreSQL: SIGINT, a fast shutdown);
    # records written before it was kept have none, and get SIGTERM, then SIGKILL.
    stop_signal: int = signal.SIGTERM
    created: float


def records_root(preferred: Path) -> Path:
    """Where the records under `preferred` are: `preferred`, or the directory its `WHERE`
    names (read only: the CLI never creates or moves a root)."""
    pointer = preferred / WHERE
    if pointer.is_file():
        return Path(pointer.read_text(encoding="utf-8").strip())
    return preferred


class ResourceRecords:
    """The records under `root`, each changed only under its kind's lock."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def home(self, service: str, environment: str, kind: str) -> Path:
        return self.root / service / environment / kind

    @contextmanager
    def locked(self, service: str, environment: str, kind: str) -> Iterator[Path]:
        """The resource's directory, held against the worker and other CLIs."""
        home = self.home(service, environment, kind)
        home.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(home.parent / f"{kind}.lock", timeout_s=None):
            yield home

    @staticmethod
    def read(home: Path) -> ResourceRecord | None:
        path = home / RECORD
        if not path.is_file():
            return None
        return ResourceRecord.model_validate_json(path.read_text(encoding="utf-8"))

    @staticmethod
    def write(home: Path, record: ResourceRecord) -> None:
        path = home / RECORD
        tmp = path.with_suffix(".tmp")
        tmp.write_text(record.model_dump_json(indent=2), encoding="utf-8")
        tmp.chmod(0o600)
        tmp.replace(path)

    @staticmethod
    def running(record: ResourceRecord) -> bool:
        return record.pid_start is not None and pid_alive(record.pid, record.pid_start)

    @staticmethod
    def halt(record: ResourceRecord) -> None:
        stop_group(record.pid, record.pid_start, STOP_WAIT_S, first=record.stop_signal)

    def listing(self) -> list[dict[str, object]]:
        """Every resource: service, environment, kind, version, port, running, data (no
        password)."""
        found = []
        for path in sorted(self.root.glob(f"*/*/*/{RECORD}")):
            record = ResourceRecord.model_validate_json(path.read_text(encoding="utf-8"))
            found.append(
                {
                    **record.model_dump(
                        include={"service", "environment", "kind", "version", "port"}
                    ),
                    "running": self.running(record),
                    "data": str(path.parent),
                }
            )
        return found

    def delete(self, service: str, environment: str, kind: str) -> bool:
        """Stop the resource and delete its data; False if there was none."""
        if not self.home(service, environment, kind).parent.is_dir():
            return False
        with self.locked(service, environment, kind) as home:
            record = self.read(home)
            if record is None and not home.exists():
                return False
            if record is not None:
                self.halt(record)
            shutil.rmtree(home, ignore_errors=True)
        return True
