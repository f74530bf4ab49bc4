"""hello-service's own tests: the pipeline's test stage runs them with --junitxml."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hello_service import Config, HelloApp, load_config, make_server, service_version


class Running:
    def __init__(self, app: HelloApp) -> None:
        self.app = app
        self.server = make_server(app, "127.0.0.1", 0)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as error:
            return int(error.code), bytes(error.read())

    def get_json(self, path: str) -> tuple[int, dict[str, Any]]:
        code, body = self.get(path)
        parsed: dict[str, Any] = json.loads(body)
        return code, parsed


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[Running] = []

    def start(config: Config | None = None, version: str = "1.2.3") -> Running:
        running = Running(HelloApp(config or Config(), version=version))
        running.thread.start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.server.shutdown()
        running.server.server_close()


def test_root_answers_version_and_greeting(serve: Any) -> None:
    running = serve(Config(greeting="hi there"), version="9.9.9")
    code, body = running.get_json("/")
    assert code == 200
    assert body["version"] == "9.9.9"
    assert body["greeting"] == "hi there"
    assert body["service"] == "hello-service"


def test_health_and_ready(serve: Any) -> None:
    running = serve()
    assert running.get("/health")[0] == 200
    assert running.get("/ready")[0] == 200
    running.app.ready = False
    assert running.get("/ready")[0] == 503


def test_unknown_path_is_404(serve: Any) -> None:
    assert serve().get("/nope")[0] == 404


def test_error_rate_fails_that_fraction_of_requests(serve: Any) -> None:
    running = serve(Config(error_rate=0.5))
    codes = [running.get("/")[0] for _ in range(20)]
    assert codes.count(500) == 10
    assert codes.count(200) == 10


def test_error_rate_zero_never_fails(serve: Any) -> None:
    running = serve(Config(error_rate=0.0))
    assert {running.get("/")[0] for _ in range(20)} == {200}


def test_extra_latency_slows_root(serve: Any) -> None:
    running = serve(Config(extra_latency_ms=150))
    started = time.perf_counter()
    assert running.get("/")[0] == 200
    assert time.perf_counter() - started >= 0.14


def test_metrics_count_requests_by_code_and_path(serve: Any) -> None:
    running = serve(Config(error_rate=1.0))
    running.get("/")
    running.get("/health")
    running.get("/whatever")
    code, body = running.get("/metrics")
    text = body.decode()
    assert code == 200
    assert 'hello_requests_total{code="500",path="/"} 1.0' in text
    assert 'hello_requests_total{code="200",path="/health"} 1.0' in text
    assert 'hello_requests_total{code="404",path="other"} 1.0' in text
    assert "hello_request_duration_seconds_bucket" in text


def test_config_rejects_out_of_range_values() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        Config(error_rate=1.5)
    with pytest.raises(ValueError, match="extra_latency_ms"):
        Config(extra_latency_ms=-1)


def test_packaged_config_is_valid() -> None:
    # Only validity: a release with a high error_rate must reach the canary, not fail here.
    config = load_config()
    assert 0.0 <= config.error_rate <= 1.0


def test_config_file_override(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"error_rate": 0.25, "extra_latency_ms": 5}))
    config = load_config(path)
    assert config.error_rate == 0.25
    assert config.extra_latency_ms == 5


def test_version_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELLO_VERSION", "2.0.0-test")
    assert service_version() == "2.0.0-test"
