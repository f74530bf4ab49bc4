"""PostgreSQL for test stages: the binaries of the `pgserver` wheel (PostgreSQL 16.2), else
Debian's `postgresql` packages (/usr/lib/postgresql/<major>/bin).

An installation without the contrib extensions the official image carries (`uuid-ossp`,
`pgcrypto`, `citext`, `hstore`, `pg_trgm`, ...; pgserver's wheel has none) says so in its
`lacking`, and the starter prefers one that has them.

We run `initdb` and `postgres` ourselves rather than pgserver's Python API: that API puts
its servers in a shared runtime directory and, as root, creates a `pgserver` account and
widens the permissions of every parent directory. Ours get a fresh directory, a loopback
TCP port (no Unix socket), a random password (scram-sha-256) and settings for throwaway
data (no fsync).
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import signal
import subprocess
from pathlib import Path

from activities.providers.backing_services.installation import Installation
from activities.providers.backing_services.processes import ServerProcess
from contracts.definition.service_templates import Endpoint

__all__ = ["PostgresKind"]

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)*)")
# What applications most often ask of the official image's contrib (all of them ship there).
CONTRIB = ("uuid-ossp", "pgcrypto", "citext", "hstore", "pg_trgm")
USER = "postgres"
DATABASE = "postgres"


class PostgresKind:
    kind: str = "postgres"
    # Fast shutdown: the suite is done, nothing waits for its sessions to finish.
    stop_signal: int = signal.SIGINT

    def __init__(self, search: list[Path] | None = None) -> None:
        self._search = search

    def installations(self) -> list[Installation]:
        found = []
        for bin_dir in self._search if self._search is not None else _bin_dirs():
            postgres = bin_dir / "postgres"
            if not (postgres.is_file() and (bin_dir / "initdb").is_file()):
                continue
            try:
                out = subprocess.run(
                    [str(postgres), "--version"], capture_output=True, text=True, timeout=10
                ).stdout
            except (OSError, subprocess.TimeoutExpired):
                continue
            match = _VERSION.search(out)
            if match:
                missing = _missing_extensions(bin_dir)
                lacking = f"the contrib extensions {', '.join(missing)}" if missing else ""
                found.append(
                    Installation(self.kind, match.group(1), bin_dir, str(bin_dir), lacking)
                )
        return found

    def launch(
        self,
        installation: Installation,
        server: ServerProcess,
        port: int,
        password: str | None = None,
    ) -> Endpoint:
        password = password or secrets.token_urlsafe(16)
        data = server.data_dir / "data"
        bin_dir = installation.location
        if not (data / "PG_VERSION").is_file():  # a resource's data is kept across starts
            pwfile = server.data_dir / "pwfile"
            pwfile.write_text(password + "\n")
            if server.run_as is not None:
                os.chown(pwfile, server.run_as.uid, server.run_as.gid)
            server.run(
                [
                    str(bin_dir / "initdb"),
                    "-D", str(data),
                    "-U", USER,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E", "UTF8",
                    "--no-locale",  # C collation: no dependence on the locales installed
                    "--no-sync",
                ]
            )  # fmt: skip
            pwfile.unlink()
        # Throwaway data needs no durability; a resource's does.
        fast = [] if server.durable else [
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        ]  # fmt: skip
        server.start(
            [
                str(bin_dir / "postgres"),
                "-D", str(data),
                "-p", str(port),
                "-c", "listen_addresses=127.0.0.1",
                "-c", "unix_socket_directories=",
                *fast,
            ]
        )  # fmt: skip
        return Endpoint(
            kind=self.kind,
            host="127.0.0.1",
            port=port,
            user=USER,
            password=password,
            database=DATABASE,
            url=f"postgresql://{USER}:{password}@127.0.0.1:{port}/{DATABASE}",
            version=installation.version,
        )

    def check(self, installation: Installation, endpoint: Endpoint) -> str | None:
        """The server's own `server_version` once it answers a query, else None."""
        try:
            done = subprocess.run(
                [
                    str(installation.location / "psql"),
                    "-h", endpoint.host,
                    "-p", str(endpoint.port),
                    "-U", endpoint.user,
                    "-d", endpoint.database,
                    "-tAXc", "SHOW server_version",
                ],
                capture_output=True,
                text=True,
                timeout=5,
                env={"PGPASSWORD": endpoint.password, "PGCONNECT_TIMEOUT": "2"},
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return None
        answer = done.stdout.strip()
        return answer.split()[0] if done.returncode == 0 and answer else None


def _missing_extensions(bin_dir: Path) -> list[str]:
    """The CONTRIB extensions this installation cannot create (their control files are
    absent from its share directory, which `pg_config` knows)."""
    share: Path | None = None
    try:
        out = subprocess.run(
            [str(bin_dir / "pg_config"), "--sharedir"], capture_output=True, text=True, timeout=10
        )
        if out.returncode == 0 and out.stdout.strip():
            share = Path(out.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    if share is None:
        share = bin_dir.parent / "share" / "postgresql"
    return [name for name in CONTRIB if not (share / "extension" / f"{name}.control").is_file()]


def _bin_dirs() -> list[Path]:
    dirs = []
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin is not None:
        dirs.append(Path(spec.origin).parent / "pginstall" / "bin")
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        majors = [p for p in debian.iterdir() if p.name.isdigit()]
        dirs.extend(p / "bin" for p in sorted(majors, key=lambda p: -int(p.name)))
    return dirs
