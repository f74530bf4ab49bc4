"""The deployer key's file: read at a deployer worker's start, created on first use."""

from __future__ import annotations

import os

__all__ = ["key_from_file"]

_KEY_BYTES = 32


def key_from_file(path: os.PathLike[str] | str) -> bytes:
    """The key in `path`, created (32 random bytes, mode 0600) if the file does not exist.
    Every deployer replica must read the same file (a Kubernetes Secret, a shared volume)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, "rb") as handle:
            return handle.read()
    with os.fdopen(fd, "wb") as handle:
        key = os.urandom(_KEY_BYTES)
        handle.write(key)
    return key
