"""Keep a scan result under Temporal's payload limit (2 MB per payload by default).

A scanner can report tens of thousands of findings (trivy on a large base image), each a few
hundred bytes: the full list would fail the activity's completion. The report keeps the most
severe `MAX_FINDINGS` findings with shortened messages, and counts every finding per severity
*before* dropping any, so the gates (`judge_scan`, the quality gate) still judge all of them.
"""

from __future__ import annotations

from contracts.activity import ScannerReport

__all__ = ["MAX_FINDINGS", "MAX_MESSAGE_CHARS", "capped"]

MAX_FINDINGS = 200
"""Per scanner report: a stage of five scanners stays well under 1 MB."""

MAX_MESSAGE_CHARS = 500


def capped(
    report: ScannerReport,
    max_findings: int = MAX_FINDINGS,
    max_message_chars: int = MAX_MESSAGE_CHARS,
) -> ScannerReport:
    """`report` with its counts fixed, then at most `max_findings` findings, most severe first."""
    counts = report.counts()  # before the cap: the figures the gates use
    ordered = sorted(report.findings, key=lambda f: -f.severity.rank)  # stable within a rank
    kept = [
        f
        if len(f.message) <= max_message_chars
        else f.model_copy(update={"message": f.message[: max_message_chars - 1] + "…"})
        for f in ordered[:max_findings]
    ]
    return report.model_copy(
        update={
            "findings": kept,
            "severity_counts": counts,
            "omitted": report.omitted + len(ordered) - len(kept),
        }
    )
