"""PostgreSQL: the record of every calculation, and the schema it needs.

The schema belongs to the release phase: `python -m app.migrate` (the pipeline's `release:`
command, run once per environment and release before the release takes traffic) applies
each step of `MIGRATIONS` the database has not seen yet, inside a transaction holding an
advisory lock, so two migrations at once (a retried deploy, two environments on one server)
do not race on `CREATE TABLE IF NOT EXISTS`, which is not safe against a concurrent creator
on its own. The serving process never changes the schema: `/ready` says 503 until the
schema is at the version the release needs, naming the command to run.

Steps only expand (new tables, columns, indexes): the release a rollback puts back still
runs on the schema a newer release left. A later step may drop what no release in service
uses any more (expand/contract).

The birth moment is personal data (the HEAL7 design masks dates of birth in logs), so rows
keep a SHA-256 of the request, not the date itself.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SchemaNotReadyError", "Storage"]

_MIGRATION_LOCK = 0x4845414C37  # "HEAL7": the advisory lock id of the schema migration
# Version -> its statements, one per execute (with parameters, PostgreSQL's extended protocol
# takes only one). Append a step for a change; never edit one that has shipped.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE IF NOT EXISTS saju_calculations (
            id              bigserial PRIMARY KEY,
            request_sha256  text        NOT NULL,
            pillars         jsonb       NOT NULL,
            service_version text        NOT NULL,
            created_at      timestamptz NOT NULL DEFAULT now()
        )""",
        "CREATE INDEX IF NOT EXISTS saju_calculations_created_at ON saju_calculations (created_at)",
    ),
}
SCHEMA_VERSION = max(MIGRATIONS)
"""The schema version this release needs (and `python -m app.migrate` brings)."""
_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY)"


class SchemaNotReadyError(RuntimeError):
    """The database answers but its schema is older than this release needs."""


class Storage:
    """A few reusable connections to one database (the server is threaded: one per request
    in flight, returned after use, dropped when they fail)."""

    def __init__(self, url: str, max_idle: int = 8, connect_timeout_s: int = 3) -> None:
        self._url = url
        self._connect_timeout_s = connect_timeout_s
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue(maxsize=max_idle)

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = psycopg.connect(
                self._url, autocommit=True, connect_timeout=self._connect_timeout_s
            )
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        try:
            self._idle.put_nowait(conn)
        except queue.Full:
            conn.close()

    def migrate(self) -> tuple[int, int]:
        """Apply the steps the database lacks; (version before, version after). Idempotent
        and safe to run concurrently."""
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(_VERSION_TABLE)
            row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
            before = int(row[0])
            for version in sorted(v for v in MIGRATIONS if v > before):
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        return before, max(before, SCHEMA_VERSION)

    def schema_version(self) -> int:
        """The database's schema version (0: none yet)."""
        with self._connection() as conn:
            row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
            if not row[0]:
                return 0
            row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        return int(row[0])

    def ping(self) -> None:
        """Raise unless the database answers and its schema is the one this release needs."""
        found = self.schema_version()
        if found < SCHEMA_VERSION:
            raise SchemaNotReadyError(
                f"schema version {found}, this release needs {SCHEMA_VERSION}: "
                "run `python -m app.migrate` (the release phase)"
            )

    def record(self, request_sha256: str, pillars: dict[str, Any], version: str) -> int:
        """Store one calculation; return its id."""
        with self._connection() as conn:
            row = conn.execute(
                "INSERT INTO saju_calculations (request_sha256, pillars, service_version)"
                " VALUES (%s, %s::jsonb, %s) RETURNING id",
                (request_sha256, json.dumps(pillars, ensure_ascii=False), version),
            ).fetchone()
        return int(row[0])

    def count(self) -> int:
        """How many calculations are stored."""
        return sum(self.count_by_version().values())

    def count_by_version(self) -> dict[str, int]:
        """How many calculations each release stored."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT service_version, count(*) FROM saju_calculations"
                " GROUP BY service_version ORDER BY service_version"
            ).fetchall()
        return {str(version): int(n) for version, n in rows}

    def fetch(self, calculation_id: int) -> dict[str, Any] | None:
        """One stored calculation by id: its pillars, the release that stored it and when."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT id, pillars, service_version, created_at FROM saju_calculations"
                " WHERE id = %s",
                (calculation_id,),
            ).fetchone()
        if row is None:
            return None
        return {
            "id": int(row[0]),
            "pillars": row[1],
            "stored_by": str(row[2]),
            "stored_at": row[3].isoformat(),
        }

    def server_version(self) -> str:
        """The server's version, as `postgresql 15.10`."""
        with self._connection() as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return f"postgresql {str(row[0]).split()[0]}"

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
