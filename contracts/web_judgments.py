"""Pure judgments of the web stages (`browser`, `web_audit`); no I/O.

Like every gate: a tool that could not run fails closed unless the stage says
`unavailable: warn`, and "nothing measured" is never a pass (no test ran, a page without a
score).
"""

from __future__ import annotations

from contracts.activity import BrowserTestReport, Severity, WebAuditReport
from contracts.definition.model import BrowserStage, WebAuditStage
from contracts.judgments import GateVerdict

__all__ = ["judge_browser", "judge_web_audit", "scores_summary"]

IMPACTS = {
    Severity.CRITICAL: "critical",
    Severity.HIGH: "serious",
    Severity.MEDIUM: "moderate",
    Severity.LOW: "minor",
    Severity.INFO: "minor",
}
"""How a finding's severity reads as axe's impact."""


def _unavailable(what: str, reason: str, unavailable: str) -> GateVerdict:
    text = f"{what} unavailable: {reason}"
    if unavailable == "warn":
        return GateVerdict(passed=True, reasons=[], warnings=[text])
    return GateVerdict(passed=False, reasons=[text])


def judge_browser(report: BrowserTestReport, stage: BrowserStage) -> GateVerdict:
    """The browser tests' counts against `max_failures`; no test run is a failure."""
    if not report.available:
        return _unavailable("browser", report.reason, stage.unavailable)
    reasons: list[str] = []
    failed = report.failures + report.errors
    if failed > stage.max_failures:
        shown = ", ".join(report.failed_tests[:3])
        reasons.append(f"{failed} browser test(s) failed" + (f": {shown}" if shown else ""))
    if report.tests == 0:
        reasons.append(f"no browser tests ran (pytest exited {report.exit_code})")
    if reasons and report.results_dir:
        reasons.append(f"traces and screenshots in {report.results_dir}")
    return GateVerdict(passed=not reasons, reasons=reasons)


def judge_web_audit(report: WebAuditReport, stage: WebAuditStage) -> GateVerdict:
    """Every page's Lighthouse scores against the stage's minimums (a page without a score
    fails), and axe's violations at or above `fail_on` (none may remain; accepted rules are
    not counted, an expired acceptance fails)."""
    if not report.available:
        return _unavailable("web audit", report.reason, stage.unavailable)
    reasons: list[str] = []
    minimums = stage.lighthouse.minimums() if stage.lighthouse is not None else {}
    if stage.lighthouse is not None:
        if not report.pages:
            reasons.append("Lighthouse audited no page")
        for page in report.pages:
            if page.error:
                reasons.append(f"Lighthouse on {page.path}: {page.error}")
                continue
            for category, least in minimums.items():
                score = page.scores.get(category)
                if score is None:
                    reasons.append(f"{category} on {page.path}: no score")
                elif score < least:
                    reasons.append(f"{category} {score:g} on {page.path} violates >= {least:g}")
    axe = report.axe
    if stage.wcag is not None:
        if axe is None or not axe.available:
            why = axe.reason if axe is not None else "it did not run"
            reasons.append(f"axe unavailable: {why}")
        else:
            for expired in axe.expired_ignores:
                reasons.append(f"ignore entry {expired} has expired")
            blocking = sum(n for s, n in axe.counts().items() if s.rank >= stage.fail_on.rank)
            if blocking:
                kept = [f for f in axe.findings if f.severity.rank >= stage.fail_on.rank]
                shown = "; ".join(
                    f"{f.rule} ({IMPACTS[f.severity]}) on {f.location}: {f.message}"
                    for f in kept[:3]
                )
                reasons.append(
                    f"{blocking} WCAG 2 {stage.wcag} violation(s) of impact "
                    f"{IMPACTS[stage.fail_on]} or worse" + (f": {shown}" if shown else "")
                )
    return GateVerdict(passed=not reasons, reasons=reasons)


def scores_summary(report: WebAuditReport) -> str:
    """'performance 99, accessibility 100, best-practices 93, seo 100' (each category's
    lowest score over the pages; '' without Lighthouse)."""
    lowest: dict[str, float] = {}
    for page in report.pages:
        for category, score in page.scores.items():
            if score is not None:
                lowest[category] = min(score, lowest.get(category, score))
    return ", ".join(f"{category} {score:g}" for category, score in lowest.items())
