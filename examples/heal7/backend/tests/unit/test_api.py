"""The HTTP API in-process, without a database or Redis (both optional by configuration)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from app.config import Knobs, Settings, load_knobs, service_version
from app.server import make_server
from app.service import Backend, BadRequestError, parse_birth
from http_client import get, get_json, sample_value

Serve = Callable[..., tuple[str, Backend]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    servers = []

    def start(knobs: Knobs | None = None, allowed_origin: str = "") -> tuple[str, Backend]:
        backend = Backend(knobs or Knobs(), version="9.9.9")
        server = make_server(backend, "127.0.0.1", 0, allowed_origin)
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", backend

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_calculation_answers_the_four_pillars(serve: Serve) -> None:
    base, _ = serve()
    code, body = get_json(base + "/api/saju?birth=2000-01-01T12:00&tz=Asia/Seoul")
    assert code == 200
    assert body["pillars"]["day"]["hanja"] == "戊午"
    assert body["birth"] == "2000-01-01T12:00:00+09:00"
    assert set(body["pillars"]) == {"year", "month", "day", "hour"}
    assert body["cached"] is False
    assert body["version"] == "9.9.9"


def test_an_explicit_offset_wins_over_tz(serve: Serve) -> None:
    base, _ = serve()
    code, body = get_json(base + "/api/saju?birth=2000-01-01T12:00%2B00:00&tz=Asia/Seoul")
    assert code == 200
    assert body["tz"] == "+0000"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "birth is required"),
        ("birth=yesterday", "ISO date and time"),
        ("birth=1990-05-17T14:30&tz=Mars/Olympus", "IANA time zone"),
        ("birth=1850-05-17T14:30", "between 1900 and 2100"),
    ],
)
def test_bad_input_is_a_400_saying_what_to_fix(serve: Serve, query: str, message: str) -> None:
    base, _ = serve()
    code, body = get_json(base + "/api/saju?" + query)
    assert code == 400
    assert message in body["error"]


def test_health_ready_root_and_unknown_path(serve: Serve) -> None:
    base, backend = serve()
    assert get_json(base + "/health") == (200, {"status": "ok", "version": "9.9.9"})
    code, ready = get_json(base + "/ready")
    assert (code, ready) == (
        200,
        {"ready": True, "database": "not configured", "redis": "not configured"},
    )
    assert get_json(base + "/")[1]["service"] == "heal7-backend"
    assert get(base + "/nope")[0] == 404
    backend.accepting = False  # stopping: a router must stop sending
    assert get(base + "/ready")[0] == 503


def test_stats_without_a_database_say_none(serve: Serve) -> None:
    base, _ = serve()
    assert get_json(base + "/api/stats") == (
        200,
        {"stored_calculations": None, "by_version": {}, "storage": "none", "cache": "none"},
    )


@pytest.mark.parametrize(
    ("path", "code"),
    [("/api/calculations/1", 404), ("/api/calculations/one", 400), ("/api/calculations/", 400)],
)
def test_stored_calculations_without_a_database(serve: Serve, path: str, code: int) -> None:
    base, _ = serve()
    assert get(base + path)[0] == code


def test_calculation_counters_are_exported_at_zero_before_the_first(serve: Serve) -> None:
    # So that a canary's rate() over a process's first seconds is not read too low.
    base, _ = serve()
    lines = get(base + "/metrics")[1].decode().splitlines()
    assert 'saju_calculations_total{source="computed"} 0.0' in lines
    assert 'saju_calculations_total{source="cache"} 0.0' in lines


def test_metrics_count_calculations_and_requests(serve: Serve) -> None:
    base, _ = serve(Knobs(error_rate=0.5))
    for _ in range(4):
        get(base + "/api/saju?birth=1990-05-17T14:30")
    get(base + "/api/saju?birth=bad")
    get(base + "/whatever")
    text = get(base + "/metrics")[1].decode()
    assert sample_value(text, 'saju_calculations_total{source="computed"}') == 2
    assert sample_value(text, 'http_requests_total{code="200",method="GET",path="/api/saju"}') == 2
    assert sample_value(text, 'http_requests_total{code="500",method="GET",path="/api/saju"}') == 2
    assert sample_value(text, 'http_requests_total{code="400",method="GET",path="/api/saju"}') == 1
    assert sample_value(text, 'http_requests_total{code="404",method="GET",path="other"}') == 1
    count = 'http_request_duration_seconds_count{method="GET",path="/api/saju"}'
    assert sample_value(text, count) == 5
    assert 'http_request_duration_seconds_bucket{le="0.5",method="GET",path="/api/saju"}' in text
    assert sample_value(text, "saju_calculation_duration_seconds_count") == 2


def test_extra_latency_slows_only_calculations(serve: Serve) -> None:
    base, _ = serve(Knobs(extra_latency_ms=150))
    started = time.perf_counter()
    assert get(base + "/health")[0] == 200
    assert time.perf_counter() - started < 0.14
    started = time.perf_counter()
    assert get(base + "/api/saju?birth=1990-05-17T14:30")[0] == 200
    assert time.perf_counter() - started >= 0.14


def test_cors_header_only_for_the_configured_origin(serve: Serve) -> None:
    import urllib.request

    base, _ = serve(allowed_origin="https://heal7.example")
    with urllib.request.urlopen(base + "/health", timeout=5) as response:
        assert response.headers["Access-Control-Allow-Origin"] == "https://heal7.example"
    plain, _ = serve()
    with urllib.request.urlopen(plain + "/health", timeout=5) as response:
        assert response.headers["Access-Control-Allow-Origin"] is None


def test_packaged_knobs_are_valid_and_overridable(tmp_path: Path) -> None:
    # Only validity: a faulty release must reach the canary, not fail here.
    packaged = load_knobs(environ={})
    assert 0 <= packaged.error_rate <= 1
    custom = tmp_path / "knobs.json"
    custom.write_text('{"error_rate": 1, "extra_latency_ms": 800}')
    assert load_knobs(environ={"HEAL7_CONFIG": str(custom)}) == Knobs(1.0, 800.0)
    custom.write_text('{"error_rate": 2}')
    with pytest.raises(ValueError, match=r"knobs.json: .*error_rate must be between 0 and 1"):
        load_knobs(custom)
    with pytest.raises(ValueError, match="extra_latency_ms must not be negative"):
        Knobs(extra_latency_ms=-1)


def test_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {"PORT": "9001", "DATABASE_URL": "postgresql://u@h:5432/d", "REDIS_URL": "redis://h:1/0"}
    )
    assert (settings.port, settings.database_url, settings.redis_url) == (
        9001,
        "postgresql://u@h:5432/d",
        "redis://h:1/0",
    )
    assert Settings.from_env({}).port == 8000
    with pytest.raises(ValueError, match="PORT must be a port number"):
        Settings.from_env({"PORT": "http"})
    with pytest.raises(ValueError, match="DATABASE_URL must be a postgresql:// URL"):
        Settings.from_env({"DATABASE_URL": "mysql://h/d"})
    with pytest.raises(ValueError, match="REDIS_URL must be"):
        Settings.from_env({"REDIS_URL": "memcached://h"})


def test_version_comes_from_the_environment_or_the_package() -> None:
    assert service_version({"HEAL7_VERSION": "7.0.0"}) == "7.0.0"
    assert service_version({})  # installed: its metadata; a bare checkout: 0.0.0+source


def test_birth_requests_of_one_moment_share_a_key() -> None:
    a = parse_birth("1990-05-17T14:30", "Asia/Seoul")
    b = parse_birth("1990-05-17T14:30:00", None)
    assert a.sha256 == b.sha256
    assert parse_birth("1990-05-17T14:31", None).sha256 != a.sha256
    with pytest.raises(BadRequestError):
        parse_birth(None, None)
