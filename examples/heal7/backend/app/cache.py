"""Redis: finished calculations by request, so a repeated question costs one GET.

The cache is an optimisation: when Redis fails, the backend calculates instead (and counts
the failure in `saju_cache_errors_total`); only `/ready` reports Redis as unreachable.
"""

from __future__ import annotations

import json
from typing import Any

import redis

__all__ = ["CACHE_TTL_S", "Cache"]

CACHE_TTL_S = 24 * 3600
_PREFIX = "heal7:saju:v1:"  # bump when the shape of a cached answer changes


class Cache:
    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        self._client: Any = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )

    def get(self, key: str) -> dict[str, Any] | None:
        raw = self._client.get(_PREFIX + key)
        if raw is None:
            return None
        value: dict[str, Any] = json.loads(raw)
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        self._client.set(_PREFIX + key, json.dumps(value, ensure_ascii=False), ex=CACHE_TTL_S)

    def ping(self) -> None:
        """Raise unless Redis answers."""
        self._client.ping()

    def server_version(self) -> str:
        """The server's version, as `redis 7.0.15`."""
        info: dict[str, Any] = self._client.info("server")
        return f"redis {info.get('redis_version', '?')}"

    def close(self) -> None:
        self._client.close()
