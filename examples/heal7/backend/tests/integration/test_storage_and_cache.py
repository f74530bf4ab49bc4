"""The calculation store (PostgreSQL) and cache (Redis), against the real servers."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from app.cache import Cache
from app.config import Knobs
from app.service import Backend, parse_birth
from app.storage import SCHEMA_VERSION, Storage


@pytest.fixture
def storage(database_url: str) -> Iterator[Storage]:
    store = Storage(database_url)
    store.migrate()  # the release phase's job, before any release serves
    yield store
    store.close()


@pytest.fixture
def cache(redis_url: str) -> Iterator[Cache]:
    client = Cache(redis_url)
    yield client
    client.close()


def test_migration_is_idempotent_and_safe_when_concurrent(database_url: str) -> None:
    # Several instances starting together (blue/green, canary) all migrate at once.
    errors: list[BaseException] = []

    def migrate() -> None:
        store = Storage(database_url)
        try:
            store.migrate()
            store.migrate()
        except BaseException as err:
            errors.append(err)
        finally:
            store.close()

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    checker = Storage(database_url)
    checker.ping()
    assert checker.schema_version() == SCHEMA_VERSION
    assert checker.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)  # nothing left to do
    checker.close()


def test_a_schema_older_than_the_release_needs_is_not_ready(database_url: str) -> None:
    # A database of its own on the same server: the release phase has not run there.
    admin = psycopg.connect(database_url, autocommit=True)
    name = f"heal7_fresh_{uuid.uuid4().hex[:8]}"
    admin.execute(f"CREATE DATABASE {name}")
    fresh = Storage(database_url.rsplit("/", 1)[0] + f"/{name}")
    try:
        assert fresh.schema_version() == 0
        backend = Backend(Knobs(), version="1.0.0", storage=fresh)
        ready, checks = backend.readiness()
        assert not ready
        assert "run `python -m app.migrate`" in checks["database"]
        assert fresh.migrate() == (0, SCHEMA_VERSION)
        assert backend.readiness()[0]
    finally:
        fresh.close()
        admin.execute(f"DROP DATABASE {name}")
        admin.close()


def test_stored_calculations_are_read_back_with_the_release_that_stored_them(
    storage: Storage, cache: Cache, fresh_birth: str
) -> None:
    backend = Backend(Knobs(), version="7.7.7", storage=storage, cache=cache)
    code, answer = backend.calculate(parse_birth(fresh_birth, None))
    assert code == 200
    stored = backend.stored(answer["id"])
    assert stored is not None
    assert (stored["pillars"], stored["stored_by"]) == (answer["pillars"], "7.7.7")
    assert backend.stored(10**15) is None
    stats = backend.stats()
    assert stats["by_version"]["7.7.7"] >= 1
    assert stats["storage"].startswith("postgresql ")
    assert stats["cache"].startswith("redis ")


def test_a_calculation_is_stored_once_then_served_from_the_cache(
    storage: Storage, cache: Cache, fresh_birth: str
) -> None:
    backend = Backend(Knobs(), version="1.0.0", storage=storage, cache=cache)
    before = storage.count()
    request = parse_birth(fresh_birth, "Asia/Seoul")

    first_code, first = backend.calculate(request)
    second_code, second = backend.calculate(request)

    assert (first_code, second_code) == (200, 200)
    assert (first["cached"], second["cached"]) == (False, True)
    assert first["pillars"] == second["pillars"]
    assert storage.count() == before + 1
    assert cache.get(request.sha256) is not None


def test_ready_when_both_answer(storage: Storage, cache: Cache) -> None:
    backend = Backend(Knobs(), version="1.0.0", storage=storage, cache=cache)
    assert backend.readiness() == (True, {"database": "ok", "redis": "ok"})


def test_not_ready_and_named_when_a_server_is_unreachable(storage: Storage) -> None:
    # A port nothing listens on: the kernel refuses at once.
    unreachable = Cache("redis://127.0.0.1:1/0", timeout_s=1)
    backend = Backend(Knobs(), version="1.0.0", storage=storage, cache=unreachable)
    ready, checks = backend.readiness()
    assert not ready
    assert checks["database"] == "ok"
    assert checks["redis"].startswith("unreachable: ")


def test_a_failing_cache_does_not_fail_the_calculation(storage: Storage, fresh_birth: str) -> None:
    backend = Backend(
        Knobs(), version="1.0.0", storage=storage, cache=Cache("redis://127.0.0.1:1/0", timeout_s=1)
    )
    code, body = backend.calculate(parse_birth(fresh_birth, None))
    assert code == 200
    assert body["cached"] is False
    errors = backend.metrics.registry.get_sample_value("saju_cache_errors_total")
    assert errors == 2  # the read and the write


def test_a_failing_store_is_a_503(cache: Cache, fresh_birth: str) -> None:
    dead = Storage("postgresql://postgres@127.0.0.1:1/postgres", connect_timeout_s=1)
    backend = Backend(Knobs(), version="1.0.0", storage=dead, cache=cache)
    assert backend.calculate(parse_birth(fresh_birth, None))[0] == 503


def test_concurrent_calculations_are_each_stored_once(storage: Storage, fresh_birth: str) -> None:
    # The threaded server answers requests in parallel: they share the connection pool.
    backend = Backend(Knobs(), version="1.0.0", storage=storage)
    before = storage.count()
    births = [
        fresh_birth[:-5] + f"{hour:02d}:{minute:02d}" for hour in (1, 2) for minute in range(8)
    ]
    codes: list[int] = []
    lock = threading.Lock()

    def calculate(birth: str) -> None:
        code, _ = backend.calculate(parse_birth(birth, None))
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=calculate, args=(birth,)) for birth in births]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert codes == [200] * len(births)
    assert storage.count() == before + len(births)
