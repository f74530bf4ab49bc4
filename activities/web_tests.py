"""Web front ends in a real browser (Debian's Chromium): the service's own Playwright tests
(`browser` stages), and Lighthouse scores with axe's WCAG violations (`web_audit` stages).

The runner's (contracts.activity.RUNNER_ACTIVITIES): the browser renders whatever the
commit serves and the tests are the commit's code; they need no credential, only the
endpoint the deployer resolved (`resolve_endpoint`). The workflow judges both reports.
"""

from __future__ import annotations

from temporalio import activity

from activities.helpers.blocking import run_blocking
from activities.wiring.backends import BrowserTester, WebAuditor
from activities.wiring.observability import activity_log
from contracts.activity import (
    ActivityName,
    BrowserTestReport,
    BrowserTestRequest,
    WebAuditReport,
    WebAuditRequest,
)

__all__ = ["WebTestActivities"]


class WebTestActivities:
    def __init__(self, browser: BrowserTester | None, auditor: WebAuditor | None) -> None:
        self._browser = browser
        self._auditor = auditor

    @activity.defn(name=ActivityName.BROWSER_TESTS)
    async def browser_tests(self, request: BrowserTestRequest) -> BrowserTestReport:
        activity_log(url=request.endpoint.base_url, tests=request.tests).info("browser_tests")
        browser = self._browser
        if browser is None:
            return BrowserTestReport(
                available=False, reason="no browser test runner is configured on this worker"
            )
        return await run_blocking(lambda progress: browser.run(request, progress))

    @activity.defn(name=ActivityName.WEB_AUDIT)
    async def web_audit(self, request: WebAuditRequest) -> WebAuditReport:
        activity_log(url=request.endpoint.base_url, paths=request.paths).info("web_audit")
        auditor = self._auditor
        if auditor is None:
            return WebAuditReport(
                available=False, reason="no web auditor is configured on this worker"
            )
        return await run_blocking(lambda progress: auditor.audit(request, progress))
