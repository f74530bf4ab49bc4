"""Debian's Prometheus and prometheus_client exporters on loopback, for the metrics tests.

One way to write Prometheus's configuration, start it, wait until it has scraped every
target, and query it; and one way to expose a registry and always shut the exporter down.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from tests.support.binaries import require_binary
from tests.support.podman import server_process
from tests.support.ports import free_port

__all__ = ["TRAEFIK_BUCKETS", "exporting", "prometheus_value", "running_prometheus"]

TRAEFIK_BUCKETS = (0.1, 0.3, 1.2, 5.0)  # Traefik's default latency buckets


def prometheus_value(url: str, promql: str) -> float | None:
    """The single value of an instant query, None for an empty result."""
    response = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    result = response.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


@contextmanager
def exporting(registry: CollectorRegistry) -> Iterator[int]:
    """prometheus_client's HTTP exporter for `registry` on a free loopback port; yields the
    port and always shuts the exporter and its thread down."""
    server, thread = start_http_server(free_port(), addr="127.0.0.1", registry=registry)
    try:
        yield int(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def running_prometheus(
    workdir: Path,
    targets: Sequence[str],
    scrape_interval: str = "1s",
    *,
    more_jobs: Sequence[Mapping[str, Any]] = (),
) -> Iterator[str]:
    """Debian's Prometheus on a free loopback port scraping `targets` (host:port) as job
    `traefik`, plus `more_jobs` (scrape_config entries as Prometheus spells them); yields its
    URL once the first scrape of every target is stored."""
    binary = require_binary("prometheus", "apt-get install -y prometheus (see .ci/real-servers.sh)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    traefik = {"job_name": "traefik", "static_configs": [{"targets": list(targets)}]}
    jobs: list[Mapping[str, Any]] = [traefik, *more_jobs]
    expected = sum(len(group["targets"]) for job in jobs for group in job["static_configs"])
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": scrape_interval, "evaluation_interval": "1s"},
                "scrape_configs": jobs,
            },
            sort_keys=False,
        )
    )
    url = f"http://127.0.0.1:{port}"

    def scraped() -> bool:
        if httpx.get(f"{url}/-/ready", timeout=1).status_code != 200:
            return False
        return prometheus_value(url, "sum(up)") == expected

    with server_process(
        [
            str(binary),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        name="prometheus",
        log=workdir / "prometheus.log",
        ready=scraped,
    ):
        yield url
