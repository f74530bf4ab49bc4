"""The calculation as a service: input checks, cache, computation, storage, faults."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.config import Knobs
from app.metrics import Metrics
from app.saju import four_pillars

if TYPE_CHECKING:
    # Imported where a URL asks for them (app.__main__), so the calculator and its unit
    # tests run without the database and Redis drivers.
    from app.cache import Cache
    from app.storage import Storage

__all__ = ["DEFAULT_TZ", "Backend", "BadRequestError", "BirthRequest", "parse_birth"]

DEFAULT_TZ = "Asia/Seoul"
# The solar-longitude formula is good for these centuries; outside them answers would drift.
EARLIEST_YEAR, LATEST_YEAR = 1900, 2100

log = logging.getLogger("app")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


class BadRequestError(ValueError):
    """Input the caller must fix; the message is the whole answer."""


@dataclass(frozen=True)
class BirthRequest:
    birth: datetime  # aware, in the birth's own zone
    tz: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(f"{self.birth.isoformat()}|{self.tz}".encode()).hexdigest()


def parse_birth(birth: str | None, tz: str | None) -> BirthRequest:
    """`birth` is a local ISO date-time (`1990-05-17T14:30`; an explicit offset wins over
    `tz`), `tz` an IANA zone name (default Asia/Seoul)."""
    if not birth:
        raise BadRequestError("birth is required: a local date and time like 1990-05-17T14:30")
    try:
        moment = datetime.fromisoformat(birth)
    except ValueError:
        raise BadRequestError(
            f"birth must be an ISO date and time like 1990-05-17T14:30, not {birth!r}"
        ) from None
    zone_name = tz or DEFAULT_TZ
    if moment.tzinfo is None:
        try:
            moment = moment.replace(tzinfo=ZoneInfo(zone_name))
        except (ZoneInfoNotFoundError, ValueError):
            raise BadRequestError(
                f"tz must be an IANA time zone like Asia/Seoul, not {tz!r}"
            ) from None
    else:
        zone_name = moment.strftime("%z")
    if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
        raise BadRequestError(f"birth must be between {EARLIEST_YEAR} and {LATEST_YEAR}")
    return BirthRequest(birth=moment, tz=zone_name)


class Backend:
    """What the HTTP layer calls; storage and cache are optional (unset URLs)."""

    def __init__(
        self,
        knobs: Knobs,
        version: str,
        storage: Storage | None = None,
        cache: Cache | None = None,
    ) -> None:
        self.knobs = knobs
        self.version = version
        self.storage = storage
        self.cache = cache
        self.metrics = Metrics()
        self.accepting = True  # false once asked to stop: /ready says 503 while it drains
        self._lock = threading.Lock()
        self._calculations = 0

    def _injected_failure(self) -> bool:
        """True for `error_rate` of the calculations, evenly spread: call k fails when
        floor(k * rate) steps up, so 0.5 fails every 2nd call and 0.1 every 10th."""
        rate = self.knobs.error_rate
        with self._lock:
            self._calculations += 1
            k = self._calculations
        return int(k * rate) > int((k - 1) * rate)

    def calculate(self, request: BirthRequest) -> tuple[int, dict[str, Any]]:
        if self.knobs.extra_latency_ms:
            time.sleep(self.knobs.extra_latency_ms / 1000.0)
        if self._injected_failure():
            return 500, {"error": "calculation failed", "version": self.version}

        key = request.sha256
        cached = self._cache_get(key)
        if cached is not None:
            self.metrics.calculations.labels(source="cache").inc()
            return 200, {**cached, "cached": True, "version": self.version}

        started = time.perf_counter()
        pillars = four_pillars(request.birth).as_dict()
        self.metrics.calculation_duration.observe(time.perf_counter() - started)
        answer = {"birth": request.birth.isoformat(), "tz": request.tz, "pillars": pillars}
        stored: dict[str, int] = {}
        if self.storage is not None:
            try:
                stored["id"] = self.storage.record(key, pillars, self.version)
            except Exception as err:
                log.warning("storing a calculation failed: %s", type(err).__name__)
                return 503, {"error": "the calculation store is unavailable"}
        self._cache_put(key, answer)
        self.metrics.calculations.labels(source="computed").inc()
        return 200, {**answer, **stored, "cached": False, "version": self.version}

    def _cache_get(self, key: str) -> dict[str, Any] | None:
        if self.cache is None:
            return None
        try:
            return self.cache.get(key)
        except Exception as err:
            self.metrics.cache_errors.inc()
            log.warning("reading the cache failed: %s", type(err).__name__)
            return None

    def _cache_put(self, key: str, answer: dict[str, Any]) -> None:
        if self.cache is None:
            return
        try:
            self.cache.put(key, answer)
        except Exception as err:
            self.metrics.cache_errors.inc()
            log.warning("writing the cache failed: %s", type(err).__name__)

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """Whether to take traffic, and each dependency's state."""
        checks: dict[str, str] = {}
        for name, dependency in (("database", self.storage), ("redis", self.cache)):
            if dependency is None:
                checks[name] = "not configured"
                continue
            try:
                dependency.ping()
                checks[name] = "ok"
            except Exception as err:
                checks[name] = f"unreachable: {_first_line(err)}"
        ready = self.accepting and all(
            state in ("ok", "not configured") for state in checks.values()
        )
        return ready, checks

    def stats(self) -> dict[str, Any]:
        """What is stored, by the release that stored it, and which servers hold it (the
        storage summary: `none` where a URL is unset)."""
        by_version = self.storage.count_by_version() if self.storage is not None else {}
        return {
            "stored_calculations": sum(by_version.values()) if self.storage else None,
            "by_version": by_version,
            "storage": self.storage.server_version() if self.storage is not None else "none",
            "cache": self.cache.server_version() if self.cache is not None else "none",
        }

    def stored(self, calculation_id: int) -> dict[str, Any] | None:
        """A stored calculation by id; None when there is no such row (or no storage)."""
        return None if self.storage is None else self.storage.fetch(calculation_id)

    def close(self) -> None:
        if self.storage is not None:
            self.storage.close()
        if self.cache is not None:
            self.cache.close()
