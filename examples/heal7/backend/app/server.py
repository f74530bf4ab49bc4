"""The HTTP API on the standard library's threading server.

- `GET /`: service, version and endpoints
- `GET /health`: the process is alive (liveness)
- `GET /ready`: database and Redis answer (readiness); a 503 names what does not
- `GET /metrics`: Prometheus text format
- `GET /api/saju?birth=1990-05-17T14:30&tz=Asia/Seoul`: the four pillars
- `GET /api/stats`: how many calculations each release stored, and which PostgreSQL and
  Redis serve them (`none` where unset)
- `GET /api/calculations/<id>`: a stored calculation (the `id` a calculation answered with)
"""

from __future__ import annotations

import json
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.exposition import generate_latest

from app.service import Backend, BadRequestError, parse_birth

__all__ = ["SERVICE_NAME", "make_server"]

SERVICE_NAME = "heal7-backend"
_STORED = "/api/calculations/"


def _handler_for(backend: Backend, allowed_origin: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"{SERVICE_NAME}/{backend.version}"
        protocol_version = "HTTP/1.1"  # keep-alive: load generators reuse connections

        def do_GET(self) -> None:
            self._started = time.perf_counter()
            url = urlsplit(self.path)
            self._path = url.path
            self._route(url.path, parse_qs(url.query))

        def _route(self, path: str, query: dict[str, list[str]]) -> int:
            if path == "/":
                return self._json(
                    200,
                    {
                        "service": SERVICE_NAME,
                        "version": backend.version,
                        "endpoints": [
                            "/api/saju?birth=YYYY-MM-DDTHH:MM&tz=Area/City",
                            "/api/stats",
                            "/api/calculations/<id>",
                        ],
                    },
                )
            if path == "/health":
                return self._json(200, {"status": "ok", "version": backend.version})
            if path == "/ready":
                ready, checks = backend.readiness()
                return self._json(200 if ready else 503, {"ready": ready, **checks})
            if path == "/metrics":
                return self._send(
                    200, generate_latest(backend.metrics.registry), CONTENT_TYPE_LATEST
                )
            if path == "/api/saju":
                return self._saju(query)
            if path == "/api/stats":
                return self._stats()
            if path.startswith(_STORED):
                return self._stored(path.removeprefix(_STORED))
            return self._json(404, {"error": f"no such path: {path}"})

        def _saju(self, query: dict[str, list[str]]) -> int:
            try:
                request = parse_birth(_first(query, "birth"), _first(query, "tz"))
            except BadRequestError as err:
                return self._json(400, {"error": str(err)})
            return self._json(*backend.calculate(request))

        def _stats(self) -> int:
            try:
                return self._json(200, backend.stats())
            except Exception:
                return self._json(503, {"error": "the calculation store is unavailable"})

        def _stored(self, raw_id: str) -> int:
            if not raw_id.isdigit() or len(raw_id) > 18:
                return self._json(400, {"error": "a calculation id is a positive number"})
            if backend.storage is None:
                return self._json(404, {"error": "this service stores nothing (no DATABASE_URL)"})
            try:
                found = backend.stored(int(raw_id))
            except Exception:
                return self._json(503, {"error": "the calculation store is unavailable"})
            if found is None:
                return self._json(404, {"error": f"no calculation {raw_id}"})
            return self._json(200, found)

        def _json(self, code: int, body: dict[str, Any]) -> int:
            payload = json.dumps(body, ensure_ascii=False).encode()
            return self._send(code, payload, "application/json; charset=utf-8")

        def _send(self, code: int, payload: bytes, content_type: str) -> int:
            # Counted before the answer leaves: a client that has its answer (a test, a
            # scrape right after) finds it counted.
            elapsed = time.perf_counter() - self._started
            backend.metrics.observe_request("GET", self._path, code, elapsed)
            self.send_response(HTTPStatus(code))
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            if allowed_origin:
                self.send_header("Access-Control-Allow-Origin", allowed_origin)
                self.send_header("Vary", "Origin")
            self.end_headers()
            self.wfile.write(payload)
            return code

        def log_message(self, format: str, *args: Any) -> None:
            # No access log: request lines carry dates of birth, which must not reach logs;
            # the metrics carry the counts.
            return

    return Handler


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def make_server(
    backend: Backend, host: str = "127.0.0.1", port: int = 8000, allowed_origin: str = ""
) -> ThreadingHTTPServer:
    """A threading HTTP server for `backend`, bound but not yet serving."""
    server = ThreadingHTTPServer((host, port), _handler_for(backend, allowed_origin))
    server.daemon_threads = True
    return server
