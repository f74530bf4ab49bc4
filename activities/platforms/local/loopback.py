"""One HTTP client for the local platform's own calls on loopback: Traefik's API, ping and
metrics, and the probes of slot processes.

`httpx.get` builds a client per call, and every client loads the system CA bundle into a new
SSL context, even for plain http: about 25 ms of CPU per request here, and in an end-to-end
run 40% of the worker's CPU (py-spy), spent polling Traefik while it reloads and probing
slots until they answer. This client is built once and shared between threads (httpx allows
it). It keeps no connection alive, so every request opens a fresh one as `httpx.get` did: a
slot's port is taken by the next release's process, and nothing pooled may outlive it.
"""

from __future__ import annotations

import functools

import httpx

from activities.wiring.tls import verifying_context

__all__ = ["get"]


@functools.cache
def _client() -> httpx.Client:
    """Built at the first call, not at import: the demo starter and the tests import the local
    platform without probing anything."""
    return httpx.Client(
        limits=httpx.Limits(max_keepalive_connections=0), verify=verifying_context()
    )


def get(url: str, timeout: float) -> httpx.Response:
    """GET `url` within `timeout` seconds; raises `httpx.HTTPError` as `httpx.get` does."""
    return _client().get(url, timeout=timeout)
