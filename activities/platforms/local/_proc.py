"""How the local platform starts its processes (releases, Traefik) and finds them again.

They run in their own session (`plumbing.proctools.start_group`), so they outlive the
worker that started them; their pid and start time are written to disk so that a restarted
worker can find them, tell them apart from an unrelated process that reused the pid, and
stop them (`plumbing.proctools.stop_group`).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from plumbing.proctools import pid_alive, start_group

__all__ = ["LAUNCH_ENV", "launched_processes", "spawn"]


def spawn(command: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_path: Path) -> int:
    """Start `command` in its own process group with stdout and stderr appended to
    `log_path`; return its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = start_group(command, cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT)
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
