"""The deployer's local secret store: what `slipway secret set` writes and the deployer's
`from: local` references read (the embedded default; production uses Secrets Manager or
Kubernetes Secrets). Shared by the CLI and the worker, so it lives with neither.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contracts.activity import SecretRef

__all__ = [
    "LocalSecretStore",
    "Resolved",
    "SecretUnavailableError",
    "pick_key",
    "secret_store_path",
]


class SecretUnavailableError(Exception):
    """A reference that does not resolve (no such secret, key or version; not allowed): a
    verdict, never retried. Transient failures (network, throttling) raise anything else."""


@dataclass(frozen=True)
class Resolved:
    version: str
    value: str

    def __repr__(self) -> str:  # never a value in a traceback or a log line
        return f"Resolved(version={self.version!r}, value=<redacted>)"


def pick_key(text: str, ref: SecretRef) -> str:
    if not ref.key:
        return text
    try:
        fields = json.loads(text)
    except ValueError:
        raise SecretUnavailableError(
            f"has no key {ref.key!r}: its value is not a JSON object"
        ) from None
    if not isinstance(fields, dict) or ref.key not in fields:
        raise SecretUnavailableError(f"has no key {ref.key!r}")
    value = fields[ref.key]
    return value if isinstance(value, str) else json.dumps(value)


# --- the local store ----------------------------------------------------------------------


class LocalSecretStore:
    """Secrets the operator puts on the deployer's disk (`slipway secret set NAME`, the value
    read from stdin): `<state_dir>/secrets/<hash of the name>.json`, mode 0600 in a 0700
    directory, every version kept (a rollback restores the value that served)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, name: str) -> Path:
        return self.root / (hashlib.sha256(name.encode()).hexdigest()[:32] + ".json")

    def _read(self, name: str) -> dict[str, Any]:
        path = self._path(name)
        if not path.is_file():
            return {"name": name, "versions": []}
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data

    def set(self, name: str, value: str) -> str:
        """Store a new version of `name`; returns its version ('1', '2', ...). Two `secret
        set` at once each get a version of their own (the store is locked while one reads
        and writes), never the same one."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        with self._locked():
            return self._append(name, value)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _append(self, name: str, value: str) -> str:
        data = self._read(name)
        version = str(len(data["versions"]) + 1)
        data["versions"].append(
            {"version": version, "value": value, "at": datetime.now(UTC).isoformat()}
        )
        path = self._path(name)
        staging = path.with_suffix(".tmp")
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out)
        os.replace(staging, path)
        return version

    def fetch(self, ref: SecretRef, environment: str) -> Resolved:
        versions = self._read(ref.name)["versions"]
        if not versions:
            raise SecretUnavailableError(
                f"is not in the deployer's local store ({self.root}); add it with "
                f"`slipway secret set {ref.name}`"
            )
        entry = versions[-1]
        if ref.version:
            found = [v for v in versions if v["version"] == ref.version]
            if not found:
                raise SecretUnavailableError(f"has no version {ref.version!r}")
            entry = found[0]
        return Resolved(version=str(entry["version"]), value=pick_key(str(entry["value"]), ref))


def secret_store_path(state_dir: Path) -> Path:
    return Path(state_dir) / "secrets"
