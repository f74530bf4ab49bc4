"""Slot metrics from Traefik's own Prometheus endpoint, without a Prometheus server.

A query must not sleep for its whole window, so snapshots of each slot's counters are kept on
disk with a timestamp, and a window's values are the deltas against the stored snapshot
closest to `now - window_s` (like PromQL's `increase`). Snapshots are taken by every query and
by `mark()`, which the local platform calls when a weight is set and when load generation
starts and ends, i.e. right where an analysis interval begins and ends. When no usable earlier
snapshot exists, a query scrapes twice a short interval apart instead.

A query that runs late (its worker was lost, and the retry came long after the interval) names
the interval's end (`MetricsQuery.at`): it is measured between the stored snapshots at that
end and a window before it, not over the quiet that followed, which would read as no data.

It answers the preset metrics by name (success_rate, error_rate, p95_latency_ms,
p99_latency_ms, cpu_percent) whatever the definition's preset: the local platform's router is
Traefik, so its figures are what the `traefik` preset's PromQL would compute. A custom metric
is PromQL, which needs a Prometheus (SLIPWAY_METRICS=prometheus): here it has no data, and the
sample says why, so the canary's pre-flight refuses it before any traffic moves.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from activities.platforms.local import loopback
from activities.platforms.local.slots import SlotManager
from activities.platforms.local.traefik import TraefikRouter
from contracts.activity import MetricsQuery, MetricsSample, Slot
from plumbing.files import atomic_write_text, file_lock
from plumbing.proctools import pid_alive

__all__ = ["Snapshot", "TraefikMetricsProvider", "histogram_quantile"]

REQUESTS = "traefik_service_requests"
DURATION = "traefik_service_request_duration_seconds"
SNAPSHOTS_KEPT = 720
KEEP_S = 7200.0
LATE_S = 3.0
"""A query this much later than the end it names reads that end from the stored snapshots."""
END_TOLERANCE_S = 5.0
"""How far from the named end a stored snapshot may be to stand for it."""
SLOTS: tuple[Slot, ...] = ("stable", "canary", "blue", "green")
_QUANTILES = {"p95_latency_ms": 0.95, "p99_latency_ms": 0.99}
_READS = {
    "success_rate": f"{REQUESTS}_total by code",
    "error_rate": f"{REQUESTS}_total by code",
    "p95_latency_ms": f"{DURATION}_bucket",
    "p99_latency_ms": f"{DURATION}_bucket",
    "cpu_percent": "/proc/<slot pid>/stat",
}
"""What the local scrape reads for each preset metric (quoted when one has no data)."""
_NO_PROMQL = (
    "a custom PromQL metric, which the local Traefik scrape cannot evaluate: "
    "use SLIPWAY_METRICS=prometheus"
)


@dataclass
class Snapshot:
    """Counters of one slot's Traefik service at time `t` (wall clock, seconds)."""

    t: float
    by_code: dict[str, float] = field(default_factory=dict)
    buckets: dict[str, float] = field(default_factory=dict)
    pid: int | None = None
    cpu_ticks: int | None = None


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile from cumulative bucket counts {upper bound: count}, interpolated
    linearly inside the bucket like PromQL's histogram_quantile. None with no observations."""
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                # PromQL answers the highest finite bound when the rank is in +Inf.
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def _cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # utime + stime: fields 14 and 15 of /proc/<pid>/stat (index 11, 12 after the name).
    return int(fields[11]) + int(fields[12])


class TraefikMetricsProvider:
    """MetricsProvider over Traefik's /metrics: success rate and error rate (% of requests,
    5xx = error), p95 and p99 latency (ms, from the duration histogram) and, from /proc, the
    CPU of the slot's process (% of one core: one process per slot, so it is also the busiest
    one). No request in the window gives `None`, never 0 or 100.
    """

    def __init__(
        self,
        router: TraefikRouter,
        slots: SlotManager,
        state_dir: Path,
        *,
        bootstrap_interval_s: float = 2.0,
        min_gap_s: float = 0.5,
        scrape_timeout_s: float = 5.0,
        late_s: float = LATE_S,
    ) -> None:
        self.router = router
        self.slots = slots
        self.root = Path(state_dir).resolve() / "metrics"
        self.bootstrap_interval_s = bootstrap_interval_s
        self.min_gap_s = min_gap_s
        self.scrape_timeout_s = scrape_timeout_s
        self.late_s = late_s

    def query(self, query: MetricsQuery) -> MetricsSample:
        name = self._name(query.service, query.environment, query.slot)
        path = self._path(query.service, query.environment, query.slot)
        with file_lock(path.with_suffix(".lock")):
            history = self._load(path)
            end = self._recorded_end(history, query)
            if end is not None:
                earlier = self._baseline(history, end.t, query.window_s)
                if earlier is not None:
                    return self._sample(query, name, earlier, end)
            current = self._snapshot(
                self._scrape(), name, query.service, query.environment, query.slot
            )
            baseline = self._baseline(history, current.t, query.window_s)
            if baseline is None:
                # Nothing recent enough to compare with: measure a short interval instead of
                # sleeping the whole window.
                baseline = current
                time.sleep(min(self.bootstrap_interval_s, query.window_s))
                history.append(baseline)
                current = self._snapshot(
                    self._scrape(), name, query.service, query.environment, query.slot
                )
            history.append(current)
            self._store(path, history, current.t)
        return self._sample(query, name, baseline, current)

    def mark(self, service: str, environment: str) -> None:
        """Snapshot every slot of the environment now (one scrape), so that a query at the
        end of the interval that starts here finds its baseline."""
        text = self._scrape()
        for slot in SLOTS:
            path = self._path(service, environment, slot)
            with file_lock(path.with_suffix(".lock")):
                history = self._load(path)
                snapshot = self._snapshot(
                    text, self._name(service, environment, slot), service, environment, slot
                )
                history.append(snapshot)
                self._store(path, history, snapshot.t)

    # --- snapshots -----------------------------------------------------------------------

    def _name(self, service: str, environment: str, slot: Slot) -> str:
        return self.router.service_name(service, environment, slot) + "@file"

    def _path(self, service: str, environment: str, slot: Slot) -> Path:
        return self.root / service / environment / f"{slot}.json"

    def _load(self, path: Path) -> list[Snapshot]:
        try:
            raw: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [Snapshot(**item) for item in raw]

    @staticmethod
    def _store(path: Path, history: list[Snapshot], now: float) -> None:
        kept = [s for s in history if s.t >= now - KEEP_S][-SNAPSHOTS_KEPT:]
        atomic_write_text(path, json.dumps([asdict(s) for s in kept]))

    def _recorded_end(self, history: list[Snapshot], query: MetricsQuery) -> Snapshot | None:
        """The stored snapshot that stands for the end of a late query's window, if any."""
        if query.at is None:
            return None
        end = query.at.timestamp()
        if time.time() - end < self.late_s:
            return None  # on time: measure now
        near = [s for s in history if abs(s.t - end) <= END_TOLERANCE_S]
        return min(near, key=lambda s: abs(s.t - end)) if near else None

    def _baseline(self, history: list[Snapshot], now: float, window_s: float) -> Snapshot | None:
        target = now - window_s
        # Older than two windows is another release's traffic, not this window's.
        usable = [s for s in history if now - 2 * window_s <= s.t <= now - self.min_gap_s]
        if not usable:
            return None
        return min(usable, key=lambda s: abs(s.t - target))

    def _scrape(self) -> str:
        try:
            response = loopback.get(self.router.metrics_url, timeout=self.scrape_timeout_s)
            response.raise_for_status()
        except httpx.HTTPError as error:
            raise RuntimeError(
                f"cannot scrape Traefik metrics at {self.router.metrics_url} ({error}); "
                "is the local platform started?"
            ) from error
        return response.text

    def _snapshot(
        self, text: str, name: str, service: str, environment: str, slot: Slot
    ) -> Snapshot:
        snapshot = Snapshot(t=time.time())
        for family in text_string_to_metric_families(text):
            if family.name not in (REQUESTS, DURATION):
                continue
            for sample in family.samples:
                if sample.labels.get("service") != name:
                    continue
                if sample.name == f"{REQUESTS}_total":
                    code = sample.labels.get("code", "")
                    snapshot.by_code[code] = snapshot.by_code.get(code, 0.0) + sample.value
                elif sample.name == f"{DURATION}_bucket":
                    le = sample.labels.get("le", "")
                    snapshot.buckets[le] = snapshot.buckets.get(le, 0.0) + sample.value
        state = self.slots.state(service, environment, slot)
        if state.pid is not None and pid_alive(state.pid, state.pid_start):
            snapshot.pid = state.pid
            snapshot.cpu_ticks = _cpu_ticks(state.pid)
        return snapshot

    # --- values --------------------------------------------------------------------------

    @staticmethod
    def _delta(now: dict[str, float], then: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, value in now.items():
            before = then.get(key, 0.0)
            # A counter that went down was reset (Traefik restarted, or the service was
            # removed and re-added): count from zero, as PromQL's increase() does.
            out[key] = value - before if value >= before else value
        return out

    def _sample(
        self, query: MetricsQuery, name: str, then: Snapshot, now: Snapshot
    ) -> MetricsSample:
        codes = self._delta(now.by_code, then.by_code)
        total = sum(codes.values())
        errors = sum(v for code, v in codes.items() if code.startswith("5"))
        buckets = {float(le): v for le, v in self._delta(now.buckets, then.buckets).items()}
        values: dict[str, float | None] = {}
        queries: dict[str, str] = {}
        for metric in query.metrics:
            queries[metric] = f"{_READS.get(metric, _NO_PROMQL)} (service={name})"
            if metric == "success_rate":
                values[metric] = 100.0 * (total - errors) / total if total > 0 else None
            elif metric == "error_rate":
                values[metric] = 100.0 * errors / total if total > 0 else None
            elif metric in _QUANTILES:
                seconds = histogram_quantile(_QUANTILES[metric], buckets) if total > 0 else None
                values[metric] = seconds * 1000.0 if seconds is not None else None
            elif metric == "cpu_percent":
                values[metric] = self._cpu_percent(then, now)
            else:
                values[metric] = None
        return MetricsSample(
            values=values,
            requests=int(total),
            source=f"traefik {self.router.metrics_url} service={name} window={now.t - then.t:.1f}s",
            queries=queries,
        )

    @staticmethod
    def _cpu_percent(then: Snapshot, now: Snapshot) -> float | None:
        # Only across one process: a redeploy in the window makes the ticks incomparable.
        if (
            then.pid is None
            or then.pid != now.pid
            or then.cpu_ticks is None
            or now.cpu_ticks is None
            or now.t <= then.t
        ):
            return None
        ticks_per_s = os.sysconf("SC_CLK_TCK")
        return 100.0 * (now.cpu_ticks - then.cpu_ticks) / ticks_per_s / (now.t - then.t)
