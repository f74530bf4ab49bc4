"""Load tests with locust, used as a library in a process of its own.

Locust monkeypatches the standard library with gevent when it is imported: that must never
happen in the worker (its asyncio loop and threads). So the worker writes a locustfile and
its settings into a work directory and runs `locust --headless` there (sandboxed, its own
process group, `activities.providers.live.live_tools`); locust writes its stats as CSV
(`--csv`), which the worker reads while it runs (for heartbeats) and at the end (the
report). Paths are picked at random by weight; with a `rate` every user is paced with
`constant_throughput(rate / users)`, else users send as fast as answers come.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

from activities.providers.live.live_tools import failed_run, run_tool, work_directory
from activities.providers.scanners.scanner_process import ScannerUnavailableError, find_binary
from activities.wiring.backends import Heartbeat
from contracts.activity import LoadTestReport, LoadTestRequest

__all__ = ["LOCUSTFILE", "LocustLoadTester", "read_stats"]

LOCUSTFILE = '''\
"""Written by Slipway for one load test: GETs of the stage's paths, by weight."""
import json
import pathlib
import random

from locust import HttpUser, constant, constant_throughput, task

SETTINGS = json.loads((pathlib.Path(__file__).parent / "settings.json").read_text())
PATHS = [p["path"] for p in SETTINGS["paths"]]
WEIGHTS = [p["weight"] for p in SETTINGS["paths"]]


class Visitor(HttpUser):
    host = SETTINGS["base_url"]
    if SETTINGS["per_user_rate"]:
        wait_time = constant_throughput(SETTINGS["per_user_rate"])
    else:
        wait_time = constant(0)

    def on_start(self):
        self.client.headers.update(SETTINGS["headers"])
        self.client.trust_env = False

    @task
    def visit(self):
        path = random.choices(PATHS, weights=WEIGHTS)[0]
        self.client.get(path, name=path, timeout=SETTINGS["timeout"])
'''

_SLACK_S = 60.0
"""Beyond the run's duration, how long locust may take to start and stop."""


class LocustLoadTester:
    """LoadTester running locust (from the worker's venv) in a subprocess."""

    tool = "locust"

    def __init__(self, binary: Path | None = None) -> None:
        self._binary = binary

    def run(self, request: LoadTestRequest, heartbeat: Heartbeat) -> LoadTestReport:
        binary = self._binary or find_binary("locust")
        if binary is None or not binary.exists():
            return LoadTestReport(
                tool=self.tool,
                available=False,
                reason="locust is not installed on this worker: pip install locust",
            )
        run_time = max(1, math.ceil(request.duration_s))
        spawn_rate = request.users / request.ramp_s if request.ramp_s > 0 else request.users
        with work_directory("slipway-load-") as work:
            (work / "settings.json").write_text(
                json.dumps(
                    {
                        "base_url": request.endpoint.base_url,
                        "headers": request.endpoint.headers,
                        "paths": [p.model_dump() for p in request.paths],
                        "per_user_rate": request.rate / request.users if request.rate else 0,
                        "timeout": request.request_timeout_s,
                    }
                )
            )
            (work / "locustfile.py").write_text(LOCUSTFILE)
            argv = [
                str(binary),
                "-f",
                str(work / "locustfile.py"),
                "--headless",
                "--users",
                str(request.users),
                "--spawn-rate",
                f"{spawn_rate:g}",
                "--run-time",
                f"{run_time}s",
                "--stop-timeout",
                "2",
                "--csv",
                str(work / "stats"),
                "--only-summary",
                "--exit-code-on-error",
                "0",
                "--loglevel",
                "WARNING",
            ]
            started = time.monotonic()
            url = request.endpoint.base_url

            def progress() -> str:
                figures = read_stats(work / "stats_stats.csv")
                sent = f"{figures.requests:,} requests, {figures.failures:,} failed"
                return f"locust on {url}: {time.monotonic() - started:.0f}/{run_time}s, {sent}"

            try:
                run = run_tool(argv, work, run_time + _SLACK_S, heartbeat, progress)
            except ScannerUnavailableError as exc:
                return LoadTestReport(tool=self.tool, available=False, reason=str(exc))
            took = time.monotonic() - started
            stats = work / "stats_stats.csv"
            if not stats.exists():
                return LoadTestReport(
                    tool=self.tool, available=False, reason=failed_run(run, self.tool)
                )
            report = read_stats(stats, work / "stats_failures.csv")
            heartbeat(f"locust on {url}: done, {report.requests:,} requests")
            return report.model_copy(update={"duration_s": round(took, 2)})


def _number(text: str | None) -> float | None:
    try:
        value = float(text or "")
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_stats(stats: Path, failures: Path | None = None) -> LoadTestReport:
    """The `Aggregated` row of locust's `<prefix>_stats.csv` (and the first errors of its
    `_failures.csv`); an empty report while the file is not written yet."""
    row: dict[str, str] = {}
    try:
        with stats.open(newline="") as handle:
            for line in csv.DictReader(handle):
                if line.get("Name") == "Aggregated":
                    row = line
    except (OSError, csv.Error):
        return LoadTestReport()
    requests = int(_number(row.get("Request Count")) or 0)
    examples: list[str] = []
    if failures is not None and failures.exists():
        with failures.open(newline="") as handle:
            for line in csv.DictReader(handle):
                examples.append(
                    f"{line.get('Method', '')} {line.get('Name', '')}: "
                    f"{line.get('Error', '')[:200]} ({line.get('Occurrences', '?')}x)"
                )
                if len(examples) == 3:
                    break
    return LoadTestReport(
        requests=requests,
        failures=int(_number(row.get("Failure Count")) or 0),
        rps=round(_number(row.get("Requests/s")) or 0.0, 2),
        p50_ms=_number(row.get("50%")) if requests else None,
        p95_ms=_number(row.get("95%")) if requests else None,
        p99_ms=_number(row.get("99%")) if requests else None,
        failure_examples=examples,
    )
