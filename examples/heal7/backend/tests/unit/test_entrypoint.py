"""`python -m app` as a process: configuration from the environment, readiness, shutdown.

No servers needed: unset URLs mean "not configured", and a URL to a port nothing listens on
is a database or Redis that is down.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from http_client import get, get_json

CLOSED_PORT = 1  # nothing listens there: connections are refused at once

Start = Callable[[dict[str, str]], tuple[str, subprocess.Popen[bytes]]]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _environment(extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "PORT", "HEAL7_CONFIG")
    }
    return {**env, **extra}


@pytest.fixture
def start() -> Iterator[Start]:
    processes: list[subprocess.Popen[bytes]] = []

    def run(extra: dict[str, str]) -> tuple[str, subprocess.Popen[bytes]]:
        port = _free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "--port", str(port)],
            env=_environment(extra),
            stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                if get(base + "/health", timeout=1)[0] == 200:
                    return base, process
            except OSError:
                pass
            assert process.poll() is None, "python -m app exited at start"
            assert time.monotonic() < deadline, "python -m app did not answer within 15 s"
            time.sleep(0.05)

    yield run
    for process in processes:
        process.terminate()  # SIGTERM: the clean stop a platform uses
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_without_urls_it_serves_and_is_ready(start: Start) -> None:
    base, _ = start({"HEAL7_VERSION": "3.1.4"})
    assert get_json(base + "/ready") == (
        200,
        {"ready": True, "database": "not configured", "redis": "not configured"},
    )
    code, body = get_json(base + "/api/saju?birth=1990-05-17T14:30")
    assert (code, body["version"]) == (200, "3.1.4")


def test_unreachable_servers_make_it_unready_naming_them(start: Start) -> None:
    base, _ = start(
        {
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{CLOSED_PORT}/heal7",
            "REDIS_URL": f"redis://127.0.0.1:{CLOSED_PORT}/0",
        }
    )
    code, body = get_json(base + "/ready")
    assert code == 503
    assert body["database"].startswith("unreachable: ")
    assert body["redis"].startswith("unreachable: ")
    # Storing is part of a calculation: without the database it is a 503, not a silent loss.
    assert get(base + "/api/saju?birth=1990-05-17T14:30")[0] == 503
    assert get(base + "/api/stats")[0] == 503


def test_sigterm_stops_it_cleanly(start: Start) -> None:
    _, process = start({})
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "eighty"}, "PORT must be a port number"),
        ({"DATABASE_URL": "mysql://db/heal7"}, "DATABASE_URL must be a postgresql:// URL"),
        ({"HEAL7_CONFIG": "/nonexistent/config.json"}, "/nonexistent/config.json"),
    ],
)
def test_bad_configuration_exits_2_saying_what_is_wrong(env: dict[str, str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app"],
        env=_environment(env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_migrate_without_a_database_url_exits_2_saying_so() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.migrate"],
        env=_environment({}),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "DATABASE_URL is not set" in result.stderr


def test_migrate_against_a_database_that_is_down_exits_1_saying_so() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.migrate"],
        env=_environment({"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{CLOSED_PORT}/h"}),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "the database did not answer" in result.stderr
