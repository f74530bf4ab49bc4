"""A backing server's installation on the worker, as the kinds find it and processes start it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Installation"]


@dataclass(frozen=True)
class Installation:
    """Server binaries found on the worker: their version, where they are, and what they
    lack of what the official image has ("" when nothing: e.g. pgserver's PostgreSQL has no
    contrib extensions)."""

    kind: str
    version: str
    location: Path = Path()
    origin: str = ""
    lacking: str = ""
