"""A Prometheus for `make demo`: the canary's custom metric (`saju_calculations_per_s`) is
PromQL over the backend's own `saju_calculations_total`, which only a Prometheus evaluates
(the local platform's direct Traefik scrape answers the preset metrics alone).

Debian's `prometheus` runs on a free loopback port with a throwaway database and scrapes,
every second, Traefik's /metrics (the preset metrics) and the release processes the local
platform runs. Those come and go with each deploy, and Prometheus applies discovered targets
only every 5 s, so a new canary would be missed for the first seconds of its first analysis.
Instead of service discovery, the demo serves one fixed target: each scrape of it reads the
/metrics of every slot running at that moment and labels each series with its `service`,
`environment` and `slot` (the labels heal7.yaml's custom metric selects by).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from activities.platforms.local.slots import SlotManager, SlotState

__all__ = ["DemoPrometheus", "labelled_series"]

INSTALL_HINT = "apt-get install prometheus"
_SERIES = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{.*\})?\s+(.*)$")


def labelled_series(text: str, labels: dict[str, str]) -> list[str]:
    """The sample lines of a Prometheus text exposition with `labels` added to each; comment
    lines are dropped (the same family comes from several processes, so their TYPE lines
    cannot be kept; rate() and histogram_quantile() need none)."""
    extra = ",".join(f'{k}="{v}"' for k, v in labels.items())
    out: list[str] = []
    for line in text.splitlines():
        match = _SERIES.match(line)
        if line.startswith("#") or match is None:
            continue
        name, own, value = match.groups()
        inner = f"{extra},{own[1:-1]}" if own and own != "{}" else extra
        out.append(f"{name}{{{inner}}} {value}")
    return out


def _slot_series(state: SlotState, timeout_s: float) -> list[str]:
    try:
        # urllib, not httpx: a client per request would build an SSL context each time, and
        # the whole scrape must fit in Prometheus's one-second timeout on a busy machine.
        url = f"http://127.0.0.1:{state.port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return []  # starting, stopping, or no /metrics (the frontend): skipped this time
    labels = {"service": state.service, "environment": state.environment, "slot": state.slot}
    return labelled_series(text, labels)


def _releases_text(
    states: Iterable[SlotState], pool: ThreadPoolExecutor, timeout_s: float = 0.6
) -> str:
    """Every running slot's series, read concurrently."""
    running = [s for s in states if s.port is not None and s.running()]
    lines = [
        line for found in pool.map(lambda s: _slot_series(s, timeout_s), running) for line in found
    ]
    return "\n".join(sorted(lines)) + "\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class DemoPrometheus:
    """Prometheus scraping Traefik (`traefik_port`) and the releases under `platform_dir`."""

    workdir: Path
    platform_dir: Path
    traefik_port: int
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None
    _releases: ThreadingHTTPServer | None = None
    _pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(16, thread_name_prefix="demo-scrape")
    )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def binary() -> str | None:
        return shutil.which("prometheus")

    def start(self, timeout_s: float = 30) -> None:
        binary = self.binary()
        if binary is None:
            raise RuntimeError(f"prometheus not found on PATH: {INSTALL_HINT}")
        shutil.rmtree(self.workdir / "data", ignore_errors=True)  # this run's samples only
        self.workdir.mkdir(parents=True, exist_ok=True)
        releases = self._serve_releases()
        config = self.workdir / "prometheus.yml"
        config.write_text(
            "# Written by `make demo` (demo/prometheus.py).\n"
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: traefik\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{self.traefik_port}']}}]\n"
            "  - job_name: releases\n"
            "    honor_labels: true\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{releases}']}}]\n",
            encoding="utf-8",
        )
        log = open(self.workdir / "prometheus.log", "ab")  # noqa: SIM115 — lives with the process
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"prometheus did not become ready (log: {self.workdir / 'prometheus.log'})"
                )
            time.sleep(0.2)

    def _serve_releases(self) -> int:
        """The releases' target, on a free loopback port in this process; returns the port."""
        slots = SlotManager(self.platform_dir)
        pool = self._pool

        class Releases(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                try:
                    body = _releases_text(slots.states(), pool).encode()
                except (OSError, ValueError):
                    body = b""  # a slot record being replaced: the next scrape reads it
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: one scrape a second."""

        self._releases = ThreadingHTTPServer(("127.0.0.1", 0), Releases)
        self._releases.daemon_threads = True
        thread = threading.Thread(target=self._releases.serve_forever, name="demo-releases")
        thread.daemon = True
        thread.start()
        port: int = self._releases.server_address[1]
        return port

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._releases is not None:
            self._releases.shutdown()
            self._releases.server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)
