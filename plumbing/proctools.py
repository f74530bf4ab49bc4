"""The one process toolkit: loopback ports, process identity, process groups and stopping
them, for the local platform, backing services, scanners and commands alike.

A process is named by its pid and its start time (`process_start_ticks`), so a pid that a
later, unrelated process reused is never taken for ours. A zombie is dead everywhere: it
has exited and only waits to be reaped (`kill(pid, 0)` would still succeed on it). Every
command starts in its own session, so its process group can be stopped with every child
it forked; stopping a group is SIGTERM (or the signal given), SIGKILL after a timeout,
then SIGKILL to whatever of the group is left, and reaping what is ours.

Linux only (/proc). It knows nothing of platforms or providers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "LOOPBACK",
    "free_port",
    "kill_group",
    "pid_alive",
    "port_free",
    "port_open",
    "process_group",
    "process_start_ticks",
    "signal_group",
    "start_group",
    "stop_group",
    "wait_gone",
]

LOOPBACK = "127.0.0.1"

# The Popen objects of the groups started here that may outlive the call that started them,
# so that one that exits is reaped with its real exit status; removed once it is seen gone.
_CHILDREN: dict[int, subprocess.Popen[Any]] = {}


# --- ports -------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nothing listens on right now (the caller retries on a lost race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether loopback `port` can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def port_open(port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on loopback `port`."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout_s):
            return True
    except OSError:
        return False


# --- identity ----------------------------------------------------------------------------


def process_start_ticks(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (field 22 of /proc/<pid>/stat); None if
    there is no such process or it is a zombie. With the pid it names one process even after
    the pid is reused."""
    found = _stat(pid)
    return None if found is None or found[0] in _DEAD else found[1]


_DEAD = ("Z", "X")  # zombie, dead: exited, whether or not reaped yet


def _stat(pid: int) -> tuple[str, int, int] | None:
    """`pid`'s state, start ticks and process group (/proc/<pid>/stat); None if none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19]), int(fields[2])


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether `pid` runs (a zombie does not: it is reaped here if it is ours) and, when
    `start_ticks` is given, is the process that started then, not a later one that reused
    the pid."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process holds the pid: not ours
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


# --- starting ----------------------------------------------------------------------------


def start_group(argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """Start `argv` in its own session (a process group it leads, which outlives the worker
    and is stopped as a whole) with `popen`'s settings; stdin is /dev/null unless given.
    It is ours to reap: `pid_alive` and `stop_group` do."""
    popen.setdefault("stdin", subprocess.DEVNULL)
    process: subprocess.Popen[Any] = subprocess.Popen(list(argv), start_new_session=True, **popen)
    _CHILDREN[process.pid] = process
    return process


@contextlib.contextmanager
def process_group(argv: Sequence[str], **popen: Any) -> Iterator[subprocess.Popen[Any]]:
    """`start_group` for the length of a block: however the block ends (a timeout, a
    cancelled activity), nothing of the group outlives it."""
    process = start_group(argv, **popen)
    try:
        yield process
    finally:
        kill_group(process)


# --- stopping ----------------------------------------------------------------------------


def signal_group(pid: int, sig: int) -> None:
    """Send `sig` to the process group `pid` leads (to `pid` alone if it leads none we may
    signal); nothing if it is gone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        # Not a group leader we own (started some other way): signal the process alone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def kill_group(process: subprocess.Popen[Any]) -> int:
    """SIGKILL `process`'s group unless `process` was reaped already (its pid may then be
    another's), and reap it; its exit status."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    code = process.wait()
    _CHILDREN.pop(process.pid, None)
    return code


def stop_group(
    pid: int,
    start_ticks: int | None = None,
    timeout_s: float = 10.0,
    first: int = signal.SIGTERM,
) -> bool:
    """Stop the process group `pid` leads: `first` (SIGTERM), SIGKILL after `timeout_s` if
    the leader still runs, then SIGKILL to what is left of the group (children it forked),
    reaping what is ours. False when there was nothing (or something unrelated) to stop."""
    found = _stat(pid)
    if found is not None and start_ticks is not None and found[1] != start_ticks:
        return False  # another process holds the pid now
    if found is None or found[0] in _DEAD:
        # Exited: its pid is not reused while its group lives, so what is left of the group
        # (a server's backends) is still what it started.
        _reap(pid)
        _kill_rest(pid)
        return False
    if not pid_alive(pid, start_ticks):
        return False  # another user's process
    signal_group(pid, first)
    if not wait_gone(pid, timeout_s):
        signal_group(pid, signal.SIGKILL)
        if not wait_gone(pid, 5.0):
            raise RuntimeError(f"process {pid} survived SIGKILL for 5 s; stop it by hand")
    _kill_rest(pid)
    return True


def _kill_rest(pid: int, timeout_s: float = 5.0) -> None:
    """SIGKILL the members of group `pid` left after its leader, reaping ours, until none
    runs (a zombie another parent has not reaped yet does not count)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-pid, os.WNOHANG)[0] > 0:
                pass
        if not _group_runs(pid) or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def _group_runs(pgid: int) -> bool:
    """Whether a live (not zombie) process is in group `pgid`."""
    for entry in Path("/proc").iterdir():
        found = _stat(int(entry.name)) if entry.name.isdigit() else None
        if found is not None and found[2] == pgid and found[0] not in _DEAD:
            return True
    return False


def wait_gone(pid: int, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for `pid` to stop running (reaping it if ours); whether it did."""
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    _reap(pid)
    return True
