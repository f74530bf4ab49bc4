"""`python -m app.migrate`: bring the database named by DATABASE_URL to the schema this
release needs (the release phase: `release: [python, -m, app.migrate]` in the pipeline).

Idempotent and safe when two run at once; it only adds (see `app/storage.py`). Exits 0 with
one line saying what it did, 2 without DATABASE_URL (a release command with nothing to act
on is a configuration error), 1 when the database cannot be reached.
"""

from __future__ import annotations

import sys

from app.config import Settings


def main(argv: list[str] | None = None) -> int:
    del argv  # no options: the database comes from the environment, as the service's does
    try:
        settings = Settings.from_env()
    except ValueError as err:
        print(f"app.migrate: {err}", file=sys.stderr)
        return 2
    if not settings.database_url:
        print("app.migrate: DATABASE_URL is not set: no database to migrate", file=sys.stderr)
        return 2
    from app.storage import Storage  # psycopg: only when a database is configured

    storage = Storage(settings.database_url)
    try:
        before, after = storage.migrate()
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        print(f"app.migrate: the database did not answer: {first}", file=sys.stderr)
        return 1
    finally:
        storage.close()
    if before == after:
        print(f"app.migrate: schema at version {after} already; nothing to do")
    else:
        print(f"app.migrate: schema from version {before} to {after}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
