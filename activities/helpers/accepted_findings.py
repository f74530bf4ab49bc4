"""Accepted findings: a scan stage's `ignore:` entries and `skip:` rule ids, applied to what a
scanner reported before anything is counted or capped.

An entry accepts the findings whose rule is its `id` until its `expires` date (inclusive).
After that it accepts nothing, and the report names it in `expired_ignores` so the gate fails:
an acceptance nobody renews must not quietly turn into a permanent one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

from contracts.activity import IgnoreEntry, ScannerReport

__all__ = ["apply_accepted"]


def apply_accepted(
    report: ScannerReport,
    ignore: Sequence[IgnoreEntry],
    skip: Iterable[str],
    today: date,
) -> ScannerReport:
    """`report` without the findings `skip` and the unexpired `ignore` entries accept."""
    if not ignore and not skip:
        return report
    live = {entry.id for entry in ignore if entry.expires >= today}
    dropped = set(skip) | live
    expired = [
        f"ignore entry {entry.id!r} expired on {entry.expires.isoformat()} "
        f"(reason given: {entry.reason}): renew its date or remove it"
        for entry in ignore
        if entry.expires < today
    ]
    kept = [f for f in report.findings if f.rule not in dropped]
    return report.model_copy(
        update={
            "findings": kept,
            "accepted": report.accepted + len(report.findings) - len(kept),
            "expired_ignores": [*report.expired_ignores, *expired],
        }
    )
