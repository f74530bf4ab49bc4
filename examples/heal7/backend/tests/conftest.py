"""Shared by both suites: `http_client.py` importable (the suites have no __init__), and
the integration tests' servers.

Integration tests run against a real PostgreSQL and Redis named by the environment. The
pipeline's `integration_tests` stage starts both (`services: [postgres:16, redis:7]`) and
passes DATABASE_URL and REDIS_URL; without them those tests are skipped, saying so.
"""

from __future__ import annotations

import os
import random
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def _required(name: str, example: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        pytest.skip(f"{name} is not set: integration tests need a real server ({name}={example})")
    return value


@pytest.fixture
def database_url() -> str:
    return _required("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def redis_url() -> str:
    return _required("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def fresh_birth() -> str:
    """A birth moment no earlier run asked about, so a shared Redis has no answer cached."""
    moment = datetime(1900, 1, 1) + timedelta(minutes=random.randrange(100 * 365 * 24 * 60))
    return moment.strftime("%Y-%m-%dT%H:%M")
