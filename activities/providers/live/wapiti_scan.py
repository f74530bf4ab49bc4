"""A dynamic scan of a running environment with wapiti (Debian's `wapiti`).

The scope is bounded: the environment's base URL with `--scope folder` (nothing outside it
is crawled or attacked), a crawl depth, a time budget split between crawling and the
modules' attacks (`--max-scan-time`, `--max-attack-time`) under a hard deadline, the
stage's modules only (none of those that call an outside endpoint: `ssrf`, `xxe`), no bug
report, and its session and configuration databases in a throwaway directory. Its JSON
report becomes findings: wapiti's levels 4/3/2/1/0 are critical/high/medium/low/info,
anomalies (a 500 answer to an attack, a timeout) keep their level, and a finding's rule is
its category in lower case with dashes (`cross-site-scripting`, `http-secure-headers`),
which `ignore:` entries name.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx

from activities.providers.live.live_tools import failed_run, run_tool, work_directory
from activities.providers.scanners.scanner_process import (
    ScannerUnavailableError,
    find_binary,
    missing_report,
    unavailable_report,
)
from activities.wiring.backends import Heartbeat
from activities.wiring.tls import verifying_context
from contracts.activity import Finding, LiveScanRequest, ScannerReport, Severity

__all__ = ["WapitiScanner", "parse_wapiti"]

_LEVELS = {
    4: Severity.CRITICAL,
    3: Severity.HIGH,
    2: Severity.MEDIUM,
    1: Severity.LOW,
    0: Severity.INFO,
}
_SLACK_S = 60.0
"""Beyond the scan's budget, how long wapiti may take to start and write its report."""
_NOWHERE = "http://127.0.0.1:9/"
"""The endpoint wapiti's out-of-band modules would call: loopback's discard port, never a
host outside (the stage cannot pick those modules anyway)."""


def rule_of(category: str) -> str:
    """'Cross Site Scripting' -> 'cross-site-scripting'."""
    return re.sub(r"[^a-z0-9]+", "-", category.lower()).strip("-") or "unknown"


def _severity(level: Any, default: Severity) -> Severity:
    try:
        return _LEVELS.get(int(level), default)
    except (TypeError, ValueError):
        return default


def parse_wapiti(report: dict[str, Any], name: str = "wapiti") -> ScannerReport:
    """Findings of wapiti's JSON report (`-f json`)."""
    findings: list[Finding] = []
    sections = (
        ("vulnerabilities", Severity.MEDIUM),
        ("anomalies", Severity.MEDIUM),
        ("additionals", Severity.INFO),
    )
    for section, default in sections:
        groups = report.get(section) or {}
        if not isinstance(groups, dict):
            continue
        for category, items in groups.items():
            for item in items if isinstance(items, list) else []:
                if not isinstance(item, dict):
                    continue
                where = f"{item.get('method', 'GET')} {item.get('path', '/')}"
                if item.get("parameter"):
                    where += f" ({item['parameter']})"
                findings.append(
                    Finding(
                        scanner=name,
                        rule=rule_of(str(category)),
                        severity=_severity(item.get("level"), default)
                        if section != "additionals"
                        else Severity.INFO,
                        message=f"{category}: {item.get('info', '')}".strip(),
                        location=where,
                    )
                )
    return ScannerReport(scanner=name, findings=findings)


class WapitiScanner:
    """LiveScanner running wapiti against an environment's base URL."""

    name = "wapiti"

    def __init__(self, binary: Path | None = None, request_timeout_s: float = 10.0) -> None:
        self._binary = binary
        self._timeout_s = request_timeout_s

    def scan(self, request: LiveScanRequest, heartbeat: Heartbeat) -> ScannerReport:
        binary = self._binary or find_binary("wapiti")
        if binary is None or not binary.exists():
            return missing_report(self.name, "apt-get install wapiti")
        base = request.endpoint.base_url.rstrip("/") + "/"
        problem = self._unreachable(base, request.endpoint.headers)
        if problem:
            return unavailable_report(self.name, problem)
        budget = request.max_scan_s
        modules = request.modules or ["http_headers"]
        # A quarter of the budget crawls, the rest is shared by the modules' attacks; wapiti
        # ignores either bound below one second.
        crawl_s = max(1.0, budget / 4)
        attack_s = max(1.0, (budget - crawl_s) / len(modules))
        with work_directory("slipway-dast-") as work:
            output = work / "report.json"
            argv = [
                str(binary),
                "--url",
                base,
                "--scope",
                "folder",
                "--module",
                ",".join(modules),
                "--depth",
                str(request.depth),
                "--max-scan-time",
                f"{crawl_s:g}",
                "--max-attack-time",
                f"{attack_s:g}",
                "--timeout",
                f"{self._timeout_s:g}",
                "--flush-session",
                "--store-session",
                str(work / "session"),
                "--store-config",
                str(work / "config"),
                "--endpoint",
                _NOWHERE,
                "--no-bugreport",
                "--verify-ssl",
                "1",
                "--format",
                "json",
                "--output",
                str(output),
                "--verbose",
                "0",
            ]
            for header, value in request.endpoint.headers.items():
                argv += ["--header", f"{header}: {value}"]
            started = time.monotonic()

            def progress() -> str:
                return f"wapiti on {base}: {time.monotonic() - started:.0f}s of {budget:g}s"

            try:
                run = run_tool(argv, work, budget + _SLACK_S, heartbeat, progress)
            except ScannerUnavailableError as exc:
                return unavailable_report(self.name, exc)
            try:
                data = json.loads(output.read_text())
            except (OSError, ValueError):
                return unavailable_report(self.name, failed_run(run, self.name))
        if not isinstance(data, dict):
            return unavailable_report(self.name, "wapiti's report is not a JSON object")
        heartbeat(f"wapiti on {base}: done in {time.monotonic() - started:.0f}s")
        return parse_wapiti(data, self.name)

    def _unreachable(self, base: str, headers: dict[str, str]) -> str:
        """Why the target does not answer ('' when it does): a scan of nothing finds
        nothing, and that must not read as a pass."""
        try:
            with httpx.Client(
                headers=headers,
                timeout=self._timeout_s,
                verify=verifying_context(),
                trust_env=False,
            ) as client:
                client.get(base)
        except httpx.HTTPError as exc:
            return f"{base} does not answer: {type(exc).__name__}: {exc}"
        return ""
