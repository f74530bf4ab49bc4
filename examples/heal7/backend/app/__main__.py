"""`python -m app --port N [--host H]`: serve the HEAL7 backend (PORT if --port is absent)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from app.config import Settings, load_knobs, service_version
from app.server import SERVICE_NAME, make_server
from app.service import Backend

log = logging.getLogger("app")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        settings = Settings.from_env()
        knobs = load_knobs()
    except (ValueError, OSError) as err:
        print(f"{SERVICE_NAME}: {err}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=settings.port, help="port (default $PORT)")
    args = parser.parse_args(argv)

    storage = cache = None
    if settings.database_url:
        from app.storage import Storage  # psycopg: only when a database is configured

        storage = Storage(settings.database_url)
    if settings.redis_url:
        from app.cache import Cache  # redis-py: only when Redis is configured

        cache = Cache(settings.redis_url)
    # The schema is the release phase's (`python -m app.migrate`), never the server's: until
    # it is in place (or while the database is down) /ready answers 503 saying so.
    backend = Backend(knobs, service_version(), storage=storage, cache=cache)
    server = make_server(backend, args.host, args.port, settings.allowed_origin)

    def stop(signum: int, _frame: FrameType | None) -> None:
        backend.accepting = False  # unready first, so a router stops sending
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    log.info(
        "%s %s on http://%s:%d (database %s, redis %s, error_rate=%g, extra_latency_ms=%g)",
        SERVICE_NAME,
        backend.version,
        args.host,
        args.port,
        "configured" if storage else "not configured",
        "configured" if cache else "not configured",
        knobs.error_rate,
        knobs.extra_latency_ms,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
