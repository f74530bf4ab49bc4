"""Web audits of a running front end: Lighthouse scores and axe's WCAG 2 violations, both
in Debian's Chromium.

- **axe** (npm `axe-core`, its `axe.min.js`) is injected into each page by Playwright (the
  worker's `playwright` package, driving Chromium through `executable_path`: no browser is
  ever downloaded) and run with the WCAG level's tags (`wcag2a`, `wcag2aa`, `wcag21a`,
  `wcag21aa`, `wcag22aa` for AA). A violation is a finding: rule = axe's rule id
  (`image-alt`), severity = its impact (critical/serious/moderate/minor as critical/high/
  medium/low), location = the page and the first element (`/about img`), so `ignore:`
  entries (with expiry) work as for every scan.
- **Lighthouse** (npm `lighthouse`, `CHROME_PATH` = Chromium) runs once per page, headless,
  for the four categories; a score is 0-100, a page Lighthouse could not load has none.

Both run as the live tools do (`activities.providers.live.live_tools`): in the worker's
sandbox, a throwaway HOME, one writable work directory, under the stage's time budget (each
run gets what is left of it). A target that does not answer, a missing tool or browser is
`unavailable` (the stage decides), never an empty pass.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from activities.helpers.accepted_findings import apply_accepted
from activities.helpers.capped_findings import capped
from activities.providers.live.browsers import (
    CHROMIUM_ARGS,
    CHROMIUM_HINT,
    browser_target,
    find_chromium,
)
from activities.providers.live.live_tools import failed_run, run_tool, work_directory
from activities.providers.scanners.scanner_process import ScannerUnavailableError, find_binary
from activities.scan import today
from activities.wiring.backends import Heartbeat
from activities.wiring.tls import verifying_context
from contracts.activity import (
    Finding,
    PageAudit,
    ScannerReport,
    Severity,
    WebAuditReport,
    WebAuditRequest,
)

__all__ = ["AXE_SCRIPT", "AXE_SCRIPT_CANDIDATES", "WebAuditor", "parse_axe", "parse_lighthouse"]

AXE_SCRIPT_CANDIDATES = (
    Path("/usr/lib/node_modules/axe-core/axe.min.js"),
    Path("/usr/local/lib/node_modules/axe-core/axe.min.js"),
)
"""Where `npm install -g axe-core` puts axe (Debian's npm, then a Node from elsewhere)."""
_IMPACT = {
    "critical": Severity.CRITICAL,
    "serious": Severity.HIGH,
    "moderate": Severity.MEDIUM,
    "minor": Severity.LOW,
}
_SLACK_S = 30.0
"""Beyond the budget, how long a tool may take to start and write its report."""
_NODES_SHOWN = 3

AXE_SCRIPT = '''\
"""Written by Slipway for one web audit: axe in each page, through Playwright."""
import json
import pathlib
import sys

from playwright.sync_api import sync_playwright

here = pathlib.Path(__file__).parent
settings = json.loads((here / "axe-settings.json").read_text())
results = []
with sync_playwright() as playwright:
    browser = playwright.chromium.launch(
        executable_path=settings["chromium"], args=settings["args"]
    )
    try:
        context = browser.new_context(extra_http_headers=settings["headers"])
        for path in settings["paths"]:
            page = context.new_page()
            entry = {"path": path}
            try:
                answer = page.goto(
                    settings["base_url"] + path,
                    wait_until="load",
                    timeout=settings["page_timeout_ms"],
                )
                entry["status"] = answer.status if answer is not None else 0
                page.add_script_tag(path=settings["axe"])
                found = page.evaluate(
                    "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})",
                    settings["tags"],
                )
                entry["violations"] = found["violations"]
                entry["axe"] = found.get("testEngine", {}).get("version", "")
            except Exception as exc:
                entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            finally:
                page.close()
            results.append(entry)
            (here / "axe-progress").write_text(str(len(results)))
    finally:
        browser.close()
(here / "axe-results.json").write_text(json.dumps(results))
sys.exit(0)
'''


def parse_axe(results: list[dict[str, Any]], name: str = "axe") -> ScannerReport:
    """Findings of the audit script's results: one per violated rule and page, located at
    the page and its first elements."""
    findings: list[Finding] = []
    errors: list[str] = []
    for entry in results:
        path = str(entry.get("path", "/"))
        if entry.get("error"):
            errors.append(f"{path}: {entry['error']}")
            continue
        status = entry.get("status", 200)
        if isinstance(status, int) and status >= 400:
            errors.append(f"{path} answered {status}")
            continue
        for violation in entry.get("violations") or []:
            nodes = [
                " ".join(str(part) for part in (node.get("target") or []))
                for node in violation.get("nodes") or []
            ]
            where = ", ".join(n for n in nodes[:_NODES_SHOWN] if n)
            more = f" (+{len(nodes) - _NODES_SHOWN} more)" if len(nodes) > _NODES_SHOWN else ""
            findings.append(
                Finding(
                    scanner=name,
                    rule=str(violation.get("id", "unknown")),
                    severity=_IMPACT.get(str(violation.get("impact")), Severity.MEDIUM),
                    message=str(violation.get("help", "")),
                    location=f"{path} {where}{more}".strip(),
                )
            )
    if errors:
        # A page axe could not check is not a page without violations.
        return ScannerReport(scanner=name, available=False, reason="; ".join(errors[:3]))
    return ScannerReport(scanner=name, findings=findings)


def parse_lighthouse(path: str, data: dict[str, Any]) -> PageAudit:
    """One page's scores (0-100) from Lighthouse's JSON report."""
    problem = data.get("runtimeError") or {}
    categories = data.get("categories") or {}
    scores: dict[str, float | None] = {}
    for category, body in categories.items():
        score = body.get("score") if isinstance(body, dict) else None
        scores[str(category)] = round(float(score) * 100, 1) if score is not None else None
    error = ""
    if isinstance(problem, dict) and problem.get("code"):
        error = f"{problem.get('code')}: {str(problem.get('message', ''))[:300]}"
    return PageAudit(path=path, scores=scores, error=error)


class WebAuditor:
    """Runs axe (through Playwright) and Lighthouse against an endpoint's pages."""

    def __init__(
        self,
        chromium: Path | None = None,
        lighthouse: Path | None = None,
        axe_script: Path | None = None,
        request_timeout_s: float = 10.0,
    ) -> None:
        self._chromium = chromium
        self._lighthouse = lighthouse
        self._axe = axe_script
        self._timeout_s = request_timeout_s

    def audit(self, request: WebAuditRequest, heartbeat: Heartbeat) -> WebAuditReport:
        chromium = find_chromium(self._chromium)
        if chromium is None:
            return WebAuditReport(
                available=False, reason=f"chromium is not installed: {CHROMIUM_HINT}"
            )
        lighthouse = self._lighthouse or find_binary("lighthouse")
        if request.lighthouse and (lighthouse is None or not lighthouse.exists()):
            return WebAuditReport(
                available=False,
                reason="lighthouse is not installed: npm install -g lighthouse",
            )
        axe = self._axe or next((p for p in AXE_SCRIPT_CANDIDATES if p.is_file()), None)
        if request.axe and (axe is None or not axe.is_file()):
            return WebAuditReport(
                available=False, reason="axe-core is not installed: npm install -g axe-core"
            )
        base, headers = browser_target(request.endpoint)
        problem = self._unreachable(request.endpoint.base_url, request.endpoint.headers)
        if problem:
            return WebAuditReport(available=False, reason=problem)
        deadline = time.monotonic() + request.max_time_s
        tools: dict[str, str] = {}
        with work_directory("slipway-web-audit-") as work:
            axe_report = None
            if request.axe:
                assert axe is not None
                axe_report, version = self._axe_run(
                    request, base, headers, chromium, axe, work, deadline, heartbeat
                )
                axe_report = capped(apply_accepted(axe_report, request.ignore, [], today()))
                if version:
                    tools["axe-core"] = version
                heartbeat(f"axe on {len(request.paths)} page(s): done")
            pages: list[PageAudit] = []
            if request.lighthouse:
                assert lighthouse is not None
                for i, path in enumerate(request.paths):
                    left = deadline - time.monotonic()
                    if left <= 1:
                        pages.append(PageAudit(path=path, error="no time left in the budget"))
                        continue
                    page, version = self._lighthouse_run(
                        request,
                        lighthouse,
                        chromium,
                        base + path,
                        headers,
                        work,
                        i,
                        left,
                        heartbeat,
                    )
                    pages.append(page.model_copy(update={"path": path}))
                    if version:
                        tools["lighthouse"] = version
        return WebAuditReport(pages=pages, axe=axe_report, tools=tools)

    def _axe_run(
        self,
        request: WebAuditRequest,
        base: str,
        headers: dict[str, str],
        chromium: Path,
        axe: Path,
        work: Path,
        deadline: float,
        heartbeat: Heartbeat,
    ) -> tuple[ScannerReport, str]:
        budget = max(1.0, deadline - time.monotonic())
        (work / "axe-audit.py").write_text(AXE_SCRIPT)
        (work / "axe-settings.json").write_text(
            json.dumps(
                {
                    "base_url": base,
                    "headers": headers,
                    "paths": request.paths,
                    "chromium": str(chromium),
                    "args": list(CHROMIUM_ARGS),
                    "axe": str(axe),
                    "tags": request.wcag_tags,
                    "page_timeout_ms": int(min(budget, 60.0) * 1000),
                }
            )
        )
        started = time.monotonic()

        def progress() -> str:
            try:
                done = (work / "axe-progress").read_text()
            except OSError:
                done = "0"
            return f"axe: {done} of {len(request.paths)} page(s), {time.monotonic() - started:.0f}s"

        # The worker's interpreter with its playwright; the sandbox shows it read-only.
        argv = [sys.executable, str(work / "axe-audit.py")]
        try:
            run = run_tool(argv, work, budget + _SLACK_S, heartbeat, progress)
        except ScannerUnavailableError as exc:
            return ScannerReport(scanner="axe", available=False, reason=str(exc)), ""
        try:
            results = json.loads((work / "axe-results.json").read_text())
        except (OSError, ValueError):
            return ScannerReport(scanner="axe", available=False, reason=failed_run(run, "axe")), ""
        if not isinstance(results, list):
            return ScannerReport(scanner="axe", available=False, reason="no results list"), ""
        version = next((str(r["axe"]) for r in results if isinstance(r, dict) and r.get("axe")), "")
        return parse_axe(results), version

    def _lighthouse_run(
        self,
        request: WebAuditRequest,
        lighthouse: Path,
        chromium: Path,
        url: str,
        headers: dict[str, str],
        work: Path,
        index: int,
        budget: float,
        heartbeat: Heartbeat,
    ) -> tuple[PageAudit, str]:
        output = work / f"lighthouse-{index}.json"
        argv = [
            str(lighthouse),
            url,
            "--quiet",
            "--output=json",
            f"--output-path={output}",
            f"--only-categories={','.join(request.categories)}",
            f"--chrome-flags=--headless=new {' '.join(CHROMIUM_ARGS)}",
            f"--max-wait-for-load={int(min(budget, 45.0) * 1000)}",
        ]
        if request.form_factor == "desktop":
            argv.append("--preset=desktop")
        if headers:
            argv.append(f"--extra-headers={json.dumps(headers)}")
        started = time.monotonic()

        def progress() -> str:
            return f"lighthouse on {url}: {time.monotonic() - started:.0f}s"

        try:
            run = run_tool(
                argv, work, budget, heartbeat, progress, env={"CHROME_PATH": str(chromium)}
            )
        except ScannerUnavailableError as exc:
            return PageAudit(path=url, error=str(exc)), ""
        try:
            data = json.loads(output.read_text())
        except (OSError, ValueError):
            return PageAudit(path=url, error=failed_run(run, "lighthouse")), ""
        if not isinstance(data, dict):
            return PageAudit(path=url, error="lighthouse's report is not a JSON object"), ""
        return parse_lighthouse(url, data), str(data.get("lighthouseVersion", ""))

    def _unreachable(self, base: str, headers: dict[str, str]) -> str:
        """Why the target does not answer ('' when it does)."""
        try:
            with httpx.Client(
                headers=headers,
                timeout=self._timeout_s,
                verify=verifying_context(),
                trust_env=False,
            ) as client:
                client.get(base.rstrip("/") + "/")
        except httpx.HTTPError as exc:
            return f"{base} does not answer: {type(exc).__name__}: {exc}"
        return ""
