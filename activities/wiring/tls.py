"""The TLS context the worker's HTTP clients verify servers with, built once per process.

Every `httpx.Client` otherwise builds its own, loading the CA bundle each time: about 25 ms of
CPU, paid by every check stage, notification and interval of generated load. httpx's own
default is kept (SSL_CERT_FILE or SSL_CERT_DIR when set, certifi otherwise); a changed bundle
is read by the next worker process. An `ssl.SSLContext` may be shared between connections
and threads.
"""

from __future__ import annotations

import functools
import ssl

import httpx

__all__ = ["verifying_context"]


@functools.cache
def verifying_context() -> ssl.SSLContext:
    """httpx's default verifying context, one per process."""
    return httpx.create_ssl_context()
