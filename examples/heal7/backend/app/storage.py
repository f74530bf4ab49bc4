"""PostgreSQL: the record of every calculation, and the schema it needs.

The table is created at start (and again on a readiness probe until that succeeds), inside
a transaction holding an advisory lock: two releases starting together (blue/green, a
canary beside the stable one) must not race on `CREATE TABLE IF NOT EXISTS`, which is not
safe against a concurrent creator on its own.

The birth moment is personal data (the HEAL7 design masks dates of birth in logs), so rows
keep a SHA-256 of the request, not the date itself.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

__all__ = ["SCHEMA_VERSION", "Storage"]

SCHEMA_VERSION = 1
_MIGRATION_LOCK = 0x4845414C37  # "HEAL7": the advisory lock id of the schema migration
# One statement per execute: with parameters, PostgreSQL's extended protocol takes only one.
_MIGRATION = (
    """CREATE TABLE IF NOT EXISTS saju_calculations (
        id              bigserial PRIMARY KEY,
        request_sha256  text        NOT NULL,
        pillars         jsonb       NOT NULL,
        service_version text        NOT NULL,
        created_at      timestamptz NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX IF NOT EXISTS saju_calculations_created_at ON saju_calculations (created_at)",
    "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY)",
)


class Storage:
    """A few reusable connections to one database (the server is threaded: one per request
    in flight, returned after use, dropped when they fail)."""

    def __init__(self, url: str, max_idle: int = 8, connect_timeout_s: int = 3) -> None:
        self._url = url
        self._connect_timeout_s = connect_timeout_s
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue(maxsize=max_idle)
        self._migrated = False
        self._migrate_lock = threading.Lock()

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

    def migrate(self) -> None:
        """Create the schema if it is missing; idempotent and safe to run concurrently."""
        with self._migrate_lock:
            if self._migrated:
                return
            with self._connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                for statement in _MIGRATION:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version) VALUES (%s) ON CONFLICT DO NOTHING",
                    (SCHEMA_VERSION,),
                )
            self._migrated = True

    def ping(self) -> None:
        """Raise unless the database answers and the schema is in place."""
        self.migrate()
        with self._connection() as conn:
            conn.execute("SELECT 1 FROM saju_calculations LIMIT 1")

    def record(self, request_sha256: str, pillars: dict[str, Any], version: str) -> int:
        """Store one calculation; return its id."""
        self.migrate()
        with self._connection() as conn:
            row = conn.execute(
                "INSERT INTO saju_calculations (request_sha256, pillars, service_version)"
                " VALUES (%s, %s::jsonb, %s) RETURNING id",
                (request_sha256, json.dumps(pillars, ensure_ascii=False), version),
            ).fetchone()
        return int(row[0])

    def count(self) -> int:
        """How many calculations are stored."""
        self.migrate()
        with self._connection() as conn:
            row = conn.execute("SELECT count(*) FROM saju_calculations").fetchone()
        return int(row[0])

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
