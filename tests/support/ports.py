"""Free loopback ports for servers started by tests."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_block(count: int, start: int = 20000, stop: int = 40000) -> int:
    """The first port of `count` consecutive free loopback ports (the local platform and
    the dev server use port blocks). Bounded scan in steps of 37 to spread tests out."""
    import random

    for base in random.Random().sample(range(start, stop - count, 37), 200):
        ports = range(base, base + count)
        if all(_is_free(p) for p in ports):
            return base
    raise RuntimeError(f"no {count} consecutive free ports in {start}..{stop}")


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
