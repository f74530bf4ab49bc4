"""What the backend reads at start: its environment and its packaged behaviour knobs.

Environment (twelve-factor): `PORT` (overridden by `--port`), `DATABASE_URL`
(`postgresql://user@host:port/db`), `REDIS_URL` (`redis://host:port/0`), `ALLOWED_ORIGIN`
(the frontend's origin, for CORS), `HEAL7_CONFIG` (another knobs file) and `HEAL7_VERSION`
(the version it reports). Without `DATABASE_URL` it stores nothing; without `REDIS_URL` it
caches nothing; `/ready` says which are configured.

The knobs in `app/config.json` ship inside the wheel, so a commit that edits them is a new
release: `error_rate` (0..1, the evenly spread fraction of calculations answered 500) and
`extra_latency_ms` (added to every calculation) are how the demo makes a faulty 0.2.0 that
passes its tests and smoke checks and that the canary must catch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

__all__ = ["DIST_NAME", "Knobs", "Settings", "load_knobs", "service_version"]

DIST_NAME = "heal7-backend"
DEFAULT_PORT = 8000


@dataclass(frozen=True)
class Knobs:
    error_rate: float = 0.0
    extra_latency_ms: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(
                f"config.json: error_rate must be between 0 and 1, not {self.error_rate}"
            )
        if self.extra_latency_ms < 0:
            raise ValueError(
                f"config.json: extra_latency_ms must not be negative, not {self.extra_latency_ms}"
            )


def load_knobs(path: Path | None = None, environ: Mapping[str, str] = os.environ) -> Knobs:
    """The knobs from `path`, else from HEAL7_CONFIG, else from the file in the package."""
    override = environ.get("HEAL7_CONFIG")
    chosen = path or (Path(override) if override else None)
    if chosen is not None:
        text = chosen.read_text(encoding="utf-8")
        where = str(chosen)
    else:
        text = resources.files("app").joinpath("config.json").read_text(encoding="utf-8")
        where = "app/config.json"
    try:
        raw: dict[str, Any] = json.loads(text)
        return Knobs(
            error_rate=float(raw.get("error_rate", 0.0)),
            extra_latency_ms=float(raw.get("extra_latency_ms", 0.0)),
        )
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where}: {err}") from err


def service_version(environ: Mapping[str, str] = os.environ) -> str:
    """HEAL7_VERSION if set, else the installed (or unpacked wheel's) version."""
    override = environ.get("HEAL7_VERSION")
    if override:
        return override
    try:
        return metadata.version(DIST_NAME)
    except metadata.PackageNotFoundError:
        return "0.0.0+source"  # a source checkout that was never installed


@dataclass(frozen=True)
class Settings:
    port: int = DEFAULT_PORT
    database_url: str = ""
    redis_url: str = ""
    allowed_origin: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        raw_port = environ.get("PORT", "") or str(DEFAULT_PORT)
        try:
            port = int(raw_port)
        except ValueError:
            raise ValueError(f"PORT must be a port number, not {raw_port!r}") from None
        database_url = environ.get("DATABASE_URL", "")
        if database_url and not database_url.startswith(("postgresql://", "postgres://")):
            raise ValueError("DATABASE_URL must be a postgresql:// URL")
        redis_url = environ.get("REDIS_URL", "")
        if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("REDIS_URL must be a redis://, rediss:// or unix:// URL")
        return cls(
            port=port,
            database_url=database_url,
            redis_url=redis_url,
            allowed_origin=environ.get("ALLOWED_ORIGIN", ""),
        )
