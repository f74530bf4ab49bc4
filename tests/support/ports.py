"""Free loopback ports for servers started by tests: one, several different, or a block.

The one place that picks ports, so every test spreads out the same way and none reaches into
the kernel's ephemeral range where a port it released could be taken by someone else.
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path
from typing import IO

__all__ = ["free_port", "free_port_block", "free_ports", "port_refuses"]

# Below the kernel's ephemeral range (32768+), so no outgoing connection or slot process
# (they take ephemeral ports) lands on a port a dev server releases while it restarts.
_BLOCKS_FROM, _BLOCKS_TO = 20000, 32000
_SINGLES_FROM = 10000  # single ports come from 10000..19999
_RESERVATIONS = Path(tempfile.gettempdir()) / "slipway-test-port-blocks"
_held: list[IO[bytes]] = []  # locks this process holds until it exits


def free_port() -> int:
    """One free loopback port."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different loopback ports free right now, picked at random below the blocks
    and below the kernel's ephemeral range: a port the kernel chose (bind to port 0) was seen
    taken by someone else's outgoing connection before the test's Traefik could bind it."""
    picked: list[int] = []
    for port in random.sample(range(_SINGLES_FROM, _BLOCKS_FROM), 400):
        if _is_free(port):
            picked.append(port)
            if len(picked) == count:
                return picked
    raise RuntimeError(f"no {count} free loopback ports in {_SINGLES_FROM}..{_BLOCKS_FROM}")


def free_port_block(count: int = 16) -> int:
    """The first of `count` consecutive free loopback ports, for servers that derive their
    ports from one base (the dev server and the local platform; see `tests.support.devstack`
    for the layout). A bounded random scan, so parallel test workers spread out.

    Free is not enough: two test workers starting stacks at the same moment both found one
    block free, and the second's Traefik could not bind. So a block is also reserved, by a
    lock file this process holds until it exits (the kernel drops the lock if it dies); a
    block another process holds is skipped."""
    _RESERVATIONS.mkdir(exist_ok=True)
    for base in random.sample(range(_BLOCKS_FROM, _BLOCKS_TO - count, 41), 200):
        if _reserve(base) and all(_is_free(p) for p in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free loopback ports in {_BLOCKS_FROM}..")


def _reserve(base: int) -> bool:
    """Hold the lock of block `base` for this process's lifetime; False if another holds it."""
    handle = (_RESERVATIONS / f"{base}.lock").open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return False
    handle.write(f"{os.getpid()}\n".encode())
    handle.flush()
    _held.append(handle)
    return True


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_refuses(port: int) -> bool:
    """Nothing listens on the loopback `port` any more (a server that should be gone)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False
