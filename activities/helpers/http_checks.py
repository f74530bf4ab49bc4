"""HTTP probes of an environment, shared by every platform's `check`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import httpx

from activities.wiring.tls import verifying_context
from contracts.activity import HttpCheck, HttpCheckReport

__all__ = ["run_http_checks"]


def run_http_checks(
    base_url: str,
    checks: Sequence[HttpCheck],
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
) -> HttpCheckReport:
    """GET each path; wrong status, missing text or an unreachable endpoint is a failed
    check reported as data (the stage judges), never an exception."""
    failures: list[str] = []
    base = base_url.rstrip("/")
    with httpx.Client(
        headers=dict(headers or {}), timeout=timeout_s, verify=verifying_context()
    ) as client:
        for check in checks:
            url = base + check.path
            try:
                response = client.get(url)
            except httpx.HTTPError as error:
                failures.append(f"GET {url}: {type(error).__name__}: {error}")
                continue
            if response.status_code != check.status:
                failures.append(
                    f"GET {url}: expected HTTP {check.status}, got {response.status_code}"
                )
            elif check.contains is not None and check.contains not in response.text:
                failures.append(f"GET {url}: body does not contain {check.contains!r}")
    return HttpCheckReport(
        passed=len(checks) - len(failures), failed=len(failures), failures=failures
    )
