"""`python -m app` as a real process with DATABASE_URL and REDIS_URL, spoken to over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_client import get, get_json, sample_value


@pytest.fixture
def service(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "PORT": str(port)}
    env.pop("HEAL7_CONFIG", None)
    # The release phase first: the server does not create its schema.
    subprocess.run([sys.executable, "-m", "app.migrate"], env=env, check=True, timeout=60)
    log_path = tmp_path / "app.log"
    log = log_path.open("wb")
    process = subprocess.Popen([sys.executable, "-m", "app"], env=env, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if get(base + "/ready", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None:
                pytest.fail(f"python -m app exited: {log_path.read_text()[-2000:]}")
            assert time.monotonic() < deadline, "python -m app was not ready within 15 s"
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def test_process_reads_port_and_urls_from_the_environment(service: str) -> None:
    assert get_json(service + "/ready") == (200, {"ready": True, "database": "ok", "redis": "ok"})


def test_calculations_are_stored_cached_and_counted(service: str, fresh_birth: str) -> None:
    stored_before = get_json(service + "/api/stats")[1]["stored_calculations"]
    url = f"{service}/api/saju?birth={fresh_birth}&tz=Asia/Seoul"
    first, second = get_json(url), get_json(url)
    assert (first[0], second[0]) == (200, 200)
    assert (first[1]["cached"], second[1]["cached"]) == (False, True)
    assert get_json(service + "/api/stats")[1]["stored_calculations"] == stored_before + 1
    stored = get_json(f"{service}/api/calculations/{first[1]['id']}")[1]
    assert stored["pillars"] == first[1]["pillars"]
    text = get(service + "/metrics")[1].decode()
    assert sample_value(text, 'saju_calculations_total{source="computed"}') == 1
    assert sample_value(text, 'saju_calculations_total{source="cache"}') == 1
