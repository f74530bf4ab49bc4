"""Small file helpers shared by the builders, the local platform and its resources."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "file_lock", "file_sha256", "tail"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `path` so that readers (Traefik's file watcher, another worker) see either the
    old or the new content, never a half-written file: temp file in the same dir + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write_bytes` of `text` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (wheels can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tail(path: Path, lines: int = 20, offset: int = 0) -> str:
    """The last `lines` lines of `path` from byte `offset` on (empty if it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def file_lock(path: Path, timeout_s: float | None = 120.0) -> Iterator[None]:
    """An exclusive lock shared by threads and worker processes (flock on its own open file),
    so two activities never change the same thing at once; waited for up to `timeout_s`
    (None: for as long as it takes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with path.open("a") as f:
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(
                        f"lock {path} held for more than {timeout_s:.0f} s by another "
                        "activity; it is retried, or remove the file if no worker runs"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
