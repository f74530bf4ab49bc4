"""Integration: the service as a real process, spoken to over HTTP (`pytest -k http`)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVICE_DIR = Path(__file__).resolve().parents[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


@pytest.fixture
def process_url(tmp_path: Path) -> Iterator[str]:
    """Start `python -m hello_service` with a config file of its own; yield its base URL."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"greeting": "hi", "error_rate": 0.5, "extra_latency_ms": 0}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "PYTHONPATH": str(SERVICE_DIR),
        "HELLO_VERSION": "7.0.0",
        "HELLO_CONFIG": str(config),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "hello_service", "--port", str(port)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if _get(base + "/ready")[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, "hello_service exited before it was ready"
            assert time.monotonic() < deadline, "hello_service not ready within 10 s"
            time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0, "SIGTERM should stop the service cleanly"


def test_http_process_serves_version_health_and_errors(process_url: str) -> None:
    assert _get(process_url + "/health")[0] == 200
    answers = [_get(process_url + "/") for _ in range(4)]
    assert [code for code, _ in answers].count(500) == 2
    ok = next(json.loads(body) for code, body in answers if code == 200)
    assert ok["version"] == "7.0.0"
    assert ok["greeting"] == "hi"


def test_http_metrics_count_what_was_served(process_url: str) -> None:
    for _ in range(4):
        _get(process_url + "/")
    expected = [
        'hello_requests_total{code="500",path="/"} 2.0',
        'hello_requests_total{code="200",path="/"} 2.0',
    ]
    # A request is counted once its response is written, so the last one may land a moment
    # after the client has read it: scrape again for a bounded while.
    deadline = time.monotonic() + 5
    while True:
        code, body = _get(process_url + "/metrics")
        assert code == 200
        text = body.decode()
        if all(line in text for line in expected) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for line in expected:
        assert line in text
