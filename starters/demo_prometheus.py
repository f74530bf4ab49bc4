"""A Prometheus for `make demo`: the canary's custom metric (`saju_calculations_per_s`) is
PromQL over the backend's own `saju_calculations_total`, which only a Prometheus evaluates
(the local platform's direct Traefik scrape answers the preset metrics alone).

Debian's `prometheus` runs on a free loopback port with a throwaway database and scrapes,
every second, Traefik's /metrics (the preset metrics) and every release process the local
platform runs. Those come and go with each deploy, so a thread rewrites a `file_sd` targets
file from the platform's slot records: one target per running slot, labelled `service`,
`environment` and `slot` (the labels heal7.yaml's custom metric selects by).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from activities.platforms.local.slots import SlotManager

__all__ = ["DemoPrometheus", "scrape_targets"]

INSTALL_HINT = "apt-get install prometheus"


def scrape_targets(slots: SlotManager) -> list[dict[str, Any]]:
    """Prometheus `file_sd` entries for every slot whose process runs."""
    return [
        {
            "targets": [f"127.0.0.1:{state.port}"],
            "labels": {
                "service": state.service,
                "environment": state.environment,
                "slot": state.slot,
            },
        }
        for state in slots.states()
        if state.port is not None and state.running()
    ]


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
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def targets_file(self) -> Path:
        return self.workdir / "releases.json"

    @staticmethod
    def binary() -> str | None:
        return shutil.which("prometheus")

    def start(self, timeout_s: float = 30) -> None:
        binary = self.binary()
        if binary is None:
            raise RuntimeError(f"prometheus not found on PATH: {INSTALL_HINT}")
        shutil.rmtree(self.workdir / "data", ignore_errors=True)  # this run's samples only
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_targets([])
        config = self.workdir / "prometheus.yml"
        config.write_text(
            "# Written by `make demo` (starters/demo_prometheus.py).\n"
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: traefik\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{self.traefik_port}']}}]\n"
            "  - job_name: releases\n"
            f"    file_sd_configs: [{{files: ['{self.targets_file}'], refresh_interval: 1s}}]\n",
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
        self._thread = threading.Thread(target=self._discover, name="demo-prometheus-sd")
        self._thread.daemon = True
        self._thread.start()

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _discover(self) -> None:
        slots = SlotManager(self.platform_dir)
        written: list[dict[str, Any]] = []
        while not self._stop.wait(0.5):
            try:
                current = scrape_targets(slots)
            except (OSError, ValueError):
                continue  # a slot record being replaced: read it on the next turn
            if current != written:
                self._write_targets(current)
                written = current

    def _write_targets(self, targets: list[dict[str, Any]]) -> None:
        # Atomically: Prometheus may read the file at any moment.
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(targets, indent=2), encoding="utf-8")
        os.replace(tmp, self.targets_file)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
