"""Resources that outlive releases (LocalResources) against real servers: one per (service,
environment, kind), created on first use, kept by a restarted worker and after their server was
killed (their data survives), removed only by delete."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psycopg
import pytest
import redis

from activities.providers.backing_services.resources import LocalResources
from plumbing.proctools import process_start_ticks
from tests.support.binaries import require_module


@pytest.fixture(autouse=True)
def servers_installed() -> None:
    require_module("pgserver", "pip install pgserver (PostgreSQL 16 binaries)")


def noted(_: str) -> None:
    """Progress goes nowhere here."""


def test_data_survives_a_worker_restart_and_a_killed_server_until_deleted(
    tmp_path: Path,
) -> None:
    first = LocalResources(tmp_path / "resources")
    pg, note = first.ensure("postgres:16", "clinic", "dev", noted)
    rd, _ = first.ensure("redis:7", "clinic", "dev", noted)
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute('CREATE EXTENSION IF NOT EXISTS "uuid-ossp"')
        conn.execute("CREATE TABLE calc (id uuid DEFAULT uuid_generate_v4(), v int)")
        conn.execute("INSERT INTO calc (v) VALUES (7)")
    redis.Redis.from_url(rd.url).set("k", "v")
    assert note.startswith("postgres ")
    # Another environment, and another service in the same environment, get their own.
    staging, _ = first.ensure("postgres:16", "clinic", "staging", noted)
    assert staging.port != pg.port
    other, _ = first.ensure("postgres:16", "billing", "dev", noted)
    assert other.port not in (pg.port, staging.port)
    with psycopg.connect(other.url) as conn:
        assert conn.execute("SELECT to_regclass('calc')").fetchone() == (None,)

    # A restarted worker (a new manager) finds the same servers running, untouched.
    again = LocalResources(tmp_path / "resources")
    assert again.ensure("postgres:16", "clinic", "dev", noted)[0] == pg
    assert again.endpoints(["redis"], "clinic", "dev", noted)["redis"] == rd

    # Its servers die (a reboot): the next use starts them again on their data.
    for record in again.records():
        if (record["service"], record["environment"]) == ("clinic", "dev"):
            pid = _pid_on(int(str(record["port"])))
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    assert not any(
        r["running"]
        for r in again.records()
        if (r["service"], r["environment"]) == ("clinic", "dev")
    )
    pg2 = again.endpoints(["postgres"], "clinic", "dev", noted)["postgres"]
    rd2 = again.endpoints(["redis"], "clinic", "dev", noted)["redis"]
    with psycopg.connect(pg2.url) as conn:
        assert conn.execute("SELECT v FROM calc").fetchall() == [(7,)]
    assert redis.Redis.from_url(rd2.url).get("k") == b"v"

    # Only an explicit delete removes one (and only that one).
    assert again.delete("clinic", "dev", "postgres")
    assert not again.delete("clinic", "dev", "postgres")
    kept = {(str(r["service"]), str(r["environment"]), str(r["kind"])) for r in again.records()}
    assert kept == {
        ("clinic", "dev", "redis"),
        ("clinic", "staging", "postgres"),
        ("billing", "dev", "postgres"),
    }
    fresh = again.ensure("postgres:16", "clinic", "dev", noted)[0]
    with psycopg.connect(fresh.url) as conn:
        assert conn.execute("SELECT to_regclass('calc')").fetchone() == (None,)
    for service, environment, kind in [*kept, ("clinic", "dev", "postgres")]:
        assert again.delete(service, environment, kind)
    assert again.records() == []


def _pid_on(port: int) -> int:
    """The pid of the server listening on `port`: the postmaster / redis-server."""
    hex_port = f"{port:04X}"
    inodes = {
        line.split()[9]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if line.split()[1].endswith(f":{hex_port}") and line.split()[3] == "0A"
    }
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd).removeprefix("socket:[").rstrip("]") in inodes:
                    assert process_start_ticks(int(proc.name)) is not None
                    return int(proc.name)
            except OSError:
                continue
    raise AssertionError(f"nothing listens on {port}")


def test_a_release_env_gets_the_environments_resources_through_placeholders(
    tmp_path: Path,
) -> None:
    """What the local platform hands a release's process: its `env:` rendered with the
    environment's resources, which are made on first use and the same for every release."""
    from activities.platforms.local.slots import SlotManager

    slots = SlotManager(tmp_path / "platform")
    templates = {"REDIS_URL": "{services.redis.url}", "MODE": "plain"}
    first = slots.release_env("clinic", "dev", templates, noted)
    second = SlotManager(tmp_path / "platform").release_env("clinic", "dev", templates, noted)
    assert first == second
    assert first["MODE"] == "plain"
    assert first["REDIS_URL"].startswith("redis://default:")
    assert redis.Redis.from_url(first["REDIS_URL"]).ping()
    assert slots.resources.delete("clinic", "dev", "redis")


def test_the_cli_lists_and_deletes_a_resource(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from starters.cli import app

    state = tmp_path / "state"
    LocalResources(state / "platform" / "resources").ensure("redis:7", "clinic", "qa", noted)
    env = {"SLIPWAY_STATE_DIR": str(state)}
    listed = CliRunner().invoke(app, ["resources", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert listed.output.split()[:3] == ["clinic", "qa", "redis"]
    assert "running" in listed.output
    deleted = CliRunner().invoke(app, ["resources", "delete", "clinic", "qa", "redis"], env=env)
    assert deleted.exit_code == 0, deleted.output
    assert "deleted the redis resource of clinic in qa" in deleted.output
    again = CliRunner().invoke(app, ["resources", "delete", "clinic", "qa", "redis"], env=env)
    assert again.exit_code == 1
