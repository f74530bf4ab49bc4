"""Synthetic traffic against an environment's entry point (Flagger's load tester role): the
local platform's Traefik entrypoint, or a Kubernetes environment's ingress URL — wherever the
platform's `endpoint` says the service answers, with the headers it says pick it."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import httpx

from activities.wiring.backends import Heartbeat
from activities.wiring.tls import verifying_context
from contracts.activity import Endpoint, EndpointRequest, LoadReport, LoadRequest

__all__ = ["HttpLoadGenerator"]


class HttpLoadGenerator:
    """LoadGenerator sending GETs at a bounded rate to an environment's endpoint (`endpoint`:
    a platform's `DeployTarget.endpoint`).

        Requests are issued on a fixed schedule (`rps`) by a small thread pool, so one slow
        response does not lower the rate; at most `max_in_flight` are outstanding, and requests
        that cannot be issued because all are in flight are skipped rather than queued (the
        report's `sent` says what was actually sent). Non-2xx/3xx answers and connection errors
        count as errors.
    """

    def __init__(
        self,
        endpoint: Callable[[EndpointRequest], Endpoint],
        *,
        timeout_s: float = 5.0,
        max_in_flight: int = 32,
        heartbeat_every_s: float = 1.0,
        on_start: Callable[[LoadRequest], None] | None = None,
        on_end: Callable[[LoadRequest], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        # The platform snapshots metrics here: the analysis interval starts and ends with the
        # load, and a query that runs late reads the interval between the two.
        self.on_start = on_start
        self.on_end = on_end
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self.heartbeat_every_s = heartbeat_every_s

    def run(self, request: LoadRequest, heartbeat: Heartbeat) -> LoadReport:
        target = self.endpoint(
            EndpointRequest(service=request.service, environment=request.environment)
        )
        url = target.base_url.rstrip("/") + request.path
        planned = max(1, math.floor(request.duration_s * request.rps))
        interval = 1.0 / request.rps
        lock = threading.Lock()
        counts = {"sent": 0, "errors": 0}
        in_flight = threading.BoundedSemaphore(self.max_in_flight)
        limits = httpx.Limits(max_connections=self.max_in_flight)
        if self.on_start is not None:
            self.on_start(request)

        with (
            httpx.Client(
                timeout=self.timeout_s,
                limits=limits,
                verify=verifying_context(),
                # The service's Host on a shared local entrypoint; nothing on an ingress.
                headers=target.headers,
            ) as client,
            ThreadPoolExecutor(max_workers=self.max_in_flight) as pool,
        ):

            def one() -> None:
                try:
                    response = client.get(url)
                    failed = response.status_code >= 400
                except httpx.HTTPError:
                    failed = True
                finally:
                    in_flight.release()
                with lock:
                    counts["sent"] += 1
                    counts["errors"] += int(failed)

            futures: list[Future[None]] = []
            start = time.monotonic()
            last_beat = start
            for i in range(planned):
                delay = start + i * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if in_flight.acquire(blocking=False):
                    futures.append(pool.submit(one))
                now = time.monotonic()
                if now - last_beat >= self.heartbeat_every_s:
                    last_beat = now
                    with lock:
                        note = f"load {url}: {counts['sent']}/{planned} sent, "
                        note += f"{counts['errors']} errors"
                    heartbeat(note)
            for future in futures:
                future.result()
        if self.on_end is not None:
            self.on_end(request)
        heartbeat(f"load {url}: done, {counts['sent']} sent, {counts['errors']} errors")
        return LoadReport(sent=counts["sent"], errors=counts["errors"])
