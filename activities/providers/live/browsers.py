"""What the browser stages share: finding Debian's Chromium, and the URL a browser visits.

A browser cannot send another Host header than its URL's, and the local platform tells
services on one entrypoint apart by Host (`heal7-frontend.localhost`). Chromium resolves
every `*.localhost` name to loopback itself, so a loopback endpoint with such a Host header
becomes `http://heal7-frontend.localhost:PORT`: the same entrypoint, the right Host. Other
headers (an ingress's canary header) go with every request the browser makes.

Chromium runs with `--no-sandbox`: its own sandbox needs user namespaces or a setuid helper,
which the runner's sandbox (bubblewrap, no new privileges, another uid) does not give; the
pages it renders stay inside that sandbox.
"""

from __future__ import annotations

import shutil
import urllib.parse
from pathlib import Path

from contracts.activity import Endpoint

__all__ = ["CHROMIUM_ARGS", "CHROMIUM_HINT", "browser_target", "find_chromium"]

CHROMIUM_HINT = "apt-get install chromium"
CHROMIUM_ARGS = ("--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu")
_CANDIDATES = ("chromium", "chromium-browser")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def find_chromium(configured: Path | None = None) -> Path | None:
    """Debian's Chromium (`/usr/bin/chromium`), or the configured executable; None if absent.
    Never a browser Playwright downloaded."""
    if configured is not None:
        return configured if configured.is_file() else None
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def browser_target(endpoint: Endpoint) -> tuple[str, dict[str, str]]:
    """(base URL a browser visits, headers it adds to every request); see the module
    docstring."""
    base = endpoint.base_url.rstrip("/")
    headers = {k: v for k, v in endpoint.headers.items() if k.lower() != "host"}
    host = next((v for k, v in endpoint.headers.items() if k.lower() == "host"), None)
    if host is None:
        return base, headers
    url = urllib.parse.urlsplit(base)
    name = host.split(":", 1)[0].lower()
    if url.hostname in _LOOPBACK and (name == "localhost" or name.endswith(".localhost")):
        netloc = f"{name}:{url.port}" if url.port else name
        return urllib.parse.urlunsplit(url._replace(netloc=netloc)), headers
    # Elsewhere the URL's own host must be the right one: Chromium sends no other Host.
    return base, headers
