"""The HTTP handler, its configuration and its Prometheus metrics."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

__all__ = ["Config", "HelloApp", "load_config", "make_server", "service_version"]

SERVICE_NAME = "hello-service"
DIST_NAME = "hello-service"

# Only known paths become label values: a scanner probing random URLs must not create a
# time series per URL.
KNOWN_PATHS = frozenset({"/", "/health", "/ready", "/metrics"})

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class Config:
    """Behaviour knobs, read from the packaged `config.json`.

    `error_rate` is the fraction (0..1) of `/` requests answered with 500, spread evenly
    (deterministic, so a test or a canary analysis sees exactly that fraction);
    `extra_latency_ms` is added to every `/` request.
    """

    greeting: str = "Hello from Slipway"
    error_rate: float = 0.0
    extra_latency_ms: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(
                f"config.json: error_rate must be between 0 and 1, not {self.error_rate}"
            )
        if self.extra_latency_ms < 0:
            raise ValueError(
                f"config.json: extra_latency_ms must not be negative, not {self.extra_latency_ms}"
            )


def load_config(path: Path | None = None) -> Config:
    """Read the knobs from `path`, or from HELLO_CONFIG, or from the file inside the package."""
    override = os.environ.get("HELLO_CONFIG")
    explicit = path or (Path(override) if override else None)
    if explicit is not None:
        text = explicit.read_text(encoding="utf-8")
    else:
        text = resources.files("hello_service").joinpath("config.json").read_text(encoding="utf-8")
    raw: dict[str, Any] = json.loads(text)
    return Config(
        greeting=str(raw.get("greeting", Config.greeting)),
        error_rate=float(raw.get("error_rate", 0.0)),
        extra_latency_ms=float(raw.get("extra_latency_ms", 0.0)),
    )


def service_version() -> str:
    """HELLO_VERSION if set, else the installed (or unpacked wheel's) package version."""
    override = os.environ.get("HELLO_VERSION")
    if override:
        return override
    try:
        return metadata.version(DIST_NAME)
    except metadata.PackageNotFoundError:
        # Running from a source checkout without an install (its own tests).
        return "0.0.0+source"


class HelloApp:
    """The service's state: config, metrics and the counter behind the error pattern."""

    def __init__(self, config: Config, version: str | None = None) -> None:
        self.config = config
        self.version = version or service_version()
        self.ready = True
        # A registry per app, so tests can build several apps in one process.
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hello_requests",
            "HTTP requests served, by status code and path.",
            ["code", "path"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "hello_request_duration_seconds",
            "Time to answer an HTTP request, by path.",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._lock = threading.Lock()
        self._served = 0

    def should_fail(self) -> bool:
        """True for `error_rate` of the calls, evenly spread: call k fails when
        floor(k * rate) steps up, so 0.5 fails every 2nd call and 0.1 every 10th."""
        rate = self.config.error_rate
        with self._lock:
            self._served += 1
            k = self._served
        return int(k * rate) > int((k - 1) * rate)

    def hello(self) -> tuple[int, dict[str, Any]]:
        if self.config.extra_latency_ms:
            time.sleep(self.config.extra_latency_ms / 1000.0)
        if self.should_fail():
            return 500, {"service": SERVICE_NAME, "version": self.version, "error": "injected"}
        return 200, {
            "service": SERVICE_NAME,
            "version": self.version,
            "greeting": self.config.greeting,
            # Set by Slipway's local platform; empty when run by hand.
            "digest": os.environ.get("SLIPWAY_DIGEST", ""),
            "slot": os.environ.get("SLIPWAY_SLOT", ""),
        }


def _handler_for(app: HelloApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"{SERVICE_NAME}/{app.version}"

        def do_GET(self) -> None:
            started = time.perf_counter()
            path = self.path.split("?", 1)[0]
            label = path if path in KNOWN_PATHS else "other"
            code, payload, content_type = self._answer(path)
            # Counted before the answer leaves: a client that asks /metrics right after a
            # response must find that response counted.
            app.requests.labels(code=str(code), path=label).inc()
            app.latency.labels(path=label).observe(time.perf_counter() - started)
            self._send(code, payload, content_type)

        def _answer(self, path: str) -> tuple[int, bytes, str]:
            if path == "/":
                code, body = app.hello()
                return code, json.dumps(body).encode(), "application/json"
            if path == "/health":
                return 200, json.dumps({"status": "ok"}).encode(), "application/json"
            if path == "/ready":
                ready = {"ready": app.ready, "version": app.version}
                return 200 if app.ready else 503, json.dumps(ready).encode(), "application/json"
            if path == "/metrics":
                return 200, generate_latest(app.registry), CONTENT_TYPE_LATEST
            error = {"error": f"no such path: {path}"}
            return 404, json.dumps(error).encode(), "application/json"

        def _send(self, code: int, payload: bytes, content_type: str) -> None:
            self.send_response(HTTPStatus(code))
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            # Access logs under load would fill the slot's log; metrics carry the counts.
            return

    return Handler


def make_server(app: HelloApp, host: str = "127.0.0.1", port: int = 8080) -> ThreadingHTTPServer:
    """A threading HTTP server for `app`, bound but not yet serving."""
    server = ThreadingHTTPServer((host, port), _handler_for(app))
    server.daemon_threads = True
    return server
