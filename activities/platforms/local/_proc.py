"""Process, file and port helpers shared by the local platform's backends.

Processes started here run in their own session, so they outlive the worker that started
them; their pid and start time are written to disk so that a restarted worker can find them,
tell them apart from an unrelated process that reused the pid, and stop them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from activities.files import atomic_write_text

__all__ = [
    "LOOPBACK",
    "atomic_write_text",
    "file_lock",
    "free_port",
    "pid_alive",
    "port_open",
    "process_start_ticks",
    "spawn",
    "stop_process",
    "tail",
]

LOOPBACK = "127.0.0.1"

# Popen objects of the processes this worker started, kept so that a process that exits is
# reaped (a zombie would otherwise look alive to kill(pid, 0)).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def free_port() -> int:
    """A port the kernel says is free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def port_open(port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on loopback `port`."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat):
    with the pid it identifies a process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether `pid` runs (not a zombie) and, if given, is the process started at
    `start_ticks` rather than an unrelated one that reused the pid."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Someone else's process holds the pid: not ours.
        return False
    ticks = process_start_ticks(pid)
    if ticks is None:
        _reap(pid)
        return False
    return start_ticks is None or ticks == start_ticks


def _reap(pid: int) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.poll()
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def spawn(command: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_path: Path) -> int:
    """Start `command` in its own session (so it survives the worker and can be stopped as a
    process group), with stdout and stderr appended to `log_path`; return its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[process.pid] = process
    return process.pid


LAUNCH_ENV = "SLIPWAY_LAUNCH"
"""Environment variable carrying a launch token: it finds a process whose pid never got
recorded (its worker died between spawning it and writing the slot's state)."""


def launched_processes(token: str) -> list[int]:
    """Live process-group leaders started with `LAUNCH_ENV=token` (read from /proc)."""
    needle = f"{LAUNCH_ENV}={token}".encode()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            # Its children inherit the token; stopping the leader's group stops them.
            if os.getpgid(pid) == pid and pid_alive(pid):
                found.append(pid)
        except OSError:
            continue
    return found


def stop_process(pid: int, start_ticks: int | None = None, timeout_s: float = 10.0) -> bool:
    """Stop the process group led by `pid`: SIGTERM, then SIGKILL after `timeout_s`.
    Returns False when there was nothing (or something unrelated) to stop."""
    if not pid_alive(pid, start_ticks):
        _reap(pid)
        return False
    _signal_group(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout_s):
        return True
    _signal_group(pid, signal.SIGKILL)
    if not _wait_gone(pid, 5.0):
        raise RuntimeError(f"process {pid} survived SIGKILL for 5 s; stop it by hand")
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        # Not a group leader we own (started some other way): signal the process alone.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            _reap(pid)
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


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
def file_lock(path: Path, timeout_s: float = 120.0) -> Iterator[None]:
    """An exclusive lock shared by threads and worker processes (flock on its own open file),
    so two activities never change the same slot or route at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    with path.open("a") as f:
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"lock {path} held for more than {timeout_s:.0f} s by another "
                        "activity; it is retried, or remove the file if no worker runs"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
